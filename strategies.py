"""The connection strategies: how an app holds its MySQL connection, each in one place.

Every strategy runs "a request" the same way, so that notebooks, tests and benchmarks can swap
one for another::

    with strategy.request() as db:        # the app's request-start hook runs here ...
        db.execute_sql("SELECT 1")
                                          # ... and its request-end hook here, even after an error

Every thread has a connection of its own (peewee's thread-local state), and a process made by a
fork opens its own instead of using its parent's (``connections.py``). The safe reconnect's rule
is in ``rule.py``, the rest of it in ``safe_reconnect.py``; the faults that break connections are
in ``faults.py``; running and timing requests is in ``measuring.py``.
"""
import time
from contextlib import contextmanager

from peewee import InternalError, OperationalError
from playhouse.shortcuts import ReconnectMixin

import config
from connections import MAX_AGE, CourseMySQLDatabase, close_quietly
from errors import (DEADLOCK, DISCONNECTED, LOCK_WAIT_TIMEOUT, NOT_SENT, READ_ONLY, REFUSED, SERVER_GONE, SERVER_LOST,
                    OutcomeUnknown, SessionLost, TransactionLost, error_code)
from safe_reconnect import SafeReconnectMySQLDatabase

__all__ = ["DISCONNECTED", "NOT_SENT", "READ_ONLY", "SERVER_GONE", "SERVER_LOST", "MAX_AGE", "OperationalError",
           "OutcomeUnknown", "SessionLost", "TransactionLost", "error_code", "CourseMySQLDatabase",
           "SafeReconnectMySQLDatabase"]

# How long the client waits before it gives up, in seconds (mysqlclient's connect arguments).
# Without them a connection the network dropped silently blocks a request for about 15 minutes,
# until Linux stops retransmitting unacknowledged data; TCP keepalive, which probes only an idle
# connection, would notice one only after 2 hours. With them every strategy has a bound: see
# Strategy.longest_wait().
TIMEOUTS = {
    "connect_timeout": 5,  # a handshake takes milliseconds, even across a continent
    "read_timeout": 30,  # the longest a statement may take
    "write_timeout": 30,  # sending a statement: only a huge one into a stalled link takes long
}


def database(cls=None, port=None, **options):
    """A new peewee database with the course's settings; ``port`` reaches it through a relay.

    Each thread that uses it gets a connection of its own (peewee's default, ``thread_safe=True``).
    ``options`` go to ``MySQLdb.connect`` as well (``init_command``, and ``TIMEOUTS``, which they
    override), or to the database class (``max_age``).
    """
    settings = {**config.connect_kwargs(), **TIMEOUTS, **options}
    schema = settings.pop("database")
    if port is not None:
        settings["port"] = port
    return (cls or CourseMySQLDatabase)(schema, **settings)


def connection_id(db):
    """The server's id for the calling thread's connection of ``db`` (what ``SHOW PROCESSLIST``
    and ``KILL`` use). The client knows it from the handshake, so asking sends nothing, even on a
    dead connection; a closed ``db`` connects first."""
    return db.connection().thread_id()


class Strategy:
    """How an app holds its connection. Subclasses fill in the two request hooks.

    The hooks run in the thread that serves the request, on that thread's connection.
    """

    name = "strategy"
    database_class = CourseMySQLDatabase

    def __init__(self, db=None):
        self.db = db if db is not None else database(self.database_class)

    def on_request_start(self):
        """Runs before the view, like simplerr's ``on_pre_response``."""

    def on_request_end(self, error=None):
        """Runs after the view, even when it failed (then with the error), like simplerr's ``on_post_response``."""

    @contextmanager
    def request(self):
        try:
            self.on_request_start()  # inside: a start hook that fails is still followed by the end hook
            yield self.db
        except BaseException as error:
            self.on_request_end(error)
            raise
        self.on_request_end()

    def connection_ids(self):
        """The server ids of the connections the app holds, one per thread that served a request."""
        return self.db.connection_ids()

    def longest_wait(self):
        """The longest, in seconds, that a request can wait on connections on top of its own
        statements' time: one connection found dead only by waiting for its answer (a silent drop:
        ``read_timeout``, or ``write_timeout`` for a statement stuck on its way) and one new
        connection (``connect_timeout``). After that the strategy has a new connection, or fails.
        None without those timeouts: then a silent drop holds a request for about 15 minutes.
        """
        params = self.db.connect_params
        if not all(params.get(name) for name in TIMEOUTS):
            return None
        return max(params["read_timeout"], params["write_timeout"]) + params["connect_timeout"]

    def close(self):
        """Let go of every connection, at the end of a demo."""
        if hasattr(self.db, "close_all"):
            self.db.close_all()
        else:
            close_quietly(self.db)


class Naive(Strategy):
    """One connection, opened when the app starts and kept for ever: the seed app's way.

    (In a threaded server each thread opens its own on first use, and keeps it for ever too.)
    """

    name = "naive"

    def __init__(self, db=None):
        super().__init__(db)
        self.db.connect()


class PerRequest(Strategy):
    """Connect when a request starts, close when it ends."""

    name = "per_request"

    def on_request_start(self):
        close_quietly(self.db)  # one opened outside a request (a job reading its to-do list) is not this request's
        self.db.connect()

    def on_request_end(self, error=None):
        close_quietly(self.db)


