"""Every strategy against every fault, on the real server: what each chapter claims, asserted."""
import time

import MySQLdb
import pytest

import faults
import measuring
import strategies as S
from conftest import request_table

READ = measuring.select_one


def outcomes(strategy, fault, requests=3, work=READ):
    """One good request, then ``fault(strategy)``, then ``requests`` more: each ``ok`` or an error code."""
    assert measuring.attempt(strategy, work).ok
    fault(strategy)
    return [measuring.attempt(strategy, work).code for _ in range(requests)]


def kill_between(strategy):
    if not strategy.db.is_closed():  # per-request holds no connection between requests
        faults.kill(S.connection_id(strategy.db))


def expire(strategy):
    with strategy.request() as db:
        faults.expire_after(db, 1)
        expiring = S.connection_id(db)
    faults.wait_until_closed([expiring])  # per-request's has closed at the request's end already


def restart(strategy):
    message = faults.restart_server()
    if message.startswith("skipped"):
        pytest.skip(message)


@pytest.fixture
def make(server_up):
    made = []

    def _make(name, **kwargs):
        strategy = S.STRATEGIES[name](**kwargs)
        made.append(strategy)
        return strategy

    yield _make
    for strategy in made:
        strategy.close()


def test_wait_until_closed_returns_once_the_server_has_hung_up(connect):
    expiring, live = connect(), connect()
    expiring.cursor().execute("SET SESSION wait_timeout = 1")
    started = time.monotonic()
    faults.wait_until_closed([expiring.thread_id()])
    assert 0.9 < time.monotonic() - started < 5
    with pytest.raises(MySQLdb.OperationalError):
        expiring.cursor().execute("SELECT 1")  # the server hung up
    with pytest.raises(TimeoutError, match=f"connections \\[{live.thread_id()}\\]"):
        faults.wait_until_closed([live.thread_id()], timeout=0.2)


BETWEEN = {"kill": kill_between, "expire": expire, "restart": restart}
EXPECTED = {  # after each fault between requests: the next three requests
    "naive": {"kill": [2013, 2006, 2006], "expire": [2006, 2006, 2006], "restart": [2013, 2006, 2006]},
    "idle_ping": {"kill": [2013, "ok", "ok"], "expire": ["ok"] * 3, "restart": [2013, "ok", "ok"]},
}


# idle_ping pings only a connection idle past its window. A kill or a restart strikes well within
# one of 10 s (a busy machine can take over a second to restart); an expired connection has been
# idle for its wait_timeout, 1 s, well past one of 0.5 s.
IDLE_PING_WINDOW = {"kill": 10, "restart": 10, "expire": 0.5}


@pytest.mark.parametrize("fault", BETWEEN)
@pytest.mark.parametrize("name", S.STRATEGIES)
def test_faults_between_requests(make, name, fault):
    expected = EXPECTED.get(name, {}).get(fault, ["ok"] * 3)
    options = {"window": IDLE_PING_WINDOW[fault]} if name == "idle_ping" else {}
    assert outcomes(make(name, **options), BETWEEN[fault]) == expected


def slow_query_killed(db):
    with faults.kill_during(S.connection_id(db)):
        return db.execute_sql("SELECT SLEEP(2)").fetchone()[0]


@pytest.mark.parametrize("name,expected", [
    ("naive", [2013, 2006]), ("per_request", [2013, "ok"]), ("ping", [2013, "ok"]), ("idle_ping", [2013, "ok"]),
    ("peewee_reconnect", ["ok", "ok"]), ("safe_reconnect", ["ok", "ok"]),  # a read is retried
])
def test_a_kill_in_the_middle_of_a_query(make, name, expected):
    strategy = make(name)
    assert [measuring.attempt(strategy, slow_query_killed).code, measuring.attempt(strategy, READ).code] == expected


@pytest.fixture
def events(server_up):
    with request_table("test_event") as count:
        yield count


