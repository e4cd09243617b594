"""Chapter 09's promises: the ORM session recovers after a disconnect the way the chapter teaches
(rollback, then run again where the rule allows), and a worker idle past wait_timeout fails
without the chapter's fix and succeeds with it. All against the real server, real KILLs and a
real wait_timeout; the worker is a real Celery worker on the course's Redis."""
import pytest
from sqlalchemy import create_engine, exc, text
from sqlalchemy.orm import Session

import config
import faults
import models
import sqlalchemy_rule
from conftest import kill_held, request_table, ruled_engine
from errors import OutcomeUnknown, TransactionLost


def test_a_session_whose_connection_died_refuses_work_until_rolled_back():
    engine = create_engine(config.sql_url(), pool_pre_ping=True)  # SQLAlchemy alone, without the recipe
    with Session(engine) as session:
        kill_held(session)  # pre-ping cannot help: the session holds its connection
        with pytest.raises(exc.OperationalError) as lost:
            session.execute(text("SELECT 1"))
        with pytest.raises(exc.PendingRollbackError):
            session.execute(text("SELECT 1"))
        session.rollback()
        assert session.execute(text("SELECT 1")).scalar() == 1
    engine.dispose()
    assert lost.value.orig.args[0] == 2013 and lost.value.connection_invalidated


def test_the_recipe_runs_a_read_again_once_on_a_new_connection(engine):
    with Session(engine) as session:
        session.execute(text("SELECT 1"))
        session.commit()  # the transaction ended: nothing of it is lost with the connection
        before = session.execute(text("SELECT CONNECTION_ID()")).scalar()
        session.commit()
        faults.kill(before)
        faults.wait_until_closed([before])
        after = sqlalchemy_rule.execute(session, text("SELECT CONNECTION_ID()")).scalar()
        assert after != before


def test_the_recipe_says_transaction_lost_and_the_session_recovers_after_rollback(engine):
    with request_table("frameworks_rows") as rows, Session(engine) as session:
        session.execute(text("INSERT INTO frameworks_rows (request_id) VALUES (1)"))
        kill_held(session)
        with pytest.raises(TransactionLost):
            sqlalchemy_rule.execute(session, text("INSERT INTO frameworks_rows (request_id) VALUES (1)"))
        session.rollback()  # what the chapter teaches: then run the unit of work again, whole
        session.execute(text("INSERT INTO frameworks_rows (request_id) VALUES (1)"))
        session.execute(text("INSERT INTO frameworks_rows (request_id) VALUES (1)"))
        session.commit()
        assert rows(1) == 2


def test_a_lost_answer_to_commit_is_outcome_unknown_and_not_run_again():
    with request_table("frameworks_rows") as rows, faults.LinkCutter() as link:
        with ruled_engine(link.port) as relayed, Session(relayed) as session:
            session.execute(text("INSERT INTO frameworks_rows (request_id) VALUES (2)"))
            link.cut_next_reply(session.connection().connection.dbapi_connection, statement="COMMIT")
            with pytest.raises(OutcomeUnknown):
                session.commit()
        assert rows(2) == 1  # it was applied, though the app could not be told: hence "unknown"


def test_a_write_lost_as_the_first_of_sqlalchemys_transaction_runs_again_once():
    with request_table("frameworks_rows") as rows, faults.LinkCutter() as link:
        with ruled_engine(link.port) as relayed, Session(relayed) as session:
            session.execute(text("SELECT 1"))
            session.commit()
            link.cut_next_reply(session.connection().connection.dbapi_connection, statement="INSERT")
            # autocommit off: only a COMMIT could have kept it, and the transaction was this write alone
            sqlalchemy_rule.execute(session, text("INSERT INTO frameworks_rows (request_id) VALUES (3)"))
            session.commit()
        assert rows(3) == 1  # the first copy went with its connection; the second was committed


@pytest.fixture(scope="module")
def broker_running():
    """The worker's broker for this file's workers, stopped after them if it was not running before."""
    import broker

    was_running = broker.course().pid() is not None
    broker.start()
    yield
    if not was_running:
        broker.stop()


def first_tasks_then_idle(worker, tasks):
    """Each task once (each opens a connection), then idle until the server has hung up on every
    one (their wait_timeout of 1 s ran out), then each once more: what they answer then."""
    first = [worker.call(*task) for task in tasks]
    faults.wait_until_closed([answer["connection_id"] for answer in first])
    return {task: worker.call(*task) for task in tasks}


