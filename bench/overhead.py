"""What each strategy costs per request when nothing goes wrong, as a ratio to a kept connection.

    python bench/overhead.py                       # a table, on loopback
    python bench/overhead.py --json                # one JSON object
    python bench/overhead.py --rtt-ms 0,1,5        # through the relay, the server that far away
    python bench/overhead.py --instructions        # instructions per request, counted by valgrind
    python bench/overhead.py --tls --rtt-ms 0,1,5  # the strategies with TLS too, beside plain TCP

Every strategy runs the same request (``SELECT 1``) side by side in one run, in a new random
order each round, after a warm-up; each is reported as a ratio to the floor with a 95%
confidence interval. Beside the wall time, each request's CPU time in the client's own thread
(``time.thread_time()``: the client's work, not the server's nor the wait for it) is reported
the same way: it leaves out the server's share and the waits, yet on a machine shared with
others it still moves (their work evicts the client's code and data from the caches, and one
strategy's more than another's): only ``--instructions`` gives a figure that no other load moves.
On loopback the client runs on one core and the local server on the others, as on two machines
(``client_and_server_apart()``): left to the scheduler, where each connection's server thread lands
moves a ratio more than the strategy does.
The floor is a connection kept open (the naive strategy, which costs nothing extra until it
breaks): a strategy that does the floor's work and more cannot truly cost less, so a ratio whose
interval lies below 1.0 would be an artifact of the method.

On the command line, SQLAlchemy's and Django's configurations of chapter 09 follow
(``bench/frameworks.py``: ``NullPool``, recycle, the course's rule in SQLAlchemy's events, Django's
``CONN_MAX_AGE`` and ``CONN_HEALTH_CHECKS``); ``run()`` adds them with ``frameworks=True``.

Beside the strategies, for reference (not taught as strategies): peewee's connection pool, and
SQLAlchemy's pooled engine: as shipped, used as apps use it (``engine.connect()``), and with
``pool_pre_ping``. Used that way it sends a ``ROLLBACK`` at the end of every request (the
connection ends the transaction it began; the pool's own reset, ``pool_reset_on_return``, then
has nothing left to do, so switching it off changes nothing). To compare like with like, the
``sqlalchemy_pool_no_reset`` row takes the driver's connection from the pool (``raw_connection()``)
with the pool's reset off: the pool alone, with no extra round trip.

``--instructions`` counts instead the instructions the client runs per request, under valgrind's
callgrind, each contender alone in a process of its own (the difference between a run of 2n
requests and one of n, so that starting Python and connecting cancel out): a count that a busy machine cannot move, from
one run to the next, and slow (valgrind runs Python some fifty times slower: about 20 s a
contender). It counts the client's instructions in user space only, not the kernel's.

With ``--rtt-ms`` every contender, the floor included, connects through the course's relay,
which delays each packet by half the round trip each way; ``rtt_ms`` 0 is the relay alone.
Figures vary with the machine: read the ratios, not the microseconds.

With ``--tls`` each run also has the strategies connecting with TLS to the local server (its own
CA, the certificate verified: ``tls.client_options()``), named ``<strategy>_tls``, side by side
with the plain ones in the same shuffled rounds; they are reported apart (``"tls"`` in the JSON,
with the protocol and cipher the server agreed), each as a ratio to a kept TLS connection.
"""
import argparse
import gc
import json
import os
import random
import re
import subprocess
import sys
import time
from contextlib import contextmanager, nullcontext

import sqlalchemy
from playhouse.pool import _PooledMySQLDatabase

import config
import faults
from connections import MySQLdbDatabase
import measuring
import strategies as S

