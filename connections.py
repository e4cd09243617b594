"""The course's peewee database: mysqlclient always, a record of each connection, and the fork fix.

- mysqlclient (``MySQLdb``) always: peewee picks PyMySQL when it is importable, which would
  silently change the driver, its error classes and what a connection can tell.
- A ``ConnectionRecord`` per connection: what the strategies remember of it (when it was opened
  and when it retires, when last used, the transaction and session state the server reported),
  in one small typed record instead of attributes hung on the driver's object.
- The server's status flags after each statement (``server_flags.py``): every answer of the
  server carries them, and libmariadb keeps the last; reading them costs no round trip.
"""
import os
import random
import select
import time
import weakref
from dataclasses import dataclass, field

import MySQLdb
from peewee import InterfaceError, MySQLDatabase, OperationalError

import server_flags
import statements
from server_flags import AUTOCOMMIT, IN_TRANSACTION, MORE_RESULTS, SESSION_STATE_CHANGED

# Retire a connection after this many seconds, before anything in between forgets it while it is
# idle: NAT tables and load balancers often do after 4 to 6 minutes, the server after wait_timeout.
MAX_AGE = 180
MAX_AGE_JITTER = 0.2  # a connection retires between 80% and 100% of max_age: threads started together spread out


@dataclass
class ConnectionRecord:
    """What the course remembers of one connection, from its opening to its close."""
    opened_at: float = field(default_factory=time.monotonic)
    retire_at: float = float("inf")  # after this (monotonic) time it is replaced at a safe moment
    last_used: float = float("-inf")  # when a request last ended well on it (IdlePing)
    transaction: str = None  # what the server reports open, or None
    partly_committed: bool = False  # a statement inside the transaction committed what came before
    xa: bool = False  # an XA transaction: once prepared, it outlives the connection
    session: tuple = ()  # each thing the session holds that a new connection would not
    used: bool = False  # this request has run a statement here, or on a connection this one replaced
    inserted: bool = False  # ... an INSERT among them: the session's LAST_INSERT_ID() may be set
    lost_insert_id: bool = False  # that INSERT ran on a connection this one replaced: its id went with it
    more_results: bool = False  # results of the last statement are still to come: its socket is readable
    dead: bool = False  # it died inside atomic(): kept only for peewee to unwind its transaction
    poller: object = field(default=None, repr=False)  # select.poll() on its socket: see server_hung_up()
    flags: object = field(default=None, repr=False)  # the server's status flags, where the client keeps them

    def server_status(self, conn):
        """The status flags of the last answer on ``conn`` (this record's connection)."""
        if self.flags is None:
            self.flags = server_flags.field(conn) or False  # False: no place found; asked each time
        return self.flags.value if self.flags is not False else server_flags.read(conn)

    def learn(self, sql, flags, inside_atomic):
        """What the server's status ``flags`` after ``sql`` (which succeeded) tell, and what its text
        shows; ``inside_atomic``: true inside peewee's ``atomic()`` (its list of open blocks will do)."""
        self.used = True
        text = statements.reading(sql)
        if text.inserts:
            self.inserted, self.lost_insert_id = True, False  # LAST_INSERT_ID() is now this connection's
        if flags == AUTOCOMMIT and not (inside_atomic or self.transaction or self.more_results or text.xa):
            if text.state and text.state not in self.session:  # the usual case: no transaction, before or after
                self.session += (text.state,)
            return
        inside_atomic = bool(inside_atomic)
        self.more_results = more = bool(flags & MORE_RESULTS)  # then what the rest of it does is unknown yet
        open_now = flags & IN_TRANSACTION or not flags & AUTOCOMMIT or more  # with autocommit off, always open
        if (inside_atomic or self.transaction) and text.may_commit and (inside_atomic or not text.controls):
            self.partly_committed = True  # it may have committed part of the app's transaction: not a COMMIT of its own
        if not open_now:
            self.partly_committed = self.partly_committed and inside_atomic  # by hand: ended where the server says
            if inside_atomic and sql != "BEGIN":
                self.partly_committed = True  # inside atomic(), yet the server has no transaction: it was committed
            self.transaction = None
        elif not self.transaction:
            self.transaction = "SET autocommit = 0" if not flags & AUTOCOMMIT else f"'{statements.describe(sql)}'"
        if text.xa is not None:
            self.xa = text.xa == "start"
        held = text.state
        if flags & SESSION_STATE_CHANGED and not text.only_autocommit or more:
            held = f"what {'the rest of ' if more else ''}'{statements.describe(sql)}' {'may leave' if more else 'left'}"
        if held and held not in self.session:
            self.session += (held,)

    def learn_from_error(self, sql, inside_atomic):
        """A statement that may commit (DDL) commits before it runs, and fails after: it may have committed.
        Not a ``COMMIT`` or ``ROLLBACK`` the server answered with an error (Galera's 1213 at ``COMMIT``):
        it committed nothing."""
        if (inside_atomic or self.transaction) and statements.may_end_transaction(sql) \
                and not statements.controls_transaction(sql):
            self.partly_committed = True


