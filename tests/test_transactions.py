"""The safe reconnect and transactions, session state and its exact rules, on the real server."""
import resource
import threading
import time

import pytest
from peewee import ProgrammingError

import faults
import measuring
import strategies as S
from conftest import request_table

INSERT = "INSERT INTO test_tx (request_id) VALUES (%s)"


@pytest.fixture
def rows(server_up):
    with request_table("test_tx") as count:
        yield count


def kill_between(db):
    faults.kill(S.connection_id(db))
    time.sleep(0.1)


def expire(db):
    faults.expire_after(db, 1)
    faults.wait_until_closed([S.connection_id(db)])


@pytest.mark.parametrize("fault", [kill_between, expire])
@pytest.mark.parametrize("cls", [S.SafeReconnectMySQLDatabase, S.ReconnectMySQLDatabase])
def test_the_first_transaction_after_an_idle_fault_succeeds(rows, cls, fault):
    db = S.database(cls)
    assert measuring.select_one(db) == 1
    fault(db)
    with db.atomic():
        db.execute_sql(INSERT, (1,))
        db.execute_sql(INSERT, (1,))
    assert rows(1) == 2
    db.close_all()


BEGUN_BY_HAND = {
    "START TRANSACTION": ("START TRANSACTION", "COMMIT"),
    "BEGIN": ("BEGIN", "COMMIT"),
    "SET autocommit = 0": ("SET autocommit = 0", "COMMIT"),
}


@pytest.mark.parametrize("begin", BEGUN_BY_HAND)
def test_a_transaction_begun_by_hand_is_never_papered_over(rows, safe, begin):
    opening, closing = BEGUN_BY_HAND[begin]
    safe.execute_sql(opening)
    safe.execute_sql(INSERT, (2,))
    kill_between(safe)
    with pytest.raises(S.TransactionLost) as lost:
        safe.execute_sql(INSERT, (2,))  # peewee's own mixin would reconnect and commit this one alone
    assert "nothing of it was applied" in str(lost.value)
    assert rows(2) == 0
    assert measuring.select_one(safe) == 1  # the next statement runs on a new connection, in autocommit
    assert safe.open_transaction() is None


def test_peewees_mixin_commits_half_a_transaction_begun_by_hand(rows, server_up):
    db = S.database(S.ReconnectMySQLDatabase)
    db.execute_sql("START TRANSACTION")
    db.execute_sql(INSERT, (3,))
    kill_between(db)
    db.execute_sql(INSERT, (3,))  # reconnected, retried, committed on its own
    db.execute_sql("COMMIT")
    assert rows(3) == 1
    db.close_all()


def test_a_transaction_inside_atomic_dies_as_transaction_lost(rows, safe):
    with pytest.raises(S.TransactionLost):
        with safe.atomic():
            safe.execute_sql(INSERT, (4,))
            kill_between(safe)
            safe.execute_sql(INSERT, (4,))
    assert rows(4) == 0 and measuring.select_one(safe) == 1


@pytest.mark.parametrize("cut,applied", [
    ("cut_next_reply", 1),  # the server committed; its answer was lost
    ("cut_next_statement", 0),  # COMMIT never reached it: the client cannot tell the difference
])
def test_a_lost_answer_to_commit_is_outcome_unknown(rows, server_up, cut, applied):
    with faults.LinkCutter() as link:
        db = S.database(S.SafeReconnectMySQLDatabase, port=link.port)
        with pytest.raises(S.OutcomeUnknown):
            with db.atomic():
                db.execute_sql(INSERT, (5,))
                getattr(link, cut)(db.connection(), statement="COMMIT")
        assert link.cuts == 1
        assert measuring.select_one(db) == 1
        db.close_all()
    assert rows(5) == applied


def test_a_connection_lost_before_commit_is_transaction_lost(rows, safe):
    with pytest.raises(S.TransactionLost) as lost:
        with safe.atomic():
            safe.execute_sql(INSERT, (5,))
            kill_between(safe)  # the last statement is done; the kill comes before COMMIT is sent
    assert "nothing of it was applied" in str(lost.value)
    assert rows(5) == 0 and measuring.select_one(safe) == 1


