"""The connection strategies: how an app holds its MySQL connection, each in one place.

Every strategy runs "a request" the same way, so that notebooks, tests and benchmarks can swap
one for another::

    with strategy.request() as db:        # the app's request-start hook runs here ...
        db.execute_sql("SELECT 1")
                                          # ... and its request-end hook here, even after an error

Every thread has a connection of its own (peewee's thread-local state), and a process made by a
fork opens its own instead of using its parent's. The faults that break them are in ``faults.py``;
running and timing requests is in ``measuring.py``.
"""
import os
import re
import select
import threading
import time
import weakref
from contextlib import contextmanager
from functools import lru_cache

import MySQLdb
from peewee import InterfaceError, InternalError, MySQLDatabase, OperationalError
from playhouse.shortcuts import ReconnectMixin

import config

# Error codes that mean "this connection is gone" (MariaDB and MySQL client and server codes).
CONNECTION_KILLED = 1927  # MariaDB: the connection was killed while it ran a statement
SERVER_GONE = 2006  # the client could not send: the connection was already closed
SERVER_LOST = 2013  # the connection died while the client waited for the answer
IDLE_TIMEOUT = 4031  # MySQL 8.0.24+: the server closed an idle connection, with a message
DISCONNECTED = {CONNECTION_KILLED, SERVER_GONE, SERVER_LOST, IDLE_TIMEOUT}
# The statement certainly did not run: it was never sent, or the server hung up before reading it.
NOT_SENT = {SERVER_GONE, IDLE_TIMEOUT}
CANNOT_CONNECT = {2002, 2003}  # nothing listens: the server is down or restarting
PACKET_TOO_LARGE = 1153  # a statement larger than the server's max_allowed_packet
READ_ONLY = 1290  # the server runs with --read-only (a replica, or a primary not yet promoted): nothing ran
# A transaction that failed with these applied nothing, and may be run again from its start.
DEADLOCK = 1213  # the server rolled the whole transaction back
LOCK_WAIT_TIMEOUT = 1205  # the statement failed; the transaction is rolled back by whoever retries it


def error_code(error):
    """The MySQL error number of a driver or peewee error, or None."""
    args = getattr(error, "args", ())
    return args[0] if args and isinstance(args[0], int) else None


# How long the client waits before it gives up, in seconds (mysqlclient's connect arguments).
# Without them a connection the network dropped silently blocks a request for about 15 minutes,
# until Linux stops retransmitting; TCP keepalive would notice only after 2 hours of silence.
# With them every strategy has a bound: see Strategy.longest_wait().
TIMEOUTS = {
    "connect_timeout": 5,  # a handshake takes milliseconds, even across a continent
    "read_timeout": 30,  # the longest a statement may take; gunicorn kills a request after 30 s anyway
    "write_timeout": 30,  # sending a statement: only a huge one into a stalled link takes long
}
# Retire a connection after this many seconds, before anything in between forgets it while it is
# idle: NAT tables and load balancers often do after 4 to 6 minutes, the server after wait_timeout.
MAX_AGE = 180


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


# ---------------------------------------------------------------------------------------------
# One connection per thread, and per process
# ---------------------------------------------------------------------------------------------

# Connections a forked child inherited from its parent: never closed from the child (see below).
_inherited_at_fork = []


