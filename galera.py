"""A Galera cluster: three more local MariaDB servers that all take writes (MariaDB Galera
Cluster, Debian's ``galera-4``), and HAProxy in front of them, sending connections only to a
node that is Synced. Chapter 08b's servers, for real.

    python -m galera start | status | stop

Each node lives in ``.mysql/galera/<name>/`` on 127.0.0.1, next to the course's own server
(``DB_PORT``) and the replica pair (``DB_PORT + 1`` to ``+ 3``): nodes ``g1``, ``g2``, ``g3``
answer SQL on ``DB_PORT + 4`` to ``+ 6``, HAProxy on ``DB_PORT + 7``; each node also has a port
for the group's own traffic (``gmcast.listen_addr``) and one to receive missed changes (IST,
``ist.recv_addr``), from ``DB_PORT + 100`` on.

A new cluster is quick to build without a full state transfer: the three data folders are copies
of one, made before any node starts; ``g1`` founds the cluster (``--wsrep-new-cluster``), and
each other node is told (in its ``grastate.dat``) that it holds the cluster's state as it is, so
it joins by receiving only what changed since (IST), one node at a time. A node killed and started
again on its data catches up the same way. A full state transfer, when one is needed, goes by
``mysqldump`` over SQL (rsync's, as root, fails: its daemon drops to another user).
"""
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import MySQLdb

import config
import haproxy
import localdb

HOME = localdb.HOME / "galera"
NAMES = ("g1", "g2", "g3")
PROVIDER = "/usr/lib/galera/libgalera_smm.so"
SYNCED = "Synced"
STATE_QUERY = "SELECT VARIABLE_VALUE FROM information_schema.GLOBAL_STATUS WHERE VARIABLE_NAME = " \
              "'WSREP_LOCAL_STATE_COMMENT'"
NOT_READY = 1047  # a node outside the primary component: "WSREP has not yet prepared node for application use"
# State transfers by mysqldump, over SQL, as this local-only account: rsync's, as root, fails (its
# daemon drops to another user, who may not enter .mysql/)
SST_USER, SST_PASSWORD = "sst", "sst-local"


class GaleraError(localdb.ServerError):
    """The cluster could not be started or stopped; the message says what to do."""


def port_of(name):
    return config.DB_PORT + 4 + NAMES.index(name)


def proxy_port():
    return config.DB_PORT + 7


def _group_port(name, kind):
    """The node's port for the group's traffic (``gcomm``), and for IST."""
    return config.DB_PORT + 100 + 3 * ("gcomm", "ist").index(kind) + NAMES.index(name)


# A node that hears nothing from another for evs.suspect_timeout suspects it, and the others
# exclude it: 2 s here instead of Galera's 5 s (and 3 s instead of 15 s to declare it gone), so
# that a demo waits less. Across a real network keep the defaults: a short pause is not a failure.
# Two follow from these: the nodes agree on each new view within evs.install_timeout, by default
# half of 3 s, and a node cut off a moment then let back (isolate) once failed to agree in time:
# each node declared the others inactive, and no primary component was left (for 30 s, seen 1 in
# 5 tries). 3 s gives the agreement room. And a node that left may come back after
# gmcast.time_wait: 1 s, not 5, as the others forget it at different moments (a ban of half of it
# counts from each one's own view), and while one still bans it the agreement waits.
QUICK_TIMEOUTS = "evs.keepalive_period=PT0.5S;evs.suspect_timeout=PT2S;evs.inactive_timeout=PT3S;" \
                 "evs.inactive_check_period=PT0.5S;evs.install_timeout=PT3S;gmcast.time_wait=PT1S"


def node(name, founder=False):
    """One node, as a ``localdb.Instance`` with the options Galera needs."""
    members = ",".join(f"127.0.0.1:{_group_port(n, 'gcomm')}" for n in NAMES)
    options = [f"--server-id={NAMES.index(name) + 1}", "--binlog-format=ROW", "--innodb-autoinc-lock-mode=2",
               "--wsrep-on=ON", f"--wsrep-provider={PROVIDER}", f"--wsrep-cluster-address=gcomm://{members}",
               f"--wsrep-node-name={name}", f"--wsrep-node-address=127.0.0.1:{_group_port(name, 'gcomm')}",
               f"--wsrep-provider-options=gmcast.listen_addr=tcp://127.0.0.1:{_group_port(name, 'gcomm')};"
               f"ist.recv_addr=127.0.0.1:{_group_port(name, 'ist')};{QUICK_TIMEOUTS}",
               "--wsrep-sst-method=mysqldump", f"--wsrep-sst-auth={SST_USER}:{SST_PASSWORD}",
               f"--wsrep-sst-receive-address=127.0.0.1:{port_of(name)}"]  # mysqldump loads over SQL
    if founder:
        options.append("--wsrep-new-cluster")
    return localdb.Instance(HOME / name, port_of(name), options=options)


