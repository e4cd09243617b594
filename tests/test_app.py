"""app.py: the seed's routes over real HTTP, and the request hooks around every view."""
import json

import pytest

import app
import config
import models
import faults
import strategies as S


@pytest.fixture
def serve(server_up):
    models.seed()
    servers = []

    def _serve(strategy):
        servers.append(app.Server(app.App(strategy)))
        return servers[-1]

    yield _serve
    for server in servers:
        server.stop()
        server.app.strategy.close()


def test_the_seed_routes(serve):
    server = serve(S.PerRequest())
    assert server.get("/person/first") == '200 {"id": 1, "firstname": "John", "surname": "Bob"}'
    status, body = server.get("/person/all").split(" ", 1)
    assert status == "200" and [p["firstname"] for p in json.loads(body)] == ["John", "Jane", "Michael"]
    assert 'href="/person/all"' in server.get("/")
    assert server.get("/nowhere").startswith("404")


def test_a_killed_naive_connection_breaks_every_later_request(serve):
    naive = S.Naive()
    server = serve(naive)
    assert server.get_each_thread("/person/first") == {'200 {"id": 1, "firstname": "John", "surname": "Bob"}': 8}
    assert len(naive.connection_ids()) == 9  # one per server thread, and the one Naive opened at the start
    for connection_id in naive.connection_ids():
        faults.kill(connection_id)
    lost = "500 Internal Server Error\n\npeewee.OperationalError: (2013, 'Lost connection to server during query')"
    gone = "500 Internal Server Error\n\npeewee.OperationalError: (2006, 'Server has gone away')"
    assert server.get_each_thread("/person/first") == {lost: 8}
    assert server.get_each_thread("/person/first") == {gone: 8}


def test_each_server_thread_has_a_connection_of_its_own(serve):
    server = serve(S.Ping())
    answers = [json.loads(server.get("/whoami").split(" ", 1)[1]) for _ in range(16)]
    connections = [answer["connection"] for answer in answers]
    assert len(set(connections)) == 8 and connections[:8] == connections[8:]  # the threads take turns
    assert all(answer["own_answer"] for answer in answers)


def test_the_end_hook_runs_when_the_view_fails(serve, monkeypatch):
    strategy = S.PerRequest()
    server = serve(strategy)
    monkeypatch.setitem(app.VIEWS, "person_first", lambda db: 1 / 0)
    assert server.get("/person/first").startswith("500 Internal Server Error")
    assert strategy.db.is_closed()


def answered_by(answers):
    """The processes that answered /whoami with 200."""
    return {json.loads(a.split(" ", 1)[1])["process"] for a in answers if a.startswith("200")}


@pytest.mark.parametrize("threads", ["4", "1"])
def test_make_app_with_the_seed_shares_the_masters_connection_only_with_one_thread_per_worker(server_up, threads):
    """What the README says of `make app STRATEGY=seed`: at its default shape (2 workers of 4 threads)
    every request thread opens a connection of its own, and the seed's answers are right; with
    APP_THREADS=1 (sync workers, serving in the thread that inherited the master's connection) both
    workers use that one connection."""
    import subprocess
    import time
    from concurrent.futures import ThreadPoolExecutor

    from conftest import ROOT

    port = config.DB_PORT + 8  # the worker's own range: its server, its pair on +1..+3, its Galera on +4..+7
    served = subprocess.Popen(["make", "-s", "app", "STRATEGY=seed", f"APP_PORT={port}", f"APP_THREADS={threads}"],
                              cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while app.get(url + "/", timeout=2).startswith("000"):
            assert served.poll() is None and time.monotonic() < deadline, "make app did not serve"
            time.sleep(0.2)
        answers = []
        with ThreadPoolExecutor(8) as pool:  # on a busy machine one worker may take many in a row: until both answer
            while len(answers) < 160 and len(answered_by(answers)) < 2 and all(a.startswith("200") for a in answers):
                answers += pool.map(lambda _: app.get(url + "/whoami", timeout=5), range(16))
    finally:
        # make exits at once; a worker left waiting for an answer the other took lived on (make
        # test's check found its connection 15 s later)
        app.stop_group(served, grace=5)
    whoami = [json.loads(answer.split(" ", 1)[1]) for answer in answers if answer.startswith("200")]
    connections = {a["connection"] for a in whoami}
    # (how often each worker answered is timing)
    if threads == "4":
        assert len(whoami) == len(answers) and all(a["own_answer"] for a in whoami)
        assert len(connections) > 2  # the request threads' own: none is the master's
    else:  # two processes on the master's one connection: one served both, or answers crossed, or requests failed
        shared = any(len({a["process"] for a in whoami if a["connection"] == c}) > 1 for c in connections)
        broke = len(whoami) < len(answers) or not all(a["own_answer"] for a in whoami)
        assert shared or broke, whoami  # (after it breaks, peewee connects anew: more connections follow)
