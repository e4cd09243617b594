# -*- coding: utf-8 -*-
"""An adversarial review of the safe reconnect's promises (after issue 15): each test here is real
SQL and a real fault on the real server that breaks one promise today, and says which in a comment.
Each asserts what the promise says should happen, so each fails until the design is fixed."""
import time

import pytest
from peewee import ProgrammingError

import faults
import measuring
import strategies as S
from conftest import kill_and_wait, request_table

INSERT = "INSERT INTO test_review (request_id) VALUES (%s)"


@pytest.fixture
def rows(server_up):
    with request_table("test_review") as count:
        yield count


# Promise: "never runs a statement on a new connection without the session state it relied on".
# record.used lives on the connection's record: a statement that reconnects silently (not sent, or a
# lost read) starts a new record with used=False, and the request's LAST_INSERT_ID() is read from
# the new session without a word: the child row gets parent id 0.
def test_last_insert_id_after_a_silent_reconnect_earlier_in_the_request(rows, server_up):
    strategy = S.SafeReconnect()
    try:
        with strategy.request() as db:
            db.execute_sql(INSERT, (1,))
            kill_and_wait(db)
            db.execute_sql("SELECT COUNT(*) FROM test_review")  # not sent: reconnected and run again, rightly
            with pytest.raises(S.SessionLost):
                db.execute_sql("INSERT INTO test_review (request_id) VALUES (LAST_INSERT_ID())")
    finally:
        strategy.close()
    assert rows(0) == 0  # today: a child row pointing at id 0


# Promise: the same. _before_sending() retires a connection past max_age when "nothing of it is
# needed" (no transaction, no session), but ignores record.used: LAST_INSERT_ID() answers 0.
def test_max_age_does_not_retire_a_connection_in_the_middle_of_a_request(rows, server_up):
    db = S.database(S.SafeReconnectMySQLDatabase, max_age=0.5)
    try:
        db.new_request()
        db.execute_sql(INSERT, (2,))
        time.sleep(0.6)
        assert db.execute_sql("SELECT LAST_INSERT_ID()").fetchone()[0] != 0  # today: 0, from a new connection
    finally:
        db.close_all()


# Promise: "never continues a transaction on a new connection, however it began". mysqlclient
# connects with CLIENT_MULTI_STATEMENTS by default; the flags are read after the FIRST result
# (SERVER_MORE_RESULTS_EXISTS set, IN_TRANS not yet), so a transaction begun by a later statement
# of the string is invisible: after a KILL the next INSERT is run again on a new connection in
# autocommit, COMMIT commits nothing, and half the transaction is applied. With a tail that
# arrives later (DO SLEEP), the liveness check takes it for a hang-up and does the same with no fault.
@pytest.mark.parametrize("opening,fault", [
    ("DO 0; START TRANSACTION; INSERT INTO test_review SET request_id = 3", kill_and_wait),
    ("DO 0; START TRANSACTION; INSERT INTO test_review SET request_id = 3; DO SLEEP(0.2)", lambda db: time.sleep(0.4)),
])
def test_a_transaction_begun_inside_a_multi_statement_string_is_not_continued(rows, server_up, opening, fault):
    refusing = S.database(S.SafeReconnectMySQLDatabase)  # the safe reconnect's default: one statement a call
    with pytest.raises(ProgrammingError):  # 1064: a second statement is a syntax error
        refusing.execute_sql(opening)
    refusing.close_all()
    safe = S.database(S.SafeReconnectMySQLDatabase, multi_statements=True)  # asked for: its flags are not the last
    safe.execute_sql(opening)
    killed = fault(safe) is None and fault is kill_and_wait
    if killed:
        with pytest.raises((S.TransactionLost, S.SessionLost)):
            safe.execute_sql(INSERT, (3,))
    else:  # a tail that came later is no hang-up: the same connection, the same transaction
        safe.execute_sql(INSERT, (3,))
    safe.execute_sql("COMMIT")
    safe.close_all()
    assert rows(3) == (0 if killed else 2)  # today: 1, half a transaction


