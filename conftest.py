"""pytest, here at the repository's root so that it holds for `pytest notebooks/X.ipynb` too: the
notebooks' kernels (started by nbval, with this process's environment) run every `%%solution`
cell, so that each chapter's committed outputs, its solutions' among them, are checked
(solutions.py).

Under `make test` their ports come from the test worker's own range (tests/conftest.py), below
the system's range for outgoing connections. jupyter_client takes five free ports from that range
for each kernel and frees them for the kernel to bind: with the tests' many connections one was at
times taken meanwhile, and the kernel died at its start ("Kernel died before replying to
kernel_info"; jupyter_client issue 487, nbmake issue 129). Outside a worker (two learners of one
shared server run pytest at once, on one DB_PORT), jupyter_client picks them as usual.

After each file a worker also waits until that file's connections have left its server, so that
the next file finds the server as a learner would."""
import os
import socket
import time
from contextlib import closing, suppress
from pathlib import Path

import pytest
from jupyter_client.connect import LocalPortCache

os.environ["COURSE_SOLUTIONS"] = "run"
WORKERS_HOME = Path(__file__).resolve().parent / ".mysql" / "workers"  # each make test worker's server: tests/conftest.py
KERNEL_PORTS = 300  # ten ports from DB_PORT + 300 on: two kernels' worth, a worker's own
LEFT_CONNECTIONS_WAIT_S = 10  # how long a file's connections may take to leave the worker's server


class KernelPortsOfThisWorker(LocalPortCache):
    """jupyter_client's cache of kernel ports, handing out this worker's own (or, all taken, its usual)."""

    def find_available_port(self, ip):
        worker = os.environ.get("PYTEST_XDIST_WORKER")
        if worker is None:
            return super().find_available_port(ip)
        # (+ 10 per worker: with tests/ in the run each worker has a DB_PORT of its own already, without them not)
        first = int(os.environ.get("DB_PORT", "13306")) + KERNEL_PORTS + 10 * int(worker.removeprefix("gw"))
        for port in range(first, min(first + 10, 32768)):
            if port not in self.currently_used_ports and _bindable(ip, port):
                self.currently_used_ports.add(port)
                return port
        return super().find_available_port(ip)


def _bindable(ip, port):
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the kernel's ZeroMQ binds
        try:
            probe.bind((ip, port))
        except OSError:
            return False
    return True


KernelPortsOfThisWorker.instance()  # the one jupyter_client's LocalPortCache.instance() returns from now on


@pytest.hookimpl(trylast=True)  # after the file's own fixtures are torn down
def pytest_runtest_teardown(item, nextitem):
    """A file done, wait until no connection of the course's user is left on this worker's server:
    a query the server still runs for a client that gave up (a SELECT SLEEP past a read timeout)
    ends in its own time, and 00_setup's SHOW PROCESSLIST, next, counted it. A connection still
    there after LEFT_CONNECTIONS_WAIT_S is a leak: it fails the file that left it, and is killed,
    so that the next file starts clean."""
    worker = os.environ.get("PYTEST_XDIST_WORKER")
    if nextitem is not None and nextitem.path == item.path:
        return
    # only on a server of the worker's own (tests/conftest.py's); elsewhere it may be shared: the
    # other workers', a learner's with a lab open on it
    if worker is None or os.environ.get("COURSE_SERVER_DIR") != str(WORKERS_HOME / worker):
        return
    import MySQLdb
    import config  # here: tests/conftest.py sets this worker's DB_PORT before config is read
    import localdb
    deadline = time.monotonic() + LEFT_CONNECTIONS_WAIT_S
    while True:
        overdue = time.monotonic() > deadline
        try:
            with closing(localdb.course().root_connection()) as root:
                cursor = root.cursor()
                cursor.execute("SELECT ID, COMMAND, TIME, INFO FROM information_schema.PROCESSLIST WHERE USER = %s",
                               (config.DB_USER,))
                left = cursor.fetchall()
                for connection_id, *_ in left if overdue else ():
                    with suppress(MySQLdb.OperationalError):  # it ended meanwhile: 1094
                        cursor.execute(f"KILL {int(connection_id)}")
        except MySQLdb.OperationalError:
            return  # the server is not running: nothing is left on it
        if not left:
            return
        if overdue:
            pytest.fail(f"{item.path.name} left {len(left)} connection(s) of {config.DB_USER} on the server "
                        f"after it ended (id, command, seconds, statement): {left}", pytrace=False)
        time.sleep(0.1)
