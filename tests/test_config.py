"""config.py: settings from the environment, with clear errors for bad ones."""
import os
import subprocess
import sys

import pytest

import config
import localdb
from conftest import ROOT, free_port, run_python

SHOW = "import config; print(config.DB_SCHM, config.DB_USER, config.DB_HOST, config.DB_PORT, config.LOCAL_SERVER)"


def test_defaults_match_the_local_server():
    result = run_python(
        "import os\n"
        "for n in ('DB_SCHM', 'DB_USER', 'DB_PASS', 'DB_HOST', 'DB_PORT'): os.environ.pop(n, None)\n" + SHOW
    )
    assert result.stdout.split() == ["simplerr_schema", "simplerr", "127.0.0.1", "13306", "True"]


def test_each_setting_comes_from_the_environment():
    result = run_python(SHOW, DB_SCHM="s", DB_USER="u", DB_HOST="db.example", DB_PORT="3306")
    assert result.stdout.split() == ["s", "u", "db.example", "3306", "False"]


def test_database_uses_the_settings():
    assert config.DATABASE.database == config.DB_SCHM
    assert config.DATABASE.connect_params["port"] == config.DB_PORT


@pytest.mark.parametrize("value", ["abc", "0", "70000", "-1", "13306x"])
def test_a_malformed_port_is_named(value):
    result = run_python("import config", DB_PORT=value)
    assert result.returncode != 0
    assert f"DB_PORT must be a port number from 1 to 65535, not {value!r}" in result.stderr


def test_an_empty_setting_is_named():
    result = run_python("import config", DB_USER="  ")
    assert "DB_USER is set but empty" in result.stderr


def test_the_shell_command_reports_a_malformed_setting_without_a_traceback():
    result = run_python("import runpy; runpy.run_module('localdb', run_name='__main__')", DB_PORT="abc")
    assert result.returncode == 1
    assert result.stderr.strip() == "error: DB_PORT must be a port number from 1 to 65535, not 'abc'"


def test_describe_leaves_the_password_out():
    assert config.DB_PASS not in config.describe()


def test_a_wrong_password_is_named_with_the_hint():
    result = run_python("import localdb; localdb.check_connection()", DB_PASS="not-the-password")
    assert "refused 'simplerr' with this password (1045)" in result.stderr
    assert "python -m localdb reset" in result.stderr
    assert "not-the-password" not in result.stderr


def test_no_server_names_the_start_command():
    result = run_python("import localdb; localdb.check_connection()", DB_PORT=str(free_port()))
    assert "no MySQL server answers at 127.0.0.1:" in result.stderr
    assert "make server" in result.stderr


def test_check_connection_succeeds_on_the_running_server():
    assert localdb.check_connection().startswith("connected: simplerr@127.0.0.1")


def test_a_chapter_run_again_lets_go_of_a_dead_sql_connection_quietly(caplog):
    """What `config.forget_sql_connections()` is for: %sql's connection killed by an earlier run's
    restart (a KILL here), then the chapter's connect cell again: no failed reset logged."""
    import gc

    from sql.connection import Connection

    import faults

    Connection(config.sql_url())
    faults.kill(config.sql_connection().thread_id())
    config.forget_sql_connections()
    Connection(config.sql_url())  # the connect cell, run again
    gc.collect()
    assert [c.internal_connection.closed for c in Connection.connections.values()] == [False]
    assert not [r for r in caplog.records if r.levelname == "ERROR"], caplog.text
    config.forget_sql_connections()


def test_a_wait_for_killed_connections_can_ask_over_sqls_own(connect):
    """Chapter 01 waits for its killed connections over %sql's connection, so that SHOW PROCESSLIST
    right after lists that one alone, not also the waiter's own, just closed."""
    from sql.connection import Connection

    import faults

    Connection(config.sql_url())
    sql_side = config.sql_connection()
    victim = connect()
    faults.kill(victim.thread_id())
    faults.wait_until_closed([victim.thread_id()], over=sql_side)
    cursor = sql_side.cursor()
    cursor.execute("SELECT ID FROM information_schema.PROCESSLIST WHERE USER = %s", (config.DB_USER,))
    listed = [row[0] for row in cursor.fetchall()]
    assert victim.thread_id() not in listed and sql_side.thread_id() in listed  # asked over it, left open
    config.forget_sql_connections()


def test_make_test_refuses_workers_whose_ports_would_pass_32767():
    # each worker has the 500 ports above its own DB_PORT: 12 of them past DB_PORT=26268 would reach
    # the kernel's range for outgoing connections, where a port can be taken at any moment
    environment = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST_", "COURSE_SERVER"))}
    refused = subprocess.run([sys.executable, "-m", "pytest", "-n", "12", "tests/test_rule.py"], cwd=ROOT,
                             env={**environment, "DB_PORT": "26269"}, capture_output=True, text=True)
    assert refused.returncode == 4, refused.stdout + refused.stderr
    assert "with DB_PORT=26269 they pass 32767. Set DB_PORT to at most 26268, or fewer TEST_WORKERS" in refused.stderr
