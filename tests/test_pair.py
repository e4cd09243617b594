"""The replica pair and its failover, for real: two MariaDB servers replicating, HAProxy in front."""
import threading
import time

import pytest
from peewee import ProgrammingError

import app
import measuring
import models
import pair
import strategies as S

INSERT = "INSERT INTO pair_test (request_id) VALUES (%s)"


@pytest.fixture
def semisync(server_up):
    with pair.running("semisync"):
        yield


@pytest.fixture
def asynchronous(server_up):
    with pair.running("async"):
        yield


def through_the_proxy(cls=S.SafeReconnectMySQLDatabase, **options):
    return S.database(cls, port=pair.proxy_port(), **options)


def make_table(db):
    db.execute_sql("CREATE TABLE IF NOT EXISTS pair_test (id INT AUTO_INCREMENT PRIMARY KEY, request_id INT NOT NULL)")


def count_on(name, request_id):
    db = S.database(port=pair.port_of(name))
    try:
        return db.execute_sql("SELECT COUNT(*) FROM pair_test WHERE request_id = %s", (request_id,)).fetchone()[0]
    finally:
        db.close_all()


def wait_until_replicated(request_id=0, rows=0, timeout=10):
    """Until the replica has the table, and ``rows`` rows of ``request_id`` in it."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            if count_on(pair.replica(), request_id) >= rows:
                return
        except ProgrammingError:
            pass  # 1146: the table is not there yet
        assert time.monotonic() < deadline, "not replicated"
        time.sleep(0.05)


def test_the_replica_follows_the_primary_and_refuses_writes(semisync):
    db = through_the_proxy()
    make_table(db)
    db.execute_sql(INSERT, (1,))
    wait_until_replicated(1)
    status = pair.replica_status(pair.replica())
    assert status["Slave_IO_Running"] == status["Slave_SQL_Running"] == "Yes"
    replica = S.database(port=pair.port_of(pair.replica()))
    with pytest.raises(S.OperationalError) as refused:
        replica.execute_sql(INSERT, (2,))
    assert S.error_code(refused.value) == S.READ_ONLY  # the course's user cannot write on a replica
    db.close_all()
    replica.close_all()


def test_after_a_failover_through_haproxy_the_next_request_is_served(asynchronous):
    strategy = S.SafeReconnect(through_the_proxy())
    with strategy.request() as db:
        make_table(db)
    assert measuring.attempt(strategy, lambda db: db.execute_sql(INSERT, (3,)).rowcount) == measuring.Outcome(1)
    wait_until_replicated(3)
    old = pair.primary()
    pair.crash_primary()
    promotion = threading.Timer(1.0, pair.promote_replica)  # meanwhile no node takes writes: HAProxy has none to offer
    promotion.start()
    started = time.monotonic()
    assert measuring.attempt(strategy, lambda db: db.execute_sql(INSERT, (4,)).rowcount) == measuring.Outcome(1)
    assert time.monotonic() - started > 0.5  # it waited for a server that takes writes
    promotion.join()
    assert pair.primary() != old and count_on(pair.primary(), 4) == 1 and count_on(pair.primary(), 3) == 1
    assert measuring.attempt(strategy, measuring.select_one) == measuring.Outcome(1)
    strategy.close()


def test_the_app_serves_the_next_request_after_a_failover_through_haproxy(semisync):
    models.seed(S.database(port=pair.proxy_port()))
    wait_until_person_replicated()
    strategy = S.SafeReconnect(through_the_proxy())
    server = app.Server(app.App(strategy), threads=2)
    try:
        assert server.get("/person/first").startswith("200")
        pair.failover(promote_after=0.5)
        assert server.get("/person/first") == '200 {"id": 1, "firstname": "John", "surname": "Bob"}'
        assert server.get_each_thread("/person/first") == {'200 {"id": 1, "firstname": "John", "surname": "Bob"}': 2}
    finally:
        server.stop()
        strategy.close()


def wait_until_person_replicated(timeout=10):
    deadline = time.monotonic() + timeout
    replica = S.database(port=pair.port_of(pair.replica()))
    while True:
        try:
            if replica.execute_sql("SELECT COUNT(*) FROM person").fetchone()[0] == 3:
                break
        except ProgrammingError:
            pass  # 1146: the table is not there yet
        assert time.monotonic() < deadline, "person not replicated"
        time.sleep(0.05)
    replica.close_all()


def test_a_transaction_on_a_read_only_server_is_run_again_where_writes_are_taken(asynchronous):
    db = through_the_proxy()
    make_table(db)
    wait_until_replicated()
    pair.crash_primary()
    replica = S.database(S.SafeReconnectMySQLDatabase, hosts=[("127.0.0.1", pair.port_of(pair.replica()))])
    promotion = threading.Timer(1.0, pair.promote_replica)
    promotion.start()
    tries = []

    def two_inserts(db):
        tries.append(1)
        db.execute_sql(INSERT, (5,))
        db.execute_sql(INSERT, (5,))

    S.run_transaction(replica, two_inserts)  # 1290 at its first insert: TransactionLost, then run again
    promotion.join()
    assert count_on(pair.primary(), 5) == 2 and len(tries) >= 2
    db.close_all()
    replica.close_all()


def test_a_list_of_hosts_is_walked_for_the_one_that_takes_writes(asynchronous):
    hosts = [("127.0.0.1", pair.port_of("b")), ("127.0.0.1", pair.port_of("a"))]  # the replica first
    db = S.database(S.SafeReconnectMySQLDatabase, hosts=hosts)
    make_table(db)
    db.execute_sql(INSERT, (6,))
    assert count_on("a", 6) == 1
    wait_until_replicated(6, 1)  # asynchronous: the table could still be missing on b when a dies
    pair.failover()
    db.execute_sql(INSERT, (7,))  # a is gone: b, promoted, takes it
    assert count_on("b", 7) == 1
    db.close_all()


def test_haproxy_sends_connections_only_to_the_node_that_takes_writes(asynchronous):
    replica = pair.replica()
    assert pair.proxy_state(pair.primary()) == "UP" and pair.proxy_state(replica) == "DOWN"  # from the start
    assert on_which_port(pair.port_of(replica)) == pair.port_of(replica)
    ports = {on_which_port(pair.proxy_port()) for _ in range(10)}
    assert ports == {pair.port_of(pair.primary())}


def on_which_port(port):
    """The port of the server that a new connection to ``port`` reaches."""
    db = S.database(port=port)
    try:
        return db.execute_sql("SELECT @@port").fetchone()[0]
    finally:
        db.close_all()


def test_a_crashed_old_primary_that_starts_again_takes_no_write(asynchronous):
    db = through_the_proxy()
    make_table(db)
    wait_until_replicated()
    old = pair.primary()
    pair.failover()
    pair.start_again(old)  # on the data it had: it starts read-only
    assert pair.admin(old, "SELECT @@read_only") == ((1,),)
    direct = S.database(port=pair.port_of(old))
    with pytest.raises(S.OperationalError) as refused:
        direct.execute_sql(INSERT, (9,))
    assert S.error_code(refused.value) == S.READ_ONLY
    direct.close_all()
    deadline = time.monotonic() + 1.5  # five health checks and more: it never passes one
    while time.monotonic() < deadline:
        assert on_which_port(pair.proxy_port()) == pair.port_of(pair.primary()) != pair.port_of(old)
        assert pair.proxy_state(old) == "DOWN"
        time.sleep(0.1)
    db.execute_sql(INSERT, (10,))
    assert count_on(pair.primary(), 10) == 1 and count_on(old, 10) == 0
    db.close_all()
