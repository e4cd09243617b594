"""What the pair's semi-synchronous replication keeps through a failover, and each way it stops
keeping it: tried for real, with the replica's link cut silently or its replication stopped."""
import threading
import time

import faults
import pair
import strategies as S
from test_pair import INSERT, count_on, make_table, through_the_proxy, wait_until_replicated


def told(db, request_id):
    """What the app was told of one insert: ``done``, or ``unknown`` (its read_timeout ended the wait)."""
    try:
        db.execute_sql(INSERT, (request_id,))
        return "done"
    except S.OutcomeUnknown:
        return "unknown"


def until(condition, seconds=10):
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "not within the time"
        time.sleep(0.05)


def no_replica_connected():
    """The replica's replication stopped: the primary has no replica to wait for."""
    pair.admin(pair.replica(), "STOP SLAVE IO_THREAD")
    until(lambda: pair.semisync_status()["clients"] == "0")


def binlog_position():
    return pair.admin(pair.primary(), "SELECT @@gtid_binlog_pos")[0][0]


def test_the_primary_waits_after_sync_also_with_no_replica_connected(server_up):
    with pair.running("semisync"):
        settings = pair.admin(pair.primary(), "SELECT @@rpl_semi_sync_master_wait_point, "
                             "@@rpl_semi_sync_master_wait_no_slave, @@rpl_semi_sync_master_timeout")
        assert settings == (("AFTER_SYNC", 1, pair.SEMISYNC_TIMEOUT_MS),)
        db = through_the_proxy(read_timeout=2)
        make_table(db)
        wait_until_replicated()
        assert told(db, 1) == "done"
        no_replica_connected()
        pair.admin(pair.primary(), "SET GLOBAL rpl_semi_sync_master_wait_point = AFTER_COMMIT")  # MariaDB's default
        writer = threading.Thread(target=told, args=(db, 2))
        writer.start()
        until(lambda: count_on(pair.primary(), 2) == 1)  # AFTER_COMMIT: others see it, and the replica may never get it
        assert writer.is_alive()  # while its writer still waits for the answer
        writer.join()
        pair.admin(pair.primary(), "SET GLOBAL rpl_semi_sync_master_wait_point = AFTER_SYNC")  # the pair's
        outcome, logged = [], binlog_position()
        writer = threading.Thread(target=lambda: outcome.append(told(db, 3)))
        writer.start()
        until(lambda: binlog_position() != logged)  # it is in the primary's binary log, and waits
        assert count_on(pair.primary(), 3) == 0  # AFTER_SYNC: no other session sees it while it waits
        writer.join()
        assert outcome == ["unknown"] and pair.semisync_status()["status"] == "ON"  # it waits still
        pair.failover()
        assert count_on(pair.primary(), 1) == 1 and count_on(pair.primary(), 2) == count_on(pair.primary(), 3) == 0
        db.close_all()


def test_every_acknowledged_write_survives_a_failover_with_the_replica_cut_off_unless_asynchronous(server_up):
    """A write, the replication link cut silently, another write, then the primary dies."""
    outcomes = {}
    for mode in ("async", "semisync"):
        with pair.running(mode):
            db = through_the_proxy(read_timeout=2)
            make_table(db)
            wait_until_replicated()
            with faults.LinkCutter(port=pair.port_of(pair.primary())) as link:
                pair.repoint_replication(link.port)
                before = told(db, 7)
                if mode == "async":
                    wait_until_replicated(7, 1)  # asynchronous, "done" does not mean sent: wait until it was
                link.drop_silently()  # semi-synchronous, "done" meant the replica had it: no wait
                during = told(db, 8)
                pair.failover()
                outcomes[mode] = [(before, count_on(pair.primary(), 7)), (during, count_on(pair.primary(), 8))]
            db.close_all()
    assert outcomes == {"async": [("done", 1), ("done", 0)],  # acknowledged, and lost
                        "semisync": [("done", 1), ("unknown", 0)]}  # never acknowledged: nothing lost


def test_a_primary_that_stops_waiting_acknowledges_writes_that_a_failover_loses(server_up):
    """Semi-sync as MariaDB lets it be set: no wait without a replica, or a short timeout."""
    seen = {}
    for setting, fault in (("rpl_semi_sync_master_wait_no_slave = OFF", "no replica"),
                           ("rpl_semi_sync_master_timeout = 500", "link cut")):
        with pair.running("semisync"):
            pair.admin(pair.primary(), f"SET GLOBAL {setting}")
            db = through_the_proxy(read_timeout=2)
            make_table(db)
            wait_until_replicated()
            with faults.LinkCutter(port=pair.port_of(pair.primary())) as link:
                if fault == "no replica":
                    no_replica_connected()
                else:
                    pair.repoint_replication(link.port)
                    link.drop_silently()
                answers = [told(db, request_id) for request_id in (1, 2, 3)]
                status = pair.semisync_status()
                pair.failover()
                found = sum(count_on(pair.primary(), request_id) for request_id in (1, 2, 3))
            seen[fault] = (answers, status["status"], status["no_tx"], found)
            db.close_all()
    # without a replica to wait for, it says it is still semi-synchronous ("ON"), and it is not: no_tx counts
    assert seen == {"no replica": (["done"] * 3, "ON", "3", 0), "link cut": (["done"] * 3, "OFF", "3", 0)}
