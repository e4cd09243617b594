"""The benchmarks, short: what must hold is asserted; timings are printed, never asserted."""
import json
import os
import subprocess
import sys

import pytest

import config
import localdb
from bench import chaos, frameworks, overhead, wrong
from conftest import ROOT, free_port

REQUESTS, SEED, EVERY, READ_TIMEOUT = 100, 3, 10, 1  # chapter 12's run: each kind of fault once


@pytest.fixture(scope="module")
def tallies():
    return {t.name: t for t in chaos.run_all(REQUESTS, SEED, EVERY, names=["naive", "peewee_reconnect", "safe_reconnect"],
                                             read_timeout=READ_TIMEOUT)}


def test_the_plan_has_every_fault_and_is_reproducible():
    steps = chaos.plan(REQUESTS, SEED, EVERY)
    assert steps == chaos.plan(REQUESTS, SEED, EVERY)
    assert {fault for _, fault in steps} - {None} == set(chaos.FAULTS)
    # one fault in each run of EVERY requests, each kind once; one that strikes requests strikes each kind it can
    assert len(chaos.FAULTS) == REQUESTS // EVERY
    assert {(kind, fault) for fault, kinds in chaos.DURING.items() for kind in kinds} <= set(steps)
    assert ("view_read", "cut_after_insert") in steps and ("procedure_transaction", "kill_in_transaction") in steps
    assert ("implicit_commit", "kill_in_transaction") in steps and ("slow_read", "read_timeout") in steps
    assert sum(kind is not None for kind, _ in steps) == REQUESTS


def test_torn_is_judged_against_what_the_app_was_told():
    steps = [("implicit_commit", None)] * 3 + [("atomic", None), ("slow_read", "read_timeout")]
    answers = {1: "500 OutcomeUnknown 2006", 2: "500 TransactionLost 2006", 3: "200 ok", 4: "500 OutcomeUnknown 2013",
               5: "500 OperationalError 2013"}
    rows = {1: {0: 1}, 2: {0: 1}, 3: {0: 1}, 4: {1: 1}}  # part 0 of each implicit commit; half of the atomic()
    tally = chaos.Tally("made up")
    chaos.tally_up(tally, steps, answers, rows, {5: 2}, {}, dict.fromkeys(range(1, 6), 0.5))
    split = tally.by_kind["implicit_commit"]
    assert split["landed_in_part"] == 1  # told the outcome is unknown: the part the DDL committed is no tear
    assert split["torn"] == 2 and split["lost_but_landed"] == 1 and split["lost"] == 1  # told nothing, or done
    assert tally.by_kind["atomic"]["torn"] == 1  # one server transaction found in part is torn, whatever was said
    assert tally.by_kind["slow_read"]["duplicates"] == 1  # two copies on the server
    assert (tally.torn, tally.lost, tally.duplicates, tally.unknown) == (3, 1, 1, 2)
    assert tally.error_codes_by_fault == {None: {"OutcomeUnknown 2006": 1, "TransactionLost 2006": 1,
                                                 "OutcomeUnknown 2013": 1, "OperationalError 2013": 1}}


def test_the_harness_sees_naive_fail(tallies):
    naive = tallies["naive"]
    assert naive.failed > REQUESTS // 2


def test_no_request_waits_longer_than_its_strategys_bound(tallies):
    for name in ("peewee_reconnect", "safe_reconnect"):
        tally = tallies[name]
        assert tally.faults_by_kind.get("silent_drop")
        # a silent drop held a request until the read timeout (the harness sees it), and no longer
        assert READ_TIMEOUT <= tally.max_request_s <= tally.bound_s, name


def test_peewee_reconnect_duplicates_and_loses(tallies):
    peewee = tallies["peewee_reconnect"]
    assert peewee.duplicates >= 1  # an insert whose answer was lost, sent again
    assert peewee.lost >= 1  # a raw transaction's second insert, committed alone after a reconnect


