"""A chaos run: every strategy on the same seeded mix of reads and writes, under real faults.

    python bench/chaos.py                                  # a table, with a progress bar
    python bench/chaos.py --requests 200 --seed 1 --json   # one JSON object

Each write inserts a row with a client-chosen request id into ``chaos_write``, which has no
unique key: a write applied twice shows as two rows. Every strategy meets the same requests and
the same faults, on the same schedule. Afterwards the table is compared with what each strategy
reported:
- lost: writes acknowledged as done but missing from the table;
- duplicates: request ids with more than one row;
- unknown: writes reported as "outcome unknown"; ``unknown_landed`` says how many of them did land.
A failed request is charged to the kind of the last fault before it.
"""
import argparse
import json
import random
import sys
import time
from dataclasses import asdict, dataclass, field

import config
import faults
import measuring
import strategies as S

NAMES = ["naive", "per_request", "ping", "idle_ping", "peewee_reconnect", "safe_reconnect"]
FAULTS = ["kill_between", "kill_during", "expire", "restart", "link_cut"]
WRITE_SHARE = 0.3


@dataclass
class Tally:
    name: str
    requests: int = 0
    faults: int = 0
    failed: int = 0
    acked_writes: int = 0
    lost: int = 0
    duplicates: int = 0
    unknown: int = 0
    unknown_landed: int = 0
    failed_by_fault: dict = field(default_factory=dict)


def plan(requests, seed, fault_every=35):
    """The run's schedule: for each request, whether it writes, and the fault (or None) just before it.

    Faults come every ``fault_every`` requests on average (between 4/7 and 10/7 of it apart).
    A cut link always strikes a write, the case that matters; a kill during a request, a slow read.
    """
    rng = random.Random(seed)
    faults = FAULTS if config.LOCAL_SERVER else [f for f in FAULTS if f != "restart"]
    low, high = max(1, fault_every * 4 // 7), max(1, fault_every * 10 // 7)
    steps, gap = [], rng.randint(low, high)
    for _ in range(requests):
        gap -= 1
        fault = None
        if gap == 0:
            fault, gap = rng.choice(faults), rng.randint(low, high)
        writes = fault == "link_cut" or (fault != "kill_during" and rng.random() < WRITE_SHARE)
        steps.append((writes, fault))
    return steps


def run(name, steps, on_request=lambda: None):
    """Run one strategy through ``steps`` against a fresh ``chaos_write`` table; its tally."""
    admin = S.database()
    admin.execute_sql("DROP TABLE IF EXISTS chaos_write")
    admin.execute_sql("CREATE TABLE chaos_write (id INT AUTO_INCREMENT PRIMARY KEY, request_id INT NOT NULL)")
    tally, acked, unknown, last_fault = Tally(name), [], [], None
    with faults.LinkCutter() as link:
        cls = S.STRATEGIES[name]
        strategy = cls(S.database(cls.database_class, port=link.port))
        for request_id, (writes, fault) in enumerate(steps, 1):
            if fault:
                tally.faults += 1
                last_fault = fault
                strike_between(fault, strategy)
            work = insert(request_id) if writes else measuring.select_one
            if fault in ("kill_during", "link_cut"):
                work = strike_during(fault, work, link)
            try:
                with strategy.request() as db:
                    work(db)
                if writes:
                    acked.append(request_id)
            except (S.OperationalError, S.InterfaceError) as error:
                tally.failed += 1
                tally.failed_by_fault[last_fault] = tally.failed_by_fault.get(last_fault, 0) + 1
                if isinstance(error, S.OutcomeUnknown):
                    unknown.append(request_id)
            tally.requests += 1
            on_request()
        strategy.close()
    S.reconnect_if_dead(admin)  # a restart may have cut it
    rows = dict(admin.execute_sql("SELECT request_id, COUNT(*) FROM chaos_write GROUP BY request_id").fetchall())
    admin.execute_sql("DROP TABLE chaos_write")
    admin.close()
    tally.acked_writes = len(acked)
    tally.lost = sum(1 for r in acked if r not in rows)
    tally.duplicates = sum(1 for n in rows.values() if n > 1)
    tally.unknown = len(unknown)
    tally.unknown_landed = sum(1 for r in unknown if r in rows)
    return tally


def insert(request_id):
    def work(db):
        db.execute_sql("INSERT INTO chaos_write (request_id) VALUES (%s)", (request_id,))
    return work


def alive(db):
    """True when ``db`` holds a live connection. A dead one has nothing left to break, and its id
    may belong to another connection after a restart, so it must not be killed."""
    return not db.is_closed() and db.is_connection_usable()


def strike_between(fault, strategy):
    """A fault between requests, on the connection the strategy holds (per-request holds none)."""
    if fault == "restart":
        faults.restart_server()
    elif alive(strategy.db):
        if fault == "kill_between":
            faults.kill(S.connection_id(strategy.db))
        elif fault == "expire":
            faults.expire_after(strategy.db, 1)
            time.sleep(1.5)


def strike_during(fault, work, link):
    """Wrap ``work`` so that the fault strikes while the request runs, on an open connection."""
    def faulty(db):
        db.connection()  # connect first: the fault is meant for the statement, not the handshake
        if fault == "link_cut":
            link.cut_next_reply()
            return work(db)
        if not alive(db):
            return work(db)  # nothing to kill: the request meets the dead connection as it is
        with faults.kill_during(S.connection_id(db), after=0.05):
            return db.execute_sql("SELECT SLEEP(0.3)").fetchone()
    return faulty


def run_all(requests=2000, seed=1, fault_every=35, names=NAMES, progress=None):
    """Every strategy, one after another, through the same schedule; their tallies."""
    steps = plan(requests, seed, fault_every)
    tallies = []
    for name in names:
        done = 0

        def tick():
            nonlocal done
            done += 1
            if progress and (done % 20 == 0 or done == requests):
                progress(name, done, requests)

        tallies.append(run(name, steps, tick))
    return tallies


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
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    args = parser.parse_args(argv)
    started = time.monotonic()
    tallies = run_all(args.requests, args.seed, args.fault_every, progress=None if args.json else show_progress)
    if args.json:
        print(json.dumps({"strategies": [asdict(t) for t in tallies]}))
        return
    columns = ["requests", "faults", "failed", "acked_writes", "lost", "duplicates", "unknown", "unknown_landed"]
    print(f"{'strategy':17}" + "".join(f"{c:>15}" for c in columns))
    for tally in tallies:
        print(f"{tally.name:17}" + "".join(f"{getattr(tally, c):>15}" for c in columns))
    print(f"\n{args.requests} requests per strategy, seed {args.seed}, in {time.monotonic() - started:.0f} s")


if __name__ == "__main__":
    main()