def retire_if_too_old(db):
    """Close the calling thread's connection of ``db`` when it has lived longer than its
    ``max_age``; True if it did. The next statement opens a new one (peewee connects on first use).

    A connection retired before it can be idle for longer than the network's or the server's idle
    limit is never found dropped: the bound holds for the idle time too, since a connection idle
    that long is at least that old. Call it where nothing of the session is needed any more: a
    request's start, outside a transaction.
    """
    if not db.too_old():
        return False
    close_quietly(db)
    return True


def reconnect_if_dead(db):
    """Ping the calling thread's connection of ``db``; when the ping fails, replace it. Returns
    True if it reconnected.

    peewee's ``is_connection_usable()`` pings without mysqlclient's deprecated ``reconnect``
    argument; the reconnect goes through peewee, so peewee's state stays right.
    """
    if db.is_connection_usable():
        return False
    close_quietly(db)
    db.connect()
    return True


class Ping(Strategy):
    """Keep one connection; before each request check it with a ping, and reconnect if it is dead."""

    name = "ping"

    def on_request_start(self):
        retire_if_too_old(self.db)
        reconnect_if_dead(self.db)


class IdlePing(Strategy):
    """Like ``Ping``, but ping only when the connection has been idle longer than ``window`` seconds.

    A connection used a moment ago is very likely alive, so busy apps skip most pings; the price is
    that a connection killed within the window is found only by the query that fails. When it was
    last used is kept in the connection's record: each thread's, and a new one starts unknown.
    """

    name = "idle_ping"

    def __init__(self, db=None, window=1.0):
        super().__init__(db)
        self.window = window

    def on_request_start(self):
        retire_if_too_old(self.db)
        record = self.db.record()
        if record is None or time.monotonic() - record.last_used > self.window:
            reconnect_if_dead(self.db)

    def on_request_end(self, error=None):
        record = self.db.record()
        if record is not None:  # a request that failed may have left it dead: let the next one check
            record.last_used = float("-inf") if error else time.monotonic()


class ReconnectMySQLDatabase(ReconnectMixin, CourseMySQLDatabase):
    """peewee's own reconnecting database: retries any statement once after a disconnect error."""


class PeeweeReconnect(Strategy):
    """peewee's ``ReconnectMixin``: run the statement; on a disconnect error reconnect, run it again."""

    name = "peewee_reconnect"
    database_class = ReconnectMySQLDatabase


class SafeReconnect(Strategy):
    """The course's reconnect: run again once, only where that cannot write twice, continue half a
    transaction, or run without the session (``rule.RULE``; ``safe_reconnect.py``)."""

    name = "safe_reconnect"
    database_class = SafeReconnectMySQLDatabase

    def __init__(self, db=None):
        super().__init__(db)
        self.on_request_start = self.db.new_request  # all a request's start needs (one call, not two)

    def longest_wait(self):
        """The longest a request can wait on connections on top of its own statements' time: a
        statement that fails late but before ``read_timeout`` (a kill) and its one retry, which
        may wait the whole ``read_timeout`` (or ``write_timeout``); reconnecting, at most
        ``reconnect_timeout`` in all, plus the last attempt that began before it ran out: a
        handshake (``connect_timeout``) and the session's setup (a query: ``read_timeout``), on
        each host walked, with one more query there (``@@read_only``). None without timeouts."""
        params = self.db.connect_params
        if not all(params.get(name) for name in TIMEOUTS):
            return None
        statement = max(params["read_timeout"], params["write_timeout"])
        hosts = self.db.hosts or []
        attempt = params["connect_timeout"] + params["read_timeout"]
        walk = len(hosts) * (attempt + params["read_timeout"]) if hosts else attempt
        return 2 * statement + self.db.reconnect_timeout + walk


STRATEGIES = {cls.name: cls for cls in (Naive, PerRequest, Ping, IdlePing, PeeweeReconnect, SafeReconnect)}


def run_transaction(db, work, attempts=3, idempotent=False):
    """Run ``work(db)`` in one transaction and return what it returns; run all of it again when it
    failed in a way that applied nothing: a connection lost before ``COMMIT``, or a server that
    refused it (``TransactionLost``: read-only, or a Galera node not ready; then once one takes writes), a deadlock (1213) or a lock
    wait timeout (1205). At most ``attempts`` times, with a short pause.

    A lost answer to ``COMMIT`` (``OutcomeUnknown``) is run again only when the transaction is
    ``idempotent``, for example because it writes rows keyed by an id the client chose.
    """
    for attempt in range(1, attempts + 1):
        try:
            with db.atomic():
                return work(db)
        except OutcomeUnknown:
            if not idempotent or attempt == attempts:
                raise
        except TransactionLost as error:
            if attempt == attempts:
                raise
            if error_code(error) in REFUSED:
                db.wait_for_a_writable_server()  # a failover under way: run it again where writes are taken
        except (OperationalError, InternalError) as error:
            if error_code(error) not in (DEADLOCK, LOCK_WAIT_TIMEOUT) or attempt == attempts:
                raise
        time.sleep(0.05 * attempt)
