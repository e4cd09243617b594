"""The course's rule (``rule.py``, chapter 04's table) in SQLAlchemy 2.x, through its own events:
a recipe short enough to copy (chapter 09).

    engine = create_engine(url, pool_pre_ping=True)    # found dead at checkout: nothing was sent
    sqlalchemy_rule.install(engine)                     # every disconnect judged by the rule
    with Session(engine) as session:
        sqlalchemy_rule.execute(session, text("SELECT ..."))  # run again once, where the rule says so

``install()`` listens to two events. ``before_cursor_execute`` notes when a statement is sent.
``handle_error`` runs when one fails; when SQLAlchemy calls the failure a disconnect (its
dialect's ``is_disconnect()``: 1927, 2006, 2013, 2014, 2045, 2055, 4031), it reads what the
server said in its last answer on that connection (its status flags, ``server_flags.py``: a
transaction open, autocommit on; a failure leaves them as they were), asks the rule what may
happen next, and raises what the rule says instead:
``RunAgain`` (SQLAlchemy's own ``OperationalError``, the connection invalidated),
``TransactionLost``, ``OutcomeUnknown`` or ``SessionLost`` (the course's, ``errors.py``). With
autocommit off (SQLAlchemy's default) a write opens a transaction only a ``COMMIT`` ends: lost
with its connection, nothing of it was applied; when it opened the transaction itself (the
first statement since a commit or rollback), ``TransactionLost`` becomes ``RunAgain``: running
it again is running the transaction again whole, as ``strategies.run_transaction()`` would.
``execute()`` runs a statement, and after ``RunAgain`` rolls back (what SQLAlchemy asks of a
Connection or Session whose connection was lost: else ``PendingRollbackError``) and runs it once
more, on a new connection. A transaction the rule calls lost is the app's to run again, whole.

Only the statement ``execute()`` runs is run again, never one of an ORM Session's flush before it
(its objects would be dropped by the rollback): that is ``TransactionLost``. A statement after one
that may end a transaction (DDL, ``COMMIT AND CHAIN``, ``LOCK TABLES``, ``BEGIN``) inside it makes a
later loss ``OutcomeUnknown``: part of it may be kept. A statement the client's ``read_timeout``
gave up on is never run again.

Where it stops: "nothing of it was applied" holds for transactional tables (InnoDB); a MyISAM,
Aria or MEMORY table keeps each write at once. The session fact is judged from the statement's
text alone (a statement that reads ``LAST_INSERT_ID()`` or ``@variables``), not from state the
session holds: after a retry, the new connection's ``LAST_INSERT_ID()`` is its own (0); a write the app knows
may run twice is declared with ``execute(..., idempotent=True)`` (SQLAlchemy's execution options).
A read of a table counts as a write unless declared, as in the course (a view may call a stored
function that writes).
"""
import time

from sqlalchemy import event, exc

import rule
import server_flags
import statements
from errors import CONNECTION_KILLED, IDLE_TIMEOUT, SERVER_GONE, SERVER_LOST, OutcomeUnknown, SessionLost, TransactionLost

RAISED = {rule.TRANSACTION_LOST: TransactionLost, rule.OUTCOME_UNKNOWN: OutcomeUnknown,
          rule.SESSION_LOST: SessionLost}


class RunAgain(exc.OperationalError):
    """The rule says the statement may run again, once: nothing ran, or running it twice is running it once."""


