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
import hashlib
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import MySQLdb

try:
    import config
    import tls
except ValueError as error:  # a malformed setting: from the shell, say which, without a traceback
    if __name__ != "__main__":
        raise
    sys.exit(f"error: {error}")

# COURSE_SERVER_DIR: another folder, for another server beside the course's (make test gives each of
# its worker processes one: see tests/conftest.py)
HOME = Path(os.environ.get("COURSE_SERVER_DIR") or Path(__file__).resolve().parent / ".mysql")
# Why the last start failed, kept until a start succeeds: Binder's start script goes on to JupyterLab
# when the server fails, and check_connection() (00_setup) shows the reader this reason
START_FAILURE = HOME / "start-failure.txt"
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


class Instance:
    """One MariaDB server process under ``home``, on 127.0.0.1:``port``; ``options`` are more
    ``mariadbd`` options (a replica's ``--server-id``, say). The course's own server is one
    (``course()``); the replica pair of chapter 08 is two more."""

    def __init__(self, home, port, options=(), tls_folder=None):
        self.home, self.port, self.options = Path(home), port, tuple(options)
        self.tls_folder = tls_folder  # certificates here, made if missing: the server offers TLS
        self.data = self.home / "data"
        self.socket = self.home / "mysqld.sock"
        self.pid_file = self.home / "mysqld.pid"
        self.error_log = self.home / "error.log"
        # A server removes every #sql* file in its tmpdir when it starts: a shared /tmp would lose
        # another server's temporary tables (two mariadb-install-db at once fail with 1051).
        self.tmpdir = self.home / "tmp"

    def root_connection(self):
        """A root connection through the socket; root has no TCP login."""
        return MySQLdb.connect(unix_socket=str(self.socket), user="root")

    def pid(self):
        """The pid of this server's process if it is alive, else None."""
        try:
            pid = int(self.pid_file.read_text().strip())
            os.kill(pid, 0)
        except (OSError, ValueError):
            return None
        cmdline = Path(f"/proc/{pid}/cmdline")
        if cmdline.exists() and str(self.data) not in cmdline.read_text(errors="replace"):
            return None  # a stale pid file whose number now belongs to another program
        return pid

    def answers(self):
        """True when this server answers on its socket."""
        try:
            self.root_connection().close()
        except MySQLdb.OperationalError:
            return False
        return True

    def is_running(self):
        return self.pid() is not None and self.answers()

    def running_port(self):
        """The port the running process was started with (its command line), or None."""
        pid = self.pid()
        if pid is None:
            return None
        arguments = Path(f"/proc/{pid}/cmdline").read_text(errors="replace").split("\0")
        ports = [a.split("=", 1)[1] for a in arguments if a.startswith("--port=")]
        return int(ports[0]) if ports else None

    def initialise(self):
        """Create the data folder, a copy of a fresh one (``_fresh_data()``). It is copied aside, in
        this server's folder, and moved in place, so a failure leaves nothing half-made."""
        if self.data.exists():
            return
        self.home.mkdir(mode=0o700, parents=True, exist_ok=True)
        aside = Path(tempfile.mkdtemp(prefix="data-", dir=self.home))
        try:
            copy_data_folder(_fresh_data(), aside / "data")
            os.rename(aside / "data", self.data)
        finally:
            shutil.rmtree(aside, ignore_errors=True)

    def launch(self):
        """Start mariadbd in the background and wait until it answers."""
        command = [_program("mariadbd", "mysqld"), "--no-defaults", f"--datadir={self.data}", f"--port={self.port}",
                   "--bind-address=127.0.0.1", f"--socket={self.socket}", f"--pid-file={self.pid_file}",
                   f"--log-error={self.error_log}", f"--tmpdir={self.tmpdir}", "--skip-name-resolve", *self.options]
        self.tmpdir.mkdir(exist_ok=True)
        if self.tls_folder is not None:
            try:
                command += tls.server_options(self.tls_folder)
            except tls.TLSError:
                pass  # no openssl: the server starts without TLS, and require_tls() says why
        if os.geteuid() == 0:
            command.append("--user=root")  # mariadbd refuses to run as root without it
        with open(self.home / "mysqld.out", "ab") as out:
            process = subprocess.Popen(command, stdout=out, stderr=out, stdin=subprocess.DEVNULL,
                                       start_new_session=True)
        self.wait_until_answering(process.poll)

    def wait_until_answering(self, exit_code=lambda: None):
        """Wait for the socket to answer; fail early when ``exit_code()`` says the process died."""
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if exit_code() is not None:
                raise ServerError(f"mariadbd stopped at start (exit {exit_code()}); the end of "
                                  f"{self.error_log}:\n{self.log_tail()}")
            if self.answers():
                return
            time.sleep(0.1)
        raise ServerError(f"mariadbd did not answer within {START_TIMEOUT} s; the end of {self.error_log}:\n"
                          f"{self.log_tail()}")

    def log_tail(self, lines=15):
        try:
            return "\n".join(self.error_log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def provision(self):
        """Create the schema and the course's user with rights on that schema only; drop root's TCP logins.

        Runs at every start: each statement is idempotent. The user keeps the password it was
        created with: a mistyped DB_PASS at a later start is refused (1045), never made the password.
        """
        user = f"'{config.DB_USER}'@'127.0.0.1'"
        connection = self.root_connection()
        try:
            cursor = connection.cursor()
            cursor.execute("SET SESSION sql_log_bin = 0")  # each server of a pair provisions itself
            cursor.execute("DELETE FROM mysql.global_priv WHERE User = 'root' AND Host <> 'localhost'")
            cursor.execute("DELETE FROM mysql.global_priv WHERE User = ''")  # anonymous accounts, if any
            cursor.execute("FLUSH PRIVILEGES")
            cursor.execute(f"CREATE DATABASE IF NOT EXISTS `{config.DB_SCHM}`")
            cursor.execute(f"CREATE USER IF NOT EXISTS {user} IDENTIFIED BY %s", (config.DB_PASS,))
            cursor.execute(f"GRANT ALL PRIVILEGES ON `{config.DB_SCHM}`.* TO {user}")
        finally:
            connection.close()

    def start(self):
        """Initialise the server if needed, start it, and make sure the course's user and schema exist."""
        if self.is_running():
            running = self.running_port()
            if running is not None and running != self.port:
                raise ServerError(f"the server already runs on port {running}, not on {self.port} (DB_PORT): stop it "
                                  f"with `make stop`, then start it again on the port you want")
            return "already running"
        if self.pid() is None and _port_taken(self.port):
            raise ServerError(
                f"port {self.port} on 127.0.0.1 is already taken by another program: stop that program, or "
                f"pick a free port for the course's server, e.g. `DB_PORT={self.port + 1} {START_COMMAND}`."
            )
        self.initialise()
        if self.pid() is None:
            self.launch()
        else:
            self.wait_until_answering()  # our process is there but still starting up
        self.provision()
        return f"started on 127.0.0.1:{self.port}"

    def stop(self):
        """Shut the server down and wait until its process is gone."""
        pid = self.pid()
        if pid is None:
            return "not running"
        if self.answers():
            connection = self.root_connection()
            try:
                connection.cursor().execute("SHUTDOWN")
            finally:
                connection.close()
        else:
            os.kill(pid, 15)
        self.wait_until_gone(pid)
        return "stopped"

    def crash(self):
        """Kill the server's process outright (``SIGKILL``), as a power cut would: no goodbye to anyone."""
        pid = self.pid()
        if pid is not None:
            os.kill(pid, 9)
            self.wait_until_gone(pid)

    def wait_until_gone(self, pid):
        """Until the process and its port are gone. A killed process loses its memory first (its
        command line reads empty), then its threads exit one by one: the port stays taken until the last."""
        deadline = time.monotonic() + START_TIMEOUT
        while (self.pid() is not None or _port_taken(self.port)) and time.monotonic() < deadline:
            time.sleep(0.01)
        if self.pid() is not None or _port_taken(self.port):
            raise ServerError(f"mariadbd (pid {pid}) did not stop within {START_TIMEOUT} s")


def copy_data_folder(source, target):
    """``shutil.copytree``, where a megabyte of zeros stays a hole: InnoDB makes its 100 MB redo log
    with fallocate, so that it takes no writes; copied byte by byte it took 100 MB of them, each
    copy, and made every server on the disk wait longer for its fsyncs."""
    def copy_keeping_holes(source_file, target_file):
        with open(source_file, "rb") as read, open(target_file, "wb") as write:
            while chunk := read.read(1 << 20):
                if chunk.count(0) == len(chunk):
                    write.seek(len(chunk), os.SEEK_CUR)
                else:
                    write.write(chunk)
            write.truncate()
        shutil.copystat(source_file, target_file)
    shutil.copytree(source, target, copy_function=copy_keeping_holes)


def _fresh_data():
    """A data folder as mariadb-install-db makes it, made once for each build of mariadbd (and
    each way of making it) and kept in ``fresh/`` beside the server's folder (each make test worker
    has its own): the replica pair, the Galera cluster and many tests start new servers, and a
    copy takes 0.14 s where mariadb-install-db takes 0.5 s (0.3 s of a core). An older build's goes."""
    server = Path(_program("mariadbd", "mysqld")).stat()
    # how it was made: the options, and the host (the grant tables name it, root@<host>)
    made_how = hashlib.sha256(" ".join([*_install_options(), socket.gethostname()]).encode()).hexdigest()[:8]
    fresh = HOME / "fresh" / f"mariadbd-{server.st_size}-{server.st_mtime_ns}-{made_how}"
    if not fresh.exists():
        HOME.mkdir(mode=0o700, parents=True, exist_ok=True)
        mine = Path(tempfile.mkdtemp(prefix="fresh-", dir=HOME))  # another process may be making one too
        try:
            _install_db(mine / "data")
            fresh.parent.mkdir(exist_ok=True)
            os.rename(mine / "data", fresh)  # in one step: seen whole or not at all
        except OSError:
            if not fresh.exists():  # else the other one's is there, and as good
                raise
        finally:
            shutil.rmtree(mine, ignore_errors=True)
        for old in fresh.parent.iterdir():
            if old != fresh:
                shutil.rmtree(old, ignore_errors=True)
    return fresh


def _install_options():
    return ["--no-defaults", "--auth-root-authentication-method=normal", "--skip-test-db",
            *(["--user=root"] if os.geteuid() == 0 else [])]


def _install_db(target):
    """Run mariadb-install-db in a temporary folder of the system's, then copy what it made to
    ``target``, keeping its holes: with a space in the path, ``mariadb-install-db --user=root``
    runs a ``chown`` that splits the unquoted path."""
    aside = Path(tempfile.mkdtemp(prefix="mariadb-data-"))
    command = [_program("mariadb-install-db", "mysql_install_db"), *_install_options(),
               f"--datadir={aside / 'data'}", f"--tmpdir={aside}"]
    try:
        result = subprocess.run(command, capture_output=True, text=True)
        if result.returncode != 0:
            raise ServerError(f"mariadb-install-db failed:\n{result.stdout}{result.stderr}")
        copy_data_folder(aside / "data", target)
    finally:
        shutil.rmtree(aside, ignore_errors=True)


def course():
    """The course's own server: ``.mysql/`` at ``DB_PORT``, offering TLS with certificates in ``.mysql/tls/``."""
    return Instance(HOME, config.DB_PORT, tls_folder=HOME / "tls")


def tls_ca():
    """The local server's CA certificate, what a TLS client trusts (chapter 11)."""
    return tls.Files(HOME / "tls").ca


def offers_tls():
    """True when the server the course connects to offers TLS (``have_ssl`` is YES)."""
    connection = MySQLdb.connect(**config.connect_kwargs())
    try:
        cursor = connection.cursor()
        cursor.execute("SELECT @@have_ssl")
        return cursor.fetchone()[0] == "YES"
    finally:
        connection.close()


def require_tls():
    """Make sure the local server offers TLS: one started before it had certificates is restarted
    with them. A clear ``ServerError`` (or ``tls.TLSError``) when it cannot."""
    _require_local()
    if offers_tls():
        return "the server offers TLS"
    tls.make_certificates(HOME / "tls")  # raises, saying what to install, when openssl is missing
    restart()
    if not offers_tls():
        raise ServerError(f"the server was restarted with certificates and still offers no TLS; see {course().error_log}")
    return "the server offers TLS (restarted with its certificates)"


def _port_taken(port):
    """True when some program listens on 127.0.0.1:port already."""
    with socket.socket() as probe:
        return probe.connect_ex(("127.0.0.1", port)) == 0


def _initialise():
    course().initialise()


def is_running():
    return course().is_running()


def start():
    """Initialise the course's server if needed, start it, and make sure its user and schema exist.
    When it fails, the reason is kept in ``START_FAILURE`` (see ``last_start_failure()``)."""
    _require_local()
    try:
        result = course().start()
    except Exception as error:
        START_FAILURE.parent.mkdir(parents=True, exist_ok=True)
        reason = str(error) if isinstance(error, ServerError) else f"{type(error).__name__}: {error}"
        START_FAILURE.write_text(reason + "\n")
        raise
    START_FAILURE.unlink(missing_ok=True)
    return result


def last_start_failure():
    """Why the last start of the course's server failed, or None if it succeeded (or never ran)."""
    try:
        return START_FAILURE.read_text().strip() or None
    except OSError:
        return None


def stop():
    """Shut the course's server down and wait until its process is gone."""
    _require_local()
    return course().stop()


def restart():
    """Stop, then start: every client connection is cut, as in a real server restart."""
    stop()
    return start()


def status():
    """One line saying whether the server runs, and where."""
    if not config.LOCAL_SERVER:
        return f"not managed here: DB_HOST points at your own server, {config.describe()}"
    server = course()
    if server.is_running():
        port = server.running_port() or config.DB_PORT
        mismatch = "" if port == config.DB_PORT else f"; DB_PORT says {config.DB_PORT}: `make stop`, then start it there"
        return f"running on 127.0.0.1:{port} (pid {server.pid()}, data in {server.data}){mismatch}"
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
            if config.LOCAL_SERVER and last_start_failure():
                message += f" Its last start failed:\n{last_start_failure()}"
        elif code == 1045:
            fix = (f"the local server keeps the password it was created with ({config.LOCAL_PASSWORD}, unless DB_PASS "
                   "was set then): unset or correct DB_PASS; to give it a new one, `python -m localdb reset` (which "
                   "deletes its data) and start it with the new DB_PASS" if config.LOCAL_SERVER
                   else "correct DB_PASS (or DB_USER)")
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
        print("DB_HOST is set: using your own server, not starting the local one")
        action = check_connection
    try:
        print(f"local MariaDB server: {action()}")
    except ServerError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
