"""The errors the course meets, by number, and the three the safe reconnect raises of its own."""
from peewee import OperationalError

# Error codes that mean "this connection is gone" (MariaDB and MySQL client and server codes).
CONNECTION_KILLED = 1927  # MariaDB: the connection was killed while it ran a statement
SERVER_GONE = 2006  # the client could not send: the connection was already closed
SERVER_LOST = 2013  # the connection died while the client waited for the answer
IDLE_TIMEOUT = 4031  # MySQL 8.0.24+: the server closed an idle connection, with a message
DISCONNECTED = {CONNECTION_KILLED, SERVER_GONE, SERVER_LOST, IDLE_TIMEOUT}
# The statement certainly did not run: it was never sent, or the server hung up before reading it.
NOT_SENT = {SERVER_GONE, IDLE_TIMEOUT}
CANNOT_CONNECT = {2002, 2003}  # nothing listens: the server is down or restarting
READ_ONLY = 1290  # the server runs with --read-only (a replica, or a primary not yet promoted): nothing ran
NOT_READY = 1047  # a Galera node outside the primary component ("WSREP has not yet prepared node"): nothing ran
REFUSED = {READ_ONLY, NOT_READY}  # the server would not run the statement: run it where it is taken
# A transaction that failed with these applied nothing, and may be run again from its start.
DEADLOCK = 1213  # the server rolled the whole transaction back
LOCK_WAIT_TIMEOUT = 1205  # the statement failed; the transaction is rolled back by whoever retries it


def error_code(error):
    """The MySQL error number of a driver or peewee error, or None."""
    args = getattr(error, "args", ())
    return args[0] if args and isinstance(args[0], int) else None


class OutcomeUnknown(OperationalError):
    """The connection died after a statement with effects was sent, or while the server may still
    be running it, or after part of a transaction was committed: the server may or may not have
    applied it. Retrying could apply it twice; giving up could lose it. Only the caller can tell,
    e.g. by looking for the row, or by retrying with a key that makes the write idempotent.
    """


class TransactionLost(OperationalError):
    """The connection died inside a transaction, before anything that could commit it was sent:
    the server rolled the transaction back, so nothing of it was applied. Running it again from
    the start is safe."""


class SessionLost(OperationalError):
    """The connection died while its session held what the app relies on (a user variable, a
    temporary table, a lock, a ``SET SESSION`` value, or what this request's earlier statements
    left for the next one, such as ``LAST_INSERT_ID()``): a new connection would not have it, so
    the statement was not run there. Give every new connection its settings with ``init_command``."""