def install(engine, read_timeout=None):
    """Judge every disconnect on ``engine``'s connections by the rule. ``read_timeout``: the one
    given to the driver, so that a loss that late is taken for the client giving up."""

    @event.listens_for(engine, "before_cursor_execute")
    def sent(conn, cursor, statement, parameters, context, executemany):
        conn.info["course_sent_at"] = time.monotonic()  # SQLAlchemy's dict for this driver connection
        conn.info.pop("course_ending", None)
        conn.info["course_open_before"] = status(conn.connection.dbapi_connection)[0]

    @event.listens_for(engine, "after_cursor_execute")
    def ran(conn, cursor, statement, parameters, context, executemany):
        if conn.info.get("course_open_before") and statements.may_end_transaction(statement):
            conn.info["course_partly_committed"] = True  # DDL, COMMIT AND CHAIN, LOCK TABLES, BEGIN: what came before may be kept

    @event.listens_for(engine, "commit")
    def committing(conn):
        _transaction_ends(conn, "COMMIT")

    @event.listens_for(engine, "rollback")
    def rolling_back(conn):
        _transaction_ends(conn, "ROLLBACK")

    @event.listens_for(engine, "reset")  # the pool's: a connection given back, or a new one in its record
    def given_back(dbapi_connection, connection_record, reset_state):
        forgotten(dbapi_connection, connection_record)

    @event.listens_for(engine, "invalidate")
    def forgotten(dbapi_connection, connection_record, *_):
        for key in ("course_partly_committed", "course_ending", "course_open_before"):
            connection_record.info.pop(key, None)

    @event.listens_for(engine, "handle_error")
    def judged(context):
        if not context.is_disconnect or context.connection is None:
            return None  # not a lost connection: the app's, as it is
        if context.statement is None and context.connection.info.get("course_ending") == "ROLLBACK":
            return None  # a ROLLBACK applies nothing, and the server rolled back as the connection died
        situation, alone = _situation(context, read_timeout)
        verdict = rule.verdict(situation)
        own = context.execution_context is not None and context.execution_context.execution_options.get("course_own")
        if verdict == rule.TRANSACTION_LOST and alone and own and situation.retried == "no" \
                and situation.failure != "timed out":
            verdict = rule.RETRY  # the transaction was this statement alone: run again, it runs again whole
        error = context.sqlalchemy_exception
        if verdict == rule.RETRY:
            return RunAgain(error.statement, error.params, context.original_exception, connection_invalidated=True)
        raised = RAISED.get(verdict)
        if raised is None:  # the rule says raise: SQLAlchemy's own error, as it is
            return None
        return raised(context.original_exception.args[0], f"{rule.row_for(situation)[6]} ({situation.failure})")


def _transaction_ends(conn, how):
    if conn.invalidated:  # its connection is gone, and with it what was noted of it
        return
    conn.info["course_ending"] = how
    conn.info.pop("course_partly_committed", None)


def status(dbapi_connection):
    """``(in transaction, autocommit)`` by the server's last answer on this driver connection
    (``(True, False)`` where the flags cannot be read: then nothing is run again by mistake)."""
    if not server_flags.AVAILABLE:
        return True, False
    flags = server_flags.read(dbapi_connection)
    return bool(flags & server_flags.IN_TRANSACTION), bool(flags & server_flags.AUTOCOMMIT)


def _situation(context, read_timeout):
    code = context.original_exception.args[0] if context.original_exception.args else None
    # the driver connection, before SQLAlchemy invalidates it (right after the handlers ran)
    in_transaction, autocommit = status(context.connection.connection.dbapi_connection)
    sql = context.statement or "COMMIT"  # a failed commit() has no statement
    message = str(context.original_exception.args[-1]) if context.original_exception.args else ""
    if code == SERVER_GONE or code == IDLE_TIMEOUT and "disconnect" in message.lower():  # MariaDB's 4031 is another error
        failure = "not sent"
    elif code in (SERVER_LOST, CONNECTION_KILLED) and read_timeout and \
            time.monotonic() - context.connection.info.get("course_sent_at", 0) >= 0.95 * read_timeout:
        failure = "timed out"
    else:
        failure = "lost"
    options = context.execution_context.execution_options if context.execution_context else {}
    if context.statement is None or statements.may_end_transaction(sql):
        kind = "may commit"
    elif statements.is_read(sql):
        kind = "read"
    else:
        kind = "idempotent" if options.get("idempotent") else "write"
    session = "needed" if statements.reads_the_session(sql) else "not needed"
    # With autocommit off (SQLAlchemy's way) a write opens a transaction that only a COMMIT ends: lost
    # with its connection, it was rolled back, as a transaction already open is
    opened = in_transaction or (not autocommit and kind in ("write", "idempotent"))
    partly = context.connection.info.get("course_partly_committed", False)
    transaction = "partly committed" if partly and opened else "open" if opened else "none"
    situation = rule.Situation(failure, transaction, kind, session, "yes" if options.get("course_retried") else "no")
    return situation, opened and not in_transaction and not partly


def execute(runner, statement, parameters=None, **execution_options):
    """``runner.execute(statement, parameters)`` on a Connection or an ORM Session (a plain string:
    ``exec_driver_sql()``, on a Connection); after ``RunAgain``, ``rollback()`` (the lost
    connection's transaction is gone on the server too) and once more, on a new connection.
    ``idempotent=True`` declares that it may run twice (a write keyed by an id the client chose)."""
    run = runner.exec_driver_sql if isinstance(statement, str) else runner.execute
    # course_own: only this statement may be run again here, not one of an ORM Session's flush before it
    # (its objects, dropped by the rollback, would be lost without a word)
    own = {**execution_options, "course_own": True}
    try:
        return run(statement, parameters, execution_options=own)
    except RunAgain:
        runner.rollback()
        return run(statement, parameters, execution_options={**own, "course_retried": True})
