"""What the safe reconnect reads from a statement's text, and only where nothing truer is known.

Whether a transaction is open, and most of what a session holds, the server says itself after
every statement (``connections.py``); what may run twice, the app declares (``idempotent()``).
What is left is read here, and every reading is conservative: a statement it does not recognise
"may have effects", "may end a transaction", "may leave state" and "may read the session".
Stored functions, procedures, views and executable comments (``/*! ... */``) are code the text
does not show, so a statement that may run them is never taken for a plain one.

Each reading depends on the text alone, so it is done once per distinct statement and remembered.
"""
import re
from functools import lru_cache
from typing import NamedTuple

# Built-in functions that change nothing and read nothing of the session: a statement calling any
# other name (a stored function, LAST_INSERT_ID(), GET_LOCK(), NEXTVAL()) is not "plain".
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
    JSON_SET JSON_INSERT JSON_REPLACE JSON_REMOVE JSON_MERGE_PATCH JSON_MERGE_PRESERVE JSON_SEARCH JSON_TYPE
    JSON_VALID JSON_DEPTH REGEXP_REPLACE REGEXP_SUBSTR REGEXP_INSTR
    DATABASE SCHEMA USER CURRENT_USER VERSION SLEEP
""".split())
# Built-ins that read what earlier statements left in the session, and leave nothing (without an
# argument: LAST_INSERT_ID(5) sets the value).
SESSION_READERS = {"LAST_INSERT_ID", "ROW_COUNT", "FOUND_ROWS", "CONNECTION_ID"}
# Built-ins that leave nothing new in the session (they release, or look at, locks).
LEAVE_NOTHING = {"RELEASE_LOCK", "RELEASE_ALL_LOCKS", "IS_FREE_LOCK", "IS_USED_LOCK"}
# Keywords an opening parenthesis may follow without a function being called.
KEYWORDS_BEFORE_PARENTHESIS = set("""
    SELECT FROM WHERE AND OR NOT XOR IN EXISTS AS ON USING JOIN UNION ALL ANY SOME OVER PARTITION HAVING BY
    WHEN THEN ELSE CASE LIMIT OFFSET IS LIKE BETWEEN WITH RECURSIVE DISTINCT MATCH INTERVAL INDEX KEY
    EXCEPT INTERSECT VALUES VALUE INTO SET
""".split())  # not AGAINST: a function may be named so, and the server calls it
# Statements that may touch tables but run no code the text hides, and never end a transaction.
PLAIN_STATEMENTS = {"SELECT", "INSERT", "UPDATE", "DELETE", "REPLACE", "WITH"}
# Words that make a SELECT more than a read of no table: a table (it may be a view), locking reads, INTO.
NOT_A_READ_WORDS = {"INTO", "UPDATE", "DELETE", "LOCK", "SHARE", "FROM", "JOIN"}

_CODE_IN_COMMENTS = re.compile(r"/\*[!M]")  # /*! ... */ and /*M! ... */ are run by the server
_STRINGS_NAMES_COMMENTS = re.compile(
    r"""'(?:[^'\\]|\\.|'')*'|"(?:[^"\\]|\\.|"")*"|(`(?:[^`]|``)*`)|(/\*.*?\*/|(?:--\s|#)[^\n]*)""", re.S)

# The table an INSERT or REPLACE names before its column list, which is no function call.
_INSERT_TARGET = re.compile(r"^\s*(INSERT|REPLACE)(\s+(LOW_PRIORITY|DELAYED|HIGH_PRIORITY|IGNORE))*(\s+INTO)?"
                            r"\s+[\w$]+(\s*\.\s*[\w$]+)?\s*(?=\()")
# A name and an opening parenthesis: a call. Names may hold any letter (notéit), or start with a digit.
_CALL = re.compile(r"([\w$]+(?:\s*\.\s*[\w$]+)*)\s*\(")
# Text whose meaning depends on the session's sql_mode: "f"(1) is a call under ANSI_QUOTES, and a
# backslash ends a string early under NO_BACKSLASH_ESCAPES.
_MODE_DEPENDENT = re.compile(r'"(?:[^"\\]|\\.|"")*"\s*\(|\\')

