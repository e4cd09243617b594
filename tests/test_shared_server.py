"""On a shared server (DB_HOST set), the course never restarts or stops the server: a restart
cuts every connection of the learner's own instead, and a server that is down is played by the
relay the client connects through. Each tried here against the real local server, with
``config.LOCAL_SERVER`` turned off as DB_HOST turns it off."""
import re
import time
from pathlib import Path

import MySQLdb
import pytest

import config
import faults
import measuring
import strategies as S

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def shared(server_up, monkeypatch):
    monkeypatch.setattr(config, "LOCAL_SERVER", False)


def uptime(connection):
    cursor = connection.cursor()
    cursor.execute("SHOW GLOBAL STATUS LIKE 'Uptime'")
    return int(cursor.fetchone()[1])


def test_a_restart_on_a_shared_server_cuts_every_connection_of_yours_and_leaves_the_server_up(shared, connect):
    naive = S.Naive()
    assert measuring.attempt(naive, measuring.select_one) == measuring.Outcome(1)
    watcher = connect()
    before = uptime(watcher)
    assert faults.restart_server() == faults.SHARED_RESTART
    assert [str(measuring.attempt(naive, measuring.select_one)) for _ in range(2)] == [
        "OperationalError(2013, 'Lost connection to server during query')",
        "OperationalError(2006, 'Server has gone away')"]  # as after a restart: chapter 01
    with pytest.raises(MySQLdb.OperationalError):
        uptime(watcher)  # every connection of the user's, not only the app's
    assert uptime(connect()) >= before  # the server itself ran on
    naive.close()


def test_a_server_down_on_a_shared_server_is_played_by_the_relay_for_as_long(shared, connect):
    direct = connect()
    with faults.LinkCutter() as relay:
        db = S.database(S.SafeReconnectMySQLDatabase, port=relay.port)
        assert measuring.select_one(db) == 1
        with faults.server_down(1.0, behind=relay) as what_happened:
            assert what_happened == faults.SHARED_DOWN.format(seconds=1.0)
            with pytest.raises(MySQLdb.OperationalError) as refused:
                MySQLdb.connect(**dict(config.connect_kwargs(), port=relay.port))
            started = time.monotonic()
            assert measuring.select_one(db) == 1  # the safe reconnect waited for it
            assert time.monotonic() - started > 0.5
        db.close_all()
    assert refused.value.args[0] == 2013 and "handshake" in refused.value.args[1]  # as chapter 07 shows
    assert uptime(direct) >= 0  # a connection that does not go through the relay never noticed


def test_a_server_down_on_a_shared_server_without_a_relay_says_it_is_skipped(shared):
    with faults.server_down(1.0) as what_happened:
        assert what_happened.startswith("skipped: ")


def test_the_sanitizers_read_what_a_shared_server_does_instead_as_the_local_server_s_words():
    from nbval.plugin import get_sanitize_patterns

    patterns = get_sanitize_patterns((ROOT / "notebooks" / "sanitize.cfg").read_text())

    def sanitize(text):
        for regex, replace in patterns:
            text = re.sub(regex, replace, text)
        return text

    assert sanitize(faults.SHARED_RESTART + "\nok: 1\n") == "server restarted\nok: 1\n"
    assert sanitize(faults.SHARED_DOWN.format(seconds=2.0) + "\n") == "server stopped; it starts again in 2.0 s\n"
