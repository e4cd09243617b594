"""A chaos run: every strategy on the same seeded mix of requests, from several client threads at
once, through a threaded app, under real faults.

    python bench/chaos.py                                  # a table, with a progress bar
    python bench/chaos.py --requests 200 --seed 1 --json   # one JSON object
    python bench/chaos.py --self-check                     # the harness sees what it claims to see

Each strategy serves a small WSGI app on the course's threaded server (8 threads, a connection
each), and 8 client threads send it the plan's requests over HTTP: reads; writes, each inserting
a row with a client-chosen request id; and transactions of two inserts, through peewee's
``atomic()`` or begun by hand with ``START TRANSACTION``. The table ``chaos_write`` has no unique
key: a write applied twice shows as two rows. Faults strike between batches of requests (a
``KILL`` of every connection the app holds, an expired ``wait_timeout``, a server restart, a
silent drop of every connection open through the relay, as a NAT or load balancer does) and
inside single requests (a ``KILL`` during a slow read or between a transaction's two inserts, the
link cut before an ``INSERT`` reaches the server or after it ran, the answer to a ``COMMIT``
lost). Afterwards the table is compared with what each request was told:
- lost: requests answered "done" whose rows are not all in the table;
- duplicates: request ids with a row written twice;
- torn: transactions with some of their rows and not the others;
- unknown: requests answered "outcome unknown"; ``unknown_landed`` of them did land;
- max_request_s: the longest any request took, against ``bound_s``, the strategy's own bound
  (``Strategy.longest_wait()``, with the app's ``--read-timeout``) plus a second for the work.
A failed request is charged to the kind of the last fault before it. Every connection goes
through the relay, ``--rtt-ms`` away.

With ``--cluster`` (semi-synchronous; ``--cluster async`` for asynchronous) each strategy runs
against chapter 08's replica pair, started afresh for it and stopped after, through HAProxy; a
``failover`` (the primary killed, the replica promoted half a second later, the old primary
rebuilt as the new replica) takes the place of the restart among the faults. Each row says its
replication. What a failover loses is counted like any other loss: an acknowledged write missing
from the new primary is lost.
"""
import argparse
import json
import random
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from urllib.parse import parse_qs

from werkzeug.wrappers import Request, Response

import app
import config
import faults
import pair
import strategies as S
from bench import clusters

NAMES = ["naive", "per_request", "ping", "idle_ping", "peewee_reconnect", "safe_reconnect"]
BETWEEN = ["kill_between", "expire", "restart", "silent_drop"]  # strike every connection the app holds, between batches
DURING = {  # strike one request, and the kinds of request they strike
    "kill_during": ["read"],
    "kill_in_transaction": ["atomic", "raw_transaction"],
    "cut_before_insert": ["write", "raw_transaction"],
    "cut_after_insert": ["write", "raw_transaction"],
    "cut_after_commit": ["atomic", "raw_transaction"],
}
FAULTS = BETWEEN + list(DURING)
# Against a cluster, faults of its own: see bench/clusters.py
CLUSTER_FAULTS = [fault if fault != "restart" else "failover" for fault in FAULTS] + ["failover_cut_off"]
CUT_OFF_WRITES = clusters.CUT_OFF_WRITES
MIX = {"read": 0.55, "write": 0.25, "atomic": 0.1, "raw_transaction": 0.1}
ROWS = {"read": 0, "write": 1, "atomic": 2, "raw_transaction": 2}
THREADS = 8
READ_TIMEOUT = 1  # the app's read_timeout, the least there is (whole seconds): silent drops cost the run little
WORK_S = 1.0  # the longest a request's own statements take here (a slow read sleeps 0.3 s)