_USER_VARIABLE = re.compile(r"(?<!@)@(?!@)")  # @cart, not @@time_zone
# System variables that are what the session's earlier statements left: @@identity, @@warning_count ...
_SESSION_TRACES = re.compile(r"@@(SESSION\.)?(IDENTITY|LAST_INSERT_ID|INSERT_ID|WARNING_COUNT|ERROR_COUNT)\b")
_SEQUENCE = re.compile(r"\b(NEXT|PREVIOUS)\s+VALUE\s+FOR\b")  # advances a sequence, or reads the session's last value

_SAVEPOINT = re.compile(r"\s*(SAVEPOINT|RELEASE\s+SAVEPOINT|ROLLBACK\s+(WORK\s+)?TO\s+(SAVEPOINT\s+)?)\s*(NAME|[A-Z0-9_$]+)\s*;?\s*")

_TRANSACTION_CONTROL = re.compile(r"\s*(BEGIN|START\s+TRANSACTION|COMMIT|ROLLBACK)(\s+WORK)?(\s+AND\s+(NO\s+)?CHAIN)?"
                                  r"(\s+(NO\s+)?RELEASE)?\s*;?\s*")

_TABLE_FROM_SELECT = re.compile(r"^\s*CREATE\b[^(]*?\bTABLE\b.*\bSELECT\b", re.S)  # CREATE TABLE t AS SELECT f()

REMEMBERED = 4096  # distinct statements whose readings are kept
_remembered = lru_cache(maxsize=REMEMBERED)


@_remembered
def _bare(sql):
    """``sql`` upper-cased: strings made ``''``, quoted names ``NAME``, comments a space."""
    if isinstance(sql, bytes):
        sql = sql.decode(errors="replace")

    def blank(match):
        return " NAME " if match.group(1) else " " if match.group(2) else " '' "
    return _STRINGS_NAMES_COMMENTS.sub(blank, sql).upper()


@_remembered
def _words(sql, n=3):
    """The first ``n`` words of a statement, upper-cased, without comments or parentheses."""
    return re.findall(r"[A-Z_@][A-Z0-9_@$]*", _bare(sql))[:n]


@_remembered
def is_plain(sql):
    """True for one ``SELECT``, ``INSERT``, ``UPDATE``, ``DELETE`` or ``REPLACE`` that calls only
    built-in functions with no effect, and uses no user variable and no executable comment. Such a
    statement never ends a transaction and leaves nothing in the session. (It may still fire a
    trigger, or read a view: see ``reads_the_session()`` for what that leaves open.)"""
    if isinstance(sql, bytes):
        sql = sql.decode(errors="replace")
    if _CODE_IN_COMMENTS.search(sql) or _MODE_DEPENDENT.search(sql):
        return False
    bare = _bare(sql)
    first = _words(sql, 1)
    if not first or first[0] not in PLAIN_STATEMENTS:
        return False
    if ";" in bare.rstrip().rstrip(";") or _USER_VARIABLE.search(bare) or _SEQUENCE.search(bare) \
            or _SESSION_TRACES.search(bare):
        return False  # a second statement, or a user variable read or assigned
    return _called(sql) <= PURE_FUNCTIONS  # else a stored function, or a built-in not known to be harmless


@_remembered
def _called(sql):
    """The names of the functions a statement calls; a qualified one (``shop.f``) as ``SHOP.F``."""
    names = (re.sub(r"\s+", "", name) for name in _CALL.findall(_INSERT_TARGET.sub(" ", _bare(sql))))
    return frozenset(name for name in names if name not in KEYWORDS_BEFORE_PARENTHESIS and not name.isdigit())


@_remembered
def is_read(sql):
    """True for a statement that certainly changes nothing and may run twice: a plain ``SELECT``
    that names no table (a "table" may be a view that calls a stored function that writes), takes
    no lock and writes into nothing: ``SELECT 1``, ``SELECT SLEEP(1)``, ``SELECT @@read_only``.
    A read of tables may run twice only where the app says so (``idempotent()``)."""
    words = set(re.findall(r"[A-Z_][A-Z0-9_$]*", _bare(sql)))
    return is_plain(sql) and _words(sql, 1) == ["SELECT"] and not words & NOT_A_READ_WORDS


