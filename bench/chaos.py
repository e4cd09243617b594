"""A chaos run: every strategy on the same seeded mix of requests, from several client threads at
once, through a threaded app, under real faults.

    python bench/chaos.py                                  # a table, with a progress bar
    python bench/chaos.py --requests 200 --seed 1 --json   # one JSON object
    python bench/chaos.py --self-check                     # the harness sees what it claims to see

Each strategy serves a small WSGI app on the course's threaded server (8 threads, a connection
each), and 8 client threads send it the plan's requests over HTTP: reads; writes, each inserting
a row with a client-chosen request id; transactions of two inserts, through peewee's ``atomic()``
or begun by hand with ``START TRANSACTION``; and statements whose text hides what they do: a
``SELECT`` through a view whose stored function inserts a row, a transaction begun inside a
stored procedure (``CALL``) and finished by the app, a transaction in ``atomic()`` that a DDL
statement commits in the middle (an implicit commit), and a slow read that outlasts the app's
``read_timeout``. The table ``chaos_write`` has no unique key: a write applied twice shows as two
rows; a read run twice is seen in the server's process list. Faults strike between batches of
requests (a ``KILL`` of every connection the app holds, an expired ``wait_timeout``, a server
restart, a silent drop of every connection open through the relay, as a NAT or load balancer
does) and inside requests, one of each kind they can strike (a ``KILL`` during a read or between
a transaction's statements, the link cut before an ``INSERT`` reaches the server or after it or
the view's insert ran, the answer to a ``COMMIT`` lost, the client's ``read_timeout`` running
out). Afterwards the table is compared with what each request was told:
- lost: requests answered "done" whose rows are not all in the table;
- duplicates: request ids with a row written twice, or a read the server ran twice;
- torn: transactions found in part where the app was not told that could be so. A transaction
  the server keeps whole is torn whenever it is found in part, whatever the app was told; one
  with an implicit commit inside is committed in two by the server itself: found in part, it is
  torn only if the app was told "done" or ``TransactionLost`` ("nothing of it was applied");
  after ``OutcomeUnknown`` (or a driver's bare error) it counts in ``landed_in_part`` instead;
- unknown: requests answered "outcome unknown"; ``unknown_landed`` of them landed whole;
- lost_but_landed: requests answered ``TransactionLost`` of which some row is in the table;
- max_request_s: the longest any request took, against ``bound_s``, the strategy's own bound
  (``Strategy.longest_wait()``, with the app's ``--read-timeout``) plus a second for the work
  (the asyncio rows: the request's timeout plus that second, timed in the app, ``chaos_asgi`` says how).
``by_kind`` has the same counts for each kind of request, and how many of each a fault struck.
A failed request is charged to the kind of the last fault before it; ``errors_by_kind`` counts
the failures by what the app was told (the error's class), ``error_codes`` by class and code, and
``error_codes_by_fault`` by class and code under the fault each is charged to.
Every connection goes through the relay, ``--rtt-ms`` away.

With ``--cluster`` (semi-synchronous; ``--cluster async`` for asynchronous) each strategy runs
against chapter 08's replica pair, started afresh for it and stopped after, through HAProxy; a
``failover`` (the primary killed, the replica promoted half a second later, the old primary
rebuilt as the new replica) takes the place of the restart among the faults, and a failover
while the replica is cut off from the primary joins it (after ``CUT_OFF_WRITES`` writes). Each row
says its replication. What a failover loses is counted like any other loss: an acknowledged write
missing from the new primary is lost. ``--cluster galera`` runs against chapter 08b's Galera
cluster instead, with faults of its own (``bench/clusters.py``).

``--strategies naive,ping`` runs only the rows named (every one by default).

Without ``--cluster`` the run also has asyncio rows (``"asyncio"`` in ``--json``; ``--asyncio-only``
for them alone): chapter 10's app on ``AsyncMySQLDatabase`` under uvicorn through the same schedule,
the client's timeout on a slow read becoming a cancellation of its request (``bench/chaos_asgi.py``).
"""
import argparse
import json
import random
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field