def admin(name, *statements):
    """Run statements on a node as its admin (root, through its socket); the rows of the last."""
    connection = node(name).root_connection()
    connection.autocommit(True)
    try:
        cursor = connection.cursor()
        for statement in statements:
            cursor.execute(statement)
        return cursor.fetchall()
    finally:
        connection.close()


def wsrep_status(name):
    """A node's view of the cluster: its state, whether it is in the primary component, the size."""
    rows = dict(admin(name, "SHOW GLOBAL STATUS WHERE Variable_name IN ('wsrep_local_state_comment', "
                            "'wsrep_cluster_status', 'wsrep_cluster_size', 'wsrep_ready', 'wsrep_last_committed', "
                            "'wsrep_cluster_state_uuid')"))
    return {key.removeprefix("wsrep_"): value for key, value in sorted(rows.items())}


def wait_until_synced(name, seconds=30):
    deadline = time.monotonic() + seconds
    while True:
        try:
            if wsrep_status(name).get("local_state_comment") == SYNCED:
                return
        except MySQLdb.OperationalError:
            pass  # still starting
        if time.monotonic() > deadline:
            raise GaleraError(f"node {name} did not reach {SYNCED} within {seconds} s; see {node(name).error_log}")
        time.sleep(0.05)


def proxy():
    """HAProxy in front of the cluster: new connections go to a node in state Synced, round robin."""
    return haproxy.Proxy(HOME, proxy_port(), {name: port_of(name) for name in NAMES}, STATE_QUERY, SYNCED)


def _recovered_position(name):
    """Where a killed node's data stands, as ``mariadbd --wsrep-recover`` reads it from InnoDB: a
    node killed outright leaves no position in ``grastate.dat`` (seqno -1), and without one it asks
    for a whole copy (SST: here mysqldump, which loses a schema's stored functions when a view uses
    them) instead of only what it missed (IST)."""
    instance, log = node(name), HOME / name / "recover.log"
    log.unlink(missing_ok=True)
    command = [localdb._program("mariadbd", "mysqld"), "--no-defaults", f"--datadir={instance.data}",
               f"--log-error={log}", f"--tmpdir={instance.tmpdir}", *instance.options, "--wsrep-recover"]
    if os.geteuid() == 0:
        command.append("--user=root")
    subprocess.run(command, stdin=subprocess.DEVNULL, capture_output=True, timeout=60)
    found = re.findall(r"WSREP: Recovered position: ([0-9a-f-]{36}):(-?\d+)", log.read_text() if log.exists() else "")
    if not found:
        raise GaleraError(f"node {name}: mariadbd --wsrep-recover found no position; see {log}")
    return found[-1]


def _claim_state(name, uuid, seqno):
    """Tell a node, copied from the founder's data before it started, that it holds the cluster at ``seqno``."""
    (HOME / name / "data" / "grastate.dat").write_text(
        f"# GALERA saved state\nversion: 2.1\nuuid:    {uuid}\nseqno:   {seqno}\nsafe_to_bootstrap: 0\n")


def start():
    """Build the three nodes afresh, found the cluster on ``g1``, join the others, start HAProxy."""
    localdb._require_local()
    if not Path(PROVIDER).exists():
        raise GaleraError(f"the Galera library ({PROVIDER}) is not installed: Debian and Ubuntu install it with "
                          "mariadb-server (the galera-4 package); elsewhere install Galera 4 for MariaDB yourself")
    stop()
    alone = localdb.Instance(HOME / NAMES[0], port_of(NAMES[0]))  # g1, before it is a node: the accounts
    alone.start()  # the course's user and schema
    user = f"IDENTIFIED BY '{SST_PASSWORD}'"
    # The state-transfer script's own account, not the course's: every node here joins by IST (a copy
    # of the founder's data, or its own recovered position), for which the script only sets the
    # joiner's position (SET GLOBAL wsrep_start_position, RESET MASTER): SUPER and RELOAD, nothing on
    # any schema. A whole copy (SST) would need every privilege; it is never made here.
    admin(NAMES[0], f"CREATE USER '{haproxy.CHECK_USER}'@'127.0.0.1'",
          f"CREATE USER '{SST_USER}'@'localhost' {user}", f"GRANT SUPER, RELOAD ON *.* TO '{SST_USER}'@'localhost'",
          f"CREATE USER '{SST_USER}'@'127.0.0.1' {user}", f"GRANT SUPER, RELOAD ON *.* TO '{SST_USER}'@'127.0.0.1'")
    alone.stop()
    for name in NAMES[1:]:
        localdb.copy_data_folder(alone.data, node(name).data)
    node(NAMES[0], founder=True).launch()
    wait_until_synced(NAMES[0])
    state = wsrep_status(NAMES[0])  # nothing written since the copies: they hold the cluster as it is
    for name in NAMES[1:]:  # one at a time: two joining at once collide
        _claim_state(name, state["cluster_state_uuid"], state["last_committed"])
        node(name).launch()
        wait_until_synced(name)
    proxy().start(up=NAMES)
    return f"galera cluster: nodes {', '.join(f'{n} on 127.0.0.1:{port_of(n)}' for n in NAMES)}, " \
           f"HAProxy on 127.0.0.1:{proxy_port()}"


