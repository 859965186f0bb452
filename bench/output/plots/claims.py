"""A claim's chart: for every comparison it rests on, both deployments' p50 and p99 with their
95 % intervals side by side, so the verdict can be checked by eye."""
import numpy as np
import pandas as pd

from bench.analysis import compare
from bench.output import verdicts
from bench.output.formatting import where
from bench.output.plots import style
from bench.output.plots.rows import has_data, scenario_rows


def comparisons(data, pairs):
    """[(a row, b row)] of every load point where both variants of a pair were measured and
    at least one served."""
    agg = pd.concat([scenario_rows(data, s) for s in data.scenarios()]) \
        if len(data.aggregates) else data.aggregates
    return [(a, b) for a_name, b_name in pairs for a, b in verdicts.measured_pairs(agg, a_name, b_name)
            if has_data(a) or has_data(b)]


def claim(data, spec):
    """p50 and p99 of each compared pair (a: the side the claim calls worse); None when the
    run measured none of the claim's pairs."""
    found = comparisons(data, spec["pairs"])
    if not found:
        return None
    pal = style.colours(data)
    fig, axes = style.figure(2, ncols=2, width=6.2, height=0.55 * len(found) + 1.2)
    labels = [f"{where(a)}\n{a['series']}{style.checks(a)} vs {b['series']}{style.checks(b)}"
              for a, b in found]
    for ax, metric in zip(axes, verdicts.METRICS):
        for i, (a, b) in enumerate(found):
            for row, dy, marker in ((a, -0.14, "o"), (b, 0.14, "s")):
                value = row[f"{metric}_us"]
                colour = pal.get(row["series"], "0.4")
                if not has_data(row) or pd.isna(value):
                    ax.text(0.01, i + dy, f"{row['series']}: no data", fontsize=7, va="center",
                            color="#b00", transform=ax.get_yaxis_transform())
                    continue
                lo, hi, _ = compare.interval_of(row, metric)
                if np.isfinite(lo) and np.isfinite(hi):
                    ax.plot([lo / 1000, hi / 1000], [i + dy] * 2, color=colour, lw=3, alpha=0.6,
                            solid_capstyle="butt")
                ax.plot(value / 1000, i + dy, marker, color=colour, ms=6,
                        mfc=colour if style.flag(row) == "ok" else "none")
        ax.set_yticks(range(len(found)), labels if metric == "p50" else [""] * len(found),
                      fontsize=7)
        ax.set_ylim(len(found) - 0.5, -0.5)
        style.ms_axis(ax, "x")
        ax.set_title(f"{metric}: ○ a (said worse), □ b; bar = 95 % interval", fontsize=9)
        ax.grid(True, axis="x", which="both", alpha=0.3)
    return style.finish(fig, data, spec["title"])
