"""The course's shared helpers: the connection strategies, the faults that break them, and a way
to measure them.

Every strategy runs "a request" the same way, so that notebooks, tests and benchmarks can swap
one for another::

    with strategy.request() as db:        # the app's request-start hook runs here ...
        db.execute_sql("SELECT 1")
                                          # ... and its request-end hook here, even after an error

The faults are real: a ``KILL`` from a connection of its own, a real ``wait_timeout``, a real
restart of the local server, and a TCP relay that cuts the link after the server has answered.
"""
import select
import socket
import statistics
import threading
import time
from contextlib import contextmanager

import MySQLdb
from peewee import InterfaceError, MySQLDatabase, OperationalError
from playhouse.shortcuts import ReconnectMixin

import config
import localdb

# Error codes that mean "this connection is gone" (MariaDB and MySQL client and server codes).
CONNECTION_KILLED = 1927  # MariaDB: the connection was killed while it ran a statement
SERVER_GONE = 2006  # the client could not send: the connection was already closed
SERVER_LOST = 2013  # the connection died while the client waited for the answer
IDLE_TIMEOUT = 4031  # MySQL 8.0.24+: the server closed an idle connection, with a message
DISCONNECTED = {CONNECTION_KILLED, SERVER_GONE, SERVER_LOST, IDLE_TIMEOUT}
# The statement certainly did not run: it was never sent, or the server hung up before reading it.
NOT_SENT = {SERVER_GONE, IDLE_TIMEOUT}
CANNOT_CONNECT = {2002, 2003}  # nothing listens: the server is down or restarting


def error_code(error):
    """The MySQL error number of a driver or peewee error, or None."""
    args = getattr(error, "args", ())
    return args[0] if args and isinstance(args[0], int) else None


def database(cls=MySQLDatabase, port=None, **options):
    """A new peewee database with the course's settings; ``port`` reaches it through a relay.

    Its one connection is shared by all threads (``thread_safe=False``; peewee's default keeps one
    per thread): the app serves one request at a time, in its server's thread, on the connection
    the notebook opened, can see in ``SHOW PROCESSLIST`` and can kill.
    """
    settings = dict(config.connect_kwargs(), thread_safe=False, **options)
    schema = settings.pop("database")
    if port is not None:
        settings["port"] = port
    return cls(schema, **settings)


def connection_id(db):
    """The server's id for ``db``'s connection (what ``SHOW PROCESSLIST`` and ``KILL`` use).

    The client knows it from the handshake, so asking sends nothing, even on a dead connection;
    a closed ``db`` connects first.
    """
    return db.connection().thread_id()


# ---------------------------------------------------------------------------------------------
# The strategies
# ---------------------------------------------------------------------------------------------


class Strategy:
    """How an app holds its connection. Subclasses fill in the two request hooks."""

    name = "strategy"
    database_class = MySQLDatabase

    def __init__(self, db=None):
        self.db = db if db is not None else database(self.database_class)

    def on_request_start(self):
        """Runs before the view, like simplerr's ``on_pre_response``."""

    def on_request_end(self, error=None):
        """Runs after the view, even when it failed (then with the error), like simplerr's ``on_post_response``."""

    @contextmanager
    def request(self):
        self.on_request_start()
        try:
            yield self.db
        except BaseException as error:
            self.on_request_end(error)
            raise
        self.on_request_end()

    def close(self):
        """Let go of the connection, at the end of a demo."""
        _close_quietly(self.db)


def _close_quietly(db):
    """Close ``db``'s connection; a dead one cannot be closed cleanly, and needs no more."""
    try:
        db.close()
    except (OperationalError, InterfaceError):
        db.dispose()


class Naive(Strategy):
    """One connection, opened when the app starts and kept for ever: the seed app's way."""

    name = "naive"

    def __init__(self, db=None):
        super().__init__(db)
        self.db.connect()


class PerRequest(Strategy):
    """Connect when a request starts, close when it ends."""

    name = "per_request"

    def on_request_start(self):
        self.db.connect()

    def on_request_end(self, error=None):
        _close_quietly(self.db)


def reconnect_if_dead(db):
    """Ping ``db``'s connection; when the ping fails, replace it. Returns True if it reconnected.

    peewee's ``is_connection_usable()`` pings without mysqlclient's deprecated ``reconnect``
    argument; the reconnect goes through peewee, so peewee's state stays right.
    """
    if db.is_connection_usable():
        return False
    _close_quietly(db)
    db.connect()
    return True


class Ping(Strategy):
    """Keep one connection; before each request check it with a ping, and reconnect if it is dead."""

    name = "ping"

    def on_request_start(self):
        reconnect_if_dead(self.db)


