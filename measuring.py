"""Running requests and measuring them: one attempt, a table of rows, and timings side by side."""
import statistics
import time

from peewee import InterfaceError, OperationalError


def attempt(strategy, work):
    """Run ``work(db)`` as one request; return ``("ok", result)`` or ``("error", "ClassName(code, msg)")``."""
    try:
        with strategy.request() as db:
            return "ok", work(db)
    except (OperationalError, InterfaceError) as error:
        return "error", f"{type(error).__name__}{error.args!r}"


def select_one(db):
    """The smallest request: one round trip to the server."""
    return db.execute_sql("SELECT 1").fetchone()[0]


def table(db, sql, params=None):
    """The rows of a query as a pandas DataFrame, with the query's column names."""
    import pandas

    cursor = db.execute_sql(sql, params)
    return pandas.DataFrame(cursor.fetchall(), columns=[column[0] for column in cursor.description])


def measure(strategies, work=select_one, repeat=500):
    """Microseconds per request of each strategy on the same ``work``, without faults.

    The strategies take turns, request by request, so that all of them meet the same machine;
    compare them as ratios, not as absolute times.
    """
    samples = {strategy.name: [] for strategy in strategies}
    for _ in range(repeat):
        for strategy in strategies:
            start = time.perf_counter()
            with strategy.request() as db:
                work(db)
            samples[strategy.name].append((time.perf_counter() - start) * 1e6)
    return samples


def summarize(samples, floor="naive"):
    """From ``measure()``'s samples: each strategy's median and p99 in µs, and its median as a
    ratio to the ``floor`` strategy's, as a pandas DataFrame indexed by name."""
    import pandas

    rows = {name: {"median_us": statistics.median(values), "p99_us": statistics.quantiles(values, n=100)[98]}
            for name, values in samples.items()}
    summary = pandas.DataFrame.from_dict(rows, orient="index")
    summary["ratio"] = summary["median_us"] / summary.loc[floor, "median_us"]
    return summary
