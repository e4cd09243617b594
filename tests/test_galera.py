"""The Galera cluster, for real: three MariaDB nodes that all take writes, HAProxy in front of
them. One cluster for the file (it takes seconds to build); each test leaves it whole again."""

import pytest

import config
import galera
import localdb
import strategies as S

COUNT = "SELECT COUNT(*) FROM galera_test WHERE request_id = %s"


@pytest.fixture(scope="module")
def cluster():
    if not config.LOCAL_SERVER:
        pytest.skip("DB_HOST points at your own server: the course starts no cluster there")
    localdb.start()
    with galera.running():
        db = S.database(S.SafeReconnectMySQLDatabase, port=galera.proxy_port())
        db.execute_sql("CREATE TABLE galera_test (id INT PRIMARY KEY, request_id INT NOT NULL)")
        db.close_all()
        for name in galera.NAMES:  # each node has applied it: a read that waits for the cluster
            waiting = on(name, init_command="SET SESSION wsrep_sync_wait = 1")
            waiting.execute_sql("SELECT COUNT(*) FROM galera_test")
            waiting.close_all()
        yield


def on(name, **options):
    return S.database(S.SafeReconnectMySQLDatabase, port=galera.port_of(name), **options)


def test_every_node_takes_writes_and_a_read_elsewhere_waits_for_them_with_wsrep_sync_wait(cluster):
    writers = {name: on(name) for name in galera.NAMES}
    for number, (name, db) in enumerate(writers.items(), 1):
        db.execute_sql("INSERT INTO galera_test VALUES (%s, 1)", (number,))
    reader = on("g1", init_command="SET SESSION wsrep_sync_wait = 1")  # each read waits for what the cluster committed
    assert reader.execute_sql(COUNT, (1,)).fetchone()[0] == 3
    assert galera.wsrep_status("g1")["cluster_size"] == "3"
    for db in [reader, *writers.values()]:
        db.close_all()


def test_a_certification_conflict_is_1213_at_commit_and_run_transaction_runs_it_again(cluster):
    first, second = on("g1"), on("g2")
    first.execute_sql("INSERT INTO galera_test VALUES (10, 2)")
    with pytest.raises(S.OperationalError) as conflict:
        with second.atomic():
            second.execute_sql("UPDATE galera_test SET request_id = 3 WHERE id = 10")  # no lock: another node's row
            with first.atomic():
                first.execute_sql("UPDATE galera_test SET request_id = 4 WHERE id = 10")  # committed first
    assert S.error_code(conflict.value) == S.DEADLOCK  # 1213: the whole transaction was rolled back
    tries = []

    def update(db):
        tries.append(1)
        db.execute_sql("UPDATE galera_test SET request_id = 5 WHERE id = 10")
        if len(tries) == 1:
            with first.atomic():  # another node commits the same row meanwhile, once
                first.execute_sql("UPDATE galera_test SET request_id = 6 WHERE id = 10")

    S.run_transaction(second, update)
    reader = on("g1", init_command="SET SESSION wsrep_sync_wait = 1")  # g2's commit is applied on g1 a moment later
    assert len(tries) == 2 and reader.execute_sql(COUNT, (5,)).fetchone()[0] == 1
    for db in (first, second, reader):
        db.close_all()


def test_a_node_cut_off_runs_nothing_says_1047_and_haproxy_sends_it_no_connection(cluster):
    galera.isolate("g3")
    try:
        cut_off = S.database(port=galera.port_of("g3"))  # the course's plain database: errors as they come
        assert cut_off.execute_sql("SELECT 1").fetchone() == (1,)  # a statement that touches no table runs
        for statement in (COUNT, "INSERT INTO galera_test VALUES (20, 7)"):
            with pytest.raises(S.OperationalError) as refused:
                cut_off.execute_sql(statement, (7,) if "%s" in statement else None)
            assert S.error_code(refused.value) == galera.NOT_READY  # 1047: nothing ran
        cut_off.close_all()
        galera.proxy().wait_for("g3", ("DOWN",))
        through = S.database(port=galera.proxy_port())
        ports = set()
        for _ in range(6):  # new connections, round robin over the nodes HAProxy sees UP
            ports.add(through.execute_sql("SELECT @@port").fetchone()[0])
            through.close()
        assert ports == {galera.port_of("g1"), galera.port_of("g2")}
        through.execute_sql("INSERT INTO galera_test VALUES (21, 8)")  # the other two take writes still
        through.close_all()
    finally:
        galera.isolate("g3", cut=False)
    back = on("g3", init_command="SET SESSION wsrep_sync_wait = 1")
    assert back.execute_sql(COUNT, (8,)).fetchone()[0] == 1  # caught up
    back.close_all()


def test_the_safe_reconnect_moves_a_refused_statement_to_a_node_in_the_cluster(cluster):
    nodes = [("127.0.0.1", galera.port_of(name)) for name in ("g3", "g1")]
    db = on("g3", hosts=nodes, reconnect_timeout=5)
    assert db.execute_sql("SELECT @@port").fetchone()[0] == galera.port_of("g3")  # g3 first, while it is in
    galera.isolate("g3")
    try:
        db.execute_sql("INSERT INTO galera_test VALUES (40, 11)")  # 1047 on g3: nothing ran; run again where taken
        assert db.execute_sql("SELECT @@port").fetchone()[0] == galera.port_of("g1")
        assert db.execute_sql(COUNT, (11,)).fetchone()[0] == 1  # once
    finally:
        galera.isolate("g3", cut=False)
        db.close_all()


def test_a_killed_node_started_again_catches_up(cluster):
    galera.crash("g2")
    writer = on("g1")
    writer.execute_sql("INSERT INTO galera_test VALUES (30, 9)")
    galera.start_again("g2")
    reader = on("g2", init_command="SET SESSION wsrep_sync_wait = 1")
    assert reader.execute_sql(COUNT, (9,)).fetchone()[0] == 1
    for db in (writer, reader):
        db.close_all()
