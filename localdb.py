"""The course's own MariaDB server: a plain process under ``.mysql/`` in this repository.

It listens on 127.0.0.1 at ``config.DB_PORT`` (13306 unless set), keeps its data,
socket, pid file and log in ``.mysql/``, and is never a system service. Its root
account logs in through the socket in that folder only; the course's user
``simplerr``@``127.0.0.1`` gets privileges on ``simplerr_schema`` and nothing else.

From a shell::

    python -m localdb start | stop | restart | status | reset

Every function is idempotent: starting a running server or stopping a stopped one
does nothing.
"""
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import MySQLdb

try:
    import config
except ValueError as error:  # a malformed setting: from the shell, say which, without a traceback
    if __name__ != "__main__":
        raise
    sys.exit(f"error: {error}")

HOME = Path(__file__).resolve().parent / ".mysql"
DATA = HOME / "data"
SOCKET = HOME / "mysqld.sock"
PID_FILE = HOME / "mysqld.pid"
ERROR_LOG = HOME / "error.log"
START_COMMAND = "make server"  # what the error messages tell the reader to run
START_TIMEOUT = 30


class ServerError(RuntimeError):
    """The local server could not be set up, started or stopped; the message says what to do."""


def _require_local():
    if not config.LOCAL_SERVER:
        raise ServerError(
            f"DB_HOST is set, so the course uses your own server ({config.describe()}): "
            "it does not start, stop or restart it. Unset DB_HOST to use the local one."
        )


def _program(*names):
    """The path of the first of ``names`` found on PATH or in the sbin folders, where servers live."""
    path = os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/usr/local/sbin", "/sbin"])
    for name in names:
        found = shutil.which(name, path=path)
        if found:
            return found
    raise ServerError(
        f"{' or '.join(names)} is not installed: run `make setup` (it installs Debian's mariadb-server), "
        "or install MariaDB yourself (Homebrew: `brew install mariadb`)."
    )


def _root_connection():
    """A root connection through the socket; root has no TCP login."""
    return MySQLdb.connect(unix_socket=str(SOCKET), user="root")


def _pid():
    """The pid of our server process if it is alive, else None."""
    try:
        pid = int(PID_FILE.read_text().strip())
        os.kill(pid, 0)
    except (OSError, ValueError):
        return None
    cmdline = Path(f"/proc/{pid}/cmdline")
    if cmdline.exists() and str(DATA) not in cmdline.read_text(errors="replace"):
        return None  # a stale pid file whose number now belongs to another program
    return pid


def _answers():
    """True when our server answers on its socket."""
    try:
        _root_connection().close()
    except MySQLdb.OperationalError:
        return False
    return True


def is_running():
    return _pid() is not None and _answers()


def _port_taken(port):
    """True when some program listens on 127.0.0.1:port already."""
    with socket.socket() as probe:
        return probe.connect_ex(("127.0.0.1", port)) == 0


def _initialise():
    """Create the data folder; built aside and renamed, so a failure leaves nothing half-made."""
    if DATA.exists():
        return
    HOME.mkdir(mode=0o700, exist_ok=True)
    staging = HOME / "data.new"
    shutil.rmtree(staging, ignore_errors=True)
    command = [_program("mariadb-install-db", "mysql_install_db"), "--no-defaults", f"--datadir={staging}",
               "--auth-root-authentication-method=normal", "--skip-test-db"]
    if os.geteuid() == 0:
        command.append("--user=root")
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        shutil.rmtree(staging, ignore_errors=True)
        raise ServerError(f"mariadb-install-db failed:\n{result.stdout}{result.stderr}")
    staging.rename(DATA)


def _launch():
    """Start mariadbd in the background and wait until it answers."""
    command = [_program("mariadbd", "mysqld"), "--no-defaults", f"--datadir={DATA}", f"--port={config.DB_PORT}",
               "--bind-address=127.0.0.1", f"--socket={SOCKET}", f"--pid-file={PID_FILE}",
               f"--log-error={ERROR_LOG}", "--skip-name-resolve"]
    if os.geteuid() == 0:
        command.append("--user=root")  # mariadbd refuses to run as root without it
    with open(HOME / "mysqld.out", "ab") as out:
        process = subprocess.Popen(command, stdout=out, stderr=out, stdin=subprocess.DEVNULL, start_new_session=True)
    _wait_until_answering(process.poll)


def _wait_until_answering(exit_code=lambda: None):
    """Wait for the socket to answer; fail early when ``exit_code()`` says the process died."""
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if exit_code() is not None:
            raise ServerError(f"mariadbd stopped at start (exit {exit_code()}); the end of {ERROR_LOG}:\n{_log_tail()}")
        if _answers():
            return
        time.sleep(0.1)
    raise ServerError(f"mariadbd did not answer within {START_TIMEOUT} s; the end of {ERROR_LOG}:\n{_log_tail()}")