def test_peewee_reconnect_reruns_what_the_text_hides(tallies):
    kinds = tallies["peewee_reconnect"].by_kind
    assert kinds["view_read"]["duplicates"] >= 1  # the SELECT whose view inserts, sent again after the cut
    assert kinds["procedure_transaction"]["torn"] >= 1  # the second insert committed alone on a new connection
    # it gave up on the slow read at read_timeout and sent it again: two timeouts. The server ran it twice, side by
    # side, unless its connection had been dropped silently before (which thread's it met is timing): then once
    slow = kinds["slow_read"]
    assert slow["max_s"] >= 2 * 0.9 * READ_TIMEOUT and slow["duplicates"] <= 1


def test_safe_reconnect_loses_nothing_and_duplicates_nothing(tallies):
    safe = tallies["safe_reconnect"]
    assert safe.requests == REQUESTS and safe.faults >= len(chaos.FAULTS) and set(safe.faults_by_kind) == set(chaos.FAULTS)
    assert safe.lost == 0 and safe.duplicates == 0 and safe.torn == 0 and safe.lost_but_landed == 0
    assert safe.unknown >= 1  # the cut links: said, not hidden
    # and a read the client gave up on after a silent drop (read_timeout): said, not run a second time;
    # SessionLost: a connection that ran a CALL holds what the procedure may have left, for the rest of its life
    assert set(safe.errors_by_kind) <= {"OutcomeUnknown", "TransactionLost", "SessionLost", "OperationalError"}
    assert safe.unknown_landed <= safe.unknown


def test_safe_reconnect_keeps_its_promises_where_the_text_hides_what_runs(tallies):
    safe = tallies["safe_reconnect"]
    for kind in ("view_read", "procedure_transaction", "implicit_commit", "slow_read"):
        counts = safe.by_kind[kind]
        assert counts["struck"] >= 1, kind
        assert counts["lost"] == counts["duplicates"] == counts["torn"] == counts["lost_but_landed"] == 0, kind
    # killed after the DDL committed part 0: told OutcomeUnknown (not TransactionLost), and part 0 is there
    assert safe.by_kind["implicit_commit"]["landed_in_part"] >= 1
    # the slow read, given up on at read_timeout once: not run again, so it ended well within its bound
    assert 0.9 * READ_TIMEOUT <= safe.by_kind["slow_read"]["max_s"] < 2 * READ_TIMEOUT <= safe.bound_s


def test_the_self_check_sees_what_each_wrong_strategy_does(capsys):
    assert chaos.self_check(seed=SEED)  # each wrong strategy under the faults its mistake meets
    seen = capsys.readouterr().out
    for name, checks in wrong.MUST_SEE.items():
        for what, _ in checks:
            assert f"{name:27} {what}: " in seen


def test_chaos_json_has_the_documented_shape():
    rows = ["safe_reconnect", "django_default", "asyncio_per_task"]  # one of the course's, chapter 09's, chapter 10's
    result = subprocess.run([sys.executable, "bench/chaos.py", "--requests", "20", "--fault-every", "8", "--json",
                             "--strategies", ",".join(rows)], capture_output=True, text=True, cwd=ROOT, check=True)
    output = json.loads(result.stdout)
    assert output["threads"] == 8 and output["read_timeout"] == chaos.READ_TIMEOUT
    assert [row["name"] for row in output["strategies"] + output["asyncio"]] == rows
    keys = {"name", "requests", "faults", "failed", "acked_writes", "lost", "duplicates", "torn", "unknown",
            "landed_in_part", "lost_but_landed", "faults_by_kind", "errors_by_kind", "by_kind", "max_request_s", "bound_s"}
    assert all(keys <= row.keys() and row["requests"] == 20 for row in output["strategies"] + output["asyncio"])
    assert "wrong_answers" in output["asyncio"][0]