class CourseMySQLDatabase(MySQLDatabase):
    """peewee's ``MySQLDatabase`` that knows the connections it opened, in every thread, and lets
    go of its parent's connections in a process made by ``fork()``.

    A forked child shares its parent's sockets. Were it to use one, two processes would talk over
    one connection and read each other's answers; were it to close one, it would send the server
    a goodbye that ends the parent's connection too. So in the child each inherited socket is
    pointed at ``/dev/null`` (the parent's stays open) and forgotten, and the child connects anew.
    """

    def __init__(self, *args, max_age=MAX_AGE, **kwargs):
        super().__init__(*args, **kwargs)
        self.max_age = max_age  # seconds a connection may live, or None: see retire_if_too_old()
        self._opened = weakref.WeakSet()  # every connection opened in this process, in any thread
        self_ref = weakref.ref(self)

        def before_fork():
            db = self_ref()
            if db is not None:  # held now, or the child would drop other threads' connections at once
                _inherited_at_fork.extend(db._opened)

        def after_fork_in_child():
            db = self_ref()
            if db is not None:
                db._forget_parents_connections()

        os.register_at_fork(before=before_fork, after_in_parent=_inherited_at_fork.clear,
                            after_in_child=after_fork_in_child)

    def _connect(self):
        return self._track(super()._connect())

    def _track(self, conn):
        """Remember a new connection, and when it was opened."""
        conn.opened_at = time.monotonic()
        self._opened.add(conn)
        return conn

    def too_old(self):
        """True when this thread's connection has lived longer than ``max_age`` seconds."""
        if self.max_age is None or self.is_closed():
            return False
        return time.monotonic() - self._state.conn.opened_at > self.max_age

    def connection_ids(self):
        """The server ids of every connection this database holds open in this process, in any thread."""
        return sorted(conn.thread_id() for conn in list(self._opened) if conn.open)

    def close_all(self):
        """Close every connection this database opened, in every thread (at the end of a demo or a
        server's life: another thread must not be using one)."""
        for conn in list(self._opened):
            try:
                conn.close()
            except MySQLdb.Error:
                pass
        self.dispose()

    def _forget_parents_connections(self):
        devnull = os.open(os.devnull, os.O_RDWR)
        try:
            for conn in _inherited_at_fork:
                try:
                    os.dup2(devnull, conn.fileno())  # the child's copy of the socket goes; the parent's stays
                except (MySQLdb.Error, OSError):
                    pass  # closed already
        finally:
            os.close(devnull)
        self._opened = weakref.WeakSet()
        self.dispose()
        _inherited_at_fork.clear()  # now they may be closed: the goodbye goes to /dev/null


def _close_quietly(db):
    """Close the calling thread's connection of ``db``; a dead one cannot be closed cleanly, and needs no more."""
    try:
        db.close()
    except (OperationalError, InterfaceError):
        db.dispose()


# ---------------------------------------------------------------------------------------------
# The strategies
# ---------------------------------------------------------------------------------------------


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
        self.on_request_start()
        try:
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
            _close_quietly(self.db)


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
        self.db.connect()

    def on_request_end(self, error=None):
        _close_quietly(self.db)


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
    _close_quietly(db)
    return True


def reconnect_if_dead(db):
    """Ping the calling thread's connection of ``db``; when the ping fails, replace it. Returns
    True if it reconnected.

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
        retire_if_too_old(self.db)
        reconnect_if_dead(self.db)


class IdlePing(Strategy):
    """Like ``Ping``, but ping only when the connection has been idle longer than ``window`` seconds.

    A connection used a moment ago is very likely alive, so busy apps skip most pings; the price is
    that a connection killed within the window is found only by the query that fails. When it was
    last used is remembered on the connection itself: each thread's, and a new one starts unknown.
    """

    name = "idle_ping"

    def __init__(self, db=None, window=1.0):
        super().__init__(db)
        self.window = window

    def on_request_start(self):
        retire_if_too_old(self.db)
        last_used = getattr(self.db.connection(), "last_used", float("-inf"))
        if time.monotonic() - last_used > self.window:
            reconnect_if_dead(self.db)

    def on_request_end(self, error=None):
        if self.db.is_closed():
            return
        # A request that failed may have left the connection dead: let the next one check it.
        self.db.connection().last_used = float("-inf") if error else time.monotonic()


class ReconnectMySQLDatabase(ReconnectMixin, CourseMySQLDatabase):
    """peewee's own reconnecting database: retries any statement once after a disconnect error."""


class PeeweeReconnect(Strategy):
    """peewee's ``ReconnectMixin``: run the statement; on a disconnect error reconnect, run it again."""

    name = "peewee_reconnect"
    database_class = ReconnectMySQLDatabase


# ---------------------------------------------------------------------------------------------
# The safe reconnect, and the rules it follows
# ---------------------------------------------------------------------------------------------


class OutcomeUnknown(OperationalError):
    """The connection died after a write was sent: the server may or may not have applied it.

    Retrying could apply it twice; giving up could lose it. Only the caller can tell, e.g. by
    looking for the row, or by retrying with a key that makes the write idempotent.
    """


class TransactionLost(OperationalError):
    """The connection died inside a transaction, before its ``COMMIT`` was sent: the server rolled
    the transaction back, so nothing of it was applied. Running it again from the start is safe."""


