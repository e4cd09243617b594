"""app.py: the seed's routes over real HTTP, and the request hooks around every view."""
import json

import pytest

import app
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
