"""The course's safe reconnect: run a statement; when its connection is gone, ask the rule
(``rule.py``) what may happen next, and do only that.

Before a statement is sent, a connection the server has already closed is found (its socket is
readable: an idle connection never has anything to read) and counts as "not sent"; not before a
read, which the rule runs again whether it was sent or not. After each
statement the server's status flags say whether a transaction is open and whether the session
changed (``server_flags.py``); what may run twice, the app declares (``idempotent()``);
what the text of a statement shows is read, conservatively, in ``statements.py``.
"""
import logging
import threading
import time
from contextlib import contextmanager

import MySQLdb

from peewee import OperationalError, __exception_wrapper__

import rule
import statements
from connections import CourseMySQLDatabase, close_quietly
from errors import (CONNECTION_KILLED, DEADLOCK, IDLE_TIMEOUT, LOCK_WAIT_TIMEOUT, NOT_SENT, REFUSED, SERVER_GONE,
                    SERVER_LOST, OutcomeUnknown, SessionLost, TransactionLost, error_code)
from reconnecting import ReconnectingMySQLDatabase
from server_flags import AUTOCOMMIT
from statements import QUIET, READS

_execute = CourseMySQLDatabase.execute_sql  # peewee's own
_peewee_log = logging.getLogger("peewee")
RAISED = {rule.OUTCOME_UNKNOWN: OutcomeUnknown, rule.TRANSACTION_LOST: TransactionLost, rule.SESSION_LOST: SessionLost}
WORST_FIRST = ["timed out", "lost", "refused", "not sent"]  # after a retry, the failure is the worse of the two
TIMED_OUT_AT = 0.95  # a loss this far into read_timeout is the client giving up, not the server hanging up


def _as_peewee_error(error):
    """The driver's error as peewee's ``execute_sql`` raises it (``peewee.OperationalError``, ...)."""
    if not isinstance(error, MySQLdb.Error):
        return error  # peewee's already, or not the database's
    try:
        with __exception_wrapper__:
            raise error
    except Exception as wrapped:
        return wrapped


class ServerHungUp(OperationalError):
    """Found before sending: the server had already closed the connection. Nothing was sent."""


class NotConnected(OperationalError):
    """No connection could be opened to send the statement on (the error is its cause). Nothing was sent."""