def _log_tail(lines=15):
    try:
        return "\n".join(ERROR_LOG.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def _provision():
    """Create the schema and the course's user with rights on that schema only; drop root's TCP logins.

    Runs at every start: each statement is idempotent, and a password changed in DB_PASS follows.
    """
    user = f"'{config.DB_USER}'@'127.0.0.1'"
    connection = _root_connection()
    try:
        cursor = connection.cursor()
        cursor.execute("DELETE FROM mysql.global_priv WHERE User = 'root' AND Host <> 'localhost'")
        cursor.execute("DELETE FROM mysql.global_priv WHERE User = ''")  # anonymous accounts, if any
        cursor.execute("FLUSH PRIVILEGES")
        cursor.execute(f"CREATE DATABASE IF NOT EXISTS `{config.DB_SCHM}`")
        cursor.execute(f"CREATE USER IF NOT EXISTS {user} IDENTIFIED BY %s", (config.DB_PASS,))
        cursor.execute(f"ALTER USER {user} IDENTIFIED BY %s", (config.DB_PASS,))
        cursor.execute(f"GRANT ALL PRIVILEGES ON `{config.DB_SCHM}`.* TO {user}")
    finally:
        connection.close()


def start():
    """Initialise the server if needed, start it, and make sure the course's user and schema exist."""
    _require_local()
    if is_running():
        return "already running"
    if _pid() is None and _port_taken(config.DB_PORT):
        raise ServerError(
            f"port {config.DB_PORT} on 127.0.0.1 is already taken by another program: "
            f"stop that program, or pick a free port for the course's server, e.g. `DB_PORT=13307 {START_COMMAND}`."
        )
    _initialise()
    if _pid() is None:
        _launch()
    else:
        _wait_until_answering()  # our process is there but still starting up
    _provision()
    return f"started on 127.0.0.1:{config.DB_PORT}"


def stop():
    """Shut the server down and wait until its process is gone."""
    _require_local()
    pid = _pid()
    if pid is None:
        return "not running"
    if _answers():
        connection = _root_connection()
        try:
            connection.cursor().execute("SHUTDOWN")
        finally:
            connection.close()
    else:
        os.kill(pid, 15)
    deadline = time.monotonic() + START_TIMEOUT
    while _pid() is not None and time.monotonic() < deadline:
        time.sleep(0.05)
    if _pid() is not None:
        raise ServerError(f"mariadbd (pid {pid}) did not stop within {START_TIMEOUT} s")
    return "stopped"


def restart():
    """Stop, then start: every client connection is cut, as in a real server restart."""
    stop()
    return start()


def status():
    """One line saying whether the server runs, and where."""
    if not config.LOCAL_SERVER:
        return f"not managed here: DB_HOST points at your own server, {config.describe()}"
    if is_running():
        return f"running on 127.0.0.1:{config.DB_PORT} (pid {_pid()}, data in {DATA})"
    return f"not running (start it with `{START_COMMAND}`)"


def reset():
    """Stop the server and delete its data; the next start begins afresh."""
    stop()
    shutil.rmtree(HOME, ignore_errors=True)
    return "reset: data deleted"


def check_connection():
    """Connect with the settings in ``config``; on failure raise ServerError saying what to fix."""
    try:
        MySQLdb.connect(**config.connect_kwargs()).close()
    except MySQLdb.OperationalError as error:
        code = error.args[0]
        where = f"{config.DB_HOST}:{config.DB_PORT}"
        if code in (2002, 2003):
            fix = (f"start it with `{START_COMMAND}` (or `make lab`) in the repository" if config.LOCAL_SERVER
                   else "start your server, or correct DB_HOST / DB_PORT")
            message = f"no MySQL server answers at {where}: {fix}."
        elif code == 1045:
            fix = ("the local server takes the password in DB_PASS at its next start: run `make stop` then "
                   f"`{START_COMMAND}`" if config.LOCAL_SERVER else "correct DB_PASS (or DB_USER)")
            message = f"the server at {where} refused {config.DB_USER!r} with this password (1045): {fix}."
        elif code == 1044 or code == 1049:
            message = (f"{config.DB_USER!r} cannot use the schema {config.DB_SCHM!r} at {where} ({code}): "
                       f"create it and grant {config.DB_USER!r} its privileges, or correct DB_SCHM.")
        else:
            raise
        raise ServerError(message) from None
    return f"connected: {config.describe()}"


def main(argv=None):
    actions = {"start": start, "stop": stop, "restart": restart, "status": status, "reset": reset,
               "check": check_connection}
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1 or argv[0] not in actions:
        print(f"usage: python -m localdb {{{'|'.join(actions)}}}", file=sys.stderr)
        return 2
    action = actions[argv[0]]
    if action is start and not config.LOCAL_SERVER:
        print(f"DB_HOST is set: using your own server, not starting the local one")
        action = check_connection
    try:
        print(f"local MariaDB server: {action()}")
    except ServerError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