def test_run_transaction_reruns_a_transaction_lost_before_commit(rows, safe):
    tries = []

    def transfer(db):
        tries.append(1)
        db.execute_sql(INSERT, (6,))
        if len(tries) == 1:
            kill_between(db)
        db.execute_sql(INSERT, (6,))
        return len(tries)

    assert S.run_transaction(safe, transfer) == 2
    assert rows(6) == 2


def test_run_transaction_reruns_a_deadlock_victim(rows, server_up):
    one, two = S.database(S.SafeReconnectMySQLDatabase), S.database(S.SafeReconnectMySQLDatabase)
    for db in (one, two):
        db.execute_sql("INSERT INTO test_tx (id, request_id) VALUES (%s, 0)", (1 if db is one else 2,))
    both_locked, tries = threading.Barrier(2), {"one": 0, "two": 0}

    def cross(name, first, second):
        def work(db):
            tries[name] += 1
            db.execute_sql("UPDATE test_tx SET request_id = request_id + 1 WHERE id = %s", (first,))
            if tries[name] == 1:
                both_locked.wait()  # each holds one row and wants the other's: a deadlock
            db.execute_sql("UPDATE test_tx SET request_id = request_id + 1 WHERE id = %s", (second,))
        return work

    other = threading.Thread(target=S.run_transaction, args=(two, cross("two", 2, 1)))
    other.start()
    S.run_transaction(one, cross("one", 1, 2))
    other.join()
    assert sorted(tries.values()) == [1, 2]  # the victim ran twice, the other once
    assert one.execute_sql("SELECT SUM(request_id) FROM test_tx").fetchone()[0] == 4
    one.close_all()
    two.close_all()


def test_run_transaction_reruns_after_a_lock_wait_timeout(rows, server_up):
    holder = S.database(S.SafeReconnectMySQLDatabase)
    waiter = S.database(S.SafeReconnectMySQLDatabase, init_command="SET innodb_lock_wait_timeout = 1")
    locked = threading.Event()

    def hold_the_row_for_a_while():  # on a thread of its own: the connection is that thread's
        holder.execute_sql("INSERT INTO test_tx (id, request_id) VALUES (1, 0)")
        holder.execute_sql("START TRANSACTION")
        holder.execute_sql("UPDATE test_tx SET request_id = 1 WHERE id = 1")
        locked.set()
        time.sleep(1.5)
        holder.execute_sql("COMMIT")

    other = threading.Thread(target=hold_the_row_for_a_while)
    other.start()
    assert locked.wait(10)
    tries = []

    def bump(db):
        tries.append(1)
        db.execute_sql("UPDATE test_tx SET request_id = request_id + 1 WHERE id = 1")

    S.run_transaction(waiter, bump)
    other.join()
    assert len(tries) == 2  # the first waited 1 s and failed with 1205; the second got the lock
    assert rows(2) == 1
    holder.close_all()
    waiter.close_all()


def test_run_transaction_reruns_an_unknown_commit_only_when_idempotent(rows, server_up):
    with faults.LinkCutter() as link:
        db = S.database(S.SafeReconnectMySQLDatabase, port=link.port)

        def insert(db):
            link.cut_next_reply(db.connection(), statement="COMMIT")
            db.execute_sql(INSERT, (7,))

        with pytest.raises(S.OutcomeUnknown):
            S.run_transaction(db, insert)
        assert rows(7) == 1
        db.close_all()


def test_the_session_is_new_after_a_reconnect(server_up):
    db = S.database(S.PeeweeReconnect.database_class)  # peewee's mixin reconnects without a word
    db.execute_sql("SET @cart = 3")
    db.execute_sql("SET SESSION time_zone = '+05:00'")
    db.execute_sql("CREATE TEMPORARY TABLE scratch (a INT)")
    before = db.execute_sql("SELECT @cart, @@time_zone").fetchone()
    kill_between(db)
    after = db.execute_sql("SELECT @cart, @@time_zone").fetchone()
    assert before == (3, "+05:00")
    assert after == (None, "SYSTEM")
    with pytest.raises(ProgrammingError):  # 1146: the table does not exist
        db.execute_sql("SELECT * FROM scratch")
    db.close_all()


