"""localdb.py: the local server's lifecycle, for real."""
import os
import shutil
import socket
import subprocess
import sys

import MySQLdb
import pytest

import config
import localdb
from conftest import ROOT, free_port, run_python

pytestmark = pytest.mark.usefixtures("server_up")


def test_start_is_idempotent():
    assert localdb.start() == "already running"
    assert localdb.is_running()


def test_stop_then_start_and_stop_is_idempotent(connect):
    assert localdb.stop() == "stopped"
    assert localdb.stop() == "not running"
    assert localdb.status() == "not running (start it with `make server`)"
    with pytest.raises(MySQLdb.OperationalError) as error:
        connect()
    assert error.value.args[0] == 2002
    assert localdb.start() == f"started on 127.0.0.1:{config.DB_PORT}"
    connect().ping()


def test_restart_cuts_open_connections(connect):
    connection = connect()
    localdb.restart()
    with pytest.raises(MySQLdb.OperationalError) as error:
        connection.cursor().execute("SELECT 1")
    assert error.value.args[0] in (2006, 2013)
    connect().ping()


def test_status_names_port_and_pid():
    assert localdb.status().startswith(f"running on 127.0.0.1:{config.DB_PORT} (pid ")


def test_a_taken_port_is_named_and_leaves_nothing_broken():
    localdb.stop()
    port = free_port()
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", port))
        squatter.listen()
        result = subprocess.run([sys.executable, "-m", "localdb", "start"], capture_output=True, text=True,
                                cwd=ROOT, env={**os.environ, "DB_PORT": str(port)})
    assert result.returncode == 1
    assert f"port {port} on 127.0.0.1 is already taken by another program" in result.stderr
    assert localdb.status().startswith("not running")
    assert localdb.start().startswith("started")


def test_a_failed_initialisation_leaves_no_data_folder(tmp_path, monkeypatch):
    monkeypatch.setattr(localdb, "HOME", tmp_path)
    monkeypatch.setattr(localdb, "_program", lambda *names: shutil.which("false"))  # every program fails
    with pytest.raises(localdb.ServerError, match="mariadb-install-db failed"):
        localdb._initialise()
    assert list(tmp_path.iterdir()) == []


def test_a_missing_server_binary_says_what_to_install(monkeypatch):
    monkeypatch.setenv("PATH", "/nonexistent")
    monkeypatch.setattr(localdb.shutil, "which", lambda name, path=None: None)
    with pytest.raises(localdb.ServerError, match="mariadbd or mysqld is not installed: run `make setup`"):
        localdb._program("mariadbd", "mysqld")


def test_an_own_server_is_never_started_or_stopped():
    result = run_python("import localdb; localdb.stop()", DB_HOST="127.0.0.1")
    assert "DB_HOST is set, so the course uses your own server" in result.stderr
    assert localdb.is_running()


def test_root_has_no_tcp_login():
    with pytest.raises(MySQLdb.OperationalError) as error:
        MySQLdb.connect(host="127.0.0.1", port=config.DB_PORT, user="root")
    assert error.value.args[0] == 1045


def test_a_mistyped_password_never_becomes_the_servers(connect):
    result = run_python("import localdb; print(localdb.restart())", DB_PASS="a-typo")
    assert "started on" in result.stdout
    connect().ping()  # the password it was created with still works
    with pytest.raises(MySQLdb.OperationalError) as refused:
        MySQLdb.connect(**dict(config.connect_kwargs(), password="a-typo"))
    assert refused.value.args[0] == 1045


def test_status_tells_the_port_the_server_really_listens_on():
    other = free_port()
    result = run_python("import localdb; print(localdb.status())", DB_PORT=str(other))
    assert f"running on 127.0.0.1:{config.DB_PORT} (pid " in result.stdout
    assert f"DB_PORT says {other}" in result.stdout
    started = run_python("import localdb; localdb.start()", DB_PORT=str(other))
    assert f"the server already runs on port {config.DB_PORT}, not on {other}" in started.stderr


def test_a_server_under_a_path_with_a_space_starts_and_stops(tmp_path):
    server = localdb.Instance(tmp_path / "with a space", free_port())
    try:
        assert server.start().startswith("started on")
        assert server.is_running()
    finally:
        assert server.stop() == "stopped"


def test_servers_set_up_at_the_same_time_keep_out_of_each_others_temporary_files(tmp_path, monkeypatch):
    # each starting server deletes the #sql* files in its tmpdir: with /tmp shared, six
    # mariadb-install-db at once often failed (1051 Unknown table 'mysql.tmp_user_sys')
    from concurrent.futures import ThreadPoolExecutor

    monkeypatch.setattr(localdb, "HOME", tmp_path / "home")  # no fresh data folder yet: each makes one
    servers = [localdb.Instance(tmp_path / f"server{n}", free_port()) for n in range(6)]
    with ThreadPoolExecutor(len(servers)) as pool:
        list(pool.map(localdb.Instance.initialise, servers))
    assert all((server.data / "mysql").is_dir() for server in servers)
    assert [path.name for path in (tmp_path / "home").iterdir()] == ["fresh"]  # one kept, the others' gone
    assert len(list((tmp_path / "home" / "fresh").iterdir())) == 1


def test_a_new_server_copies_the_data_folder_mariadb_install_db_made_once(tmp_path, monkeypatch):
    monkeypatch.setattr(localdb, "HOME", tmp_path / "home")
    installs = []
    monkeypatch.setattr(localdb, "_install_db", lambda target, install=localdb._install_db: (installs.append(1),
                                                                                              install(target)))
    (tmp_path / "home" / "fresh" / "mariadbd-of-an-older-build").mkdir(parents=True)
    first, second = (localdb.Instance(tmp_path / name, free_port()) for name in ("first", "second"))
    try:
        assert first.start().startswith("started on") and second.start().startswith("started on")
        assert len(installs) == 1
        assert [path.name for path in (tmp_path / "home" / "fresh").iterdir()] == [localdb._fresh_data().name]
    finally:
        first.stop(), second.stop()
