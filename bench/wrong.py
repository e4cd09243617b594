"""Deliberately wrong strategies, for ``bench/chaos.py --self-check`` only: each is the safe
reconnect with one mistake, and the check passes only when the chaos run's counts show what that
mistake does. A harness that cannot see a mistake it was built to catch proves nothing.

Each entry of ``MUST_SEE`` is a wrong strategy, what the harness must count of it, and how to
read that from its tally.
"""
import connections
import statements
import strategies as S


class AcksDroppedDatabase(S.SafeReconnectMySQLDatabase):
    """WRONG on purpose: a write whose connection was lost is reported done, whatever became of it."""

    def execute_sql(self, sql, params=None):
        try:
            return super().execute_sql(sql, params)
        except (S.OutcomeUnknown, S.TransactionLost):
            if statements.is_read(sql):
                raise
            return None


class WritesTwiceDatabase(S.SafeReconnectMySQLDatabase):
    """WRONG on purpose: every write is taken for idempotent, so a write whose answer was lost is sent again."""

    def execute_sql(self, sql, params=None):
        with self.idempotent():
            return super().execute_sql(sql, params)


class SelectsAreReadsDatabase(S.SafeReconnectMySQLDatabase):
    """WRONG on purpose: a statement that starts with ``SELECT`` is taken for a read, so a read
    through a view whose stored function inserts is sent again after its answer was lost."""

    def _kind(self, sql):
        text = sql.decode(errors="replace") if isinstance(sql, bytes) else sql
        return "read" if text.lstrip().upper().startswith("SELECT") else super()._kind(sql)


class IgnoresServerFlagsDatabase(S.SafeReconnectMySQLDatabase):
    """WRONG on purpose: what the server reports after each statement is ignored (a transaction a
    procedure began, an implicit commit, a session that changed): only peewee's own ``atomic()``
    counts as a transaction. After a kill, the rest of a procedure's transaction runs on a new
    connection in autocommit; after an implicit commit, the app is told nothing was applied."""

    def _connect(self):
        conn = super()._connect()
        self._records[conn].__class__ = FlagsIgnoredRecord  # its record learns nothing from the server
        return conn


class FlagsIgnoredRecord(connections.ConnectionRecord):
    """The record of a connection of ``IgnoresServerFlagsDatabase``: a statement that succeeded only marks it used."""

    def learn(self, sql, flags, inside_atomic):
        self.used = True


class RerunsAfterTimeoutDatabase(S.SafeReconnectMySQLDatabase):
    """WRONG on purpose: a read the client's own ``read_timeout`` gave up on is taken for one whose
    answer was lost, and run again while the server is still running the first copy."""

    def _failure(self, error, started):
        failure = super()._failure(error, started)
        return "lost" if failure == "timed out" else failure


def _strategy(name, database_class):
    return type(database_class.__name__.replace("Database", ""), (S.SafeReconnect,),
                {"name": name, "database_class": database_class, "__doc__": database_class.__doc__})


AcksDropped = _strategy("wrong_acks_dropped", AcksDroppedDatabase)
WritesTwice = _strategy("wrong_writes_twice", WritesTwiceDatabase)
SelectsAreReads = _strategy("wrong_selects_are_reads", SelectsAreReadsDatabase)
IgnoresServerFlags = _strategy("wrong_ignores_server_flags", IgnoresServerFlagsDatabase)
RerunsAfterTimeout = _strategy("wrong_reruns_after_timeout", RerunsAfterTimeoutDatabase)
STRATEGIES = {cls.name: cls for cls in (AcksDropped, WritesTwice, SelectsAreReads, IgnoresServerFlags,
                                        RerunsAfterTimeout)}


def _count(tally, kind, what):
    return tally.by_kind.get(kind, {}).get(what, 0)


# wrong strategy -> the faults its mistake meets (each comes in the run at least once in every two slots)
FAULTS = {
    AcksDropped.name: ["cut_before_insert", "cut_after_insert"],
    WritesTwice.name: ["cut_after_insert"],
    SelectsAreReads.name: ["cut_after_insert"],
    IgnoresServerFlags.name: ["kill_in_transaction"],
    RerunsAfterTimeout.name: ["read_timeout"],
}
# wrong strategy -> [(what the harness must count, that count from its tally), ...]: each must be > 0
MUST_SEE = {
    AcksDropped.name: [("acknowledged writes lost", lambda t: t.lost)],
    WritesTwice.name: [("writes applied twice", lambda t: t.duplicates)],
    SelectsAreReads.name: [("reads through the view that wrote twice", lambda t: _count(t, "view_read", "duplicates"))],
    IgnoresServerFlags.name: [
        ("procedures' transactions torn", lambda t: _count(t, "procedure_transaction", "torn")),
        ("implicit commits told TransactionLost with a part applied",
         lambda t: _count(t, "implicit_commit", "lost_but_landed")),
    ],
    RerunsAfterTimeout.name: [("slow reads the server ran twice", lambda t: _count(t, "slow_read", "duplicates"))],
}
