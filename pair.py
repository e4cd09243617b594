"""A primary and its replica: two more local MariaDB servers, with MariaDB's own replication
(GTID, asynchronous or semi-synchronous), and HAProxy (Debian's) in front of them, so that the
app keeps one address through a failover. Chapter 08's servers, for real.

    python -m pair start [async|semisync] | failover | status | stop

Each node lives in ``.mysql/pair/<name>/`` on 127.0.0.1, next to the course's own server
(``DB_PORT``): node ``a`` on ``DB_PORT + 1``, node ``b`` on ``DB_PORT + 2``, HAProxy on
``DB_PORT + 3``. ``start()`` builds both nodes afresh (a primary, and a read-only replica
replicating from it), so every run begins from the same place; the course's own server is not
touched. A failover is what a managed database does when its primary dies: the primary is
killed, the replica promoted (replication stopped, ``read_only`` off), and HAProxy sends new
connections to it. ``rejoin()`` builds the old primary afresh as the new primary's replica.
"""
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import MySQLdb

import config
import localdb

HOME = localdb.HOME / "pair"
NAMES = ("a", "b")
REPLICATION_USER, REPLICATION_PASSWORD = "repl", "repl-local"  # local-only, like the course's password
CHECK_USER = "haproxy"  # HAProxy's health check logs in as this user, with no password and no privileges
SEMISYNC_TIMEOUT_MS = 60_000  # how long a semi-synchronous primary waits for its replica before it gives up
MODES = ("async", "semisync")


class PairError(localdb.ServerError):
    """The pair could not be started, failed over or stopped; the message says what to do."""


def port_of(name):
    return config.DB_PORT + 1 + NAMES.index(name)


PROXY_PORT_OFFSET = 3


def proxy_port():
    """The one address the app uses: HAProxy's."""
    return config.DB_PORT + PROXY_PORT_OFFSET


def node(name, mode="async", server_id=1):
    """One node of the pair, as a ``localdb.Instance`` with the options replication needs."""
    semisync = "ON" if mode == "semisync" else "OFF"
    return localdb.Instance(HOME / name, port_of(name), options=(
        f"--server-id={server_id}", "--log-bin=binlog", "--log-slave-updates", "--binlog-format=ROW",
        "--gtid-strict-mode=ON", f"--rpl-semi-sync-master-enabled={semisync}",
        f"--rpl-semi-sync-slave-enabled={semisync}", f"--rpl-semi-sync-master-timeout={SEMISYNC_TIMEOUT_MS}",
        "--rpl-semi-sync-master-wait-no-slave=OFF",  # a primary with no replica at all (just promoted) does not wait
        "--log-bin-trust-function-creators=ON",  # the course's user may create a stored function (the chaos run's view)
    ))


def _next_server_id():
    """A server id no node has had since the pair started. A replica skips the changes that carry
    its own id (they would be its own, come back), so a node rebuilt by ``rejoin()`` needs a new one."""
    counter = HOME / "server_ids"
    last = int(counter.read_text()) if counter.exists() else 0
    counter.write_text(str(last + 1))
    return last + 1


def _root(name):
    """A root connection to a node, through its socket; autocommit on, as the admin's prompt has it."""
    connection = node(name).root_connection()
    connection.autocommit(True)
    return connection


def _run(name, *statements):
    """Run statements as root on a node; the rows of the last."""
    connection = _root(name)
    try:
        cursor = connection.cursor()
        for statement in statements:
            cursor.execute(statement)
        return cursor.fetchall()
    finally:
        connection.close()


def _accounts(name):
    """The replication account and HAProxy's check account, on one node, outside its binlog; and
    the course's user may read ``SHOW SLAVE STATUS`` (``SLAVE MONITOR``), nothing more."""
    user = f"'{REPLICATION_USER}'@'127.0.0.1'"
    _run(name, "SET SESSION sql_log_bin = 0",
         f"CREATE USER IF NOT EXISTS {user} IDENTIFIED BY '{REPLICATION_PASSWORD}'",
         f"GRANT REPLICATION SLAVE ON *.* TO {user}",
         f"CREATE USER IF NOT EXISTS '{CHECK_USER}'@'127.0.0.1'",
         f"GRANT SLAVE MONITOR ON *.* TO '{config.DB_USER}'@'127.0.0.1'")


def sql_url(name):
    """A SQLAlchemy URL for ``%sql`` on one node, as the course's user (it holds the password: pass it, never print it)."""
    return config.sql_url(port_of(name))


def _build(name, mode, server_id=None):
    """A node from nothing: a fresh data folder, started, with the course's user and the pair's accounts."""
    server = node(name, mode, server_id or _next_server_id())
    server.crash()
    shutil.rmtree(server.home, ignore_errors=True)
    server.start()
    _accounts(name)
    return server