@pytest.fixture
def hidden_functions(rows):
    """Stored functions that write, named so that the text reader cannot see a call."""
    admin = S.database()
    names = ["notéit", "1st_note", "against"]
    for name in names:
        admin.execute_sql(f"CREATE FUNCTION `{name}`(n INT) RETURNS INT MODIFIES SQL DATA "
                          "BEGIN INSERT INTO test_review (request_id) VALUES (n); RETURN n; END")
    yield
    for name in names:
        admin.execute_sql(f"DROP FUNCTION IF EXISTS `{name}`")
    admin.close_all()


# Promise: "never runs twice a statement that may have had effects once it may have reached the
# server". statements._called() finds calls with r"\b([A-Z_][A-Z0-9_$]*)\s*\(": an unquoted name
# with a non-ASCII letter (MariaDB allows U+0080..U+FFFF) or starting with a digit has no \b before
# its ASCII tail, and AGAINST is in KEYWORDS_BEFORE_PARENTHESIS but is a non-reserved word a function
# may be named: is_read() says True, the lost answer is "nothing ran", the function writes twice.
@pytest.mark.parametrize("read", ["SELECT notéit(4)", "SELECT 1st_note(4)", "SELECT against(4)"])
def test_a_stored_function_the_reader_cannot_see_is_not_run_twice(hidden_functions, rows, read):
    with faults.LinkCutter() as link:
        db = S.database(S.SafeReconnectMySQLDatabase, port=link.port)
        measuring.select_one(db)
        link.cut_next_reply(db.connection())
        with pytest.raises(S.OutcomeUnknown):
            db.execute_sql(read)
        db.close_all()
    assert rows(4) == 1  # today: 2


# Promise: "never calls 'nothing of it was applied' (TransactionLost) what may have committed".
# _kind() lets idempotent() override the text: a DDL declared idempotent (CREATE TABLE IF NOT
# EXISTS is) becomes "idempotent", and row 5 ("lost, open, *") says it cannot commit. It did commit
# the insert before it: run_transaction() runs the work again, the insert is applied twice.
def test_an_idempotent_ddl_inside_a_transaction_is_not_called_lost(rows, server_up):
    with faults.LinkCutter() as link:
        db = S.database(S.SafeReconnectMySQLDatabase, port=link.port)
        runs = []

        def work(db):
            runs.append(1)
            db.execute_sql(INSERT, (5,))
            if len(runs) == 1:
                link.cut_next_reply(db.connection(), statement="CREATE")
            with db.idempotent():
                db.execute_sql("CREATE TABLE IF NOT EXISTS test_review_side (a INT)")

        try:
            with pytest.raises(S.OutcomeUnknown):
                S.run_transaction(db, work)
        finally:
            db.execute_sql("DROP TABLE IF EXISTS test_review_side")
            db.close_all()
    assert len(runs) == 1 and rows(5) == 1  # today: run twice, 2 rows


# Promise: the same. A DDL commits implicitly BEFORE it runs, even when it then fails (1051 here);
# an error packet carries no status flags and _note() runs only after success, so the record still
# says "open, nothing committed". An app that ignores "no such table" and is then killed is told
# TransactionLost, and run_transaction() applies the first insert twice.
def test_a_failed_ddl_that_committed_is_not_called_lost(rows, safe):
    runs = []

    def work(db):
        runs.append(1)
        db.execute_sql(INSERT, (6,))
        try:
            db.execute_sql("DROP TABLE test_review_no_such_table")
        except S.OperationalError:
            pass  # "it is not there: fine"
        if len(runs) == 1:
            kill_and_wait(db)
        db.execute_sql(INSERT, (6,))

    with pytest.raises(S.OutcomeUnknown):
        S.run_transaction(safe, work)
    assert len(runs) == 1 and rows(6) == 1  # today: run twice, 3 rows