def test_chaos_runs_every_row_unless_told_which(monkeypatch, capsys):
    ran = []
    monkeypatch.setattr(chaos, "run_all", lambda *args, names, **kwargs: ran.extend(names) or [])
    monkeypatch.setattr(chaos, "asyncio_rows", lambda args: ran.append("asyncio rows") or [])
    assert chaos.main(["--json"]) == 0
    assert ran == chaos.NAMES + chaos.FRAMEWORKS + ["asyncio rows"]  # chapter 09's and 10's beside the course's
    ran.clear()
    assert chaos.main(["--json", "--strategies", "ping, django_default,ping"]) == 0 and ran == ["ping", "django_default"]
    refused = {"ping,pong": "no row is called 'pong': name some of naive, ", ",": "name at least one row",
               "ping --asyncio-only": "--strategies or --asyncio-only, not both",
               "asyncio_per_task --cluster": "the asyncio rows run against the course's server, not --cluster"}
    for arguments, said in refused.items():
        with pytest.raises(SystemExit) as exit_:
            chaos.main(["--strategies", *arguments.split()])
        assert exit_.value.code == 2 and said in capsys.readouterr().err
    monkeypatch.setattr(config, "DB_PORT", free_port())  # no server there
    with pytest.raises(SystemExit) as exit_:
        chaos.main(["--json"])
    said = capsys.readouterr().err
    assert exit_.value.code == 2 and said.startswith("bench/chaos.py: no MySQL server answers at 127.0.0.1:"), said
    assert said.count("\n") <= 3 and "Traceback" not in said


REFERENCE_ROWS = ["peewee_pool", "sqlalchemy_pool", "sqlalchemy_pool_no_reset", "sqlalchemy_pre_ping"]
ROW_KEYS = {"name", "median_us", "p99_us", "ratio", "ratio_low", "ratio_high",
            "cpu_us", "cpu_ratio", "cpu_ratio_low", "cpu_ratio_high"}


def test_overhead_reports_every_ratio_with_its_interval_from_one_run():
    result = overhead.run(repeat=50)
    assert [row["name"] for row in result["strategies"]] == chaos.NAMES + REFERENCE_ROWS
    floor = next(row for row in result["strategies"] if row["name"] == "naive")
    assert floor["ratio"] == floor["cpu_ratio"] == 1.0 and floor["median_us"] == result["floor_us"]
    assert floor["cpu_us"] == result["floor_cpu_us"]
    for row in result["strategies"]:
        assert row.keys() == ROW_KEYS
        assert 0 < row["ratio_low"] <= row["ratio"] <= row["ratio_high"] and row["p99_us"] >= row["median_us"]
        assert 0 < row["cpu_ratio_low"] <= row["cpu_ratio"] <= row["cpu_ratio_high"]
        assert 0 < row["cpu_us"] <= row["median_us"]  # the client's CPU time is part of the wall time
    print(json.dumps(result, indent=1))


def test_on_loopback_the_client_and_the_server_run_apart_and_are_let_go_after(server_up):
    server, cores = localdb.course().pid(), os.sched_getaffinity(0)

    def server_cores():
        return {frozenset(os.sched_getaffinity(int(t))) for t in os.listdir(f"/proc/{server}/task")}

    with overhead.client_and_server_apart() as pinned:
        assert pinned == (len(cores) > 1)
        if pinned:
            assert os.sched_getaffinity(0) == {min(cores)} and server_cores() == {frozenset(cores - {min(cores)})}
    assert os.sched_getaffinity(0) == cores and server_cores() == {frozenset(cores)}


def test_overhead_far_from_the_server_has_a_run_per_round_trip():
    result = subprocess.run([sys.executable, "bench/overhead.py", "--rtt-ms", "0,2", "--repeat", "5", "--json"],
                            capture_output=True, text=True, cwd=ROOT, check=True)
    runs = json.loads(result.stdout)["runs"]
    assert [run["rtt_ms"] for run in runs] == [0, 2]
    assert runs[1]["floor_us"] >= 2000  # every contender, the floor too, went through the relay
    assert all([row["name"] for row in run["strategies"]] == chaos.NAMES + REFERENCE_ROWS + frameworks.OVERHEAD_NAMES
               for run in runs)
    assert all(row.keys() == ROW_KEYS for run in runs for row in run["strategies"])


def test_overhead_says_what_is_wrong_with_a_round_trip():
    result = subprocess.run([sys.executable, "bench/overhead.py", "--rtt-ms", "1,x"], capture_output=True, text=True,
                            cwd=ROOT)
    assert result.returncode == 2 and "--rtt-ms takes milliseconds separated by commas" in result.stderr
