"""Shared fixtures: the tests run against a real local server: the one `make test` started, or, in
each of its worker processes, one of the worker's own."""
import os
import re
import signal
import socket
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import MySQLdb
import pytest

ROOT = Path(__file__).resolve().parent.parent

# make test runs the tests in several processes (pytest-xdist), and each needs a server of its own:
# tests restart it, and kill every connection of the course's user. Worker gwN's is on DB_PORT +
# 500 (N + 1), in .mysql/workers/gwN: each worker's ports are the 500 from there (its replica pair
# and Galera cluster just above it, Galera's group ports 100 above, its broker 200 above, its
# kernels from 300 + 10 N above: conftest.py). Set before config is imported, and inherited by the
# notebooks' kernels and by `make` run from a test.
WORKER = os.environ.get("PYTEST_XDIST_WORKER")
WORKER_PORTS = 500
if WORKER and "DB_HOST" not in os.environ:
    base = int(os.environ.get("DB_PORT", "13306"))  # config.LOCAL_PORT: config cannot be imported yet
    os.environ["DB_PORT"] = str(base + WORKER_PORTS * (int(WORKER[2:]) + 1))
    os.environ["COURSE_SERVER_DIR"] = str(ROOT / ".mysql" / "workers" / WORKER)

import config
import localdb


def pytest_configure(config):
    """Before make test's workers start: their ports must stay below 32768, where the kernel's range
    for outgoing connections begins (a port there may be taken at any time)."""
    workers = getattr(config.option, "numprocesses", None)
    if WORKER or not isinstance(workers, int) or "DB_HOST" in os.environ:
        return
    base, span = int(os.environ.get("DB_PORT", "13306")), WORKER_PORTS * (workers + 1)
    if base + span > 32768:
        raise pytest.UsageError(f"{workers} test workers take the {span - WORKER_PORTS} ports above DB_PORT + "
                                f"{WORKER_PORTS - 1}: with DB_PORT={base} they pass 32767. Set DB_PORT to at most "
                                f"{32768 - span}, or fewer TEST_WORKERS")


def pytest_sessionstart(session):
    if WORKER and config.LOCAL_SERVER:
        localdb.start()


def pytest_sessionfinish(session):
    if WORKER and config.LOCAL_SERVER:
        localdb.stop()  # as it was found: its data stays, for a quick start next time


# make test hands out whole files (a notebook runs in one kernel), to a worker as it becomes free:
# the longest start first, or a worker picks up a half-minute chapter when the rest are nearly done.
# Its 2 cores are what bounds the run, so among the first are those that keep the cores busy
# (05_threads, test_threads, test_localdb) beside those that mostly wait (the clusters, the chaos
# runs). Longest first by their times in a make test on 2 cores; the others follow in their usual order.
LONGEST_FIRST = ["09_frameworks", "12_scoreboard", "05_threads", "test_bench", "08b_galera", "test_threads",
                 "test_localdb", "08_failover", "test_galera", "07_network", "test_asyncio", "test_chaos_galera",
                 "11_managed", "test_strategies", "test_pair", "test_network", "test_review_findings", "test_managed",
                 "07b_distance", "test_semisync", "test_chaos_cluster", "test_frameworks", "10_asyncio", "03_ping",
                 "04_reconnect", "01_naive", "test_transactions", "test_instructors", "test_lab", "test_promises",
                 "test_app", "test_binder", "test_review_frameworks"]


def pytest_collection_modifyitems(items):
    rank = {stem: place for place, stem in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.stem, len(rank)))  # stable: a file's own order is kept


try:
    import playwright  # noqa: F401
except ImportError:  # make test installs the tests' packages, not the browser's: make test-browser runs these
    collect_ignore = ["browser"]

# Headless Chromium as the browser tests start it: without the background-networking flags it keeps
# trying to reach Google's hosts, which this machine's closed network refuses (docs/make_pictures.py
# has its own copy: docs/ is not a package)
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--disable-quic"]


@pytest.fixture
def connect():
    """Open MySQLdb connections with the course's settings; all are closed afterwards."""
    opened = []

    def _connect(**overrides):
        connection = MySQLdb.connect(**{**config.connect_kwargs(), **overrides})
        opened.append(connection)
        return connection

    yield _connect
    for connection in opened:
        try:
            connection.close()
        except MySQLdb.Error:
            pass


