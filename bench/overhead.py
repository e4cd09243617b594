"""What each strategy costs per request when nothing goes wrong, as a ratio to a kept connection.

    python bench/overhead.py                 # a table
    python bench/overhead.py --json          # one JSON object

Every strategy runs the same request (``SELECT 1``) in turns, request by request, in one run;
the floor is a connection kept open (the naive strategy, which costs nothing extra until it
breaks). SQLAlchemy's pooled engine, with and without ``pool_pre_ping``, is measured beside
them as what many apps use instead: reference rows, not strategies this course teaches.
Figures vary with the machine: read the ratios, not the microseconds.
"""
import argparse
import json
from contextlib import contextmanager

import sqlalchemy

import config
import measuring
import strategies as S

FLOOR = "naive"


class SQLAlchemyEngine:
    """A pooled SQLAlchemy engine, shaped like a strategy so that ``measuring.measure`` can run it."""

    def __init__(self, name, **engine_options):
        self.name = name
        self.engine = sqlalchemy.create_engine(config.sql_url(), **engine_options)

    @contextmanager
    def request(self):
        with self.engine.connect() as connection:  # a checkout from the pool, returned after
            yield Statements(connection)

    def close(self):
        self.engine.dispose()


class Statements:
    """``execute_sql`` on a SQLAlchemy connection, as peewee has it."""

    def __init__(self, connection):
        self.connection = connection

    def execute_sql(self, sql, params=None):
        return self.connection.exec_driver_sql(sql, params or ())


def run(repeat=2000):
    """Median and p99 microseconds of each strategy, and each median's ratio to the floor's."""
    contenders = [cls() for cls in S.STRATEGIES.values()] + [
        SQLAlchemyEngine("sqlalchemy_pool"),
        SQLAlchemyEngine("sqlalchemy_pre_ping", pool_pre_ping=True),
    ]
    try:
        measuring.measure(contenders, repeat=50)  # warm up: first connects, the server's caches
        samples = measuring.measure(contenders, repeat=repeat)
    finally:
        for contender in contenders:
            contender.close()
    summary = measuring.summarize(samples, floor=FLOOR).round({"median_us": 1, "p99_us": 1, "ratio": 2})
    rows = summary.rename_axis("name").reset_index().to_dict("records")
    return {"floor_us": summary.loc[FLOOR, "median_us"], "strategies": rows}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeat", type=int, default=2000, help="requests per strategy (default 2000)")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    args = parser.parse_args(argv)
    result = run(args.repeat)
    if args.json:
        print(json.dumps(result))
        return
    print(f"{'strategy':22}{'median µs':>12}{'p99 µs':>12}{'× floor':>10}")
    for row in result["strategies"]:
        print(f"{row['name']:22}{row['median_us']:>12}{row['p99_us']:>12}{row['ratio']:>10}")
    print(f"\nfloor: a kept connection ({FLOOR}), {result['floor_us']} µs per SELECT 1; {args.repeat} requests each")


if __name__ == "__main__":
    main()