class SessionLost(OperationalError):
    """The connection died while its session held state the app made (a user variable, a
    temporary table, a lock, a ``SET SESSION`` value): a new connection would not have it, so the
    statement was not retried there. Give every new connection its settings with ``init_command``."""


# Functions a read may call: none of them changes anything, or depends on what this session did
# before (LAST_INSERT_ID(), FOUND_ROWS() and the like are missing on purpose). Any other call,
# a stored function among them, makes a statement "not a read".
PURE_FUNCTIONS = set("""
    COUNT SUM MIN MAX AVG GROUP_CONCAT STD STDDEV VARIANCE BIT_AND BIT_OR BIT_XOR JSON_ARRAYAGG JSON_OBJECTAGG
    ROW_NUMBER RANK DENSE_RANK NTILE LAG LEAD FIRST_VALUE LAST_VALUE
    ABS CEIL CEILING FLOOR ROUND TRUNCATE MOD POW POWER SQRT EXP LN LOG LOG2 LOG10 SIGN GREATEST LEAST PI RAND
    CONCAT CONCAT_WS LENGTH CHAR_LENGTH CHARACTER_LENGTH LOWER UPPER LCASE UCASE SUBSTRING SUBSTR
    SUBSTRING_INDEX LEFT RIGHT TRIM LTRIM RTRIM REPLACE INSERT LPAD RPAD REPEAT REVERSE LOCATE INSTR POSITION
    FIELD FIND_IN_SET ELT FORMAT HEX UNHEX ASCII ORD CHAR SPACE STRCMP QUOTE MD5 SHA1 SHA2 CRC32 UUID
    COALESCE IFNULL NULLIF IF ISNULL CAST CONVERT EXTRACT
    NOW CURRENT_TIMESTAMP CURDATE CURRENT_DATE CURTIME CURRENT_TIME SYSDATE UTC_TIMESTAMP UTC_DATE
    UNIX_TIMESTAMP FROM_UNIXTIME DATE TIME YEAR MONTH DAY DAYOFMONTH DAYOFWEEK DAYOFYEAR HOUR MINUTE SECOND
    WEEK DATE_ADD DATE_SUB ADDDATE SUBDATE DATEDIFF TIMEDIFF TIMESTAMPDIFF TIMESTAMPADD DATE_FORMAT
    STR_TO_DATE LAST_DAY CONVERT_TZ
    JSON_EXTRACT JSON_VALUE JSON_OBJECT JSON_ARRAY JSON_CONTAINS JSON_LENGTH JSON_UNQUOTE JSON_QUOTE JSON_KEYS
    DATABASE SCHEMA USER CURRENT_USER VERSION CONNECTION_ID SLEEP
""".split())
# Keywords that an opening parenthesis may follow in a read.
KEYWORDS_BEFORE_PARENTHESIS = set("""
    SELECT FROM WHERE AND OR NOT XOR IN EXISTS AS ON USING JOIN UNION ALL ANY SOME OVER PARTITION HAVING BY
    WHEN THEN ELSE CASE LIMIT OFFSET IS LIKE BETWEEN WITH RECURSIVE DISTINCT MATCH AGAINST INTERVAL INDEX KEY
    EXCEPT INTERSECT VALUES
""".split())
# Words that make a statement more than a read: locking reads, INTO, CTEs that write, EXPLAIN
# ANALYZE (which runs the statement), sequences.
NOT_A_READ_WORDS = {"INTO", "UPDATE", "DELETE", "LOCK", "SHARE", "ANALYZE", "NEXT", "PREVIOUS", "NEXTVAL",
                    "SETVAL", "LASTVAL"}
READ_STATEMENTS = {"SELECT", "SHOW", "DESCRIBE", "DESC", "EXPLAIN", "WITH"}

_LITERALS_AND_COMMENTS = re.compile(
    r"""'(?:[^'\\]|\\.|'')*'|"(?:[^"\\]|\\.|"")*"|(`(?:[^`]|``)*`)|/\*.*?\*/|(?:--\s|#)[^\n]*""", re.S)


# An app sends the same few statements over and over: each of the readings below is done once
# per statement and remembered (they depend on the text alone).
_remembered = lru_cache(maxsize=4096)


