"""Running requests and measuring them: one attempt, a table of rows, and timings side by side."""
import random
import statistics
import time
from dataclasses import dataclass

from peewee import InterfaceError, OperationalError

from errors import error_code


@dataclass(frozen=True)
class Outcome:
    """How one request ended: its ``value``, or the ``error`` it failed with."""
    value: object = None
    error: Exception = None

    @property
    def ok(self):
        return self.error is None

    @property
    def kind(self):
        """``"ok"``, or the error's class name (``"OutcomeUnknown"``)."""
        return "ok" if self.ok else type(self.error).__name__

    @property
    def code(self):
        """``"ok"``, or the error's MySQL number (2013)."""
        return "ok" if self.ok else error_code(self.error)

    def __repr__(self):
        return f"ok: {self.value!r}" if self.ok else f"{self.kind}{self.error.args!r}"


def attempt(strategy, work):
    """Run ``work(db)`` as one request; its ``Outcome``. A database error is caught, any other raised."""
    try:
        with strategy.request() as db:
            return Outcome(work(db))
    except (OperationalError, InterfaceError) as error:
        return Outcome(error=error)


def select_one(db):
    """The smallest request: one round trip to the server."""
    return db.execute_sql("SELECT 1").fetchone()[0]


def table(db, sql, params=None):
    """The rows of a query as a pandas DataFrame, with the query's column names."""
    import pandas

    cursor = db.execute_sql(sql, params)
    return pandas.DataFrame(cursor.fetchall(), columns=[column[0] for column in cursor.description])


def measure(strategies, work=select_one, repeat=500, warmup=20, seed=None):
    """Microseconds per request of each strategy on the same ``work``, without faults.

    Each round runs one request of every strategy, in a new random order, so that all of them
    meet the same machine and none always follows the same neighbour (a fixed order hands each
    one its predecessor's leftovers: a warm cache, a sleeping core). The first ``warmup`` rounds
    (first connects, the server's caches) are not kept. Compare the strategies as ratios.
    """
    rng, order = random.Random(seed), list(strategies)
    samples = {strategy.name: [] for strategy in strategies}
    for round_number in range(warmup + repeat):
        rng.shuffle(order)
        for strategy in order:
            start = time.perf_counter()
            with strategy.request() as db:
                work(db)
            if round_number >= warmup:
                samples[strategy.name].append((time.perf_counter() - start) * 1e6)
    return samples


def summarize(samples, floor="naive", confidence=0.95, resamples=1000, seed=0):
    """From ``measure()``'s samples: each strategy's median and p99 in µs, and its ratio to the
    ``floor`` strategy with a ``confidence`` interval (``ratio_low``, ``ratio_high``), as a pandas
    DataFrame indexed by name.

    The ratio is taken round by round (each request against the floor's request of the same
    round, which met the same machine), and the median of those is reported: a machine that slows
    down for a while slows both alike. The interval is a bootstrap: the rounds are drawn again
    with replacement, and the median ratio taken each time.
    """
    import numpy
    import pandas

    names = list(samples)
    times = numpy.array([samples[name] for name in names])  # one row per strategy, one column per round
    per_round = times / times[names.index(floor)]
    rng, rounds = numpy.random.default_rng(seed), times.shape[1]
    drawn = numpy.array([numpy.median(per_round[:, rng.integers(0, rounds, rounds)], axis=1)
                         for _ in range(resamples)])
    tail = (1 - confidence) / 2 * 100
    return pandas.DataFrame({
        "median_us": numpy.median(times, axis=1),
        "p99_us": [statistics.quantiles(samples[name], n=100)[98] for name in names],
        "ratio": numpy.median(per_round, axis=1),
        "ratio_low": numpy.percentile(drawn, tail, axis=0),
        "ratio_high": numpy.percentile(drawn, 100 - tail, axis=0),
    }, index=pandas.Index(names))
