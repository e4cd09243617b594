"""The course's plots of its benchmarks, shared by the notebooks and docs/make_plots.py."""
import matplotlib.pyplot as plt
from matplotlib.colors import LogNorm
import pandas as pd

from bench import chaos


def failures_by_fault(tallies):
    """Failed requests per strategy (rows) and kind of the fault before them (columns)."""
    table = pd.DataFrame([t.failed_by_fault for t in tallies], index=[t.name for t in tallies])
    return table.reindex(columns=chaos.FAULTS).fillna(0).astype(int)


def plot_failures(tallies):
    """A grid: failed requests per strategy and fault kind, and on the right what became of the writes."""
    table = failures_by_fault(tallies)
    fig, ax = plt.subplots(figsize=(11, 4.2))
    norm = LogNorm(vmin=0.5, vmax=max(table.max().max(), 10))
    ax.imshow(table.clip(lower=0.5), cmap="Reds", norm=norm, aspect="auto")
    ax.set_xticks(range(len(table.columns)), [c.replace("_", " ") for c in table.columns], rotation=30, ha="left")
    ax.set_yticks(range(len(table.index)), table.index)
    ax.xaxis.tick_top()
    for row, name in enumerate(table.index):
        for col, fault in enumerate(table.columns):
            n = table.loc[name, fault]
            ax.text(col, row, n if n else "·", ha="center", va="center", color="white" if n and norm(n) > 0.6 else "black")
    for row, tally in enumerate(tallies):
        writes = [f"{tally.duplicates} written twice"] if tally.duplicates else []
        writes += [f"{tally.lost} lost"] if tally.lost else []
        writes += [f"{tally.torn} torn"] if tally.torn else []
        writes += [f"{tally.unknown} reported unknown"] if tally.unknown else []
        ax.text(len(table.columns) - 0.3, row, ", ".join(writes) or "no write lost or doubled", va="center",
                color="darkred" if tally.duplicates or tally.lost or tally.torn else "black")
    ax.set_title(f"Failed requests after each kind of fault ({tallies[0].requests} requests, "
                 f"{tallies[0].faults} faults per strategy), and the writes", pad=28)
    fig.subplots_adjust(left=0.12, right=0.66, top=0.7, bottom=0.04)
    return fig


REFERENCE = ("peewee_pool", "sqlalchemy")  # rows measured for reference, not strategies of the course


def is_reference(name):
    return name.startswith(REFERENCE)


def plot_overhead(result):
    """Each contender's ratio to the floor, as a bar with its 95% interval."""
    table = pd.DataFrame(result["strategies"]).set_index("name")
    colors = ["tab:gray" if is_reference(name) else "tab:blue" for name in table.index]
    errors = [table["ratio"] - table["ratio_low"], table["ratio_high"] - table["ratio"]]
    ax = table["ratio"].plot.barh(figsize=(8, 3.8), color=colors, xerr=errors, capsize=2)
    ax.invert_yaxis()
    ax.set_ylabel("")
    ax.axvline(1, color="black", linewidth=0.8)
    ax.set_xlabel(f"median time per request, × a kept connection ({result['floor_us']:.0f} µs here), with 95% intervals")
    ax.set_title("Overhead without faults, on loopback (grey: pools, for reference)")
    ax.figure.tight_layout()
    return ax.figure


def round_trips(far, floor="naive"):
    """Round trips per request of each contender, from runs at two distances or more: how much
    longer its request takes between the two farthest, against the floor's, which makes exactly
    one (so the relay's own timing, a little over what it was asked for, cancels out)."""
    near, farthest = sorted(far["runs"], key=lambda run: run["rtt_ms"])[-2:]
    medians = [{row["name"]: row["median_us"] for row in run["strategies"]} for run in (near, farthest)]
    longer = {name: medians[1][name] - medians[0][name] for name in medians[0]}
    return pd.Series({name: extra / longer[floor] for name, extra in longer.items()}, name="round_trips")


def plot_distance(far):
    """Milliseconds per request of each contender at each round trip to the server."""
    table = pd.DataFrame({run["rtt_ms"]: {row["name"]: row["median_us"] / 1000 for row in run["strategies"]}
                          for run in far["runs"]})
    fig, ax = plt.subplots(figsize=(8, 4.2))
    for name, row in table.iterrows():
        style = dict(linestyle="--", alpha=0.7) if is_reference(name) else {}
        ax.plot(table.columns, row.values, marker="o", label=name, **style)
    ax.legend(loc="center left", bbox_to_anchor=(1.01, 0.5), fontsize=8, frameon=False)
    ax.set_xticks(list(table.columns))
    ax.set_xlabel("round trip to the server, ms (through the relay)")
    ax.set_ylabel("median ms per request")
    ax.set_title("What a request costs far from the server (dashed: pools, for reference)")
    ax.margins(x=0.02)
    fig.subplots_adjust(left=0.1, right=0.72, bottom=0.13)
    return fig
