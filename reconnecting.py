"""Reconnecting, with patience: wait for a server that accepts connections, or one that takes
writes, for at most ``reconnect_timeout`` seconds in all; with ``hosts``, walk them for one.

The safe reconnect (``safe_reconnect.py``) reconnects only where its rule says so; how it waits
for a server that is restarting, or for a failover, is here.
"""
import select
import time

from peewee import OperationalError

import hosts as host_walk
import server_flags
from connections import CourseMySQLDatabase, close_quietly
from errors import CANNOT_CONNECT, READ_ONLY, SERVER_LOST, error_code


class ReconnectingMySQLDatabase(CourseMySQLDatabase):
    """The course's database, with ``reconnect()`` and ``wait_for_a_writable_server()``."""

    def __init__(self, *args, reconnect_timeout=20.0, hosts=None, **kwargs):
        kwargs.setdefault("multi_statements", False)  # one statement a call: the server's flags are then its own
        super().__init__(*args, **kwargs)
        self.reconnect_timeout = reconnect_timeout
        self.hosts = hosts  # [(host, port), ...] to walk for a server that takes writes; None: the one in the settings

    def _connect(self):
        """A connection to the server in the settings; with ``hosts``, to the first that takes
        writes, else the first that answers (see ``hosts.py``). Each reports its session changes."""
        if not server_flags.AVAILABLE:
            raise RuntimeError("the safe reconnect reads the server's status flags through libmariadb (MariaDB "
                               "Connector/C), and this mysqlclient is built against another client library")
        if self.hosts:
            conn = host_walk.connect_to_writable(self.hosts, self._connect_to)
        else:
            conn = super()._connect()
        conn.query("SET SESSION session_track_state_change = ON")  # the server flags every session change
        self._records[conn].poller = poller = select.poll()  # has the server hung up? see server_hung_up()
        poller.register(conn.fileno(), select.POLLIN)
        return conn

    def _connect_to(self, host, port):
        saved = self.connect_params
        self.connect_params = {**saved, "host": host, "port": port}
        try:
            return super()._connect()
        finally:
            self.connect_params = saved

    def _pauses(self, since=None):
        """Growing pauses between attempts, from 50 ms to 1 s, until ``reconnect_timeout`` after
        ``since`` (now) would pass: the deadline is set here, not at the first pause."""
        deadline = (time.monotonic() if since is None else since) + self.reconnect_timeout

        def pauses(pause=0.05):
            while time.monotonic() + pause <= deadline:
                yield pause
                pause = min(pause * 2, 1.0)
        return pauses()

    def reconnect(self, pauses=None):
        """Replace the connection, waiting with a growing pause while nothing accepts connections,
        for at most ``reconnect_timeout`` seconds in all (each attempt bounded by ``connect_timeout``).

        Behind a TCP hop (a proxy, a relay) a server that is down accepts nothing yet the hop does:
        the handshake is lost instead (2013, "reading initial communication packet"). While
        connecting, nothing of the app's has been sent, so that is "cannot connect" too."""
        close_quietly(self)
        pauses = self._pauses() if pauses is None else pauses
        while True:
            try:
                return self.connect()
            except OperationalError as error:
                pause = next(pauses, None)
                if error_code(error) not in CANNOT_CONNECT | {SERVER_LOST} or pause is None:
                    raise
                time.sleep(pause)

    def wait_for_a_writable_server(self, pauses=None):
        """Reconnect until the server takes writes (``@@read_only`` off, and not a Galera node
        outside the cluster: 1047), within the same ``reconnect_timeout``: through a proxy that
        still sends connections to a replica or a cut-off node, or while a replica is promoted."""
        pauses = self._pauses() if pauses is None else pauses
        while True:
            self.reconnect(pauses)
            if host_walk.takes_writes(self._state.conn):
                return
            pause = next(pauses, None)
            if pause is None:
                raise OperationalError(READ_ONLY, f"no server took writes within {self.reconnect_timeout} s: "
                                                  "every one answered read-only, or not ready")
            time.sleep(pause)