@_remembered
def may_end_transaction(sql):
    """False only for one ``SELECT``, ``INSERT``, ``UPDATE``, ``DELETE`` or ``REPLACE`` with no
    executable comment and no second statement (whatever it calls: the server refuses a commit in
    a stored function or a trigger, error 1422), or a savepoint's; ``COMMIT``, DDL (an implicit
    commit), ``CALL``, ``SET`` and anything unknown may end, or commit, the transaction it runs in."""
    return not (_one_statement_that_cannot_commit(sql) or _SAVEPOINT.fullmatch(_bare(sql)))


def _one_statement_that_cannot_commit(sql):
    if isinstance(sql, bytes):
        sql = sql.decode(errors="replace")
    if _CODE_IN_COMMENTS.search(sql) or _MODE_DEPENDENT.search(sql):
        return False  # code the text does not show, or text whose strings may end elsewhere
    first = _words(sql, 1)
    return bool(first) and first[0] in PLAIN_STATEMENTS and ";" not in _bare(sql).rstrip().rstrip(";")


@_remembered
def reads_the_session(sql):
    """False for a plain statement: it reads nothing the earlier statements of a session left
    there. Anything else may (``LAST_INSERT_ID()``, ``ROW_COUNT()``, ``FOUND_ROWS()``, ``SHOW
    WARNINGS``, a user variable, a procedure), and so may not run on a new connection in their
    place. ``BEGIN``, ``COMMIT``, ``ROLLBACK``, savepoints and DDL that selects nothing read
    nothing either. Limit: a trigger or a view that itself reads ``LAST_INSERT_ID()`` is not seen."""
    bare = _bare(sql)
    if is_plain(sql) or _SAVEPOINT.fullmatch(bare) or _TRANSACTION_CONTROL.fullmatch(bare):
        return False
    return not (_is_ddl(sql) and not _TABLE_FROM_SELECT.search(bare) and not _USER_VARIABLE.search(bare)
                and not _CODE_IN_COMMENTS.search(sql if isinstance(sql, str) else sql.decode(errors="replace")))


def _is_ddl(sql):
    return _words(sql, 1) in (["CREATE"], ["ALTER"], ["DROP"], ["RENAME"], ["TRUNCATE"])


@_remembered
def may_read_insert_id(sql):
    """False for a statement that certainly does not read ``LAST_INSERT_ID()`` (which the session
    keeps from statement to statement, unlike ``ROW_COUNT()`` or warnings): True when it names it
    (or ``@@identity``), or may run code its text does not show."""
    return bool(re.search(r"\bLAST_INSERT_ID\b|@@(SESSION\.)?(IDENTITY|LAST_INSERT_ID|INSERT_ID)\b", _bare(sql))
                or runs_hidden_code(sql))


@_remembered
def runs_hidden_code(sql):
    """True when ``sql`` may run code its text does not show: a procedure, a function the course
    does not know (a stored one), an executable comment, a call the sql_mode may hide."""
    text = sql.decode(errors="replace") if isinstance(sql, bytes) else sql
    if _CODE_IN_COMMENTS.search(text) or _MODE_DEPENDENT.search(text) or _words(sql, 1) == ["CALL"]:
        return True
    if _is_ddl(sql) and not _TABLE_FROM_SELECT.search(_bare(sql)):
        return False  # DDL runs no function (a stored one is not allowed in a DEFAULT; a view's is run when read)
    return bool(_called(sql) - PURE_FUNCTIONS - SESSION_READERS - LEAVE_NOTHING)


@_remembered
def inserts(sql):
    """True for an ``INSERT`` or ``REPLACE``: it may set the session's ``LAST_INSERT_ID()``."""
    return _words(sql, 1) in (["INSERT"], ["REPLACE"])


TABLE_LOCKS = "table locks (LOCK TABLES)"