@pytest.fixture
def server_up():
    """The local server is running before and after the test, whatever the test did to it."""
    if not config.LOCAL_SERVER:
        pytest.skip("DB_HOST points at your own server: the course does not stop or restart it")
    localdb.start()
    yield
    localdb.start()


@contextmanager
def request_table(name):
    """A fresh table ``name`` of rows carrying a request id (an AUTO_INCREMENT key and no other, so
    a write applied twice shows as two rows); yields a function counting the rows of a request id.
    Dropped after."""
    import strategies

    admin = strategies.database()
    admin.execute_sql(f"CREATE TABLE IF NOT EXISTS {name} (id INT AUTO_INCREMENT PRIMARY KEY, request_id INT NOT NULL)")
    admin.execute_sql(f"TRUNCATE TABLE {name}")
    try:
        yield lambda request_id: admin.execute_sql(
            f"SELECT COUNT(*) FROM {name} WHERE request_id = %s", (request_id,)).fetchone()[0]
    finally:
        admin.execute_sql(f"DROP TABLE {name}")
        admin.close_all()


@pytest.fixture
def safe(server_up):
    """A database of the safe reconnect's; its connections closed after."""
    import strategies

    db = strategies.database(strategies.SafeReconnectMySQLDatabase)
    yield db
    db.close_all()


def kill_and_wait(db):
    """``KILL`` the calling thread's connection of ``db``, and wait until the server has let it go."""
    import faults
    import strategies

    faults.kill(strategies.connection_id(db))
    faults.wait_until_closed([strategies.connection_id(db)])


@contextmanager
def ruled_engine(port=None, **options):
    """A SQLAlchemy engine (to ``port``: a relay's, say) with chapter 09's rule (sqlalchemy_rule) installed;
    disposed after."""
    from sqlalchemy import create_engine

    import sqlalchemy_rule

    engine = create_engine(config.sql_url(port=port), **options)
    sqlalchemy_rule.install(engine)
    try:
        yield engine
    finally:
        engine.dispose()


@pytest.fixture
def engine():
    """``ruled_engine()`` to the course's server, with pre-ping."""
    with ruled_engine(pool_pre_ping=True) as engine:
        yield engine


def kill_held(runner):
    """``KILL`` the connection an ORM Session or a SQLAlchemy Connection holds, and wait until the
    server has let it go. The id is the one the client knows from the handshake: no statement is
    sent (a function call may read as one that commits)."""
    from sqlalchemy.orm import Session

    import faults

    held = runner.connection() if isinstance(runner, Session) else runner
    connection_id = held.connection.dbapi_connection.thread_id()
    faults.kill(connection_id)
    faults.wait_until_closed([connection_id])


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_python(code, **env):
    """Run ``code`` in a fresh Python with the given environment variables; return the result."""
    environment = {**os.environ, **env}
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=environment, cwd=ROOT)


@contextmanager
def running_lab(*make_args, seconds=90):
    """`make lab` as the README runs it, with ``make_args``; yields the URL with its token."""
    port = free_port()
    lab = subprocess.Popen(["make", "lab", f"LAB_PORT={port}", *make_args], cwd=ROOT, stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, text=True, start_new_session=True,
                           # no browser to open in a test; and a learner's kernels, that run no solution unasked
                           env={**{k: v for k, v in os.environ.items() if k != "COURSE_SOLUTIONS"}, "BROWSER": "true"})
    try:
        deadline = time.monotonic() + seconds
        for line in lab.stdout:
            found = re.search(rf"http://127\.0\.0\.1:{port}/lab/tree/work\?token=\w+", line)
            if found:
                break
            assert time.monotonic() < deadline, f"JupyterLab printed no URL in {seconds} s"
        else:
            raise AssertionError("make lab exited before JupyterLab printed its URL")
        yield found.group(0)
    finally:
        os.killpg(lab.pid, signal.SIGTERM)
        try:
            lab.wait(timeout=30)
        except subprocess.TimeoutExpired:  # seen once under load: say what it printed, and stop it for good
            os.killpg(lab.pid, signal.SIGKILL)
            said = lab.communicate()[0][-2000:]
            raise AssertionError(f"JupyterLab did not stop within 30 s of SIGTERM; the end of what it printed:\n{said}")