@pytest.mark.parametrize("statement,state", [  # the server reports the first three; the text shows the last three
    ("SET @cart = 3", "SET @cart = 3"),
    ("SET SESSION time_zone = '+05:00'", "SET SESSION time_zone"),
    ("CREATE TEMPORARY TABLE scratch (a INT)", "CREATE TEMPORARY TABLE"),
    ("SELECT GET_LOCK('nightly-job', 0)", "a GET_LOCK() lock"),
    ("LOCK TABLES test_tx READ", "table locks"),
    ("SELECT @cart := 3", "a user variable"),
])
def test_the_safe_reconnect_does_not_retry_without_the_session(rows, safe, statement, state):
    safe.execute_sql(statement)
    assert state in safe.session_state()
    kill_between(safe)
    with pytest.raises(S.SessionLost) as lost:
        safe.execute_sql("SELECT 1")
    assert state in str(lost.value)
    assert measuring.select_one(safe) == 1 and safe.session_state() is None  # a new session, and it knows


def test_init_command_gives_every_new_connection_its_settings(server_up):
    db = S.database(S.SafeReconnectMySQLDatabase, init_command="SET time_zone = '+05:00'")
    assert db.execute_sql("SELECT @@time_zone").fetchone()[0] == "+05:00"
    kill_between(db)
    assert db.execute_sql("SELECT @@time_zone").fetchone()[0] == "+05:00"  # reconnected, and set again
    assert db.session_state() is None
    db.close_all()


def test_the_liveness_check_takes_any_file_descriptor(rows, safe):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < 1200:
        pytest.skip(f"this system allows only {hard} open files")
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, 1200), hard))
    spare = [open("/dev/null") for _ in range(1100)]
    try:
        safe.close_all()
        before = S.connection_id(safe)
        assert safe.connection().fileno() >= 1024
        assert not safe.server_hung_up()
        safe.execute_sql(INSERT, (8,))
        assert S.connection_id(safe) == before  # no needless reconnect
        kill_between(safe)
        assert safe.server_hung_up()
        safe.execute_sql(INSERT, (8,))  # replaced before it was sent
        assert rows(8) == 2
    finally:
        safe.close_all()
        for f in spare:
            f.close()
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def test_a_write_too_large_for_the_server_is_not_retried_as_never_sent(rows, safe):
    safe.execute_sql("CREATE TABLE IF NOT EXISTS test_blob (b LONGBLOB)")
    try:
        allowed = safe.execute_sql("SELECT @@max_allowed_packet").fetchone()[0]
        with pytest.raises(S.OperationalError) as refused:  # refused twice: nothing ran either time
            safe.execute_sql("INSERT INTO test_blob VALUES (%s)", (b"x" * (allowed * 5 // 2),))
        assert "failed again when run a second time" in str(refused.value)
        assert safe.execute_sql("SELECT COUNT(*) FROM test_blob").fetchone()[0] == 0
    finally:
        safe.execute_sql("DROP TABLE test_blob")


def test_a_retry_that_fails_again_after_the_write_may_have_run_is_outcome_unknown(server_up, safe):
    safe.execute_sql("CREATE TABLE IF NOT EXISTS test_keyed (request_id INT PRIMARY KEY)")
    try:
        with faults.LinkCutter() as link:
            db = S.database(S.SafeReconnectMySQLDatabase, port=link.port)
            measuring.select_one(db)
            link.cut_next_reply(statement="INSERT", times=2)  # the first try and the retry, on a new connection
            with pytest.raises(S.OutcomeUnknown), db.idempotent():
                db.execute_sql("INSERT INTO test_keyed VALUES (9) ON DUPLICATE KEY UPDATE request_id = request_id")
            assert link.cuts == 2
            db.close_all()
        assert safe.execute_sql("SELECT COUNT(*) FROM test_keyed").fetchone()[0] == 1
    finally:
        safe.execute_sql("DROP TABLE test_keyed")
