"""Threads and worker processes: one connection per thread and per process, for real."""
import itertools
import json
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from peewee import MySQLDatabase

import app
import config
import faults
import measuring
import strategies as S


@pytest.mark.parametrize("name", S.STRATEGIES)
def test_every_strategy_serves_eight_threads_at_once(server_up, name):
    strategy = S.STRATEGIES[name]()
    try:
        def work(db):
            measuring.select_one(db)
            return threading.get_ident(), S.connection_id(db)

        with ThreadPoolExecutor(8) as pool:
            results = list(pool.map(lambda _: measuring.attempt(strategy, work), range(200)))
        assert {result.kind for result in results} == {"ok"}
        threads = {}
        for thread, connection in (result.value for result in results):
            threads.setdefault(thread, set()).add(connection)
        if name != "per_request":  # one connection for each thread, none shared
            assert all(len(connections) == 1 for connections in threads.values())
            assert len({c for connections in threads.values() for c in connections}) == len(threads) > 1
    finally:
        strategy.close()


def child_process(work):
    """Run ``work()`` in a forked child; True when it returned True there."""
    pid = os.fork()
    if pid == 0:
        try:
            os._exit(0 if work() else 1)
        except BaseException:
            os._exit(2)
    return os.waitpid(pid, 0)[1] == 0


def test_a_forked_child_opens_its_own_connection_and_leaves_the_parents_alone(server_up):
    db = S.database()
    parents = S.connection_id(db)
    opened, done, in_a_thread = threading.Event(), threading.Event(), []

    def hold_a_connection():  # another thread of the parent holds one too, during the fork
        in_a_thread.append(S.connection_id(db))
        opened.set()
        done.wait()
        in_a_thread.append(measuring.select_one(db))

    thread = threading.Thread(target=hold_a_connection)
    thread.start()
    opened.wait()
    assert child_process(lambda: S.connection_id(db) not in (parents, *in_a_thread)
                         and measuring.select_one(db) == 1 and db.connection_ids() == [S.connection_id(db)]
                         and db.close())  # a child closes what it holds, as a worker does when it exits
    assert S.connection_id(db) == parents and measuring.select_one(db) == 1  # still alive, after the child exited
    assert set(db.connection_ids()) == {parents, in_a_thread[0]} <= set(faults.connections_of_the_course_user())
    done.set()
    thread.join()
    assert in_a_thread[1] == 1  # the thread's connection works too
    db.close_all()


def test_without_the_guard_a_child_ends_its_parents_connection(server_up):
    db = MySQLDatabase(**{"database": config.DB_SCHM, **{k: v for k, v in config.connect_kwargs().items() if k != "database"}})
    parents = db.connection().thread_id()
    assert child_process(lambda: db.connection().thread_id() == parents and db.close())  # the child uses it, closes it ...
    with pytest.raises(S.OperationalError) as lost:
        db.execute_sql("SELECT 1")  # ... and its goodbye to the server ended the parent's connection
    assert S.error_code(lost.value) in (2006, 2013)
    db.dispose()


def load(url, clients=8, requests=10, until=None, answers=None):
    """GETs of ``url`` from ``clients`` threads at once: ``requests`` each, or until ``until`` is set.
    Each answer goes into ``answers`` as it comes, a list another thread may watch."""
    answers = [] if answers is None else answers

    def client(_):
        for sent in itertools.count():
            if (until.is_set() if until else sent >= requests):
                return
            answers.append(app.get(url))

    with ThreadPoolExecutor(clients) as pool:
        list(pool.map(client, range(clients)))
    return answers


@pytest.mark.parametrize("name", [app.SEED, "naive"])
def test_preloaded_workers_share_the_seeds_connection_and_not_a_strategys(server_up, name):
    # sync workers, as gunicorn's default; a worker left waiting for an answer the other took is killed after 3 s
    with app.Gunicorn(name, workers=2, threads=1, preload=True, timeout=3) as server:
        answers = load(server.url + "/whoami", requests=25)
    served = [json.loads(a.split(" ", 1)[1]) for a in answers if a.startswith("200")]  # shared, some may fail
    processes = {answer["process"] for answer in served}
    connections = {answer["connection"] for answer in served}
    if name == app.SEED:
        # two workers, and any gunicorn forked in place of one it killed for waiting: all share the master's
        assert len(processes) >= 2 and len(connections) == 1
    else:  # nothing waits, so nothing is killed: the two workers, each on a connection of its own
        assert len(processes) == 2 and len(connections) == 2
        assert len(served) == len(answers) and all(answer["own_answer"] for answer in served)


@pytest.mark.parametrize("name", S.STRATEGIES)
def test_gunicorn_workers_survive_kills_during_load(server_up, name):
    with app.Gunicorn(name, workers=2, threads=4, preload=True) as server:
        done, during = threading.Event(), []

        def kill_four_times():  # after every 25 answers, however slow the machine: kills land mid-load
            deadline = time.monotonic() + 60
            for kill in range(1, 6):
                while len(during) < 25 * kill and time.monotonic() < deadline:
                    time.sleep(0.01)
                if kill < 5:
                    faults.kill_all(faults.connections_of_the_course_user())
            done.set()

        killer = threading.Thread(target=kill_four_times)
        killer.start()
        load(server.url + "/whoami", until=done, answers=during)
        killer.join()
        time.sleep(1.2)  # past idle_ping's window
        after = load(server.url + "/whoami")
    assert len(during) >= 125 and not [a for a in during + after if "ProgrammingError" in a]
    served = [json.loads(a.split(" ", 1)[1]) for a in during + after if a.startswith("200")]
    assert all(answer["own_answer"] for answer in served)  # no process read another's answer
    if name == "naive":
        assert any(not a.startswith("200") for a in after)
    else:
        assert all(a.startswith("200") for a in after), sorted(set(after))