def crash(name):
    """Kill a node outright (``SIGKILL``), as a dead machine."""
    node(name).crash()


def isolate(name, cut=True):
    """Cut a node off from the others, or (``cut=False``) let it back: Galera's own switch for it
    (``gmcast.isolate``) drops every group connection of the node, as a network partition would.
    Returns once the node has left the primary component (or is Synced in it again), and every
    node in that component counts the nodes in it (the others see a node go some moments after it
    sees itself alone)."""
    admin(name, f"SET GLOBAL wsrep_provider_options = 'gmcast.isolate={int(cut)}'")
    deadline = time.monotonic() + 30
    while True:
        views = _views()
        if name not in views:
            raise GaleraError(f"node {name} is not running")
        if (views[name]["cluster_status"] == "Primary") != cut and _views_agree(views):
            break
        if time.monotonic() > deadline:
            raise GaleraError(f"node {name} did not {'leave' if cut else 'rejoin'} the primary component in 30 s")
        time.sleep(0.05)
    if not cut:
        wait_until_synced(name)


def _views():
    """Each running node's ``wsrep_status()``, by name."""
    views = {}
    for name in NAMES:
        try:
            views[name] = wsrep_status(name)
        except MySQLdb.OperationalError:
            continue  # not running
    return views


def _views_agree(views):
    """Whether each node in the primary component counts exactly the nodes in it (a killed node is in none)."""
    in_primary = [view for view in views.values() if view["cluster_status"] == "Primary"]
    return all(int(view["cluster_size"]) == len(in_primary) for view in in_primary)


def start_again(name):
    """Start a killed node on its data: it finds its position, and receives what it missed (IST).
    First the others let its old self go: joining while they still count it took 9 to 13 s here
    (rounds of Galera's install timer); waiting for them first, 5 s in all."""
    deadline = time.monotonic() + 30
    while not _views_agree(_views()) and time.monotonic() < deadline:  # past it, it starts all the same: only slower
        time.sleep(0.05)
    _claim_state(name, *_recovered_position(name))
    node(name).launch()
    wait_until_synced(name)
    return f"node {name} started again, {SYNCED}"


def stop():
    """Stop HAProxy and every node, and delete their data."""
    proxy().stop()
    for name in NAMES:
        node(name).crash()
    shutil.rmtree(HOME, ignore_errors=True)
    return "stopped"


def status():
    if not HOME.exists():
        return "not running"
    lines = [f"galera cluster, HAProxy on 127.0.0.1:{proxy_port()} ({'up' if proxy().pid() else 'down'})"]
    for name in NAMES:
        if node(name).is_running():
            state = wsrep_status(name)
            seen = proxy().state(name) if proxy().pid() else "-"
            lines.append(f"node {name} on 127.0.0.1:{port_of(name)}: {state['local_state_comment']}, "
                         f"{state['cluster_status']} component of {state['cluster_size']}, HAProxy sees it {seen}")
        else:
            lines.append(f"node {name} on 127.0.0.1:{port_of(name)}: down")
    return "\n".join(lines)


class running:
    """``with galera.running():`` a cluster for the block, stopped after it."""

    def __enter__(self):
        return start()

    def __exit__(self, *exc):
        stop()


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    actions = {"start": start, "status": status, "stop": stop}
    if len(argv) != 1 or argv[0] not in actions:
        print("usage: python -m galera {start|status|stop}", file=sys.stderr)
        return 2
    try:
        print(actions[argv[0]]())
    except localdb.ServerError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