class IdlePing(Strategy):
    """Like ``Ping``, but ping only when the connection has been idle longer than ``window`` seconds.

    A connection used a moment ago is very likely alive, so busy apps skip most pings; the price is
    that a connection killed within the window is found only by the query that fails.
    """

    name = "idle_ping"

    def __init__(self, db=None, window=1.0):
        super().__init__(db)
        self.window = window
        self.last_used = float("-inf")

    def on_request_start(self):
        if time.monotonic() - self.last_used > self.window:
            reconnect_if_dead(self.db)

    def on_request_end(self, error=None):
        # A request that failed may have left the connection dead: let the next one check it.
        self.last_used = float("-inf") if error else time.monotonic()


class ReconnectMySQLDatabase(ReconnectMixin, MySQLDatabase):
    """peewee's own reconnecting database: retries any statement once after a disconnect error."""


class PeeweeReconnect(Strategy):
    """peewee's ``ReconnectMixin``: run the statement; on a disconnect error reconnect, run it again."""

    name = "peewee_reconnect"
    database_class = ReconnectMySQLDatabase


class OutcomeUnknown(OperationalError):
    """The connection died after a write was sent: the server may or may not have applied it.

    Retrying could apply it twice; giving up could lose it. Only the caller can tell, e.g. by
    looking for the row, or by retrying with a key that makes the write idempotent.
    """


def is_read(sql):
    """True for statements that change nothing, and so are safe to run twice."""
    return sql.lstrip(" (").split(None, 1)[0].upper() in {"SELECT", "SHOW", "DESCRIBE", "EXPLAIN"}


class SafeReconnectMySQLDatabase(MySQLDatabase):
    """Reconnect and retry once, but never inside a transaction and never where a retry could write twice.

    Before a statement, outside a transaction, a connection the server has already closed is
    replaced. After a disconnect error, outside a transaction:
    - a read is retried;
    - a write is retried when it certainly never ran (``NOT_SENT``), or when the caller declared
      it idempotent with ``idempotent_writes()`` (a client-chosen key with ``INSERT IGNORE`` or
      ``ON DUPLICATE KEY UPDATE``);
    - any other write raises ``OutcomeUnknown``.
    Reconnecting waits for a restarting server, with a bounded back-off.
    """

    def __init__(self, *args, reconnect_timeout=20.0, **kwargs):
        super().__init__(*args, **kwargs)
        self.reconnect_timeout = reconnect_timeout
        self._idempotent = threading.local()

    @contextmanager
    def idempotent_writes(self):
        """Declare that the writes in this block can run twice with the effect of once."""
        self._idempotent.on = True
        try:
            yield
        finally:
            self._idempotent.on = False

    def execute_sql(self, sql, params=None):
        if self.is_closed() or (not self.in_transaction() and self.server_hung_up()):
            self.reconnect()  # nothing has been sent on this connection yet: no risk to a write
        try:
            return super().execute_sql(sql, params)
        except OperationalError as error:
            code = error_code(error)
            if code not in DISCONNECTED or self.in_transaction():
                raise
            if not (is_read(sql) or code in NOT_SENT or getattr(self._idempotent, "on", False)):
                _close_quietly(self)
                raise OutcomeUnknown(
                    code, f"outcome unknown: the connection was lost after this write was sent ({error.args[1]}); "
                          "it may or may not have been applied, so it was not retried"
                ) from error
            self.reconnect()
            return super().execute_sql(sql, params)

    def server_hung_up(self):
        """True when the server has already closed this connection (or sent it a last error).

        An idle connection never has anything to read; when it does, the server is gone. It costs
        a system call, not a round trip, and finds most dead connections before a write is sent.
        """
        try:
            readable, _, _ = select.select([self.connection().fileno()], [], [], 0)
        except (OSError, ValueError, MySQLdb.Error):
            return True  # the client has closed it already, after an earlier error
        return bool(readable)

    def reconnect(self):
        """Replace the connection, waiting with a growing pause while nothing accepts connections."""
        _close_quietly(self)
        deadline = time.monotonic() + self.reconnect_timeout
        pause = 0.05
        while True:
            try:
                return self.connect()
            except OperationalError as error:
                if error_code(error) not in CANNOT_CONNECT or time.monotonic() + pause > deadline:
                    raise
                time.sleep(pause)
                pause = min(pause * 2, 1.0)


class SafeReconnect(Strategy):
    """The course's reconnect: retry once, only where a retry cannot write twice."""

    name = "safe_reconnect"
    database_class = SafeReconnectMySQLDatabase


STRATEGIES = {cls.name: cls for cls in (Naive, PerRequest, Ping, IdlePing, PeeweeReconnect, SafeReconnect)}


# ---------------------------------------------------------------------------------------------
# The faults
# ---------------------------------------------------------------------------------------------


def kill(connection_id):
    """``KILL`` a connection from a connection of its own, as an admin at the ``mysql>`` prompt would."""
    admin = MySQLdb.connect(**config.connect_kwargs())
    try:
        admin.cursor().execute(f"KILL {int(connection_id)}")
    finally:
        admin.close()


@contextmanager
def kill_during(connection_id, after=0.3):
    """Kill the connection ``after`` seconds into the block: run a slow query inside it."""
    timer = threading.Timer(after, kill, [connection_id])
    timer.start()
    try:
        yield
    finally:
        timer.join()


