"""The benchmarks, short: what must hold is asserted; timings are printed, never asserted."""
import json
import subprocess
import sys

import pytest

from bench import chaos, overhead
from conftest import ROOT

REQUESTS, SEED, EVERY = 150, 3, 10


@pytest.fixture(scope="module")
def tallies():
    return {t.name: t for t in chaos.run_all(REQUESTS, SEED, EVERY, names=["naive", "peewee_reconnect", "safe_reconnect"])}


def test_the_plan_has_every_fault_and_is_reproducible():
    steps = chaos.plan(REQUESTS, SEED, EVERY)
    assert steps == chaos.plan(REQUESTS, SEED, EVERY)
    assert {fault for _, fault in steps} - {None} == set(chaos.FAULTS)
    assert ("raw_transaction", "kill_in_transaction") in steps and ("write", "cut_after_insert") in steps
    assert sum(kind is not None for kind, _ in steps) == REQUESTS


def test_the_harness_sees_naive_fail(tallies):
    naive = tallies["naive"]
    assert naive.failed > REQUESTS // 2


def test_peewee_reconnect_duplicates_and_loses(tallies):
    peewee = tallies["peewee_reconnect"]
    assert peewee.duplicates >= 1  # an insert whose answer was lost, sent again
    assert peewee.lost >= 1  # a raw transaction's second insert, committed alone after a reconnect


def test_safe_reconnect_loses_nothing_and_duplicates_nothing(tallies):
    safe = tallies["safe_reconnect"]
    assert safe.requests == REQUESTS and safe.faults >= 10 and set(safe.faults_by_kind) == set(chaos.FAULTS)
    assert safe.lost == 0 and safe.duplicates == 0 and safe.torn == 0
    assert safe.unknown >= 1  # the cut links: said, not hidden
    assert set(safe.errors_by_kind) <= {"OutcomeUnknown", "TransactionLost"}
    assert safe.unknown_landed <= safe.unknown


def test_the_self_check_sees_a_lost_write_and_a_doubled_one():
    assert chaos.self_check(requests=REQUESTS, seed=SEED, fault_every=EVERY)


def test_chaos_json_has_the_documented_shape():
    result = subprocess.run([sys.executable, "bench/chaos.py", "--requests", "20", "--fault-every", "8", "--json"],
                            capture_output=True, text=True, cwd=ROOT, check=True)
    output = json.loads(result.stdout)
    assert output["threads"] == 8
    rows = output["strategies"]
    assert [row["name"] for row in rows] == chaos.NAMES
    keys = {"name", "requests", "faults", "failed", "acked_writes", "lost", "duplicates", "unknown",
            "faults_by_kind", "errors_by_kind"}
    assert all(keys <= row.keys() and row["requests"] == 20 for row in rows)


def test_overhead_reports_every_ratio_from_one_run():
    result = overhead.run(repeat=50)
    names = [row["name"] for row in result["strategies"]]
    assert names == chaos.NAMES + ["sqlalchemy_pool", "sqlalchemy_pre_ping"]
    floor = next(row for row in result["strategies"] if row["name"] == "naive")
    assert floor["ratio"] == 1.0 and floor["median_us"] == result["floor_us"]
    assert all(row["ratio"] > 0 and row["p99_us"] >= row["median_us"] for row in result["strategies"])
    print(json.dumps(result, indent=1))