@_remembered
def state_left(sql):
    """What ``sql`` may leave in the session that the server does not report (its flag covers
    ``SET``, temporary tables, ``PREPARE`` and ``USE``), or None: table locks, a ``GET_LOCK()``
    lock, a user variable assigned by ``:=`` or ``INTO``, and whatever a procedure or a stored
    function may have left."""
    bare, words = _bare(sql), _words(sql, 2)
    text = sql.decode(errors="replace") if isinstance(sql, bytes) else sql
    if _CODE_IN_COMMENTS.search(text):
        return "what an executable comment (/*! ... */) may leave"
    if _MODE_DEPENDENT.search(text):
        return "what a call the sql_mode may hide may leave (a lock, a user variable)"
    if words in (["LOCK", "TABLE"], ["LOCK", "TABLES"]):
        return TABLE_LOCKS
    if re.search(r"\bGET_LOCK\s*\(", bare):
        return "a GET_LOCK() lock"
    if ":=" in bare or re.search(r"\bINTO\s+@", bare):
        return "a user variable"
    if words == ["SET", "TRANSACTION"]:
        return "the next transaction's characteristics (SET TRANSACTION)"
    if re.search(r"\bLAST_INSERT_ID\s*\(\s*[^)\s]", bare):
        return "a LAST_INSERT_ID() value"
    if words[:1] == ["CALL"]:
        return "what a procedure may leave (a lock, a user variable)"
    if _is_ddl(sql) and not _TABLE_FROM_SELECT.search(bare):
        return None  # DDL runs no function (a stored one is not allowed in a DEFAULT; a view's is run when read)
    if _called(sql) - PURE_FUNCTIONS - SESSION_READERS - LEAVE_NOTHING:
        return "what a function the course does not know may leave (a lock, a user variable)"
    return None


@_remembered
def controls_transaction(sql):
    """True for ``BEGIN``, ``START TRANSACTION``, ``COMMIT`` and ``ROLLBACK`` (``AND CHAIN`` too)."""
    return bool(_TRANSACTION_CONTROL.fullmatch(_bare(sql)))


@_remembered
def xa_change(sql):
    """``"start"`` for ``XA START``/``XA BEGIN``, ``"end"`` for ``XA COMMIT``/``XA ROLLBACK``, else None."""
    words = _words(sql, 2)
    if words in (["XA", "START"], ["XA", "BEGIN"]):
        return "start"
    return "end" if words in (["XA", "COMMIT"], ["XA", "ROLLBACK"]) else None


@_remembered
def only_sets_autocommit(sql):
    """True for ``SET autocommit = 0|1`` alone: the server reports that change as session state,
    yet autocommit is followed on its own (from the server's flags), and 1 is every session's start."""
    return re.fullmatch(r"\s*SET\s+(SESSION\s+|@@SESSION\.|@@)?AUTOCOMMIT\s*=\s*(0|1|ON|OFF)\s*;?\s*", _bare(sql)) is not None


class Reading(NamedTuple):
    """What the text of a statement shows, for the record of a connection it succeeded on."""
    may_commit: bool
    controls: bool  # BEGIN, START TRANSACTION, COMMIT, ROLLBACK
    xa: str  # "start", "end" or None
    state: str  # what it may leave in the session that the server does not report, or None
    only_autocommit: bool
    inserts: bool


# Statements read so far whose text leaves nothing behind (no insert id, no session state, no XA):
# after one of them, with no transaction before or after, a connection's record has nothing to learn,
# and the success path finds that out with one look-up (no call). Bounded, as the readings are.
QUIET = set()
# Statements read so far as reads (``is_read``). The rule runs a read again whether it was sent or
# not (tests/test_rule.py checks it row by row), so the safe reconnect sends one without first
# looking whether the server hung up (a system call). Bounded, as the readings are.
READS = set()


@_remembered
def reading(sql):
    """Every reading a successful statement needs, at once (one look-up of what is remembered)."""
    text = Reading(may_end_transaction(sql), controls_transaction(sql), xa_change(sql), state_left(sql),
                   only_sets_autocommit(sql), inserts(sql))
    if not (text.inserts or text.state or text.xa) and len(QUIET) < REMEMBERED:
        QUIET.add(sql)
    if is_read(sql) and len(READS) < REMEMBERED:
        READS.add(sql)
    return text


def describe(sql, width=60):
    """The start of a statement, for a message."""
    text = " ".join((sql.decode(errors="replace") if isinstance(sql, bytes) else sql).split())
    return text if len(text) <= width else text[:width - 3] + "..."
