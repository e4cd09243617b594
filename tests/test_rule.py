"""The safe reconnect's rule, walked whole, and the text reading it falls back on: no server needed."""
import dataclasses

import pytest

import rule
import statements as T

EVERY = rule.every_situation()


def test_every_situation_has_a_verdict_and_every_row_decides_one():
    first_rows = {rule.row_for(situation) for situation in EVERY}
    assert len(EVERY) == 4 * 3 * 4 * 2 * 2
    assert first_rows == set(rule.RULE)  # no row is dead: each is the first match of some situation


def situations(**facts):
    return [s for s in EVERY if all(getattr(s, name) in values.split("|") for name, values in facts.items())]


@pytest.mark.parametrize("promise,cases,allowed", [
    ("a statement that may have had effects is never run again",
     situations(failure="lost|timed out", statement="write|may commit"), {rule.OUTCOME_UNKNOWN, rule.TRANSACTION_LOST}),
    ("nothing is run again inside a transaction", situations(transaction="open|partly committed"),
     {rule.TRANSACTION_LOST, rule.OUTCOME_UNKNOWN}),
    ("a transaction part of which was committed is never called lost", situations(transaction="partly committed"),
     {rule.OUTCOME_UNKNOWN}),
    ("what may have committed is never called lost", situations(failure="lost|timed out", transaction="open",
                                                                 statement="may commit"), {rule.OUTCOME_UNKNOWN}),
    ("nothing runs on a new connection without the session it needs", situations(transaction="none", session="needed"),
     {rule.SESSION_LOST, rule.OUTCOME_UNKNOWN, rule.RAISE}),
    ("what the client gave up on is never run a second time", situations(failure="timed out"),
     {rule.RAISE, rule.OUTCOME_UNKNOWN, rule.TRANSACTION_LOST}),
    ("at most one retry, but for a refusal", situations(retried="yes", failure="not sent|lost"),
     {rule.RAISE, rule.OUTCOME_UNKNOWN, rule.TRANSACTION_LOST, rule.SESSION_LOST}),
])
def test_the_rule_keeps_its_promises(promise, cases, allowed):
    assert cases
    broken = [s for s in cases if rule.verdict(s) not in allowed]
    assert not broken, f"{promise}: {broken[:3]}"


def test_what_nothing_ran_of_is_run_again():
    assert rule.verdict(rule.Situation("not sent", "none", "write", "not needed")) == rule.RETRY
    assert rule.verdict(rule.Situation("lost", "none", "read", "not needed")) == rule.RETRY
    assert rule.verdict(rule.Situation("lost", "none", "idempotent", "not needed")) == rule.RETRY
    assert rule.verdict(rule.Situation("refused", "none", "write", "not needed", "yes")) == rule.RETRY_WHEN_WRITABLE


def test_a_read_has_the_same_verdict_sent_or_not_so_the_safe_reconnect_sends_it_unchecked():
    # safe_reconnect.py looks at the socket before a statement (a system call) only where that can
    # change the verdict: for a read (statements.READS) it cannot, in any situation
    for situation in situations(failure="not sent", statement="read"):
        assert rule.verdict(situation) == rule.verdict(dataclasses.replace(situation, failure="lost")), situation
    T.reading("SELECT 1")  # what a successful statement's record reads
    assert "SELECT 1" in T.READS
    T.reading("SELECT * FROM person")
    assert "SELECT * FROM person" not in T.READS  # a view may write: not a read, and checked before sending


def test_the_rule_is_a_table_a_reader_can_see():
    table = rule.as_table(why=True)
    assert list(table.columns) == rule.COLUMNS and len(table) == len(rule.RULE) <= 15
    assert not table.isin(["*"]).any().any() and "why" not in rule.as_table().columns


# What the text shows, read conservatively: every statement of issue 15's review is here.
@pytest.mark.parametrize("sql,read", [
    ("SELECT 1", True), ("(SELECT 1) UNION (SELECT 2)", True), ("SELECT SLEEP(0.3)", True),
    ("SELECT @@read_only", True), ("select  now()", True),
    ("SELECT * FROM v", False),  # a view may call a stored function that writes
    ("SELECT COUNT(*) FROM `person` AS `t1` WHERE `t1`.`surname` = 'a;b'", False),
    ("SELECT 1 /*!100000 , f(1) */", False), ("SELECT 1 /*M!100000 , f(1) */", False),  # executable comments
    ("SELECT f/**/(1)", False), ("SELECT `f`(1)", False), ("SELECT shop.add_points(1)", False),
    ("SHOW WARNINGS", False), ("show processlist", False), ("SELECT LAST_INSERT_ID()", False),
    ("SELECT * FROM person FOR UPDATE", False), ("SELECT id INTO @first FROM person LIMIT 1", False),
    ("SELECT GET_LOCK('a', 1)", False), ("SELECT NEXTVAL(seq)", False), ("SELECT NEXT VALUE FOR seq", False),
    ("SELECT @n := 1", False), ("SELECT @cart", False), ("SELECT 1; DELETE FROM person", False),
    ("INSERT INTO t VALUES (1)", False), ("CALL p()", False), ("COMMIT", False),
])
def test_is_read(sql, read):
    assert T.is_read(sql) is read