@_remembered
def _bare(sql):
    """``sql`` upper-cased, with its strings and comments blanked and quoted names made ``NAME``."""
    if isinstance(sql, bytes):
        sql = sql.decode(errors="replace")
    return _LITERALS_AND_COMMENTS.sub(lambda m: " NAME " if m.group(1) else " '' ", sql).upper()


@_remembered
def _words(sql, n=3):
    """The first ``n`` words of a statement, upper-cased, without comments or parentheses."""
    return re.findall(r"[A-Z_@][A-Z0-9_@$]*", _bare(sql))[:n]


@_remembered
def is_read(sql):
    """True for a statement that changes nothing and means the same on any connection, and so is
    safe to run twice: a plain ``SELECT`` (or ``SHOW``, ``DESCRIBE``, ``EXPLAIN``) that locks
    nothing, assigns nothing, and calls only functions known to have no effect."""
    bare = _bare(sql)
    words = set(re.findall(r"[A-Z_][A-Z0-9_$]*", bare))
    first = _words(sql, 1)
    if not first or first[0] not in READ_STATEMENTS or words & NOT_A_READ_WORDS:
        return False
    if ";" in bare.rstrip().rstrip(";") or ":=" in bare:
        return False  # a second statement, or a variable assigned
    for qualifier, name in re.findall(r"(\.\s*)?\b([A-Z_][A-Z0-9_$]*)\s*\(", bare):
        if qualifier or name not in PURE_FUNCTIONS | KEYWORDS_BEFORE_PARENTHESIS:
            return False  # a stored function, or one this list does not know to be harmless
    return True


TABLE_LOCKS = "table locks (LOCK TABLES)"


@_remembered
def session_change(sql):
    """What ``sql`` leaves in the session that a new connection would not have, or None.

    ``SET autocommit`` and transactions are followed separately; ``SET GLOBAL`` and ``SET
    TRANSACTION`` (the next transaction only) leave nothing in the session; ``SET SESSION
    TRANSACTION`` does.
    """
    bare = _bare(sql)
    words = _words(sql, 3)
    if not words:
        return None
    if words[0] == "SET" and words[1:2] not in (["GLOBAL"], ["TRANSACTION"], ["AUTOCOMMIT"], ["@@GLOBAL"]):
        if words[1:2] and words[1].startswith("@") and not words[1].startswith("@@"):
            return "a user variable"
        return f"a session setting ({' '.join(words[:2])} ...)"
    if words[0] == "CREATE" and "TEMPORARY" in words:
        return "a temporary table"
    if words[0] in ("PREPARE", "USE"):
        return f"{words[0]} ..."
    if words[:2] in (["LOCK", "TABLE"], ["LOCK", "TABLES"]):
        return TABLE_LOCKS
    if re.search(r"\bGET_LOCK\s*\(", bare):
        return "a GET_LOCK() lock"
    if ":=" in bare or re.search(r"\bINTO\s+@", bare):
        return "a user variable"
    return None


@_remembered
def transaction_change(sql):
    """``"begin"`` or ``"end"`` when ``sql`` opens or closes a transaction by hand, else None.
    (``SET autocommit = 0`` needs no reading: the server reports it.)"""
    words = _words(sql, 3)
    if words[:2] == ["START", "TRANSACTION"] or words[:1] == ["BEGIN"] or words[:2] in (["XA", "START"], ["XA", "BEGIN"]):
        return "begin"
    if words[:1] == ["COMMIT"] or (words[:1] == ["ROLLBACK"] and words[1:2] != ["TO"]):
        return "end"
    if words[:2] in (["XA", "COMMIT"], ["XA", "ROLLBACK"]):
        return "end"
    return None


@_remembered
def commits(sql):
    """True for a statement whose success commits a transaction: ``COMMIT`` or ``XA COMMIT``."""
    words = _words(sql, 2)
    return words[:1] == ["COMMIT"] or words == ["XA", "COMMIT"]