class SafeReconnectMySQLDatabase(ReconnectingMySQLDatabase):
    """A database whose every statement, ``BEGIN``, ``COMMIT`` and ``ROLLBACK`` runs through one
    rule (``rule.RULE``): run again once where that cannot apply anything twice, continue half a
    transaction, or run without the session it relied on; otherwise ``TransactionLost``,
    ``OutcomeUnknown`` or ``SessionLost``. Reconnecting waits for a server that accepts, or one
    that takes writes (``hosts``: walked for one), for at most ``reconnect_timeout`` seconds."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._declared = threading.local()

    @contextmanager
    def idempotent(self):
        """Declare that the statements in this block may run twice with the effect of once: reads
        of tables, writes keyed by an id the client chose. (A declaration lowers a write to
        "idempotent", never what may commit.) Limit: it holds for every statement of this thread
        while the block is open, so a generator suspended inside it keeps it open."""
        self._declared.depth = getattr(self._declared, "depth", 0) + 1
        try:
            yield
        finally:
            self._declared.depth -= 1

    def new_request(self):
        """A request starts: what earlier requests' statements left (``LAST_INSERT_ID()``) is not its own."""
        here = self._state.__dict__  # one look-up: see _run()
        if not here["closed"]:
            record = here["record"]
            record.used = record.inserted = record.lost_insert_id = False

    def open_transaction(self):
        """What keeps a transaction open on this thread's connection, by the server's word, or None."""
        record = self.record()
        return "peewee's atomic()" if self.in_transaction() else record and record.transaction

    def session_state(self):
        """What the session holds that a new connection would not have ("; " between them), or None."""
        record = self.record()
        return "; ".join(record.session) if record and record.session else None

    def begin(self, *args, **kwargs):
        """peewee's ``BEGIN``: it changes nothing, and may run twice, unless a transaction begun by
        hand is open, which a ``BEGIN`` commits."""
        kind = "may commit" if self.open_transaction() else "idempotent"
        return self._run("BEGIN", send=lambda: super(SafeReconnectMySQLDatabase, self).begin(*args, **kwargs), kind=kind)

    def commit(self):
        result = self._run("COMMIT", send=super().commit, kind="may commit")
        self._transaction_ended()  # atomic() ends here
        return result

    def rollback(self):
        """``ROLLBACK``; on a connection that died, the server has rolled back already: nothing to do."""
        record = self.record()
        if record is None or record.dead or self.server_hung_up():
            return close_quietly(self)
        try:
            super().rollback()
        except OperationalError as error:
            if error_code(error) not in NOT_SENT | {SERVER_LOST, CONNECTION_KILLED}:
                raise
            return close_quietly(self)
        self._transaction_ended()

    def _run(self, sql, params=None, send=None, kind=None):
        """Send ``sql`` (with ``send()``, else as a statement with ``params``); after a failure, do
        what the rule says. Until a statement fails, nothing is worked out that only a failure needs."""
        here = self._state.__dict__  # peewee's state of this thread: one look-up, where each attribute costs one
        record, failure, retried, pauses = None if here["closed"] else here["record"], None, "no", None
        if record is not None and record.lost_insert_id and statements.may_read_insert_id(sql):
            raise SessionLost(SERVER_GONE, "this request's INSERT ran on a connection that was lost since, and its "
                                           "LAST_INSERT_ID() went with it: not run, since it may read that")
        while True:
            started = time.monotonic()
            try:
                if record is None:  # connected here, not as peewee sends: a connect that fails sent nothing
                    record = self._connect_before_sending(here)
                else:
                    # has the server hung up? (a read needs not ask: see READS; results to come read as "yes")
                    if record.dead or sql not in READS and not record.more_results and record.poller.poll(0):
                        raise ServerHungUp(SERVER_GONE, "the server had closed the connection: nothing was sent")
                    if started > record.retire_at and self._retire_if_unneeded(record):
                        record = self._connect_before_sending(here)
                if send is not None:
                    result = send()
                elif self.query_hooks or _peewee_log.isEnabledFor(logging.DEBUG):
                    result = _execute(self, sql, params)  # peewee logs the statement, calls its hooks
                else:  # what peewee's execute_sql does then, less its layers: errors are wrapped below
                    result = here["conn"].cursor()
                    result.execute(sql, params or ())
            except Exception as error:
                error = _as_peewee_error(error)
                how = self._failure(error, started)
                if how is None:
                    raise self._not_the_rules(sql, error)
                failure = self._worse(failure, how)
                situation = rule.Situation(failure, self._transaction(), kind or self._kind(sql), self._session(sql),
                                           retried)
                pauses = pauses or self._pauses(since=started)  # the first failure's: the statement's start
                self._after_failure(situation, error, pauses)
                record, retried = self.record(), "yes"
                continue
            flags = record.flags.value if record.flags else record.server_status(here["conn"])
            if flags == AUTOCOMMIT and sql in QUIET and not (record.transaction or record.more_results
                                                              or here["transactions"]):  # nor peewee's atomic()
                record.used = True  # the usual case: nothing to learn (see ConnectionRecord.learn)
            else:
                record.learn(sql, flags, here["transactions"])
            return result

    execute_sql = _run  # every statement; begin() and commit() call _run too

    def _connect_before_sending(self, here):
        try:
            self.connect()
        except OperationalError as error:
            raise NotConnected(error_code(error), f"could not connect: {error.args[-1]}") from error
        return here["record"]

    def _kind(self, sql):
        if statements.is_read(sql):
            return "read"
        if statements.may_end_transaction(sql):
            return "may commit"
        return "idempotent" if getattr(self._declared, "depth", 0) else "write"

    def _retire_if_unneeded(self, record):
        """Past its max_age: retired at a request's first statement, outside a transaction, with no
        state; peewee connects anew as the statement is sent."""
        if not (self.in_transaction() or record.transaction or record.session or record.used):
            close_quietly(self)
            return True
        return False

    def _failure(self, error, started):
        """How a statement failed, as the rule's ``failure``; None for an error the rule is not for."""
        code = error_code(error)
        if isinstance(error, (ServerHungUp, NotConnected)) or code == SERVER_GONE:
            return "not sent"
        if code == IDLE_TIMEOUT and "disconnect" in str(error).lower():  # MySQL 8's; MariaDB's 4031 is another error
            return "not sent"
        if code in REFUSED:
            return "refused"
        if code in (SERVER_LOST, CONNECTION_KILLED):
            timeout = self.connect_params.get("read_timeout")
            return "timed out" if timeout and time.monotonic() - started >= TIMED_OUT_AT * timeout else "lost"
        return None

    def _not_the_rules(self, sql, error):
        """An error the rule is not for goes to the app as it is, after noting that a statement that
        may commit (DDL commits before it fails) may have committed; but a deadlock or lock wait
        timeout after part of the transaction was committed is ``OutcomeUnknown``: running the
        transaction again (``run_transaction()``) would apply that part twice."""
        record = self.record()
        if record is None:
            return error
        record.learn_from_error(sql, self.in_transaction())
        if record.partly_committed and error_code(error) in (DEADLOCK, LOCK_WAIT_TIMEOUT):
            unknown = OutcomeUnknown(error_code(error), f"{rule.RULE[0][6]} ({statements.describe(str(error), 80)})")
            unknown.__cause__ = error
            return unknown
        return error

    @staticmethod
    def _worse(first, second):
        return second if first is None else min(first, second, key=WORST_FIRST.index)

    def _transaction(self):
        record = self.record()
        if record is not None and (record.partly_committed or record.xa):
            return "partly committed"
        return "open" if self.in_transaction() or (record and record.transaction) else "none"

    def _session(self, sql):
        record = self.record()
        needed = record is not None and (record.session or (record.used and statements.reads_the_session(sql)))
        return "needed" if needed else "not needed"

    def _after_failure(self, situation, error, pauses):
        verdict = rule.verdict(situation)
        record = self.record()
        if self.in_transaction() and record is not None:
            record.dead = True  # peewee's atomic() still has to unwind; its ROLLBACK will find it dead
        else:
            close_quietly(self)
        if verdict in (rule.RETRY, rule.RETRY_WHEN_WRITABLE):
            used, inserted = (record.used, record.inserted) if record is not None else (False, False)
            self.reconnect(pauses) if verdict == rule.RETRY else self.wait_for_a_writable_server(pauses)
            new = self.record()  # what this request left on the old connection is gone:
            new.used, new.lost_insert_id = used, inserted  # no statement may read it here
        else:
            why = rule.row_for(situation)[6]
            held = self._what_the_session_held(record) if verdict == rule.SESSION_LOST else ""
            message = f"{why}{held} ({situation.failure}: {statements.describe(str(error.args[1]), 80)})"
            raise RAISED.get(verdict, OperationalError)(error_code(error), message) from error

    @staticmethod
    def _what_the_session_held(record):
        if record and record.session:
            return f"; the session held {'; '.join(record.session)}"
        return ("; this statement may read what the request's earlier statements left in the session "
                "(LAST_INSERT_ID(), ROW_COUNT(), warnings)")

    def _transaction_ended(self):
        record = self.record()
        if record is not None:
            record.transaction, record.partly_committed = None, False

