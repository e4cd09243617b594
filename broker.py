"""The background worker's broker: a Redis server of the course's own, started and stopped like
the database (chapter 09).

    python -m broker start | stop | status

It is Debian's ``redis-server`` (``bin/setup`` installs it), on 127.0.0.1 at ``DB_PORT + 200``
(13506 unless ``DB_PORT`` is set: each test worker's server has its own), in ``redis/`` beside the
database's data, keeping nothing on disk: a queue of a course's tasks need not outlive it. With
``DB_HOST`` set (a server of one's own, or a room's shared one, whose learners may share a
machine) a number from ``DB_USER`` is added to the port (0 to 99), and to the folder's name: each
account's worker takes only its own tasks.
"""
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import zlib
from dataclasses import dataclass
from pathlib import Path

import config
import localdb

OFFSET = 200  # above the pair's (+1..+3), Galera's (+4..+7) and its group's ports (+100..): free in every worker's range


@dataclass(frozen=True)
class Broker:
    """Where the broker listens and keeps its pid and log."""

    port: int
    home: Path

    @property
    def url(self):
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def pid_file(self):
        return self.home / "redis.pid"

    def pid(self):
        """The running server's pid, or None."""
        try:
            pid = int(self.pid_file.read_text())
            os.kill(pid, 0)
            return pid
        except (OSError, ValueError):
            return None


def course():
    """The course's broker: ``DB_PORT + 200``, in the database server's home (see above for ``DB_HOST``)."""
    if config.LOCAL_SERVER:
        return Broker(config.DB_PORT + OFFSET, localdb.HOME / "redis")
    account = zlib.crc32(config.DB_USER.encode()) % 100
    return Broker(config.DB_PORT + OFFSET + account, localdb.HOME / f"redis-{config.DB_USER}")


def _answers(port):
    with socket.socket() as probe:
        probe.settimeout(0.5)
        if probe.connect_ex(("127.0.0.1", port)):
            return False
        probe.sendall(b"PING\r\n")
        return probe.recv(16).startswith(b"+PONG")


def start(broker=None):
    """Start the broker unless it runs; wait until it answers ``PING``."""
    broker = broker or course()
    if broker.pid() is not None and _answers(broker.port):
        return f"running on 127.0.0.1:{broker.port}"
    program = shutil.which("redis-server") or shutil.which("redis-server", path="/usr/bin:/usr/sbin")
    if program is None:
        raise RuntimeError("redis-server is missing: run `bash bin/setup --frameworks` (Debian's redis-server), "
                           "or `brew install redis` on macOS")
    broker.home.mkdir(parents=True, exist_ok=True)
    subprocess.run([program, "--port", str(broker.port), "--bind", "127.0.0.1", "--dir", str(broker.home),
                    "--save", "", "--appendonly", "no", "--daemonize", "yes", "--pidfile", str(broker.pid_file),
                    "--logfile", str(broker.home / "redis.log")], check=True)
    deadline = time.monotonic() + 10
    while not _answers(broker.port):
        if time.monotonic() > deadline:
            raise RuntimeError(f"the broker did not answer on port {broker.port}: see {broker.home / 'redis.log'}")
        time.sleep(0.02)
    return f"started on 127.0.0.1:{broker.port}"


def stop(broker=None):
    """Stop the broker and wait until its process is gone."""
    broker = broker or course()
    pid = broker.pid()
    if pid is None:
        return "not running"
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + 10
    while broker.pid() is not None and time.monotonic() < deadline:
        time.sleep(0.02)
    return "stopped"


def status(broker=None):
    broker = broker or course()
    return f"running on 127.0.0.1:{broker.port}" if broker.pid() else "not running"


def main(argv=None):
    actions = {"start": start, "stop": stop, "status": status}
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1 or argv[0] not in actions:
        print(f"usage: python -m broker {{{'|'.join(actions)}}}", file=sys.stderr)
        return 2
    print(f"the worker's broker (Redis): {actions[argv[0]]()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
