"""The benchmarks, short: what must hold is asserted; timings are printed, never asserted."""
import json
import subprocess
import sys

import pytest

import pair
from bench import chaos, overhead
from conftest import ROOT

REQUESTS, SEED, EVERY, READ_TIMEOUT = 100, 3, 10, 1  # chapter 09's run: each kind of fault once


@pytest.fixture(scope="module")
def tallies():
    return {t.name: t for t in chaos.run_all(REQUESTS, SEED, EVERY, names=["naive", "peewee_reconnect", "safe_reconnect"],
                                             read_timeout=READ_TIMEOUT)}


def test_the_plan_has_every_fault_and_is_reproducible():
    steps = chaos.plan(REQUESTS, SEED, EVERY)
    assert steps == chaos.plan(REQUESTS, SEED, EVERY)
    assert {fault for _, fault in steps} - {None} == set(chaos.FAULTS)
    assert ("raw_transaction", "kill_in_transaction") in steps and ("write", "cut_after_insert") in steps
    assert sum(kind is not None for kind, _ in steps) == REQUESTS


def test_the_cluster_plan_fails_over_also_while_the_replica_is_cut_off():
    steps = chaos.plan(90, 1, 8, cluster=True)
    assert {fault for _, fault in steps} - {None} == set(chaos.CLUSTER_FAULTS) and sum(k is not None for k, _ in steps) == 90
    cut = steps.index((None, "failover_cut_off"))
    assert steps[cut + 1:cut + 2 + chaos.CUT_OFF_WRITES] == [("write", None)] * chaos.CUT_OFF_WRITES + [(None, None)]


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


def test_safe_reconnect_loses_nothing_and_duplicates_nothing(tallies):
    safe = tallies["safe_reconnect"]
    assert safe.requests == REQUESTS and safe.faults >= len(chaos.FAULTS) and set(safe.faults_by_kind) == set(chaos.FAULTS)
    assert safe.lost == 0 and safe.duplicates == 0 and safe.torn == 0
    assert safe.unknown >= 1  # the cut links: said, not hidden
    assert set(safe.errors_by_kind) <= {"OutcomeUnknown", "TransactionLost"}
    assert safe.unknown_landed <= safe.unknown


def test_the_self_check_sees_a_lost_write_and_a_doubled_one():
    assert chaos.self_check(requests=REQUESTS, seed=SEED, fault_every=EVERY)


def test_the_chaos_run_fails_over_and_the_safe_strategy_loses_nothing_under_semi_sync(server_up):
    tally, = chaos.run_all(requests=90, seed=1, fault_every=8, names=["safe_reconnect"], read_timeout=1,
                           cluster="semisync")
    assert tally.replication == "semisync" and tally.faults_by_kind.get("failover")
    assert tally.faults_by_kind.get("failover_cut_off") and "restart" not in tally.faults_by_kind
    assert tally.lost == 0 and tally.duplicates == 0 and tally.torn == 0
    assert set(tally.errors_by_kind) <= {"OutcomeUnknown", "TransactionLost"}
    # the writes while the replica was cut off waited for it, until the app's read_timeout: never acknowledged
    assert tally.failed_by_fault["failover_cut_off"] == chaos.CUT_OFF_WRITES
    assert not pair.HOME.exists()  # the run started the pair, and stopped it


def test_the_chaos_run_counts_what_an_asynchronous_failover_with_the_replica_cut_off_loses(server_up):
    steps = [("write", None), (None, "failover_cut_off")] + [("write", None)] * chaos.CUT_OFF_WRITES + [(None, None),
                                                                                                       ("read", None)]
    tally = chaos.run("safe_reconnect", steps, read_timeout=1, cluster="async")
    assert tally.faults_by_kind == {"failover_cut_off": 1} and tally.failed == 0
    assert tally.acked_writes == 1 + chaos.CUT_OFF_WRITES and tally.lost == chaos.CUT_OFF_WRITES  # said done, gone


def test_chaos_json_has_the_documented_shape():
    result = subprocess.run([sys.executable, "bench/chaos.py", "--requests", "20", "--fault-every", "8", "--json"],
                            capture_output=True, text=True, cwd=ROOT, check=True)
    output = json.loads(result.stdout)
    assert output["threads"] == 8 and output["read_timeout"] == chaos.READ_TIMEOUT
    rows = output["strategies"]
    assert [row["name"] for row in rows] == chaos.NAMES
    keys = {"name", "requests", "faults", "failed", "acked_writes", "lost", "duplicates", "unknown",
            "faults_by_kind", "errors_by_kind", "max_request_s", "bound_s"}
    assert all(keys <= row.keys() and row["requests"] == 20 for row in rows)


REFERENCE_ROWS = ["peewee_pool", "sqlalchemy_pool", "sqlalchemy_pool_no_reset", "sqlalchemy_pre_ping"]
ROW_KEYS = {"name", "median_us", "p99_us", "ratio", "ratio_low", "ratio_high"}


def test_overhead_reports_every_ratio_with_its_interval_from_one_run():
    result = overhead.run(repeat=50)
    assert [row["name"] for row in result["strategies"]] == chaos.NAMES + REFERENCE_ROWS
    floor = next(row for row in result["strategies"] if row["name"] == "naive")
    assert floor["ratio"] == 1.0 and floor["median_us"] == result["floor_us"]
    for row in result["strategies"]:
        assert row.keys() == ROW_KEYS
        assert 0 < row["ratio_low"] <= row["ratio"] <= row["ratio_high"] and row["p99_us"] >= row["median_us"]
    print(json.dumps(result, indent=1))


def test_overhead_far_from_the_server_has_a_run_per_round_trip():
    result = subprocess.run([sys.executable, "bench/overhead.py", "--rtt-ms", "0,2", "--repeat", "20", "--json"],
                            capture_output=True, text=True, cwd=ROOT, check=True)
    runs = json.loads(result.stdout)["runs"]
    assert [run["rtt_ms"] for run in runs] == [0, 2]
    assert runs[1]["floor_us"] >= 2000  # every contender, the floor too, went through the relay
    assert all([row["name"] for row in run["strategies"]] == chaos.NAMES + REFERENCE_ROWS for run in runs)
    assert all(row.keys() == ROW_KEYS for run in runs for row in run["strategies"])


def test_overhead_says_what_is_wrong_with_a_round_trip():
    result = subprocess.run([sys.executable, "bench/overhead.py", "--rtt-ms", "1,x"], capture_output=True, text=True,
                            cwd=ROOT)
    assert result.returncode == 2 and "--rtt-ms takes milliseconds separated by commas" in result.stderr