# Promise: the same. After XA PREPARE the server does not roll the transaction back when the
# connection dies (MariaDB 10.5+): it stays prepared (XA RECOVER lists it, its locks held) and
# anyone may XA COMMIT it. The safe reconnect says "nothing of it was applied".
def test_a_prepared_xa_transaction_is_not_called_lost(rows, safe):
    safe.execute_sql("XA START 'review'")
    safe.execute_sql(INSERT, (7,))
    safe.execute_sql("XA END 'review'")
    safe.execute_sql("XA PREPARE 'review'")
    kill_and_wait(safe)
    try:
        with pytest.raises(S.OperationalError) as raised:
            safe.execute_sql("XA COMMIT 'review'")
        assert not isinstance(raised.value, S.TransactionLost), raised.value  # today: TransactionLost
    finally:
        admin = S.database()
        if admin.execute_sql("XA RECOVER").fetchall():
            admin.execute_sql("XA COMMIT 'review'")  # the transaction manager's recovery: it is applied
        admin.close_all()
    assert rows(7) == 1


# Promise: "never runs a statement on a new connection without the session state it relied on".
# SET TRANSACTION READ ONLY (or ISOLATION LEVEL ...) without SESSION sets the next transaction's
# characteristics; the server does not flag it as a session change and the text reader does not
# see it: after a KILL, START TRANSACTION runs on a new connection read-write, and the write the
# app counted on being refused is committed.
def test_the_next_transactions_characteristics_are_not_forgotten(rows, safe):
    safe.execute_sql("SET TRANSACTION READ ONLY")
    kill_and_wait(safe)
    with pytest.raises(S.SessionLost):
        safe.execute_sql("START TRANSACTION")
        safe.execute_sql(INSERT, (8,))  # today: committed; on the old connection, 1792 read-only
    safe.execute_sql("COMMIT")
    assert rows(8) == 0


# Promise: "never runs twice a statement that may have had effects". idempotent() is a flag on the
# thread while its block is open (a stated limit: a generator suspended inside it keeps it open); a
# nested block must not end the outer one's declaration early, nor leave it on after the outer ends.
def test_the_idempotent_declaration_ends_with_its_outermost_block(rows, server_up):
    with faults.LinkCutter() as link:
        db = S.database(S.SafeReconnectMySQLDatabase, port=link.port)
        with db.idempotent():
            with db.idempotent():
                pass
            assert db._kind(INSERT) == "idempotent"  # still declared: the outer block is open
        link.cut_next_reply(db.connection(), statement="INSERT")
        with pytest.raises(S.OutcomeUnknown):
            db.execute_sql(INSERT, (9,))
        db.close_all()
    assert rows(9) == 1


# Promise: "longest_wait() bounds every request". reconnecting._pauses() is a generator: its
# deadline is set at the first next(), after the first connect attempt has failed, and the last
# attempt begun before the deadline runs past it: two walks, where the bound counts one. With
# connect_timeout above 2 x read_timeout the request outlasts the bound (16.1 s against 13 here).
def test_the_bound_holds_when_reconnects_hang(server_up):
    with faults.LinkCutter() as link:
        db = S.database(S.SafeReconnectMySQLDatabase, port=link.port, connect_timeout=8, read_timeout=1,
                        write_timeout=1, reconnect_timeout=1)
        strategy = S.SafeReconnect(db)
        assert measuring.attempt(strategy, measuring.select_one).ok
        kill_and_wait(db)
        link.drop_silently(new_connections=True)  # the network goes as the connection is killed
        started = time.monotonic()
        assert not measuring.attempt(strategy, measuring.select_one).ok
        took = time.monotonic() - started
        strategy.close()
    assert took <= strategy.longest_wait()  # today: 16.1 > 13


