"""A primary and its replica: two more local MariaDB servers, with MariaDB's own replication
(GTID, asynchronous or semi-synchronous), and HAProxy (Debian's) in front of them, so that the
app keeps one address through a failover. Chapter 08's servers, for real.

    python -m pair start [async|semisync] | failover | rejoin | status | stop

Each node lives in ``.mysql/pair/<name>/`` on 127.0.0.1, next to the course's own server
(``DB_PORT``): node ``a`` on ``DB_PORT + 1``, node ``b`` on ``DB_PORT + 2``, HAProxy on
``DB_PORT + 3``. ``start()`` builds both nodes afresh (a primary, and a read-only replica
replicating from it), so every run begins from the same place; the course's own server is not
touched. A failover is what a managed database does when its primary dies: the primary is
killed, the replica promoted (replication stopped, ``read_only`` off), and HAProxy sends new
connections to it. ``rejoin()`` builds the old primary afresh as the new primary's replica.

Nodes are fenced: every node starts read-only (``--read-only``), also an old primary started
again after a crash (``start_again()``); only ``promote()`` makes a node writable. HAProxy sends
connections only to a node that answers ``SELECT @@read_only`` with 0 (``haproxy.py``).

Semi-synchronous, the primary waits ``AFTER_SYNC`` (a transaction is in the binary log, and no
other session sees it, until the replica has acknowledged receiving it), also while no replica
is connected (``wait_no_slave``), for up to ``SEMISYNC_TIMEOUT_MS``: a day. Only after that does
it fall back to asynchronous replication (``Rpl_semi_sync_master_status`` OFF).
"""
import shutil
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import MySQLdb

import config
import haproxy
import localdb

HOME = localdb.HOME / "pair"
NAMES = ("a", "b")
REPLICATION_USER, REPLICATION_PASSWORD = "repl", "repl-local"  # local-only, like the course's password
CHECK_USER = haproxy.CHECK_USER  # HAProxy's health check logs in as this user, with no password and no privileges
SEMISYNC_TIMEOUT_MS = 86_400_000  # a day: a semi-synchronous primary waits this long for its replica, then gives up
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
    """One node of the pair, as a ``localdb.Instance`` with the options replication needs. It
    starts read-only, and (semi-synchronous) ready to acknowledge as a replica; ``promote()``
    makes it the primary."""
    options = [f"--server-id={server_id}", "--log-bin=binlog", "--log-slave-updates", "--binlog-format=ROW",
               "--gtid-strict-mode=ON", "--read-only=ON",
               "--log-bin-trust-function-creators=ON"]  # the course's user may create the chaos run's function
    if mode == "semisync":
        options += ["--rpl-semi-sync-slave-enabled=ON",
                    "--rpl-semi-sync-master-wait-point=AFTER_SYNC",  # unseen by anyone until the replica has it
                    "--rpl-semi-sync-master-wait-no-slave=ON",  # no replica connected: wait all the same
                    f"--rpl-semi-sync-master-timeout={SEMISYNC_TIMEOUT_MS}"]
    return localdb.Instance(HOME / name, port_of(name), options=options)


def proxy():
    """HAProxy in front of the pair: new connections go to the node that takes writes, and only to it."""
    return haproxy.Proxy(HOME, proxy_port(), {name: port_of(name) for name in NAMES}, "SELECT @@read_only", "0")


def proxy_state(name):
    """HAProxy's view of a node: UP (it takes the app's new connections), DOWN, ..."""
    return proxy().state(name)


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


def admin(name, *statements):
    """Run statements on a node as its admin (root, through its socket), as at its ``mysql>``
    prompt; the rows of the last."""
    return _run(name, *statements)


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
    server_id = server_id or _next_server_id()
    server = node(name, mode, server_id)
    server.crash()
    shutil.rmtree(server.home, ignore_errors=True)
    server.start()
    (HOME / f"{name}.server_id").write_text(str(server_id))
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
        if state and state["Slave_IO_Running"] == "Yes" and state["Slave_SQL_Running"] == "Yes" and _semisync_ready(replica):
            return
        time.sleep(0.1)
    raise PairError(f"node {replica} did not start replicating within 20 s: {replica_status(replica)}")


def _semisync_ready(replica):
    """True unless the pair is semi-synchronous and the replica's link is not yet a semi-synchronous
    one, or its primary has not switched semi-sync on again (it does once the replica has caught up)."""
    if mode() != "semisync":
        return True
    status = dict(_run(primary(), "SHOW GLOBAL STATUS LIKE 'Rpl_semi_sync_master_status'"))
    acknowledging = dict(_run(replica, "SHOW GLOBAL STATUS LIKE 'Rpl_semi_sync_slave_status'"))
    return status.get("Rpl_semi_sync_master_status") == "ON" and acknowledging.get("Rpl_semi_sync_slave_status") == "ON"