@pytest.mark.parametrize("sql,ends", [
    ("INSERT INTO `person` (`firstname`, `surname`) VALUES (%s, %s)", False), ("UPDATE t SET a = a + 1", False),
    ("DELETE FROM t WHERE id = 1", False), ("SELECT * FROM v", False), ("SAVEPOINT `s1`", False),
    ("ROLLBACK TO SAVEPOINT s1", False), ("INSERT INTO t SELECT f(1)", False),  # a stored function cannot commit (1422)
    ("SELECT CONNECTION_ID()", False), ("SELECT 1; COMMIT", True), ("INSERT INTO t VALUES ('\\'); COMMIT; -- ')", True),
    ("COMMIT", True), ("commit work", True), ("COMMIT AND CHAIN", True), ("CREATE TABLE x (a INT)", True),
    ("CALL p()", True), ("SET autocommit = 1", True), ("START TRANSACTION", True), ("LOCK TABLES t WRITE", True),
    ("/*!*/ COMMIT", True), ("INSERT INTO t VALUES (1) /*! ; COMMIT */", True),
])
def test_what_may_end_a_transaction(sql, ends):
    assert T.may_end_transaction(sql) is ends


@pytest.mark.parametrize("sql,state", [
    ("LOCK TABLES t WRITE", "table locks"), ("SELECT GET_LOCK('a', 0)", "GET_LOCK"), ("SELECT @n := 1", "user variable"),
    ("SELECT 5 INTO @y", "user variable"), ("SELECT LAST_INSERT_ID(7)", "LAST_INSERT_ID"), ("CALL p()", "procedure"),
    ("SELECT f(1)", "function"), ("SELECT 1 /*!100000 , f(1) */", "executable comment"),
    ("SELECT 1", None), ("INSERT INTO t (a) VALUES (1)", None), ("SELECT LAST_INSERT_ID()", None),
    ("CREATE TABLE IF NOT EXISTS t (b LONGBLOB, c VARCHAR(10))", None), ("CREATE VIEW v AS SELECT f(1) AS n", None),
    ("CREATE TABLE t AS SELECT f(1) AS n", "function"), ("SELECT RELEASE_LOCK('a')", None),
])
def test_what_the_server_does_not_report_the_text_shows(sql, state):
    found = T.state_left(sql)
    assert (found is None) if state is None else (state in found)


@pytest.mark.parametrize("sql,reads", [
    ("SELECT LAST_INSERT_ID()", True), ("SHOW WARNINGS", True), ("SELECT @cart", True), ("CALL p()", True),
    ("SELECT ROW_COUNT()", True), ("INSERT INTO t (a) VALUES (1)", False), ("SELECT * FROM person", False),
    ("BEGIN", False), ("COMMIT", False), ("ROLLBACK", False),
])
def test_what_reads_the_session(sql, reads):
    assert T.reads_the_session(sql) is reads


def test_only_a_bare_autocommit_is_not_session_state():
    assert T.only_sets_autocommit("SET autocommit = 0") and T.only_sets_autocommit("set @@session.autocommit=1")
    assert not T.only_sets_autocommit("SET autocommit = 1, @cart = 3")


@pytest.mark.parametrize("sql,reads", [
    ("SELECT LAST_INSERT_ID()", True), ("SELECT @@identity", True), ("select @@session.last_insert_id", True),
    ("CALL p()", True), ("SELECT f(1)", True), ("SELECT 1 /*!, f() */", True), ("CREATE TABLE t AS SELECT f(1)", True),
    ("SELECT ROW_COUNT()", False), ("SHOW WARNINGS", False), ("CREATE TABLE t (a INT)", False), ("SELECT 1", False),
])
def test_what_may_read_the_insert_id(sql, reads):
    assert T.may_read_insert_id(sql) is reads


def test_system_variables_that_hold_the_last_statements_traces_are_not_plain():
    assert T.is_read("SELECT @@read_only") and not T.is_read("SELECT @@identity")
    assert not T.is_plain("SELECT @@warning_count") and not T.is_plain("SELECT @@session.error_count")