# Connections a forked child inherited from its parent: never closed from the child (see below).
_inherited_at_fork = []


class MySQLdbDatabase(MySQLDatabase):
    """peewee's ``MySQLDatabase`` that connects with mysqlclient, whatever else is installed."""

    def _connect(self):
        return MySQLdb.connect(database=self.database, autocommit=True, **self.connect_params)


class CourseMySQLDatabase(MySQLdbDatabase):
    """peewee's ``MySQLDatabase`` on mysqlclient, that keeps a record of every connection it
    opened, in every thread, and lets go of its parent's connections in a process made by ``fork()``.

    A forked child shares its parent's sockets. Were it to use one, two processes would talk over
    one connection and read each other's answers; were it to close one, it would send the server
    a goodbye that ends the parent's connection too. So in the child each inherited socket is
    pointed at ``/dev/null`` (the parent's stays open) and forgotten, and the child connects anew.
    """

    def __init__(self, *args, max_age=MAX_AGE, **kwargs):
        super().__init__(*args, **kwargs)
        self.max_age = max_age  # seconds a connection may live, or None: see retire_if_too_old()
        self._records = weakref.WeakKeyDictionary()  # every connection opened in this process -> its record
        self_ref = weakref.ref(self)

        def before_fork():
            db = self_ref()
            if db is not None:  # held now, or the child would drop other threads' connections at once
                _inherited_at_fork.extend(db._records.keys())

        def after_fork_in_child():
            db = self_ref()
            if db is not None:
                db._forget_parents_connections()

        os.register_at_fork(before=before_fork, after_in_parent=_inherited_at_fork.clear,
                            after_in_child=after_fork_in_child)

    def _connect(self):
        conn = super()._connect()
        record = ConnectionRecord()
        if self.max_age is not None:
            record.retire_at = record.opened_at + self.max_age * (1 - MAX_AGE_JITTER * random.random())
        self._records[conn] = record
        return conn

    def connect(self, reuse_if_open=False):
        """peewee's ``connect()``; the new connection's record is kept beside it, in the thread's
        state, so that finding it costs no look-up."""
        opened = super().connect(reuse_if_open)
        state = self._state
        state.record = self._records.get(state.conn)
        return opened

    def record(self):
        """The record of the calling thread's connection, or None when it has none open."""
        state = self._state
        return None if state.closed else state.record

    def too_old(self):
        """True when this thread's connection is past its retirement (``max_age``, less a little jitter)."""
        record = self.record()
        return record is not None and time.monotonic() > record.retire_at

    def server_hung_up(self, record=None):
        """True when the server has already closed this connection (or sent it a last error): an
        idle connection never has anything to read. A system call, not a round trip; ``poll()``
        takes any descriptor, where ``select()`` fails past 1024."""
        record = record or self.record()
        if record is None:
            return True
        if record.poller is None:
            record.poller = select.poll()
            record.poller.register(self._state.conn.fileno(), select.POLLIN)
        return bool(record.poller.poll(0))

    def connection_ids(self):
        """The server ids of every connection this database holds open in this process, in any thread."""
        return sorted(conn.thread_id() for conn in list(self._records.keys()) if conn.open)

    def close_all(self):
        """Close every connection this database opened, in every thread (at the end of a demo or a
        server's life: another thread must not be using one)."""
        for conn in list(self._records.keys()):
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
        self._records = weakref.WeakKeyDictionary()
        self.dispose()
        _inherited_at_fork.clear()  # now they may be closed: the goodbye goes to /dev/null


def close_quietly(db):
    """Close the calling thread's connection of ``db``; a dead one cannot be closed cleanly, and needs no more."""
    try:
        db.close()
    except (OperationalError, InterfaceError):
        db.dispose()