def expire_after(db, seconds=1):
    """Make the server drop ``db``'s connection once it has been idle ``seconds``: idle past it next.

    The real ``wait_timeout`` (8 hours by default), shortened for this one session.
    """
    db.execute_sql(f"SET SESSION wait_timeout = {int(seconds)}")


def restart_server():
    """Restart the local server, cutting every connection; with your own server, say it is skipped."""
    if not config.LOCAL_SERVER:
        return "skipped: DB_HOST points at your own server, and the course does not restart it"
    localdb.restart()
    return "server restarted"


@contextmanager
def server_down(seconds):
    """Stop the local server as the block starts and start it again ``seconds`` later, in the
    background; the block ends when the server is back. Yields what happened, in words."""
    if not config.LOCAL_SERVER:
        yield "skipped: DB_HOST points at your own server, and the course does not stop it"
        return
    localdb.stop()
    restart = threading.Timer(seconds, localdb.start)
    restart.start()
    try:
        yield f"server stopped; it starts again in {seconds} s"
    finally:
        restart.join()


class LinkCutter:
    """A TCP relay between the client and the server that can drop the next answer on the floor.

    ``cut_next_reply()`` arms it: the server's next answer on a connection open at that moment is
    read by the relay and not passed on, and both sides are hung up. The server did the work (a
    write is committed); the client sees 2013, lost connection during query. A connection opened
    later is not cut: its handshake goes through. Connect with ``database(port=relay.port)``.
    """

    def __init__(self, host=None, port=None):
        self.target = (host or config.DB_HOST, port or config.DB_PORT)
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.cuts = 0
        self._armed = set()  # the server-side sockets whose next answer is to be cut
        self._lock = threading.Lock()
        self._pairs = []
        threading.Thread(target=self._accept, daemon=True).start()

    def cut_next_reply(self):
        with self._lock:
            self._pairs = [(client, server) for client, server in self._pairs if server.fileno() != -1]
            self._armed = {server for _, server in self._pairs}

    def _accept(self):
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return  # closed
            try:
                server = socket.create_connection(self.target)
            except OSError:
                client.close()  # nothing to relay to: the client sees the server as down
                continue
            with self._lock:
                self._pairs.append((client, server))
            threading.Thread(target=self._pump, args=(client, server, False), daemon=True).start()
            threading.Thread(target=self._pump, args=(server, client, True), daemon=True).start()

    def _pump(self, source, sink, replies):
        while True:
            try:
                data = source.recv(65536)
            except OSError:
                data = b""
            if replies and data and self._take_cut(source):
                data = b""  # the answer is swallowed, and the link is cut
            if not data:
                for end in (source, sink):
                    _hang_up(end)
                return
            try:
                sink.sendall(data)
            except OSError:
                return

    def _take_cut(self, server):
        """True once, for the first answer from an armed connection."""
        with self._lock:
            if server not in self._armed:
                return False
            self._armed = set()
            self.cuts += 1
            return True

    def close(self):
        self.listener.close()
        for pair in self._pairs:
            for end in pair:
                _hang_up(end)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def _hang_up(sock):
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    sock.close()


# ---------------------------------------------------------------------------------------------
# Measuring
# ---------------------------------------------------------------------------------------------


def attempt(strategy, work):
    """Run ``work(db)`` as one request; return ``("ok", result)`` or ``("error", "ClassName(code, msg)")``."""
    try:
        with strategy.request() as db:
            return "ok", work(db)
    except (OperationalError, InterfaceError) as error:
        return "error", f"{type(error).__name__}{error.args!r}"


def select_one(db):
    """The smallest request: one round trip to the server."""
    return db.execute_sql("SELECT 1").fetchone()[0]


def table(db, sql, params=None):
    """The rows of a query as a pandas DataFrame, with the query's column names."""
    import pandas

    cursor = db.execute_sql(sql, params)
    return pandas.DataFrame(cursor.fetchall(), columns=[column[0] for column in cursor.description])


def measure(strategies, work=select_one, repeat=500):
    """Microseconds per request of each strategy on the same ``work``, without faults.

    The strategies take turns, request by request, so that all of them meet the same machine;
    compare them as ratios, not as absolute times.
    """
    samples = {strategy.name: [] for strategy in strategies}
    for _ in range(repeat):
        for strategy in strategies:
            start = time.perf_counter()
            with strategy.request() as db:
                work(db)
            samples[strategy.name].append((time.perf_counter() - start) * 1e6)
    return samples


def summarize(samples, floor="naive"):
    """From ``measure()``'s samples: each strategy's median and p99 in µs, and its median as a
    ratio to the ``floor`` strategy's, as a pandas DataFrame indexed by name."""
    import pandas

    rows = {name: {"median_us": statistics.median(values), "p99_us": statistics.quantiles(values, n=100)[98]}
            for name, values in samples.items()}
    summary = pandas.DataFrame.from_dict(rows, orient="index")
    summary["ratio"] = summary["median_us"] / summary.loc[floor, "median_us"]
    return summary