FLOOR = "naive"
# Rounds by default: ten thousand where a request takes a fraction of a millisecond, far fewer
# where every request waits for the network, which steadies the figures on its own. Measured here
# (2 cores): through the relay, two runs of 3,000 rounds differed by up to 6% (per_request at 0 ms),
# of 10,000 by at most 1.5%; 300 rounds 1 and 5 ms away, by at most 1%. Directly on loopback two
# runs differed by up to 15% while the scheduler placed the client's and the server's threads
# (client_and_server_apart); pinned apart, two runs of the whole table agree within 3%, the safe
# reconnect's ratio within 2% (1.04 and 1.02). Instructions (--instructions) agree within 1%.
NEAR_ROUNDS, FAR_ROUNDS = 10_000, 300
ROUNDED = {"median_us": 1, "p99_us": 1, "ratio": 2, "ratio_low": 2, "ratio_high": 2}


def default_rounds(rtt_ms):
    return FAR_ROUNDS if rtt_ms else NEAR_ROUNDS


class PooledMySQLdbDatabase(_PooledMySQLDatabase, MySQLdbDatabase):
    """peewee's ``PooledMySQLDatabase``, on mysqlclient whatever else is installed."""


class PeeweePool:
    """peewee's ``PooledMySQLDatabase``, shaped like a strategy: a connection taken from the pool
    when a request starts and given back when it ends."""

    name = "peewee_pool"

    def __init__(self, port=None):
        self.db = S.database(PooledMySQLdbDatabase, port=port, max_connections=8)

    @contextmanager
    def request(self):
        self.db.connect(reuse_if_open=True)
        try:
            yield self.db
        finally:
            self.db.close()  # back to the pool

    def close(self):
        self.db.close_all()


class SQLAlchemyEngine:
    """A pooled SQLAlchemy engine, shaped like a strategy so that ``measuring.measure`` can run it;
    ``raw`` takes the driver's own connection from the pool instead of a SQLAlchemy ``Connection``."""

    def __init__(self, name, port=None, raw=False, **engine_options):
        self.name, self.raw = name, raw
        url = sqlalchemy.engine.make_url(config.sql_url())
        if port is not None:
            url = url.set(port=port)
        self.engine = sqlalchemy.create_engine(url, connect_args=S.TIMEOUTS, **engine_options)

    @contextmanager
    def request(self):
        if self.raw:
            connection = self.engine.raw_connection()  # the pool alone
            cursor = connection.cursor()

            def execute(sql, params):
                cursor.execute(sql, params)
                return cursor

            try:
                yield Statements(execute)
            finally:
                connection.close()  # back to the pool
            return
        with self.engine.connect() as connection:  # a checkout from the pool, returned after
            yield Statements(connection.exec_driver_sql)

    def close(self):
        self.engine.dispose()


class Statements:
    """``execute_sql`` as peewee has it, on a SQLAlchemy connection or a driver's cursor."""

    def __init__(self, run):
        self.run = run

    def execute_sql(self, sql, params=None):
        return self.run(sql, params or ())


def contenders(port=None, frameworks=False):
    """Every strategy, and the reference rows, connecting to ``port`` (a relay's) or straight;
    with ``frameworks``, SQLAlchemy's and Django's configurations after them (``bench/frameworks.py``)."""
    from bench import frameworks as chapter_09  # the command line's rows; Django only when they are built

    return [cls(S.database(cls.database_class, port=port)) for cls in S.STRATEGIES.values()] + [
        PeeweePool(port),
        SQLAlchemyEngine("sqlalchemy_pool", port),
        SQLAlchemyEngine("sqlalchemy_pool_no_reset", port, raw=True, pool_reset_on_return=None),
        SQLAlchemyEngine("sqlalchemy_pre_ping", port, pool_pre_ping=True),
    ] + (chapter_09.contenders(port) if frameworks else [])


def tls_contenders(port=None):
    """Every strategy again, connecting with TLS to the local server, as ``<name>_tls``."""
    import localdb
    import tls

    options = tls.client_options(localdb.tls_ca())
    everyone = []
    for cls in S.STRATEGIES.values():
        strategy = cls(S.database(cls.database_class, port=port, **options))
        strategy.name = f"{cls.name}_tls"
        everyone.append(strategy)
    return everyone