def insert_with_cut(link, request_id):
    def work(db):
        link.cut_next_reply()
        db.execute_sql("INSERT INTO test_event (request_id) VALUES (%s)", (request_id,))
    return work


@pytest.mark.parametrize("name,result,rows", [
    ("naive", "OperationalError", 1), ("per_request", "OperationalError", 1), ("ping", "OperationalError", 1),
    ("peewee_reconnect", "ok", 2),  # retried after the server had done it: one write, two rows
    ("safe_reconnect", "OutcomeUnknown", 1),  # told the caller instead
])
def test_a_reply_lost_after_a_write(make, events, name, result, rows):
    with faults.LinkCutter() as link:
        strategy = make(name, db=S.database(S.STRATEGIES[name].database_class, port=link.port))
        assert measuring.attempt(strategy, READ).ok  # connected before the link is armed
        outcome = measuring.attempt(strategy, insert_with_cut(link, 7))
        assert link.cuts == 1
    assert outcome.kind == result
    assert events(7) == rows


def test_safe_reconnect_retries_a_write_declared_idempotent(make, server_up):
    db = S.database()
    db.execute_sql("CREATE TABLE IF NOT EXISTS test_keyed (request_id INT PRIMARY KEY)")
    try:
        with faults.LinkCutter() as link:
            strategy = make("safe_reconnect", db=S.database(S.SafeReconnectMySQLDatabase, port=link.port))
            measuring.attempt(strategy, READ)

            def keyed_insert(db):
                link.cut_next_reply()
                with db.idempotent():
                    return db.execute_sql("INSERT IGNORE INTO test_keyed (request_id) VALUES (7)").rowcount

            assert measuring.attempt(strategy, keyed_insert) == measuring.Outcome(0)  # the retry found the row there
        assert db.execute_sql("SELECT COUNT(*) FROM test_keyed").fetchone()[0] == 1
    finally:
        db.execute_sql("DROP TABLE test_keyed")
        db.close()


def test_safe_reconnect_retries_a_write_that_was_never_sent(make, events):
    strategy = make("safe_reconnect")
    expire(strategy)  # the server hangs up before the write: the client sees 2006 and nothing ran
    assert measuring.attempt(strategy, lambda db: db.execute_sql("INSERT INTO test_event (request_id) VALUES (8)")).ok
    assert events(8) == 1


@pytest.mark.parametrize("name", ["peewee_reconnect", "safe_reconnect"])
def test_no_reconnect_inside_a_transaction(make, events, name):
    strategy = make(name)

    def transfer(db):
        with db.atomic():
            db.execute_sql("INSERT INTO test_event (request_id) VALUES (9)")
            faults.kill(S.connection_id(db))
            db.execute_sql("INSERT INTO test_event (request_id) VALUES (9)")

    assert measuring.attempt(strategy, transfer).code in (2006, 2013)
    assert events(9) == 0  # the first insert was rolled back with the connection, not replayed
    assert measuring.attempt(strategy, READ).ok


def test_ping_cannot_close_the_race(make):
    strategy = make("ping")
    with strategy.request():
        pass  # the ping said alive ...
    with pytest.raises(S.OperationalError) as error:
        faults.kill(S.connection_id(strategy.db))  # ... and the connection dies before the query
        strategy.db.execute_sql("SELECT 1")
    assert S.error_code(error.value) == 2013


def test_per_request_closes_its_connection_even_when_the_view_fails(make):
    strategy = make("per_request")
    with pytest.raises(ZeroDivisionError):
        with strategy.request():
            1 / 0
    assert strategy.db.is_closed()


def test_safe_reconnect_waits_for_a_restarting_server(make):
    strategy = make("safe_reconnect")
    assert measuring.attempt(strategy, READ) == measuring.Outcome(1)
    with faults.server_down(1.0) as what_happened:
        if what_happened.startswith("skipped"):
            pytest.skip(what_happened)
        started = time.monotonic()
        assert measuring.attempt(strategy, READ) == measuring.Outcome(1)
        assert time.monotonic() - started > 0.5  # it waited, instead of failing at once
