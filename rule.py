"""The safe reconnect's rule: after a statement failed, what may happen next. One table, read top down.

Every way a statement can fail that the safe reconnect handles (``BEGIN``, ``COMMIT`` and the
refusals included) is described by a ``Situation`` of five facts, and the first row of
``RULE`` that matches it gives the verdict. (A ``ROLLBACK`` needs none: on a dead connection the
server has rolled back, which is what was asked. ``run_transaction()`` acts on the verdicts: it
runs a ``TransactionLost`` transaction again, and an ``OutcomeUnknown`` one only when declared
idempotent.) Each fact comes from where it is true:

- ``failure``: how it failed. ``not sent`` the client knows (it found the server had hung up
  before sending, could not send: 2006, 4031, or could not connect to send it at all); ``lost`` means the answer never came (2013,
  1927): the server may have run it; ``timed out`` is the client's own ``read_timeout`` running
  out: the server may be running it still; ``refused`` the server would not run it (1290: it is
  read-only; 1047: a Galera node outside the cluster's primary component): it did not run. After a retry, the worst of both tries.
- ``transaction``: from the server's status flags after every statement (and peewee's
  ``atomic()``): ``none``, ``open`` (the server rolls it back when the connection dies: what it wrote
  to a transactional table, InnoDB's; a non-transactional one, MyISAM, Aria or MEMORY, keeps every
  write at once, and is outside the rule's promise), or
  ``partly committed`` (a statement inside it that may commit ran: DDL, ``COMMIT AND CHAIN``, a
  ``CALL``; or an XA transaction, which outlives its connection once prepared).
- ``statement``: ``read`` (its text shows it changes nothing: ``SELECT 1``), ``idempotent``
  (the app declared it may run twice), ``write`` (a plain ``INSERT``, ``UPDATE``, ``DELETE``:
  it may have effects, and cannot end a transaction) or ``may commit`` (``COMMIT``, DDL,
  ``CALL``, anything the text does not show whole).
- ``session``: ``needed`` when a new connection would lack what the app relies on (state the
  server reported, a lock; or what earlier statements of the request left, for a statement
  that may read it), else ``not needed``.
- ``retried``: whether this statement has been run again once already: at most once, but for a
  refusal, run again while ``reconnect_timeout`` lasts.
"""
from dataclasses import dataclass, fields

RETRY = "run it again"
RETRY_WHEN_WRITABLE = "run it again where it is taken"
TRANSACTION_LOST = "TransactionLost"
OUTCOME_UNKNOWN = "OutcomeUnknown"
SESSION_LOST = "SessionLost"
RAISE = "raise"

FAILURES = ("not sent", "lost", "timed out", "refused")
TRANSACTIONS = ("none", "open", "partly committed")
STATEMENTS = ("read", "idempotent", "write", "may commit")
SESSIONS = ("not needed", "needed")
RETRIED = ("no", "yes")


@dataclass(frozen=True)
class Situation:
    failure: str
    transaction: str
    statement: str
    session: str
    retried: str = "no"


ANY = "*"
# failure, transaction, statement, session, retried -> verdict, why. The first row that matches wins.
RULE = [
    ("*", "partly committed", "*", "*", "*", OUTCOME_UNKNOWN,
     "part of the transaction may be kept: a statement inside it committed what came before, or it is an XA "
     "transaction, which outlives its connection once prepared"),
    ("refused", "open", "*", "*", "*", TRANSACTION_LOST,
     "the server refused it and rolls the transaction back: nothing of it was applied"),
    ("not sent", "open", "*", "*", "*", TRANSACTION_LOST,
     "it was never sent, and the server rolled the transaction back: nothing of it was applied"),
    ("lost|timed out", "open", "may commit", "*", "*", OUTCOME_UNKNOWN,
     "it may have committed the transaction: it may or may not have been applied"),
    ("lost|timed out", "open", "*", "*", "*", TRANSACTION_LOST,
     "it cannot commit, and the server rolls the transaction back: nothing of it was applied"),
    ("timed out", "none", "read", "*", "*", RAISE,
     "the client gave up waiting, and the server may be running it still: not run a second time"),
    ("timed out", "none", "*", "*", "*", OUTCOME_UNKNOWN,
     "the client gave up waiting, and the server may be running it still: it may or may not be applied"),
    ("lost", "none", "write|may commit", "*", "*", OUTCOME_UNKNOWN,
     "the server may have run it before the answer was lost: it may or may not have been applied, so not run again"),
    ("*", "none", "*", "needed", "*", SESSION_LOST,
     "a new connection would not have what the session held, so it was not run there"),
    ("lost", "none", "idempotent", "*", "yes", OUTCOME_UNKNOWN,
     "lost twice: it may or may not have been applied"),
    ("refused", "none", "*", "*", "*", RETRY_WHEN_WRITABLE,
     "the server refused it: nothing ran (waiting for one that takes writes: within reconnect_timeout)"),
    ("*", "none", "*", "*", "yes", RAISE, "it failed again when run a second time"),
    ("*", "none", "*", "*", "no", RETRY, "nothing ran, or running it twice is running it once"),
]
COLUMNS = [field.name for field in fields(Situation)] + ["verdict", "why"]


def _matches(pattern, value):
    return pattern == ANY or value in pattern.split("|")


def row_for(situation):
    """The first row of ``RULE`` that ``situation`` matches."""
    values = [getattr(situation, name) for name in COLUMNS[:5]]
    for row in RULE:
        if all(_matches(pattern, value) for pattern, value in zip(row, values)):
            return row
    raise LookupError(f"no row of the rule matches {situation}")  # the test walks every situation


def verdict(situation):
    """What happens next: one of ``RETRY``, ``RETRY_WHEN_WRITABLE``, ``TRANSACTION_LOST``,
    ``OUTCOME_UNKNOWN``, ``SESSION_LOST``, ``RAISE``."""
    return row_for(situation)[5]


def every_situation():
    """Every combination of the five facts."""
    return [Situation(*values) for values in _product(FAILURES, TRANSACTIONS, STATEMENTS, SESSIONS, RETRIED)]


def _product(*axes):
    if not axes:
        return [()]
    return [(first, *rest) for first in axes[0] for rest in _product(*axes[1:])]


def as_table(why=False):
    """``RULE`` as a pandas DataFrame, one row a line, for a chapter to show (``why``: with the reasons)."""
    import pandas

    table = pandas.DataFrame(RULE, columns=COLUMNS).replace({"*": "any"})
    table = table.apply(lambda column: column.str.replace("|", " or "))
    return table if why else table.drop(columns="why")