def _negotiated(strategy):
    """The protocol and cipher of ``strategy``'s TLS connection, as the server reports them."""
    with strategy.request() as db:
        rows = dict(db.execute_sql("SHOW SESSION STATUS WHERE Variable_name IN ('Ssl_version', 'Ssl_cipher')"))
    return {"version": rows["Ssl_version"], "cipher": rows["Ssl_cipher"]}


def measure(strategies, repeat, warmup, seed=None):
    """``measuring.measure()``, timing each request twice: its wall time, and the CPU time the
    client's thread spent on it; two dicts of samples in µs, ``(wall, cpu)``."""
    rng, order = random.Random(seed), list(strategies)
    wall, cpu = ({strategy.name: [] for strategy in strategies} for _ in range(2))
    for round_number in range(warmup + repeat):
        rng.shuffle(order)
        for strategy in order:
            start, start_cpu = time.perf_counter(), time.thread_time()
            with strategy.request() as db:
                measuring.select_one(db)
            spent_cpu, spent = time.thread_time() - start_cpu, time.perf_counter() - start
            if round_number >= warmup:
                wall[strategy.name].append(spent * 1e6)
                cpu[strategy.name].append(spent_cpu * 1e6)
    return wall, cpu


@contextmanager
def client_and_server_apart():
    """For a run on loopback: this thread on one core, the local server's threads on the others, as
    on two machines (each round trip wakes the other side). Left to the scheduler, a connection's
    server thread may share the client's core or not, which on this kind of machine makes its
    ``SELECT 1`` take 23 µs or 85 µs, and decides a ratio more than the strategy does. Only for
    the local server, and with two cores or more; yields whether it pinned."""
    import localdb

    server, cores = localdb.course().pid() if config.LOCAL_SERVER else None, sorted(os.sched_getaffinity(0))
    if server is None or len(cores) < 2:
        yield False
        return
    mine, theirs = os.sched_getaffinity(0), _affinities(server)
    try:
        os.sched_setaffinity(0, {cores[0]})
        _pin_threads(server, lambda _: set(cores[1:]))
        yield True
    finally:
        os.sched_setaffinity(0, mine)
        _pin_threads(server, lambda thread: theirs.get(thread, theirs[server]))  # those made meanwhile: as its first


def _affinities(pid):
    """The cores each thread of process ``pid`` may run on."""
    cores = {}
    for thread in os.listdir(f"/proc/{pid}/task"):
        try:
            cores[int(thread)] = os.sched_getaffinity(int(thread))
        except ProcessLookupError:
            pass  # ended meanwhile
    return cores


def _pin_threads(pid, cores_of):
    for thread in os.listdir(f"/proc/{pid}/task"):
        try:
            os.sched_setaffinity(int(thread), cores_of(int(thread)))
        except (ProcessLookupError, FileNotFoundError):
            pass  # ended meanwhile