@dataclass
class Tally:
    name: str
    requests: int = 0
    faults: int = 0
    failed: int = 0
    acked_writes: int = 0
    lost: int = 0
    duplicates: int = 0
    torn: int = 0
    unknown: int = 0
    unknown_landed: int = 0
    max_request_s: float = 0.0
    bound_s: float = None
    replication: str = None
    failed_by_fault: dict = field(default_factory=dict)
    faults_by_kind: dict = field(default_factory=dict)
    errors_by_kind: dict = field(default_factory=dict)


def plan(requests, seed, fault_every=35, cluster=False):
    """The run's schedule: a list of ``(kind of request, fault or None)``, and, between them,
    ``(None, fault)`` for a fault between batches.

    Faults come every ``fault_every`` requests on average (between 4/7 and 10/7 of it apart).
    The kinds are drawn as from a bag, refilled and shuffled when empty: every kind comes once
    in each run of as many faults as there are kinds. A fault that strikes a request picks a
    request it can strike: a cut link a write, a kill between two inserts a transaction.
    """
    rng = random.Random(seed)
    if cluster == "galera":
        faults_here = clusters.GALERA_FAULTS
    elif cluster:
        faults_here = CLUSTER_FAULTS
    else:
        faults_here = FAULTS if config.LOCAL_SERVER else [f for f in FAULTS if f != "restart"]
    low, high = max(1, fault_every * 4 // 7), max(1, fault_every * 10 // 7)
    steps, gap, bag, cut_off = [], rng.randint(low, high), [], 0
    for _ in range(requests):
        if cut_off:  # the writes of a failover while the replica is cut off, then the batch's end
            steps.append(("write", None))
            cut_off -= 1
            if not cut_off:
                steps.append((None, None))
            continue
        gap -= 1
        fault = None
        if gap == 0:
            if not bag:
                bag = rng.sample(faults_here, len(faults_here))
            fault, gap = bag.pop(), rng.randint(low, high)
        if fault == "failover_cut_off":
            steps.append((None, fault))
            cut_off = CUT_OFF_WRITES - 1
            steps.append(("write", None))
            continue
        if fault in BETWEEN or fault in clusters.PAIR_BETWEEN or fault in clusters.GALERA_BETWEEN:
            steps.append((None, fault))
            fault = None
        kinds = {**DURING, **clusters.GALERA_DURING}.get(fault, list(MIX))
        kind = rng.choices(kinds, weights=[MIX[k] for k in kinds])[0]
        steps.append((kind, fault))
    return steps


class ChaosApp:
    """The requests of the run as a WSGI app: ``/<kind>/<request id>?fault=<fault>``; each runs in
    ``strategy.request()`` and answers ``ok``, or 500 with the error's class and code."""

    def __init__(self, strategy, link, cluster=None):
        self.strategy, self.link, self.cluster = strategy, link, cluster
        self.expiring = []  # the connections an expire fault shortened the wait_timeout of
        self.cluster_faults = clusters.Faults(cluster)

    def kill_port(self):
        """Where a ``KILL`` must run: the server that holds the app's connections."""
        return pair.port_of(pair.primary()) if self.cluster in pair.MODES else None

    def __call__(self, environ, start_response):
        request = Request(environ)
        _, kind, request_id = request.path.split("/")
        fault = parse_qs(request.query_string.decode()).get("fault", [None])[0]
        try:
            with self.strategy.request() as db:
                getattr(self, kind)(db, int(request_id), fault)
            response = Response("ok")
        except Exception as error:  # every failure is counted by its class: none may be hidden
            response = Response(f"{type(error).__name__} {S.error_code(error)}", status=500)
        return response(environ, start_response)

    def insert(self, db, request_id, part):
        db.execute_sql("INSERT INTO chaos_write (request_id, part) VALUES (%s, %s)", (request_id, part))

    def arm(self, db, fault):
        """The cuts, on this request's own connection (a dead one has nothing left to cut)."""
        if fault not in ("cut_before_insert", "cut_after_insert", "cut_after_commit"):
            return
        if db.is_closed():
            db.connect()  # a thread's first request: the connection its statement would open
        cut, statement = {"cut_before_insert": (self.link.cut_next_statement, "INSERT"),
                          "cut_after_insert": (self.link.cut_next_reply, "INSERT"),
                          "cut_after_commit": (self.link.cut_next_reply, "COMMIT")}[fault]
        try:
            cut(db.connection(), statement=statement)
        except (OSError, ValueError):
            pass  # its socket is closed already: the request meets the dead connection as it is

    def read(self, db, request_id, fault):
        if fault == "kill_during":
            with faults.kill_during(S.connection_id(db), after=0.05, port=self.kill_port()):
                return db.execute_sql("SELECT SLEEP(0.3)").fetchone()
        return db.execute_sql("SELECT 1").fetchone()

    def write(self, db, request_id, fault):
        self.arm(db, fault)
        self.insert(db, request_id, 0)

    def atomic(self, db, request_id, fault):
        if self.cluster == "galera":  # conflicts are part of life there: run_transaction runs it again
            first_try = [fault]
            return S.run_transaction(db, lambda db: self.two_inserts(db, request_id, first_try.pop() if first_try
                                                                     else None))
        with db.atomic():
            self.two_inserts(db, request_id, fault)

    def two_inserts(self, db, request_id, fault):
        self.arm(db, fault)
        self.insert(db, request_id, 0)
        self.kill_if(db, fault)
        self.insert(db, request_id, 1)

    def raw_transaction(self, db, request_id, fault):
        db.execute_sql("START TRANSACTION")
        try:
            self.insert(db, request_id, 0)
            self.kill_if(db, fault)
            self.arm(db, fault)
            self.insert(db, request_id, 1)
            db.execute_sql("COMMIT")
        except BaseException:
            if not db.is_closed():
                try:
                    db.execute_sql("ROLLBACK")
                except Exception:
                    pass  # the connection is gone: the server rolled back already
            raise

    def kill_if(self, db, fault):
        if fault == "kill_in_transaction":
            faults.kill(S.connection_id(db), self.kill_port())
        elif fault == "conflict":
            clusters.conflict(db)

    def expire(self, db, request_id, fault):
        faults.expire_after(db, 1)
        self.expiring.append(S.connection_id(db))


def strike_between(fault, strategy, server, link):
    """A fault between batches, on every connection the app holds (per-request holds none)."""
    if server.app.cluster_faults.strike(fault):
        return
    if fault == "silent_drop":
        link.drop_silently()
    elif fault == "restart":
        faults.restart_server()
    elif fault == "kill_between":
        faults.kill_all(strategy.connection_ids(), server.app.kill_port())
    elif fault == "expire":
        server.app.expiring = []
        server.get_each_thread("/expire/0")  # each thread's connection gets a wait_timeout of 1 s
        faults.wait_until_closed(server.app.expiring, server.app.kill_port())
        time.sleep(0.1)  # for the server's hang-ups to reach the app through the relay


def run(name, steps, on_request=lambda: None, threads=THREADS, read_timeout=READ_TIMEOUT, rtt_ms=0, cluster=None):
    """Run one strategy through ``steps`` against a fresh ``chaos_write`` table (on a fresh replica
    pair, with ``cluster``); its tally."""
    if cluster:
        clusters.start(cluster)
    try:
        return _run(name, steps, on_request, threads, read_timeout, rtt_ms, cluster)
    finally:
        if cluster:
            clusters.stop(cluster)


def _run(name, steps, on_request, threads, read_timeout, rtt_ms, cluster):
    port = clusters.proxy_port(cluster) if cluster else None
    admin = S.database(S.SafeReconnectMySQLDatabase, port=port, **clusters.admin_options(cluster))
    clusters.prepare(cluster, admin)
    admin.execute_sql("DROP TABLE IF EXISTS chaos_write")
    admin.execute_sql("CREATE TABLE chaos_write (id INT AUTO_INCREMENT PRIMARY KEY, request_id INT NOT NULL, "
                      "part INT NOT NULL)")
    tally, answers, last_fault, took = Tally(name, replication=cluster), {}, {}, {}
    with faults.LinkCutter(port=port, rtt_ms=rtt_ms) as link:
        cls = STRATEGIES[name]
        strategy = cls(S.database(cls.database_class, port=link.port, read_timeout=read_timeout))
        wait = strategy.longest_wait()
        tally.bound_s = None if wait is None else wait + WORK_S
        server = app.Server(ChaosApp(strategy, link, cluster), threads=threads)

        def send(numbered_step):
            request_id, (kind, fault) = numbered_step
            query = f"?fault={fault}" if fault else ""
            started = time.monotonic()
            answers[request_id] = app.get(f"{server.url}/{kind}/{request_id}{query}", timeout=120)
            took[request_id] = time.monotonic() - started
            on_request()

        batch, current_fault = [], None
        with ThreadPoolExecutor(threads) as clients:
            for request_id, (kind, fault) in enumerate(steps + [(None, None)], 1):
                if fault:
                    tally.faults_by_kind[fault] = tally.faults_by_kind.get(fault, 0) + 1
                    current_fault = fault
                if kind is None:  # the end of a batch: run it, then strike between
                    list(clients.map(send, batch))
                    batch = []
                    server.app.cluster_faults.end_of_batch()
                    if fault:
                        strike_between(fault, strategy, server, link)
                    continue
                last_fault[request_id] = current_fault
                batch.append((request_id, (kind, fault)))
        server.stop()
        strategy.close()
    rows = {}
    for request_id, part, count in admin.execute_sql(
            "SELECT request_id, part, COUNT(*) FROM chaos_write GROUP BY request_id, part").fetchall():
        rows.setdefault(request_id, {})[part] = count
    admin.execute_sql("DROP TABLE chaos_write")
    admin.close_all()
    tally_up(tally, steps, answers, rows, last_fault)
    tally.max_request_s = round(max(took.values(), default=0.0), 2)
    return tally


def tally_up(tally, steps, answers, rows, last_fault):
    """Fill ``tally`` from what each request was told and what the table holds."""
    numbered = [(i, kind) for i, (kind, _) in enumerate(steps, 1) if kind is not None]
    tally.requests = len(numbered)
    tally.faults = sum(tally.faults_by_kind.values())
    for request_id, kind in numbered:
        answer, found = answers[request_id], rows.get(request_id, {})
        expected = ROWS[kind]
        tally.duplicates += any(n > 1 for n in found.values())
        tally.torn += 0 < len(found) < expected
        if answer.startswith("200"):
            if expected:
                tally.acked_writes += 1
                tally.lost += len(found) < expected
            continue
        tally.failed += 1
        fault = last_fault.get(request_id)
        tally.failed_by_fault[fault] = tally.failed_by_fault.get(fault, 0) + 1
        error = answer.split()[1]
        tally.errors_by_kind[error] = tally.errors_by_kind.get(error, 0) + 1
        if error == "OutcomeUnknown":
            tally.unknown += 1
            tally.unknown_landed += len(found) == expected


# Two deliberately wrong strategies, for --self-check only: the harness must see what each does.

class AcksDroppedDatabase(S.SafeReconnectMySQLDatabase):
    """WRONG on purpose: a write whose connection was lost is reported done, whatever became of it."""

    def execute_sql(self, sql, params=None):
        try:
            return super().execute_sql(sql, params)
        except (S.OutcomeUnknown, S.TransactionLost):
            if S.is_read(sql):
                raise
            return None


class WritesTwiceDatabase(S.SafeReconnectMySQLDatabase):
    """WRONG on purpose: every write is taken for idempotent, so a write whose answer was lost is sent again."""

    def execute_sql(self, sql, params=None):
        with self.idempotent_writes():
            return super().execute_sql(sql, params)


class AcksDropped(S.SafeReconnect):
    name = "wrong_acks_dropped"
    database_class = AcksDroppedDatabase


class WritesTwice(S.SafeReconnect):
    name = "wrong_writes_twice"
    database_class = WritesTwiceDatabase


STRATEGIES = {**S.STRATEGIES, AcksDropped.name: AcksDropped, WritesTwice.name: WritesTwice}


def run_all(requests=2000, seed=1, fault_every=35, names=NAMES, progress=None, threads=THREADS,
            read_timeout=READ_TIMEOUT, rtt_ms=0, cluster=None):
    """Every strategy, one after another, through the same schedule; their tallies."""
    steps = plan(requests, seed, fault_every, cluster=cluster)
    tallies = []
    for name in names:
        done, lock = 0, threading.Lock()

        def tick():
            nonlocal done
            with lock:
                done += 1
                if progress and (done % 20 == 0 or done == requests):
                    progress(name, done, requests)

        tallies.append(run(name, steps, tick, threads, read_timeout, rtt_ms, cluster))
    return tallies


def self_check(requests=300, seed=1, fault_every=10):
    """Run the two wrong strategies; True when the counts show the loss and the doubling."""
    dropped, doubled = run_all(requests, seed, fault_every, names=[AcksDropped.name, WritesTwice.name])
    print(f"{dropped.name}: lost {dropped.lost} (must be > 0); {doubled.name}: duplicates {doubled.duplicates} "
          f"(must be > 0)")
    return dropped.lost > 0 and doubled.duplicates > 0


def show_progress(name, done, total):
    """A bar on a terminal, redrawn in place; elsewhere (a log) one line per strategy."""
    if not sys.stderr.isatty() and done < total:
        return
    bar = "#" * (30 * done // total)
    print(f"\r{name:17} [{bar:30}] {done}/{total}", end="\n" if done == total else "", file=sys.stderr, flush=True)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=2000, help="requests per strategy (default 2000)")
    parser.add_argument("--seed", type=int, default=1, help="seed of the request mix and fault schedule")
    parser.add_argument("--fault-every", type=int, default=35, help="requests between faults, on average")
    parser.add_argument("--threads", type=int, default=THREADS, help="client threads, and server threads (default 8)")
    parser.add_argument("--read-timeout", type=int, default=READ_TIMEOUT,
                        help=f"the app's read_timeout in seconds (default {READ_TIMEOUT})")
    parser.add_argument("--rtt-ms", type=float, default=0, help="the server this far away, through the relay (default 0)")
    parser.add_argument("--cluster", choices=clusters.MODES, nargs="?", const="semisync",
                        help="against chapter 08's replica pair, with failovers (alone: semisync), or 08b's "
                             "Galera cluster")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    parser.add_argument("--self-check", action="store_true",
                        help="run two deliberately wrong strategies; exit 1 unless the counts show what they did")
    args = parser.parse_args(argv)
    if args.self_check:
        return 0 if self_check() else 1
    started = time.monotonic()
    tallies = run_all(args.requests, args.seed, args.fault_every, progress=None if args.json else show_progress,
                      threads=args.threads, read_timeout=args.read_timeout, rtt_ms=args.rtt_ms, cluster=args.cluster)
    if args.json:
        print(json.dumps({"threads": args.threads, "read_timeout": args.read_timeout, "rtt_ms": args.rtt_ms,
                          "strategies": [asdict(t) for t in tallies]}))
        return 0
    columns = ["requests", "faults", "failed", "acked_writes", "lost", "duplicates", "torn", "unknown", "unknown_landed",
               "max_request_s", "bound_s"]
    print(f"{'strategy':17}" + "".join(f"{c:>15}" for c in columns))
    for tally in tallies:
        print(f"{tally.name:17}" + "".join(f"{str(getattr(tally, c)):>15}" for c in columns))
    print(f"\n{args.requests} requests per strategy from {args.threads} threads, seed {args.seed}, "
          f"in {time.monotonic() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