class SafeReconnectMySQLDatabase(CourseMySQLDatabase):
    """Reconnect and retry once, but never inside a transaction and never where a retry could
    write twice or run without the session it relied on.

    Before a statement outside a transaction, and before a transaction begins, a connection the
    server has already closed is replaced: nothing has been sent on it, so nothing is at risk.
    After a disconnect error:
    - inside a transaction, however it began (peewee's ``atomic()``, ``START TRANSACTION``,
      ``SET autocommit = 0``): ``TransactionLost`` (nothing of it was applied), or
      ``OutcomeUnknown`` when the lost answer was the one to ``COMMIT``;
    - a read (``is_read()``) is retried;
    - a write is retried when it certainly never ran (``NOT_SENT``), or when the caller declared
      it idempotent with ``idempotent_writes()``; any other write raises ``OutcomeUnknown``, and
      so does a retried write that fails again after it may have run;
    - while the session holds state the app made (``session_change()``: a ``SET``, a temporary
      table, ``LOCK TABLES``, ``GET_LOCK()``), ``SessionLost``.
    A write refused by a read-only server (1290: a replica, during a failover) did not run: it is
    run again once a server takes writes; inside a transaction it is ``TransactionLost``.
    Reconnecting waits for a restarting server, or a failover, with a bounded back-off.
    """

    def __init__(self, *args, reconnect_timeout=20.0, hosts=None, **kwargs):
        super().__init__(*args, **kwargs)
        self.reconnect_timeout = reconnect_timeout
        self.hosts = hosts  # [(host, port), ...] to walk for a server that takes writes; None: the one in the settings
        self._idempotent = threading.local()

    @contextmanager
    def idempotent_writes(self):
        """Declare that the writes in this block can run twice with the effect of once."""
        self._idempotent.on = True
        try:
            yield
        finally:
            self._idempotent.on = False

    # What this connection's session holds, remembered on the connection itself, so that a new
    # connection starts with nothing.

    def open_transaction(self):
        """What keeps a transaction open on this thread's connection, or None."""
        if self.in_transaction():
            return "peewee's atomic()"
        if self.is_closed():
            return None
        conn = self._state.conn
        if getattr(conn, "by_hand", None):
            return conn.by_hand
        if not conn.get_autocommit():  # the server's own flag, from its last answer
            return "SET autocommit = 0"
        return None

    def session_state(self):
        """What the app left in this connection's session, or None."""
        return None if self.is_closed() else getattr(self._state.conn, "session_state", None)

    def _note(self, sql):
        """Remember what a statement that succeeded left on the connection."""
        conn = self._state.conn
        change = transaction_change(sql)
        if change == "begin":
            conn.by_hand = " ".join(_words(sql, 2))
        elif change == "end":
            conn.by_hand = None
        state = session_change(sql)
        if state and not getattr(conn, "session_state", None):
            conn.session_state = state
        elif _words(sql, 2) == ["UNLOCK", "TABLES"] and getattr(conn, "session_state", None) == TABLE_LOCKS:
            conn.session_state = None

    def execute_sql(self, sql, params=None):
        if self.open_transaction() is None:
            self._replace_if_hung_up()
        try:
            cursor = super().execute_sql(sql, params)
        except OperationalError as error:
            if error_code(error) == READ_ONLY:
                return self._after_read_only(sql, params, error)
            if error_code(error) not in DISCONNECTED:
                raise
            return self._after_disconnect(sql, params, error)
        self._note(sql)
        return cursor

    def _after_read_only(self, sql, params, error):
        """A write the server refused because it is read-only did not run: outside a transaction,
        run it on a server that takes writes, once one does; inside one, ``TransactionLost``."""
        in_transaction, session = self.open_transaction(), self.session_state()
        self._drop_connection()
        if in_transaction:
            raise TransactionLost(READ_ONLY, f"the server is read-only, inside a transaction ({in_transaction}): nothing "
                                             f"of it was applied; run it again where writes are taken ({error.args[1]})") from error
        if session:
            raise SessionLost(READ_ONLY, f"the server is read-only, and a new connection would not have what this "
                                         f"session held ({session}): not retried ({error.args[1]})") from error
        self.wait_for_a_writable_server()
        cursor = super().execute_sql(sql, params)
        self._note(sql)
        return cursor

    def wait_for_a_writable_server(self):
        """Reconnect until the server takes writes (``@@read_only`` off), waiting with a growing
        pause for at most ``reconnect_timeout`` seconds: through a proxy that still sends
        connections to a replica, or while the replica is being promoted."""
        pauses = self._pauses()
        while True:
            self.reconnect()
            if not _read_only(self._state.conn):
                return
            pause = next(pauses, None)
            if pause is None:
                raise OperationalError(READ_ONLY, f"no server took writes within {self.reconnect_timeout} s: "
                                                  "every one answered read-only")
            time.sleep(pause)

    def _pauses(self):
        """Growing pauses between attempts, from 50 ms to 1 s, until ``reconnect_timeout`` would pass."""
        deadline = time.monotonic() + self.reconnect_timeout
        pause = 0.05
        while time.monotonic() + pause <= deadline:
            yield pause
            pause = min(pause * 2, 1.0)

    def _connect(self):
        """A connection to the server in the settings; with ``hosts``, to the first of them that
        takes writes, or else to the first that answers (reads work there, writes wait)."""
        if not self.hosts:
            return super()._connect()
        fallback, failure = None, None
        for host, port in self.hosts:
            try:
                conn = MySQLdb.connect(database=self.database, autocommit=True,
                                       **{**self.connect_params, "host": host, "port": port})
            except MySQLdb.OperationalError as error:
                failure = error
                continue
            if not _read_only(conn):
                if fallback is not None:
                    fallback.close()
                return self._track(conn)
            if fallback is None:
                fallback = conn
            else:
                conn.close()
        if fallback is not None:
            return self._track(fallback)
        raise failure

    def _after_disconnect(self, sql, params, error):
        code = error_code(error)
        in_transaction, session = self.open_transaction(), self.session_state()
        self._drop_connection()
        if in_transaction:
            if commits(sql) and code not in NOT_SENT:
                raise self._unknown(error, "this COMMIT was sent") from error
            raise TransactionLost(code, f"the connection was lost inside a transaction ({in_transaction}) "
                                        f"and the server rolled it back: nothing of it was applied ({error.args[1]})") from error
        write = not is_read(sql)
        idempotent = getattr(self._idempotent, "on", False)
        if write and code not in NOT_SENT and not idempotent:
            raise self._unknown(error, "this write was sent") from error
        if session:
            raise SessionLost(code, f"the connection was lost, and with it what its session held ({session}): not "
                                    f"retried on a new connection without it; give every connection its settings "
                                    f"with init_command ({error.args[1]})") from error
        may_have_run = write and code not in NOT_SENT  # an idempotent write, sent before the loss
        try:
            self.reconnect()
        except OperationalError as failed:
            if may_have_run:
                raise self._unknown(error, "this write was sent") from failed
            raise
        if write and not may_have_run:
            self._refuse_if_too_large(sql, params)
        try:
            cursor = super().execute_sql(sql, params)
        except OperationalError as again:
            if error_code(again) not in DISCONNECTED:
                raise
            _close_quietly(self)
            if write and (may_have_run or error_code(again) not in NOT_SENT):
                raise self._unknown(again, "this write was sent again") from again
            raise
        self._note(sql)
        return cursor

    def _unknown(self, error, what):
        return OutcomeUnknown(
            error_code(error), f"outcome unknown: the connection was lost after {what} ({error.args[1]}); "
                               "it may or may not have been applied, so it was not retried")

    def _refuse_if_too_large(self, sql, params):
        """A write the server refused for its size (and hung up on) is not "never sent": say so."""
        statement = self._state.conn.cursor().mogrify(sql, params or ())
        limit = self._state.conn.cursor()
        limit.execute("SELECT @@max_allowed_packet")
        allowed = limit.fetchone()[0]
        if len(statement.encode() if isinstance(statement, str) else statement) > allowed:
            raise OperationalError(PACKET_TOO_LARGE, f"this statement is larger than the server's "
                                                     f"max_allowed_packet ({allowed} bytes): not retried")

    def _drop_connection(self):
        """Forget this thread's dead connection, but keep peewee's transaction stack for ``atomic()`` to unwind."""
        if self.in_transaction():
            self._state.conn.dead = True
        else:
            _close_quietly(self)

    def _replace_if_hung_up(self):
        if self.too_old() and not self.session_state():
            _close_quietly(self)  # retired while nothing of it is needed: see retire_if_too_old()
        if not self.is_closed() and not self.server_hung_up():
            return
        state = self.session_state()
        self._drop_connection()
        if state:
            raise SessionLost(SERVER_GONE, f"the server had closed the connection, and with it what its session "
                                           f"held ({state}): nothing was sent; give every connection its settings "
                                           "with init_command")
        self.reconnect()

    def begin(self, *args, **kwargs):
        """Start a peewee transaction on a live connection: nothing of it has been sent yet, so a
        connection found dead, before or by the ``BEGIN``, is replaced."""
        self._replace_if_hung_up()
        try:
            return super().begin(*args, **kwargs)
        except OperationalError as error:
            if error_code(error) not in DISCONNECTED or self.session_state():
                raise
            self.reconnect()
            return super().begin(*args, **kwargs)

    def commit(self):
        """``COMMIT``: a lost answer is ``OutcomeUnknown``; a ``COMMIT`` never sent is ``TransactionLost``.

        A connection the server hung up before the ``COMMIT`` is found before it is sent.
        """
        if self.server_hung_up():
            self._state.conn.dead = True
            raise TransactionLost(SERVER_GONE, "the server had closed the connection before COMMIT; it rolled "
                                               "the transaction back: nothing of it was applied")
        try:
            return super().commit()
        except OperationalError as error:
            code = error_code(error)
            if code not in DISCONNECTED:
                raise
            self._state.conn.dead = True
            if code in NOT_SENT:
                raise TransactionLost(code, "the connection was lost before COMMIT was sent; the server "
                                            f"rolled the transaction back: nothing of it was applied ({error.args[1]})") from error
            raise self._unknown(error, "COMMIT was sent") from error

    def rollback(self):
        """``ROLLBACK``; on a connection that died, the server has rolled back already: nothing to do."""
        if self.is_closed() or getattr(self._state.conn, "dead", False):
            _close_quietly(self)
            return None
        try:
            return super().rollback()
        except OperationalError as error:
            if error_code(error) not in DISCONNECTED:
                raise
            _close_quietly(self)

    def server_hung_up(self):
        """True when the server has already closed this connection (or sent it a last error).

        An idle connection never has anything to read; when it does, the server is gone. It costs
        a system call, not a round trip. ``poll()``, unlike ``select()``, takes any descriptor.
        """
        if self.is_closed():
            return True
        try:
            fd = self._state.conn.fileno()
        except MySQLdb.Error:
            return True  # the client has closed it already, after an earlier error
        poller = select.poll()
        poller.register(fd, select.POLLIN)
        return bool(poller.poll(0))

    def reconnect(self):
        """Replace the connection, waiting with a growing pause while nothing accepts connections,
        for at most ``reconnect_timeout`` seconds (each attempt is bounded by ``connect_timeout``).

        Behind a TCP hop (a proxy, a relay) a server that is down accepts nothing yet the hop does:
        the handshake is lost instead (2013, "reading initial communication packet"). While
        connecting, nothing of the app's has been sent, so that is "cannot connect" too.
        """
        _close_quietly(self)
        pauses = self._pauses()
        while True:
            try:
                return self.connect()
            except OperationalError as error:
                pause = next(pauses, None)
                if error_code(error) not in CANNOT_CONNECT | {SERVER_LOST} or pause is None:
                    raise
                time.sleep(pause)