import app
import config
import faults
import localdb
import strategies as S
from bench import clusters, frameworks, wrong
from bench.chaos_app import CLEAN_UP, SCHEMA, ChaosApp

NAMES = ["naive", "per_request", "ping", "idle_ping", "peewee_reconnect", "safe_reconnect"]
FRAMEWORKS = frameworks.NAMES  # SQLAlchemy's and Django's configurations (chapter 09): the command line runs them too
ASYNCIO_NAMES = ["asyncio_per_task"]  # chapter 10's app (bench/chaos_asgi.py): the command line runs it too
BETWEEN = ["kill_between", "expire", "restart", "silent_drop"]  # strike every connection the app holds, between batches
DURING = {  # strike requests, one of each kind listed, one after another
    "kill_during": ["read"],
    "kill_in_transaction": ["atomic", "raw_transaction", "procedure_transaction", "implicit_commit"],
    "cut_before_insert": ["write", "raw_transaction"],
    "cut_after_insert": ["write", "raw_transaction", "view_read"],  # a view read: after the view's insert ran
    "cut_after_commit": ["atomic", "raw_transaction"],
    "read_timeout": ["slow_read"],  # a read slower than the app's read_timeout: the client gives up
}
FAULTS = BETWEEN + list(DURING)
# Against a cluster, faults of its own: see bench/clusters.py
CLUSTER_FAULTS = [fault if fault != "restart" else "failover" for fault in FAULTS] + ["failover_cut_off"]
CUT_OFF_WRITES = clusters.CUT_OFF_WRITES
ALL_DURING = {**DURING, **clusters.GALERA_DURING}
MIX = {"read": 0.5, "write": 0.2, "atomic": 0.08, "raw_transaction": 0.08, "view_read": 0.05,
       "procedure_transaction": 0.05, "implicit_commit": 0.04}  # a slow read comes only with its fault
ROWS = {"read": 0, "write": 1, "atomic": 2, "raw_transaction": 2, "view_read": 1, "procedure_transaction": 2,
        "implicit_commit": 2, "slow_read": 0}
SPLIT = {"implicit_commit"}  # transactions the server itself commits in two (DDL inside commits what came before)
THREADS = 8
READ_TIMEOUT = 1  # the app's read_timeout, the least there is (whole seconds): silent drops cost the run little
WORK_S = 1.0  # the longest a request's own statements take here (a read killed during its 0.3 s sleep;
# the slow read is given up on at read_timeout, which the bound counts already)


COUNTS = ["requests", "struck", "failed", "lost", "duplicates", "torn", "unknown", "unknown_landed", "landed_in_part",
          "lost_but_landed"]


@dataclass
class Tally:
    name: str
    requests: int = 0
    faults: int = 0  # strikes: one per request struck, one per fault between batches
    failed: int = 0
    acked_writes: int = 0
    lost: int = 0
    duplicates: int = 0
    torn: int = 0
    unknown: int = 0
    unknown_landed: int = 0
    landed_in_part: int = 0
    lost_but_landed: int = 0
    max_request_s: float = 0.0
    bound_s: float = None
    replication: str = None
    failed_by_fault: dict = field(default_factory=dict)
    faults_by_kind: dict = field(default_factory=dict)
    errors_by_kind: dict = field(default_factory=dict)
    error_codes: dict = field(default_factory=dict)  # the same failures by class and code: "OperationalError 2013"
    error_codes_by_fault: dict = field(default_factory=dict)  # fault -> error_codes of the failures charged to it
    by_kind: dict = field(default_factory=dict)  # kind of request -> COUNTS, and max_s


LONGEST_STRIKE = max(CUT_OFF_WRITES, *(len(kinds) for kinds in ALL_DURING.values()))