# Promise: "never calls TransactionLost what may have committed". errors.NOT_SENT holds 4031 (MySQL
# 8's idle disconnect), but in MariaDB 4031 is ER_REFERENCED_TRG_DOES_NOT_EXIST, an ordinary error
# of a statement that ran: a CREATE TRIGGER ... FOLLOWS a missing trigger, which committed the
# transaction implicitly, is taken for "never sent", the live connection is closed, and
# TransactionLost says nothing was applied: the insert is there.
def test_mariadbs_4031_is_not_taken_for_never_sent(rows, safe):
    admin = S.database()
    admin.execute_sql("CREATE TRIGGER test_review_t1 BEFORE INSERT ON test_review FOR EACH ROW "
                      "SET NEW.request_id = NEW.request_id")
    admin.close_all()
    safe.execute_sql("START TRANSACTION")
    safe.execute_sql(INSERT, (10,))
    with pytest.raises(S.OperationalError) as raised:
        safe.execute_sql("CREATE TRIGGER test_review_t2 BEFORE INSERT ON test_review FOR EACH ROW "
                         "FOLLOWS test_review_missing SET NEW.request_id = NEW.request_id")
    assert rows(10) == 1  # the DDL committed it
    assert not isinstance(raised.value, S.TransactionLost), raised.value  # today: TransactionLost (4031)


# Not a broken promise but a false alarm on a healthy connection: a CALL whose procedure returns
# rows and then goes on (DO SLEEP, an UPDATE) sends its final OK later; the liveness check sees the
# socket readable, takes it for the server's hang-up, closes the connection and raises SessionLost
# ("the server had closed the connection"), with no fault at all. (If the procedure left a
# transaction open, it is rolled back.)
def test_a_procedure_that_returns_rows_then_goes_on_is_not_taken_for_a_hang_up(server_up, safe):
    admin = S.database()
    admin.execute_sql("CREATE PROCEDURE test_review_slow() BEGIN SELECT 1 AS one; DO SLEEP(0.2); END")
    try:
        assert safe.execute_sql("CALL test_review_slow()").fetchall() == ((1,),)
        time.sleep(0.4)
        before = S.connection_id(safe)
        assert safe.execute_sql("SELECT 1").fetchone() == (1,)  # today: SessionLost
        assert S.connection_id(safe) == before
    finally:
        admin.execute_sql("DROP PROCEDURE test_review_slow")
        admin.close_all()


# Promise: "never calls 'nothing of it was applied' (TransactionLost) what may have committed".
# partly_committed is set only when the server reports NO transaction after a statement inside
# atomic(); a statement that commits and at once opens a new transaction leaves IN_TRANS set, so
# the commit goes unseen: COMMIT AND CHAIN, START TRANSACTION / BEGIN (an implicit commit), a CALL
# whose procedure runs COMMIT; START TRANSACTION. After a KILL, TransactionLost, and
# run_transaction() applies the first insert twice (3 rows where one run writes 2).
@pytest.mark.parametrize("middle", ["COMMIT AND CHAIN", "START TRANSACTION", "BEGIN", "CALL test_review_checkpoint()"])
def test_a_commit_that_reopens_a_transaction_inside_atomic_is_not_called_lost(rows, safe, middle):
    admin = S.database()
    admin.execute_sql("CREATE PROCEDURE IF NOT EXISTS test_review_checkpoint() BEGIN COMMIT; START TRANSACTION; END")
    runs = []

    def work(db):
        runs.append(1)
        db.execute_sql(INSERT, (11,))
        db.execute_sql(middle)  # commits the insert, and a new transaction is open at once
        if len(runs) == 1:
            kill_and_wait(db)
        db.execute_sql(INSERT, (11,))

    try:
        with pytest.raises(S.OutcomeUnknown):
            S.run_transaction(safe, work)
    finally:
        admin.execute_sql("DROP PROCEDURE IF EXISTS test_review_checkpoint")
        admin.close_all()
    assert len(runs) == 1 and rows(11) == 1  # today: run twice, 3 rows


@pytest.fixture
def writing_function(rows):
    admin = S.database()
    admin.execute_sql("CREATE FUNCTION test_review_note(n INT) RETURNS INT MODIFIES SQL DATA "
                      "BEGIN INSERT INTO test_review (request_id) VALUES (n); RETURN n; END")
    yield
    admin.execute_sql("DROP FUNCTION IF EXISTS test_review_note")
    admin.close_all()


