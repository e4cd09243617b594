"""The scoreboard's two plots, shared by notebooks/07_scoreboard.ipynb and docs/make_plots.py."""
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


def plot_overhead(result):
    table = pd.DataFrame(result["strategies"]).set_index("name")
    colors = ["tab:gray" if name.startswith("sqlalchemy") else "tab:blue" for name in table.index]
    ax = table["ratio"].plot.barh(figsize=(8, 3.5), color=colors)
    ax.invert_yaxis()
    ax.set_ylabel("")
    ax.axvline(1, color="black", linewidth=0.8)
    ax.set_xlabel(f"median time per request, × a kept connection ({result['floor_us']:.0f} µs here)")
    ax.set_title("Overhead without faults (grey: SQLAlchemy's pool, for reference)")
    ax.figure.tight_layout()
    return ax.figure