def _replicate(replica, primary_port):
    """Make ``replica`` a read-only replica of the server at ``primary_port`` (a node, or a relay to one)."""
    _run(replica, "SET GLOBAL read_only = 1", "STOP SLAVE",
         f"CHANGE MASTER TO MASTER_HOST = '127.0.0.1', MASTER_PORT = {int(primary_port)}, "
         f"MASTER_USER = '{REPLICATION_USER}', MASTER_PASSWORD = '{REPLICATION_PASSWORD}', "
         "MASTER_USE_GTID = slave_pos, MASTER_CONNECT_RETRY = 1",
         "START SLAVE")
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        state = replica_status(replica)
        if state and state["Slave_IO_Running"] == "Yes" and state["Slave_SQL_Running"] == "Yes" and _semisync_ready():
            return
        time.sleep(0.1)
    raise PairError(f"node {replica} did not start replicating within 20 s: {replica_status(replica)}")


def _semisync_ready():
    """True unless the pair is semi-synchronous and its primary has not yet switched semi-sync on
    again (it does once its replica has connected and caught up)."""
    if mode() != "semisync":
        return True
    status = dict(_run(primary(), "SHOW GLOBAL STATUS LIKE 'Rpl_semi_sync_master_status'"))
    return status.get("Rpl_semi_sync_master_status") == "ON"


def replica_status(name):
    """``SHOW SLAVE STATUS`` of a node as a dict, or None when it replicates from nobody."""
    connection = _root(name)
    try:
        cursor = connection.cursor(MySQLdb.cursors.DictCursor)
        cursor.execute("SHOW SLAVE STATUS")
        return cursor.fetchone()
    finally:
        connection.close()


def repoint_replication(port):
    """Point the replica's link to its primary at ``port``: a relay in between, to cut it."""
    _replicate(replica(), port)


def primary():
    """The name of the node that takes writes now."""
    return _role_file().read_text().strip()


def replica():
    return next(name for name in NAMES if name != primary())


def mode():
    return _mode_file().read_text().strip()


def _role_file():
    return HOME / "primary"


def _mode_file():
    return HOME / "mode"


# ---------------------------------------------------------------------------------------------
# HAProxy
# ---------------------------------------------------------------------------------------------

HAPROXY_CONFIG = """\
global
    stats socket {admin} level admin
defaults
    mode tcp
    timeout connect 2s
    timeout client 30m   # an idle connection is closed after this: one more idle limit (chapter 07)
    timeout server 30m
listen mysql
    bind 127.0.0.1:{port}
    option mysql-check user {check_user} post-41
    default-server inter 300ms fall 2 rise 2 on-marked-down shutdown-sessions
    server a 127.0.0.1:{port_a} check
    server b 127.0.0.1:{port_b} check backup
"""


def _haproxy_pid():
    try:
        pid = int((HOME / "haproxy.pid").read_text())
        os.kill(pid, 0)
    except (OSError, ValueError):
        return None
    return pid


def _start_haproxy():
    """HAProxy in front of the pair: node ``a`` while it answers its health check, else ``b``."""
    _stop_haproxy()
    program = localdb._program("haproxy")
    if localdb._port_taken(proxy_port()):
        raise PairError(f"port {proxy_port()} on 127.0.0.1, HAProxy's, is already taken by another program")
    config_file = HOME / "haproxy.cfg"
    config_file.write_text(HAPROXY_CONFIG.format(admin=HOME / "haproxy.sock", port=proxy_port(), check_user=CHECK_USER,
                                                 port_a=port_of("a"), port_b=port_of("b")))
    with open(HOME / "haproxy.out", "ab") as out:
        process = subprocess.Popen([program, "-f", str(config_file), "-db"], stdout=out, stderr=out,
                                   stdin=subprocess.DEVNULL, start_new_session=True)
    (HOME / "haproxy.pid").write_text(str(process.pid))
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise PairError(f"haproxy stopped at start; see {HOME / 'haproxy.out'}")
        if localdb._port_taken(proxy_port()) and _server_state("a") == "UP":
            return
        time.sleep(0.1)
    raise PairError(f"haproxy did not see node a as up within 10 s; see {HOME / 'haproxy.out'}")


def _stop_haproxy():
    pid = _haproxy_pid()
    if pid is not None:
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + 10
        while _haproxy_pid() is not None and time.monotonic() < deadline:
            time.sleep(0.05)
            try:
                os.waitpid(pid, os.WNOHANG)  # reap it, when this process started it
            except ChildProcessError:
                pass
    (HOME / "haproxy.pid").unlink(missing_ok=True)


def haproxy_command(command):
    """One command on HAProxy's admin socket; its answer."""
    with socket.socket(socket.AF_UNIX) as admin:
        admin.connect(str(HOME / "haproxy.sock"))
        admin.sendall(command.encode() + b"\n")
        answer = b""
        while chunk := admin.recv(65536):
            answer += chunk
    return answer.decode()


def _server_state(name):
    """HAProxy's view of a node: UP, DOWN, MAINT, ..."""
    for line in haproxy_command("show servers state mysql").splitlines():
        fields = line.split()
        if len(fields) > 5 and fields[3] == name:
            admin_state, operational = int(fields[6]), int(fields[5])
            if admin_state & 1:  # forced into maintenance
                return "MAINT"
            return {0: "DOWN", 1: "STARTING", 2: "UP", 3: "STOPPING"}.get(operational, str(operational))
    return None


