"""The chaos run's clusters: chapter 08's replica pair (``async``, ``semisync``) or chapter 08b's
Galera cluster (``galera``), started afresh for each strategy, and the faults only a cluster has.

Against the pair, a failover takes the restart's place, and a failover while the replica is cut
off joins it: the replica's link to the primary dropped silently, ``CUT_OFF_WRITES`` writes
(asynchronous, acknowledged and never sent; semi-synchronous, waiting for the replica until the
app's read_timeout), then the failover, at the end of that batch.

Against Galera, requests go through HAProxy to every node in turn, and the faults are the relay's
(a silent drop, links cut around a statement) and the cluster's own: a node killed (and started
again, catching up), a node cut off from the others for a batch, and a conflicting writer (another
node commits a change to a row the request's transaction has changed: 1213). The ``KILL`` faults
are left out: connection ids belong to one node, and the app's connections are on three.
"""
import itertools

import MySQLdb

import config
import faults
import galera
import pair
import strategies as S

MODES = pair.MODES + ("galera",)
CUT_OFF_WRITES = 3
PAIR_BETWEEN = ["failover", "failover_cut_off"]
GALERA_BETWEEN = ["node_kill", "node_cut_off"]
GALERA_DURING = {"conflict": ["atomic", "raw_transaction"]}
GALERA_FAULTS = ["silent_drop", "cut_before_insert", "cut_after_insert", "cut_after_commit", *GALERA_BETWEEN,
                 *GALERA_DURING]


def start(cluster):
    galera.start() if cluster == "galera" else pair.start(cluster)


def stop(cluster):
    galera.stop() if cluster == "galera" else pair.stop()


def proxy_port(cluster):
    return galera.proxy_port() if cluster == "galera" else pair.proxy_port()


def admin_options(cluster):
    """How the run's own connection reads the table at the end: on Galera, once the node it reads
    on has applied every commit of the cluster (a commit acknowledged on one node is certified on
    all, applied on the others a moment later)."""
    return {"init_command": "SET SESSION wsrep_sync_wait = 1"} if cluster == "galera" else {}


def prepare(cluster, admin):
    if cluster == "galera":  # the row the conflicting writers fight over
        admin.execute_sql("CREATE TABLE IF NOT EXISTS chaos_hot (id INT PRIMARY KEY, n INT NOT NULL)")
        admin.execute_sql("INSERT INTO chaos_hot VALUES (1, 0) ON DUPLICATE KEY UPDATE n = 0")


class Faults:
    """The cluster's faults for one run: what strikes between batches, what is undone at a batch's end."""

    def __init__(self, cluster):
        self.cluster = cluster
        self.victims = itertools.cycle(reversed(galera.NAMES))
        self.replica_cut = None  # the relay the pair's replica link runs through while it is cut off
        self.isolated = None  # the Galera node cut off from the others

    def strike(self, fault):
        if fault == "failover":
            pair.failover(promote_after=0.5)
            pair.rejoin()
        elif fault == "failover_cut_off":
            pair.wait_until_caught_up()  # what came before reached the replica: only what follows is cut off
            self.replica_cut = faults.LinkCutter(port=pair.port_of(pair.primary()))
            pair.repoint_replication(self.replica_cut.port)
            self.replica_cut.drop_silently()  # the failover comes at the end of the next batch
        elif fault == "node_kill":
            victim = next(self.victims)
            galera.crash(victim)
            galera.proxy().wait_for(victim, ("DOWN",))
            galera.start_again(victim)
        elif fault == "node_cut_off":
            self.isolated = next(self.victims)
            galera.isolate(self.isolated)  # let back in at the end of the next batch
        else:
            return False
        return True

    def end_of_batch(self):
        if self.replica_cut is not None:
            pair.failover(promote_after=0.5)
            self.replica_cut.close()
            self.replica_cut = None
            pair.rejoin()
        if self.isolated is not None:
            galera.isolate(self.isolated, cut=False)
            self.isolated = None


def conflict(db):
    """Change the hot row in ``db``'s transaction, and commit a change to it on another node."""
    db.execute_sql("UPDATE chaos_hot SET n = n + 1 WHERE id = 1")
    here = db.execute_sql("SELECT @@port").fetchone()[0]
    other = next(galera.port_of(name) for name in galera.NAMES if galera.port_of(name) != here)
    writer = MySQLdb.connect(**{**config.connect_kwargs(), "port": other, "autocommit": True})
    try:
        writer.cursor().execute("UPDATE chaos_hot SET n = n + 1 WHERE id = 1")
    except MySQLdb.OperationalError as error:
        if S.error_code(error) != galera.NOT_READY:  # that node is cut off: no conflict this time
            raise
    finally:
        writer.close()
