"""The capacity chart: probe echo latency and server RSS against connections held, one line
per variant (from ``capacity.csv`` alone). ``save(run_dir, out_dir)`` returns
``[(name, title, path)]`` like ``plots.save_all``: nothing when the run has no capacity rows."""
import os

import pandas as pd
from matplotlib.ticker import FuncFormatter

from bench.output.plots import style
from bench.output.plots.style import plt

NAME, TITLE = "capacity", "capacity: probe latency and server RSS against connections"


def read(run_dir):
    """capacity.csv of a run as a frame, or None when the run has no capacity rows."""
    path = os.path.join(run_dir, "capacity.csv")
    if not os.path.isfile(path):
        return None
    frame = pd.read_csv(path)
    return frame if len(frame) else None


def figure(frame):
    """Two panels sharing the x axis (connections, log): probe p50 (solid) and p99 (dashed)
    in ms; server RSS in MB. A repeat's steps are joined in order; the knee is ringed."""
    fig, (lat, mem) = plt.subplots(1, 2, figsize=(11, 4.2), layout="constrained")
    colours = style.palette(frame["variant"])
    for variant, rows in frame.groupby("variant", sort=True):
        colour = colours[variant]
        for repeat, r in rows.groupby("repeat"):
            r = r.sort_values("connections")
            label = variant if repeat == rows["repeat"].min() else None
            x = r["held"].where(r["held"] > 0, r["connections"])
            lat.plot(x, r["probe_p50_us"] / 1000, "-o", color=colour, label=label, ms=4)
            lat.plot(x, r["probe_p99_us"] / 1000, "--", color=colour, alpha=0.7)
            mem.plot(x, r["server_rss_mb"], "-o", color=colour, label=label, ms=4)
            knee = r[r["knee"] == True]  # noqa: E712 - a pandas column of bools
            if len(knee):
                mem.plot(knee["held"], knee["server_rss_mb"], "o", ms=11, mfc="none",
                         color=colour)
    for ax in (lat, mem):
        ax.set_xscale("log")
        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:,.0f}"))
        ax.set_xlabel("connections held")
        ax.grid(True, which="both", alpha=0.3)
    lat.set_yscale("log")
    lat.set_ylabel("probe echo latency, ms (p50 solid, p99 dashed)")
    mem.set_ylabel("server RSS, MB (ring: the capacity knee)")
    fig.legend(loc="outside right upper", fontsize=8, frameon=False,
               handles=lat.get_legend_handles_labels()[0])
    fig.suptitle("capacity: idle clients held, a probe set's echo latency and the server's memory")
    return style.fit(fig)


def save(run_dir, out_dir):
    """Write plots/capacity.png when the run has capacity rows; [(name, title, path)]."""
    frame = read(run_dir)
    if frame is None:
        return []
    os.makedirs(out_dir, exist_ok=True)
    fig = figure(frame)
    path = os.path.join(out_dir, f"{NAME}.png")
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return [(NAME, TITLE, path)]