# Promise: "never runs twice a statement that may have had effects". The text reader assumes the
# default sql_mode. With ANSI_QUOTES (a "..." string is a name) a function may be called as
# "f"(1); with NO_BACKSLASH_ESCAPES 'a\' ends the string, so a call the reader takes for the inside
# of a string runs. Both set through init_command, the course's own advice for session settings
# (or globally by the DBA): is_read() says True and the lost answer runs the write again.
@pytest.mark.parametrize("mode,read", [
    ("ANSI_QUOTES", 'SELECT "test_review_note"(12)'),
    ("NO_BACKSLASH_ESCAPES", "SELECT 'a\\', test_review_note(12), ' '"),
])
def test_a_call_hidden_by_the_sql_mode_is_not_run_twice(writing_function, rows, mode, read):
    with faults.LinkCutter() as link:
        db = S.database(S.SafeReconnectMySQLDatabase, port=link.port,
                        init_command=f"SET SESSION sql_mode = CONCAT(@@sql_mode, ',{mode}')")
        measuring.select_one(db)
        link.cut_next_reply(db.connection())
        with pytest.raises(S.OutcomeUnknown):
            db.execute_sql(read)
        db.close_all()
    assert rows(12) == 1  # today: 2


# Promise: "never continues a transaction on a new connection, however it began", in a threaded
# app (every thread its own connection, as the course says). connections._native_status_reader()
# makes ONE ctypes.c_uint for every call: mariadb_get_infov() runs without the GIL, so another
# thread's call overwrites it before flags.value is read, and a statement is credited with another
# connection's flags (about 3% of reads with two busy threads here). The record then says no
# transaction is open; after a KILL the next INSERT is run again in autocommit: half a transaction.
def test_the_status_flags_are_the_calling_threads_own(rows, safe):
    import threading
    stop = threading.Event()

    def busy():  # another request thread of the same app, in autocommit
        while not stop.is_set():
            safe.execute_sql("DO 0")

    other = threading.Thread(target=busy)
    other.start()
    forgotten = 0
    try:
        for _ in range(3000):
            safe.execute_sql("START TRANSACTION")
            safe.execute_sql(INSERT, (13,))
            forgotten += safe.open_transaction() is None
            safe.execute_sql("ROLLBACK")
    finally:
        stop.set()
        other.join()
    assert forgotten == 0  # today: dozens of every 3,000


# Promise: "never calls 'nothing of it was applied' what may have committed", on run_transaction()'s
# own path: it runs the work again after a lock wait timeout (1205) or a deadlock (1213) without
# asking the rule, though the record knows a statement inside committed what came before
# (partly_committed; and the rollback in atomic()'s exit then clears it). The insert is applied twice.
def test_run_transaction_does_not_rerun_a_lock_wait_timeout_after_a_partial_commit(rows, server_up):
    import threading
    holder = S.database(S.SafeReconnectMySQLDatabase)
    waiter = S.database(S.SafeReconnectMySQLDatabase, init_command="SET innodb_lock_wait_timeout = 1")
    holder.execute_sql("INSERT INTO test_review (id, request_id) VALUES (1, 0)")
    locked = threading.Event()

    def hold():
        holder.execute_sql("START TRANSACTION")
        holder.execute_sql("UPDATE test_review SET request_id = 0 WHERE id = 1")
        locked.set()
        time.sleep(1.5)
        holder.execute_sql("COMMIT")

    other = threading.Thread(target=hold)
    other.start()
    assert locked.wait(10)
    runs = []

    def work(db):
        runs.append(1)
        db.execute_sql(INSERT, (14,))
        db.execute_sql("CREATE TABLE IF NOT EXISTS test_review_side (a INT)")  # commits the insert
        db.execute_sql("UPDATE test_review SET request_id = request_id WHERE id = 1")  # 1205 the first time

    try:
        with pytest.raises(S.OperationalError):
            S.run_transaction(waiter, work)
    finally:
        other.join()
        waiter.execute_sql("DROP TABLE IF EXISTS test_review_side")
        holder.close_all()
        waiter.close_all()
    assert len(runs) == 1 and rows(14) == 1  # today: run twice, 2 rows
