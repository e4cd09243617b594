"""Make the benchmarks' plots for the README: docs/chaos.png, docs/overhead.png and docs/distance.png.

    .venv/bin/python docs/make_plots.py            # a full chaos run (2,000 requests per strategy) and the benchmarks

The same plots as notebooks/07b_distance.ipynb and notebooks/12_scoreboard.ipynb, from the same
code (bench/plots.py).
"""
import argparse
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, no screen

from bench import chaos, overhead, plots  # noqa: E402

HERE = Path(__file__).resolve().parent


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)
    tallies = chaos.run_all(args.requests, args.seed, progress=chaos.show_progress)
    plots.plot_failures(tallies).savefig(HERE / "chaos.png", dpi=110)
    plots.plot_overhead(overhead.run()).savefig(HERE / "overhead.png", dpi=110)
    plots.plot_distance(overhead.run_far([1, 2, 5])).savefig(HERE / "distance.png", dpi=110)
    print(f"wrote {HERE / 'chaos.png'}, {HERE / 'overhead.png'} and {HERE / 'distance.png'}")


if __name__ == "__main__":
    main()