# ---------------------------------------------------------------------------------------------
# The pair's life: start, failover, rejoin, stop
# ---------------------------------------------------------------------------------------------


def start(replication="async"):
    """Build both nodes afresh, ``a`` the primary and ``b`` its replica, and HAProxy in front."""
    localdb._require_local()
    if replication not in MODES:
        raise PairError(f"replication is one of {', '.join(MODES)}, not {replication!r}")
    stop()
    HOME.mkdir(parents=True, exist_ok=True)
    _mode_file().write_text(replication)
    server_ids = {name: _next_server_id() for name in NAMES}
    with ThreadPoolExecutor(len(NAMES)) as builders:  # both at once: each has its own folder, port and tmpdir
        list(builders.map(lambda name: _build(name, replication, server_ids[name]), NAMES))
    _role_file().write_text("a")
    _replicate("b", port_of("a"))
    _start_haproxy()
    return f"{replication} pair: primary a on 127.0.0.1:{port_of('a')}, replica b on 127.0.0.1:{port_of('b')}, " \
           f"HAProxy on 127.0.0.1:{proxy_port()}"


def crash_primary():
    """Kill the primary outright, as a dead machine: no goodbye to its clients or its replica.
    Returns once HAProxy has seen it die (two failed checks), and has closed the connections it
    held to it: until then a client's statement goes to HAProxy and no further, and its outcome is
    unknown to the client."""
    dead = primary()
    node(dead).crash()
    deadline = time.monotonic() + 10
    while _haproxy_pid() is not None and _server_state(dead) not in ("DOWN", "MAINT"):
        if time.monotonic() > deadline:
            raise PairError(f"HAProxy did not see node {dead} down within 10 s")
        time.sleep(0.05)


def promote_replica():
    """Make the replica the primary: apply what it has received, stop replicating, take writes.
    Returns the new primary's name."""
    new = replica()
    _apply_what_it_received(new)
    _run(new, "STOP SLAVE", "RESET SLAVE ALL", "SET GLOBAL read_only = 0")
    haproxy_command(f"set server mysql/{new} state ready")
    _role_file().write_text(new)
    return new


def _apply_what_it_received(name, seconds=20):
    """Wait until the replica has applied every change it has received. A semi-synchronous primary
    acknowledges a write once its replica has received it, not applied it: promoting the replica
    before its SQL thread has caught up would drop the write with the relay log."""
    received = (replica_status(name) or {}).get("Gtid_IO_Pos") or ""
    (waited,), = _run(name, f"SELECT MASTER_GTID_WAIT('{received}', {int(seconds)})")
    if waited != 0:
        raise PairError(f"node {name} did not apply what it had received ({received}) within {seconds} s")


def failover(promote_after=0.0):
    """The primary dies; ``promote_after`` seconds later the replica is promoted (while it is not,
    HAProxy already sends connections to it, and every write there fails with 1290)."""
    old = primary()
    crash_primary()
    time.sleep(promote_after)
    new = promote_replica()
    return f"node {old} killed, node {new} promoted: the primary now"


def rejoin():
    """Build the old primary afresh as the new primary's replica, kept out of HAProxy's rotation
    (HAProxy's check sees a server that answers, not one that takes writes)."""
    old = replica()
    haproxy_command(f"set server mysql/{old} state maint")
    _build(old, mode())
    _replicate(old, port_of(primary()))
    return old


def stop():
    """Stop HAProxy and both nodes, and delete their data: the next start begins afresh."""
    _stop_haproxy()
    for name in NAMES:
        node(name).crash()
    shutil.rmtree(HOME, ignore_errors=True)
    return "stopped"


def status():
    if not (HOME / "primary").exists():
        return "not running"
    lines = [f"{mode()} pair, HAProxy on 127.0.0.1:{proxy_port()} ({'up' if _haproxy_pid() else 'down'})"]
    for name in NAMES:
        running = node(name).is_running()
        role = "primary" if name == primary() else "replica"
        lines.append(f"node {name} on 127.0.0.1:{port_of(name)}: {role}, {'running' if running else 'down'}")
    return "\n".join(lines)


class running:
    """``with pair.running("semisync"):`` a pair for the block, stopped after it."""

    def __init__(self, replication="async"):
        self.replication = replication

    def __enter__(self):
        return start(self.replication)

    def __exit__(self, *exc):
        stop()


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    actions = {"start": start, "failover": failover, "status": status, "stop": stop}
    if not argv or argv[0] not in actions or (len(argv) > 1 and argv[0] != "start") or len(argv) > 2:
        print("usage: python -m pair {start [async|semisync]|failover|status|stop}", file=sys.stderr)
        return 2
    try:
        print(actions[argv[0]](*argv[1:]))
    except localdb.ServerError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