def run(repeat=None, rtt_ms=None, seed=None, tls=False, names=None, frameworks=False):
    """Median and p99 microseconds of each contender, and its ratio to the floor (the median of
    round-by-round ratios) with its 95% interval; beside them the median CPU time of the client
    per request (``cpu_us``) and its ratio to the floor's, with its interval (``cpu_ratio``,
    ``cpu_ratio_low``, ``cpu_ratio_high``); through a relay ``rtt_ms`` away when it is given. With
    ``tls``, the strategies with TLS too, under ``"tls"``; ``names``: only those contenders (and the floor)."""
    repeat = repeat or default_rounds(rtt_ms)
    relay = faults.LinkCutter(rtt_ms=rtt_ms) if rtt_ms is not None else None
    port = relay.port if relay else None
    everyone = contenders(port, frameworks) + (tls_contenders(port) if tls else [])
    if names:
        keep = {FLOOR, *names}
        for contender in everyone:
            if contender.name.removesuffix("_tls") not in keep:
                contender.close()
        everyone = [contender for contender in everyone if contender.name.removesuffix("_tls") in keep]
    try:
        negotiated = _negotiated(next(c for c in everyone if c.name == f"{FLOOR}_tls")) if tls else None
        # warm-up, not kept: the first rounds open every contender's connections and fill the server's
        # caches; ten do that at any round trip (a long run spares a twentieth of its rounds)
        with client_and_server_apart() if rtt_ms is None else nullcontext():
            wall, cpu = measure(everyone, repeat=repeat, warmup=max(10, repeat // 20), seed=seed)
    finally:
        for contender in everyone:
            contender.close()
        if relay:
            relay.close()
    plain = [name for name in wall if not name.endswith("_tls")]
    result = _summary({name: wall[name] for name in plain}, {name: cpu[name] for name in plain}, FLOOR)
    if tls:
        over_tls = [name for name in wall if name.endswith("_tls")]
        result["tls"] = {**negotiated, **_summary({name: wall[name] for name in over_tls},
                                                  {name: cpu[name] for name in over_tls}, f"{FLOOR}_tls")}
    return result if rtt_ms is None else {"rtt_ms": rtt_ms, **result}


def _summary(wall, cpu, floor):
    """``run()``'s figures for one set of contenders, each as a ratio to ``floor``."""
    summary = measuring.summarize(wall, floor=floor).round(ROUNDED)
    on_cpu = measuring.summarize(cpu, floor=floor).round(ROUNDED)
    summary["cpu_us"] = on_cpu["median_us"]
    for name in ("ratio", "ratio_low", "ratio_high"):
        summary[f"cpu_{name}"] = on_cpu[name]
    rows = summary.rename_axis("name").reset_index().to_dict("records")
    return {"floor_us": summary.loc[floor, "median_us"], "floor_cpu_us": summary.loc[floor, "cpu_us"],
            "strategies": rows}


def run_far(rtts_ms, repeat=None, seed=None, tls=False, names=None, frameworks=False):
    """One run through the relay at each round trip; ``{"runs": [...]}``."""
    return {"runs": [run(repeat, rtt_ms, seed, tls, names, frameworks) for rtt_ms in rtts_ms]}


INSTRUCTION_REQUESTS = 1000


def instructions(names=None, requests=INSTRUCTION_REQUESTS):
    """Instructions per request of each contender (``names``: all by default), counted by
    callgrind, and its ratio to the floor's: ``{"requests": n, "strategies": [{"name",
    "instructions", "ratio"}, ...]}``."""
    if not names:
        everyone = contenders(frameworks=True)
        names = [contender.name for contender in everyone]
        for contender in everyone:
            contender.close()
    names = [FLOOR] + [name for name in names if name != FLOOR]
    # the difference between runs of 2n and n requests: what a run costs once (starting, connecting,
    # the first requests after the warm-up) cancels out
    counts = {name: (_counted(name, 2 * requests) - _counted(name, requests)) / requests for name in names}
    return {"requests": requests, "strategies": [
        {"name": name, "instructions": round(count), "ratio": round(count / counts[FLOOR], 3)}
        for name, count in counts.items()]}


def _counted(name, requests):
    """Instructions callgrind counted in a process that runs ``requests`` requests of ``name``."""
    command = ["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null", sys.executable, __file__,
               "--only", name, "--repeat", str(requests)]
    environment = {**os.environ, "PYTHONHASHSEED": "0"}  # the same dictionaries, the same work, in every run
    done = subprocess.run(command, capture_output=True, text=True, env=environment)
    counted = re.search(r"Collected : (\d+)", done.stderr)
    if done.returncode or not counted:
        raise RuntimeError(f"{name} under callgrind failed ({done.returncode}): {done.stderr[-2000:]}")
    return int(counted.group(1))


def run_only(name, requests, warmup=50):
    """``requests`` requests of one contender, after ``warmup`` (under callgrind, for ``instructions()``)."""
    contender = next(contender for contender in contenders(frameworks=True) if contender.name == name)
    gc.collect()
    gc.freeze()  # what was made before is left out of later collections: one of them would swamp the count
    try:
        for _ in range(warmup + requests):
            with contender.request() as db:
                measuring.select_one(db)
    finally:
        contender.close()


def print_table(result, where, floor=FLOOR):
    print(f"{where}: floor (a kept connection, {floor}) {result['floor_us']} µs per SELECT 1, "
          f"{result['floor_cpu_us']} µs of it on the client's CPU")
    print(f"{'':26}{'wall time':^46}{'client CPU time':^36}")
    print(f"{'':26}{'median µs':>10}{'p99 µs':>10}{'× floor':>10}{'95% interval':>16}"
          f"{'median µs':>10}{'× floor':>10}{'95% interval':>16}")
    for row in result["strategies"]:
        interval = f"{row['ratio_low']:.2f}–{row['ratio_high']:.2f}"
        cpu_interval = f"{row['cpu_ratio_low']:.2f}–{row['cpu_ratio_high']:.2f}"
        print(f"{row['name']:26}{row['median_us']:>10}{row['p99_us']:>10}{row['ratio']:>10.2f}{interval:>16}"
              f"{row['cpu_us']:>10}{row['cpu_ratio']:>10.2f}{cpu_interval:>16}")
    print()


def rtt_list(text):
    try:
        values = [float(part) for part in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"--rtt-ms takes milliseconds separated by commas, such as 0,1,5, not {text!r}")
    if any(value < 0 for value in values):
        raise argparse.ArgumentTypeError("--rtt-ms: a round trip cannot be negative")
    return [int(value) if value.is_integer() else value for value in values]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeat", type=int, help=f"rounds, one request of each contender per round (default "
                                                   f"{NEAR_ROUNDS}, and {FAR_ROUNDS} at a round trip above 0)")
    parser.add_argument("--rtt-ms", type=rtt_list, help="round trips to measure at, through the relay: 0,1,5")
    parser.add_argument("--seed", type=int, help="seed of the shuffled order (default: a new one each run)")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    parser.add_argument("--tls", action="store_true", help="measure the strategies with TLS too, beside plain TCP "
                                                           "(the local server's CA)")
    parser.add_argument("--instructions", nargs="?", const="", metavar="NAMES",
                        help="count instructions per request under valgrind instead, of every contender or of "
                             f"those named (naive,safe_reconnect); --repeat: requests ({INSTRUCTION_REQUESTS})")
    parser.add_argument("--only", help=argparse.SUPPRESS)  # one contender, for --instructions
    args = parser.parse_args(argv)
    if args.only:
        return run_only(args.only, args.repeat or 0)
    if args.instructions is not None and args.tls:
        parser.error("--tls measures wall and CPU time; --instructions counts without TLS")
    if args.tls and not config.LOCAL_SERVER:
        parser.error("--tls trusts the local server's own CA (.mysql/tls/): unset DB_HOST to measure it")
    if args.instructions is not None:
        result = instructions([name for name in args.instructions.split(",") if name],
                              args.repeat or INSTRUCTION_REQUESTS)
        if args.json:
            print(json.dumps(result))
            return
        print(f"instructions per SELECT 1 request, {result['requests']} requests under callgrind, each alone")
        for row in result["strategies"]:
            print(f"{row['name']:26}{row['instructions']:>12}{row['ratio']:>10.3f}")
        return
    if args.rtt_ms is None:
        result = run(args.repeat, seed=args.seed, tls=args.tls, frameworks=True)
        results = [(result, "loopback")]
    else:
        result = run_far(args.rtt_ms, args.repeat, args.seed, args.tls, frameworks=True)
        results = [(run_, f"round trip {run_['rtt_ms']} ms through the relay") for run_ in result["runs"]]
    if args.json:
        print(json.dumps(result))
        return
    for one, where in results:
        print_table(one, where + (", plain TCP" if args.tls else ""))
        if args.tls:
            over_tls = one["tls"]
            print_table(over_tls, f"{where}, with TLS ({over_tls['version']}, {over_tls['cipher']})", f"{FLOOR}_tls")


if __name__ == "__main__":
    main()