def plan(requests, seed, fault_every=35, cluster=False, only=None):
    """The run's schedule: a list of ``(kind of request, fault or None)``, and, between them,
    ``(None, fault)`` for a fault between batches.

    One fault comes in each run of ``fault_every`` requests, at a random place in it (early enough
    for the requests it strikes). The kinds are drawn as from a bag, refilled and shuffled when
    empty: every kind comes once in each run of as many faults as there are kinds. A fault that
    strikes requests strikes one of each kind it can strike, one after another: a cut link a
    write, a raw transaction and a read through the view; a kill between two statements each
    kind of transaction. A failover while the replica is cut off (``cluster`` the pair's) comes
    before ``CUT_OFF_WRITES`` writes, and ends their batch; ``cluster="galera"`` has its own faults.
    ``only``: these kinds of fault, and no others.
    """
    rng = random.Random(seed)
    if cluster == "galera":
        faults_here = clusters.GALERA_FAULTS
    elif cluster:
        faults_here = CLUSTER_FAULTS
    else:
        faults_here = FAULTS if config.LOCAL_SERVER else [f for f in FAULTS if f != "restart"]
    faults_here = [fault for fault in faults_here if only is None or fault in only]
    room = max(1, fault_every - LONGEST_STRIKE + 1)
    at = {slot * fault_every + rng.randrange(room) for slot in range(requests // fault_every)}
    steps, bag, struck = [], [], []
    for number in range(requests):
        if number in at:
            if not bag:
                bag = rng.sample(faults_here, len(faults_here))
            fault = bag.pop()
            if fault in ALL_DURING:
                struck.extend((kind, fault) for kind in ALL_DURING[fault])
            else:
                steps.append((None, fault))
                if fault == "failover_cut_off":  # the writes while the replica is cut off, then the batch's end
                    struck.extend([("write", None)] * CUT_OFF_WRITES + [(None, None)])
        if struck:
            steps.append(struck.pop(0))
            if struck and struck[0] == (None, None):
                steps.append(struck.pop(0))
        else:
            steps.append((rng.choices(list(MIX), weights=list(MIX.values()))[0], None))
    return steps


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
        link.wait_until_passed_on()  # the server's hang-ups, to the app


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
    for sql in SCHEMA:
        admin.execute_sql(sql)
    admin.close()  # its session may hold what the view's text seemed to leave: the count needs none of it
    tally = Tally(name, replication=cluster)
    with faults.LinkCutter(port=port, rtt_ms=rtt_ms) as link:
        cls = STRATEGIES[name]
        strategy = cls(S.database(cls.database_class, port=link.port, read_timeout=read_timeout))
        wait = strategy.longest_wait()
        tally.bound_s = None if wait is None else wait + WORK_S
        chaos_app = ChaosApp(strategy, link, cluster, read_timeout)
        server = app.Server(chaos_app, threads=threads)
        played = play(steps, server.url, threads, chaos_app.counters,
                      strike=lambda fault: strike_between(fault, strategy, server, link),
                      end_of_batch=chaos_app.cluster_faults.end_of_batch, on_request=on_request)
        server.stop()
        strategy.close()
    tally.faults_by_kind = played.faults_by_kind
    runs, rows = what_ran(chaos_app, admin)
    tally_up(tally, steps, played.answers, rows, runs, played.last_fault, played.took)
    return tally


@dataclass
class Played:
    """What a run sent, by request id: the app's answer, its seconds, the last fault before it; and
    how many faults of each kind struck."""
    answers: dict = field(default_factory=dict)
    took: dict = field(default_factory=dict)
    last_fault: dict = field(default_factory=dict)
    faults_by_kind: dict = field(default_factory=dict)


def play(steps, url, threads, counters, strike, end_of_batch=lambda: None, on_request=lambda: None):
    """Send ``steps`` to the app at ``url`` from ``threads`` clients, a batch at a time: a step with no
    kind ends one. Then ``end_of_batch()``, and its fault strikes, ``strike(fault)``, once the slow
    reads' copies (``counters``) have ended, counted. What was sent, as a ``Played``."""
    played, batch, current_fault = Played(), [], None

    def send(numbered_step):
        request_id, (kind, fault) = numbered_step
        query = f"?fault={fault}" if fault else ""
        started = time.monotonic()
        played.answers[request_id] = app.get(f"{url}/{kind}/{request_id}{query}", timeout=120)
        played.took[request_id] = time.monotonic() - started
        on_request()

    with ThreadPoolExecutor(threads) as clients:
        for request_id, (kind, fault) in enumerate(steps + [(None, None)], 1):
            if fault:
                played.faults_by_kind[fault] = played.faults_by_kind.get(fault, 0) + 1
                current_fault = fault
            if kind is None:  # the end of a batch: run it, then strike between
                list(clients.map(send, batch))
                batch = []
                end_of_batch()
                if fault:
                    for counter in counters.values():
                        counter.join()
                    strike(fault)
                continue
            played.last_fault[request_id] = current_fault
            batch.append((request_id, (kind, fault)))
    return played


def what_ran(chaos_app, admin):
    """After a run: how many copies of each slow read the server ran, and the rows each write
    left (``{request_id: {part: count}}``); then the run's tables go, and ``admin`` closes."""
    runs = {request_id: counter.copies() for request_id, counter in chaos_app.counters.items()}
    rows = {}
    for request_id, part, count in admin.execute_sql(
            "SELECT request_id, part, COUNT(*) FROM chaos_write GROUP BY request_id, part").fetchall():
        rows.setdefault(request_id, {})[part] = count
    for sql in CLEAN_UP:
        admin.execute_sql(sql)
    admin.close_all()
    return runs, rows


def tally_up(tally, steps, answers, rows, runs, last_fault, took):
    """Fill ``tally`` from what each request was told, what the table holds, and how many copies
    of each slow read the server ran (``runs``)."""
    numbered = [(i, kind, fault) for i, (kind, fault) in enumerate(steps, 1) if kind is not None]
    tally.requests = len(numbered)
    tally.faults = sum(tally.faults_by_kind.values())
    tally.max_request_s = round(max(took.values(), default=0.0), 2)
    for request_id, kind, fault in numbered:
        answer, found, expected = answers[request_id], rows.get(request_id, {}), ROWS[kind]
        told = "done" if answer.startswith("200") else answer.split()[1]
        partial = 0 < len(found) < expected
        counts = {
            "requests": 1,
            "struck": fault is not None,
            "failed": told != "done",
            "lost": told == "done" and len(found) < expected,
            "duplicates": any(n > 1 for n in found.values()) or runs.get(request_id, 0) > 1,
            "torn": partial and (kind not in SPLIT or told in ("done", "TransactionLost")),
            "unknown": told == "OutcomeUnknown",
            "unknown_landed": told == "OutcomeUnknown" and expected > 0 and len(found) == expected,
            "landed_in_part": partial and kind in SPLIT and told not in ("done", "TransactionLost"),
            "lost_but_landed": told == "TransactionLost" and bool(found),
        }
        mine = tally.by_kind.setdefault(kind, dict.fromkeys(COUNTS, 0) | {"max_s": 0.0})
        for name, count in counts.items():
            mine[name] += int(count)
            if name not in ("requests", "struck"):
                setattr(tally, name, getattr(tally, name) + int(count))
        mine["max_s"] = max(mine["max_s"], round(took[request_id], 2))
        tally.acked_writes += told == "done" and expected > 0
        if told != "done":
            cause = last_fault.get(request_id)
            tally.failed_by_fault[cause] = tally.failed_by_fault.get(cause, 0) + 1
            tally.errors_by_kind[told] = tally.errors_by_kind.get(told, 0) + 1
            code = " ".join(answer.split()[1:3])
            tally.error_codes[code] = tally.error_codes.get(code, 0) + 1
            after = tally.error_codes_by_fault.setdefault(cause, {})
            after[code] = after.get(code, 0) + 1


STRATEGIES = {**S.STRATEGIES, **wrong.STRATEGIES, **frameworks.STRATEGIES}


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


def self_check(requests=60, seed=1, fault_every=10):
    """Run the deliberately wrong strategies (``bench/wrong.py``), each under the faults its mistake
    meets (``wrong.FAULTS``); True when the counts show what each does wrong."""
    seen = True
    for name, needed in wrong.FAULTS.items():
        tally = run(name, plan(requests, seed, fault_every, only=needed))
        for what, count in wrong.MUST_SEE[tally.name]:
            print(f"{tally.name:27} {what}: {count(tally)} (must be > 0)")
            seen = seen and count(tally) > 0
    return seen


def show_progress(name, done, total):
    """A bar on a terminal, redrawn in place; elsewhere (a log) one line per strategy."""
    if not sys.stderr.isatty() and done < total:
        return
    bar = "#" * (30 * done // total)
    print(f"\r{name:17} [{bar:30}] {done}/{total}", end="\n" if done == total else "", file=sys.stderr, flush=True)


def asyncio_rows(args):
    """Chapter 10's asyncio app through the same schedule (``bench/chaos_asgi.py``), where its packages
    (requirements-asyncio.txt) are installed."""
    try:
        from bench import chaos_asgi
    except ImportError as missing:
        print(f"no asyncio rows: {missing.name} is not installed (make setup-asyncio)", file=sys.stderr)
        return []
    return chaos_asgi.run_all(args.requests, args.seed, args.fault_every, args.threads, args.rtt_ms, args.read_timeout)


ROW_NAMES = NAMES + FRAMEWORKS + ASYNCIO_NAMES


def strategy_names(text):
    """``--strategies``: names separated by commas, each one of the run's rows."""
    names = list(dict.fromkeys(name.strip() for name in text.split(",") if name.strip()))  # each once
    unknown = [name for name in names if name not in ROW_NAMES]
    if unknown or not names:
        said = f"no row is called {unknown[0]!r}" if unknown else "name at least one row"
        raise argparse.ArgumentTypeError(f"{said}: name some of {', '.join(ROW_NAMES)}, separated by commas")
    return names


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
    parser.add_argument("--strategies", type=strategy_names, metavar="NAME,NAME",
                        help="only these rows, by name (default: every one): " + ", ".join(ROW_NAMES))
    parser.add_argument("--asyncio-only", action="store_true",
                        help="only the asyncio rows (chapter 10's app, bench/chaos_asgi.py)")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    parser.add_argument("--self-check", action="store_true",
                        help="run deliberately wrong strategies; exit 1 unless the counts show what each did")
    args = parser.parse_args(argv)
    if args.strategies and args.asyncio_only:
        parser.error("--strategies or --asyncio-only, not both (--asyncio-only is --strategies "
                     + ",".join(ASYNCIO_NAMES) + ")")
    if args.cluster and (args.asyncio_only or set(args.strategies or []) & set(ASYNCIO_NAMES)):
        parser.error("the asyncio rows run against the course's server, not --cluster: leave out one of them")
    try:
        localdb.check_connection()  # one line saying what to fix, not a traceback per thread
    except localdb.ServerError as error:
        parser.exit(2, f"bench/chaos.py: {error}\n")
    if args.self_check:
        return 0 if self_check() else 1
    started = time.monotonic()
    names = args.strategies or (ASYNCIO_NAMES if args.asyncio_only else ROW_NAMES)
    sync_names = [name for name in names if name not in ASYNCIO_NAMES]
    tallies = run_all(
        args.requests, args.seed, args.fault_every, names=sync_names, progress=None if args.json else show_progress,
        threads=args.threads, read_timeout=args.read_timeout, rtt_ms=args.rtt_ms, cluster=args.cluster) if sync_names else []
    asyncio_tallies = asyncio_rows(args) if set(ASYNCIO_NAMES) & set(names) and not args.cluster else []
    if args.json:
        print(json.dumps({"threads": args.threads, "read_timeout": args.read_timeout, "rtt_ms": args.rtt_ms,
                          "strategies": [asdict(t) for t in tallies],
                          "asyncio": [asdict(t) for t in asyncio_tallies]}))
        return 0
    columns = ["requests", "faults", "failed", "acked_writes", "lost", "duplicates", "torn", "unknown", "unknown_landed",
               "landed_in_part", "lost_but_landed", "max_request_s", "bound_s"]
    print(f"{'strategy':23}" + "".join(f"{c:>{len(c) + 2}}" for c in columns))
    for tally in tallies + asyncio_tallies:
        print(f"{tally.name:23}" + "".join(f"{str(getattr(tally, c)):>{len(c) + 2}}" for c in columns))
    print(f"\n{args.requests} requests per strategy from {args.threads} threads, seed {args.seed}, "
          f"in {time.monotonic() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
