"""The chaos run against chapter 08's replica pair: failovers, and a failover while the replica is
cut off, under semi-synchronous and asynchronous replication (a file of its own: its pairs take
their time, beside the other chaos tests)."""
import pair
from bench import chaos


def test_the_cluster_plan_fails_over_also_while_the_replica_is_cut_off():
    steps = chaos.plan(90, 1, 8, cluster=True)
    assert {fault for _, fault in steps} - {None} == set(chaos.CLUSTER_FAULTS) and sum(k is not None for k, _ in steps) == 90
    cut = steps.index((None, "failover_cut_off"))
    assert steps[cut + 1:cut + 2 + chaos.CUT_OFF_WRITES] == [("write", None)] * chaos.CUT_OFF_WRITES + [(None, None)]


def test_the_chaos_run_fails_over_and_the_safe_strategy_loses_nothing_under_semi_sync(server_up):
    tally, = chaos.run_all(requests=90, seed=1, fault_every=8, names=["safe_reconnect"], read_timeout=1,
                           cluster="semisync")
    assert tally.replication == "semisync" and tally.faults_by_kind.get("failover")
    assert tally.faults_by_kind.get("failover_cut_off") and "restart" not in tally.faults_by_kind
    assert tally.lost == 0 and tally.duplicates == 0 and tally.torn == 0
    assert tally.lost_but_landed == 0
    assert set(tally.errors_by_kind) <= {"OutcomeUnknown", "TransactionLost", "SessionLost", "OperationalError"}
    # the writes while the replica was cut off waited for it, until the app's read_timeout: never acknowledged
    assert tally.failed_by_fault["failover_cut_off"] == chaos.CUT_OFF_WRITES
    assert not pair.HOME.exists()  # the run started the pair, and stopped it


def test_the_chaos_run_counts_what_an_asynchronous_failover_with_the_replica_cut_off_loses(server_up):
    steps = [("write", None), (None, "failover_cut_off")] + [("write", None)] * chaos.CUT_OFF_WRITES + [(None, None),
                                                                                                       ("read", None)]
    tally = chaos.run("safe_reconnect", steps, read_timeout=1, cluster="async")
    assert tally.faults_by_kind == {"failover_cut_off": 1} and tally.failed == 0
    assert tally.acked_writes == 1 + chaos.CUT_OFF_WRITES and tally.lost == chaos.CUT_OFF_WRITES  # said done, gone