TASKS = [("django_first_person", "default"), ("django_first_person", "persistent"),
         ("django_first_person", "health_checks"), ("sqlalchemy_first_person",)]


def test_a_worker_without_a_fix_fails_after_a_quiet_night(broker_running):
    import course_worker

    models.seed()
    with course_worker.running("none", wait_timeout=1) as worker:
        after = first_tasks_then_idle(worker, TASKS)
    for task, answer in after.items():
        assert answer == "failed: OperationalError 2006", task


def test_a_worker_with_the_fix_survives_except_where_it_does_not_reach(broker_running):
    import course_worker

    models.seed()
    with course_worker.running("signals", wait_timeout=1) as worker:
        after = first_tasks_then_idle(worker, TASKS)
    firstnames = {task: answer["firstname"] if isinstance(answer, dict) else answer for task, answer in after.items()}
    assert firstnames == {
        ("django_first_person", "default"): "John",  # close_old_connections(): CONN_MAX_AGE 0 closes at each task
        ("django_first_person", "persistent"): "failed: OperationalError 2006",  # not yet old: left open, dead
        ("django_first_person", "health_checks"): "John",  # ... unless CONN_HEALTH_CHECKS pings it first
        ("sqlalchemy_first_person",): "John",  # pool_pre_ping
    }


@pytest.fixture
def autocommit_through_a_relay():
    """An engine on the driver's autocommit (as bench/frameworks.py runs them), through a relay, with the recipe."""
    with faults.LinkCutter() as link:
        engine = create_engine(config.sql_url(port=link.port), isolation_level="AUTOCOMMIT")
        sqlalchemy_rule.install(engine)
        yield engine, link
        engine.dispose()


@pytest.mark.parametrize("declared, raised, copies", [(False, OutcomeUnknown, 1), (True, None, 2)])
def test_a_write_whose_answer_was_lost_runs_again_only_when_declared_idempotent(autocommit_through_a_relay, declared,
                                                                                raised, copies):
    engine, link = autocommit_through_a_relay
    insert = "INSERT INTO frameworks_rows (request_id) VALUES (4)"
    with request_table("frameworks_rows") as rows, engine.connect() as connection:
        link.cut_next_reply(connection.connection.dbapi_connection, statement="INSERT")
        if raised:
            with pytest.raises(raised):
                sqlalchemy_rule.execute(connection, insert)
        else:
            sqlalchemy_rule.execute(connection, insert, idempotent=True)
        assert rows(4) == copies  # the server ran the first: declared, it ran again (a keyed write absorbs that)


def test_a_read_the_clients_read_timeout_gave_up_on_is_not_run_again():
    from bench.chaos_app import RunCounter

    engine = create_engine(config.sql_url(), connect_args={"read_timeout": 1})
    sqlalchemy_rule.install(engine, read_timeout=1)
    counter = RunCounter("AS frameworks_slow", longest=3)  # the server's copies of it, seen in its process list
    try:
        with engine.connect() as connection, pytest.raises(exc.OperationalError) as timed_out:
            sqlalchemy_rule.execute(connection, text("SELECT SLEEP(1.5) AS frameworks_slow"))
    finally:
        counter.ended.set()
    engine.dispose()
    assert timed_out.value.orig.args[0] == 2013 and counter.copies() == 1  # the server may run it still: once


def test_the_broker_starts_and_stops_on_its_own_port():
    import broker

    if config.LOCAL_SERVER:
        assert broker.course().port == config.DB_PORT + broker.OFFSET
    was_running = broker.course().pid() is not None
    assert broker.start().endswith(f"127.0.0.1:{broker.course().port}") and broker.status().startswith("running")
    if not was_running:
        assert broker.stop() == "stopped" and broker.status() == "not running"


def test_two_accounts_of_a_shared_server_get_a_broker_each():
    from conftest import run_python

    show = "import broker; b = broker.course(); print(b.port, b.home.name)"
    first, second = (run_python(show, DB_HOST="127.0.0.1", DB_PORT="13506", DB_USER=user).stdout.split()
                     for user in ("learner01", "learner02"))
    assert first != second and all(13706 <= int(port) < 13806 for port in (first[0], second[0]))


def test_the_courses_own_rows_need_none_of_chapter_09s_packages():
    from conftest import run_python

    blocked = "import sys; sys.modules.update(django=None, celery=None)\n"
    result = run_python(blocked + "from bench import chaos, overhead; overhead.contenders()[0].close(); print('ok')")
    assert result.stdout.strip() == "ok", result.stderr
