"""The course's user has privileges on its own schema only, and that is enough for every demo."""
import MySQLdb
import pytest

import config
import localdb


def test_grants_are_on_the_schema_only(connect):
    cursor = connect().cursor()
    cursor.execute("SHOW GRANTS")
    grants = [row[0] for row in cursor.fetchall()]
    assert grants[0].startswith("GRANT USAGE ON *.* TO `simplerr`@`127.0.0.1`")
    assert grants[1:] == [f"GRANT ALL PRIVILEGES ON `{config.DB_SCHM}`.* TO `simplerr`@`127.0.0.1`"]
    assert not any("WITH GRANT OPTION" in grant for grant in grants)


def test_the_user_can_kill_its_own_connection(connect):
    victim, killer = connect(), connect()
    killer.cursor().execute(f"KILL {victim.thread_id()}")
    with pytest.raises(MySQLdb.OperationalError) as error:
        victim.cursor().execute("SELECT 1")
    assert error.value.args[0] in (2006, 2013)


def test_the_user_cannot_create_users(connect):
    with pytest.raises(MySQLdb.OperationalError) as error:
        connect().cursor().execute("CREATE USER 'intruder'@'%' IDENTIFIED BY 'x'")
    assert error.value.args[0] == 1227  # access denied: needs CREATE USER


@pytest.mark.skipif(not config.LOCAL_SERVER, reason="needs the local server's root account")
def test_the_user_cannot_see_or_kill_other_users_connections(connect):
    root = localdb.course().root_connection()
    try:
        cursor = connect().cursor()
        cursor.execute("SHOW PROCESSLIST")
        assert {row[1] for row in cursor.fetchall()} == {"simplerr"}
        with pytest.raises(MySQLdb.OperationalError) as error:
            cursor.execute(f"KILL {root.thread_id()}")
        assert error.value.args[0] == 1095  # you are not the owner of that thread
    finally:
        root.close()