def _read_only(conn):
    """True when the server of a driver connection refuses writes (``@@read_only``)."""
    cursor = conn.cursor()
    cursor.execute("SELECT @@read_only")
    return bool(cursor.fetchone()[0])


class SafeReconnect(Strategy):
    """The course's reconnect: retry once, only where a retry cannot write twice."""

    name = "safe_reconnect"
    database_class = SafeReconnectMySQLDatabase

    def longest_wait(self):
        """As every strategy's, plus its patience with a server that is down: ``reconnect_timeout``."""
        wait = super().longest_wait()
        return None if wait is None else wait + self.db.reconnect_timeout


STRATEGIES = {cls.name: cls for cls in (Naive, PerRequest, Ping, IdlePing, PeeweeReconnect, SafeReconnect)}


def run_transaction(db, work, attempts=3, idempotent=False):
    """Run ``work(db)`` in one transaction and return what it returns; run all of it again when it
    failed in a way that applied nothing: a connection lost before ``COMMIT``, or a server found
    read-only (``TransactionLost``: then once a server takes writes), a deadlock (1213) or a lock
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
            if error_code(error) == READ_ONLY:
                db.wait_for_a_writable_server()  # a failover under way: run it again where writes are taken
        except (OperationalError, InternalError) as error:
            if error_code(error) not in (DEADLOCK, LOCK_WAIT_TIMEOUT) or attempt == attempts:
                raise
        time.sleep(0.05 * attempt)