def semisync_status():
    """What an operator watches on a semi-synchronous primary: whether it still waits for its
    replica (``Rpl_semi_sync_master_status``), how many replicas acknowledge, and how many commits
    were acknowledged by a replica (``yes_tx``) or answered without one (``no_tx``)."""
    rows = dict(_run(primary(), "SHOW GLOBAL STATUS WHERE Variable_name IN ('Rpl_semi_sync_master_status', "
                                "'Rpl_semi_sync_master_clients', 'Rpl_semi_sync_master_yes_tx', "
                                "'Rpl_semi_sync_master_no_tx', 'Rpl_semi_sync_master_wait_sessions')"))
    return {name.removeprefix("Rpl_semi_sync_master_"): value for name, value in sorted(rows.items())}


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
    _take_writes("a")
    _role_file().write_text("a")
    _replicate("b", port_of("a"))
    proxy().start(up=("a",))
    return f"{replication} pair: primary a on 127.0.0.1:{port_of('a')}, replica b on 127.0.0.1:{port_of('b')}, " \
           f"HAProxy on 127.0.0.1:{proxy_port()}"


def _take_writes(name):
    """The one step that makes a node writable: semi-sync's primary side on (semi-synchronous), read-only off."""
    if mode() == "semisync":
        _run(name, "SET GLOBAL rpl_semi_sync_master_enabled = ON")
    _run(name, "SET GLOBAL read_only = 0")


def crash_primary():
    """Kill the primary outright, as a dead machine: no goodbye to its clients or its replica.
    Returns once HAProxy has seen it die (two failed checks), and has closed the connections it
    held to it: until then a client's statement goes to HAProxy and no further, and its outcome is
    unknown to the client."""
    dead = primary()
    node(dead).crash()
    if proxy().pid() is not None:
        proxy().wait_for(dead, ("DOWN", "MAINT"))


def promote_replica():
    """Make the replica the primary: apply what it has received, stop replicating, take writes;
    HAProxy is told at once (its check then agrees). Returns the new primary's name."""
    new = replica()
    _apply_what_it_received(new)
    _run(new, "STOP SLAVE", "RESET SLAVE ALL")
    _take_writes(new)
    _role_file().write_text(new)
    proxy().command(f"set server mysql/{new} health up")
    proxy().wait_for(new, ("UP",))
    return new


def _apply_what_it_received(name, seconds=20):
    """Wait until the replica has applied every change it has received. A semi-synchronous primary
    acknowledges a write once its replica has received it, not applied it: promoting the replica
    before its SQL thread has caught up would drop the write with the relay log."""
    received = (replica_status(name) or {}).get("Gtid_IO_Pos") or ""
    (waited,), = _run(name, f"SELECT MASTER_GTID_WAIT('{received}', {int(seconds)})")
    if waited != 0:
        raise PairError(f"node {name} did not apply what it had received ({received}) within {seconds} s")


def wait_until_caught_up(seconds=20):
    """Wait until the replica has applied everything the primary has written so far."""
    (written,), = _run(primary(), "SELECT @@gtid_binlog_pos")
    (waited,), = _run(replica(), f"SELECT MASTER_GTID_WAIT('{written}', {int(seconds)})")
    if waited != 0:
        raise PairError(f"the replica did not catch up with the primary ({written}) within {seconds} s")


def failover(promote_after=0.0):
    """The primary dies; ``promote_after`` seconds later the replica is promoted (while it is not,
    no node takes writes, and HAProxy has none to send a connection to).

    Semi-synchronous, the new primary has no replica: it takes no write (each waits) until one
    has joined and acknowledges, ``rejoin()``. That is what "no acknowledged write is lost" costs
    with a single replica; with two, one is left after a failover."""
    old = primary()
    crash_primary()
    time.sleep(promote_after)
    new = promote_replica()
    return f"node {old} killed, node {new} promoted: the primary now"


def start_again(name):
    """Start a node that was killed (an old primary, say) on the data it had, as a machine that
    comes back: it starts read-only, so it takes no write, and HAProxy's check keeps it out."""
    server_id = int((HOME / f"{name}.server_id").read_text())
    node(name, mode(), server_id).start()
    return f"node {name} started again, read-only"


def rejoin():
    """Build the old primary afresh as the new primary's replica (it starts read-only, so HAProxy's
    check keeps it out of the rotation)."""
    old = replica()
    _build(old, mode())
    _replicate(old, port_of(primary()))
    return old


def stop():
    """Stop HAProxy and both nodes, and delete their data: the next start begins afresh."""
    proxy().stop()
    for name in NAMES:
        node(name).crash()
    shutil.rmtree(HOME, ignore_errors=True)
    return "stopped"


def status():
    if not (HOME / "primary").exists():
        return "not running"
    running = proxy().pid() is not None
    lines = [f"{mode()} pair, HAProxy on 127.0.0.1:{proxy_port()} ({'up' if running else 'down'})"]
    for name in NAMES:
        up = node(name).is_running()
        role = "primary" if name == primary() else "replica"
        seen = f", HAProxy sees it {proxy_state(name)}" if running else ""
        lines.append(f"node {name} on 127.0.0.1:{port_of(name)}: {role}, {'running' if up else 'down'}{seen}")
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
    actions = {"start": start, "failover": failover, "rejoin": rejoin, "status": status, "stop": stop}
    if not argv or argv[0] not in actions or (len(argv) > 1 and argv[0] != "start") or len(argv) > 2:
        print("usage: python -m pair {start [async|semisync]|failover|rejoin|status|stop}", file=sys.stderr)
        return 2
    try:
        print(actions[argv[0]](*argv[1:]))
    except localdb.ServerError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
