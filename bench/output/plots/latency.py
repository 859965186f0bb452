"""Latency distributions per scenario: percentile spectrum, CDF, and p50/p99 bars per load point."""
import numpy as np
import pandas as pd

from bench.analysis import compare, stats
from bench.output.plots import style
from bench.output.plots.rows import has_data, load_order, panels, scenario_rows

PERCENTILE_TICKS = {2: "50 %", 10: "90 %", 100: "99 %", 1000: "99.9 %", 10_000: "99.99 %"}
SPECTRUM_POINTS = 120


def spectrum_points(encoded):
    """(x = 1/(1−p), latency µs) of a histogram's percentile spectrum, only as far into the
    tail as the min-count rule allows (≥ MIN_TAIL samples at or beyond each point)."""
    h = stats.decode(encoded)
    n = h.get_total_count()
    top = n / stats.MIN_TAIL
    if top < 1:
        return np.array([]), np.array([])
    x = np.unique(np.r_[np.geomspace(1, top, SPECTRUM_POINTS), top])
    x = x[[stats.enough_for(n, 100 * (1 - 1 / v)) for v in x]]
    return x, np.array([stats.value_at(h, 100 * (1 - 1 / v)) for v in x])


def _per_panel(data, scenario, title, draw, frame):
    """One panel per load point; ``draw(ax, row, **line_style)`` for every row with data,
    ``frame(ax)`` for the axes; rows without data listed in the legend."""
    pal = style.colours(data)
    groups = panels(scenario_rows(data, scenario))
    fig, axes = style.figure(len(groups))
    for ax, (panel, group) in zip(axes, groups):
        for _, r in group.iterrows():
            if has_data(r):
                draw(ax, r, color=pal[r["series"]], ls=style.STYLE[style.flag(r)][0], lw=1.6,
                     label=style.label(r))
        frame(ax)
        ax.set_title(panel, fontsize=10)
        style.legend(ax, group, pal, has_data)
    return style.finish(fig, data, f"{scenario}: {title}")


def spectrum(data, scenario):
    """Latency against percentile on a 1/(1−p) axis: the tail made visible."""
    def draw(ax, r, **line):
        x, y = spectrum_points(r["hdr"])
        ax.plot(x, y / 1000, **line)

    def frame(ax):
        ax.set_xscale("log")
        ax.set_xticks(list(PERCENTILE_TICKS), list(PERCENTILE_TICKS.values()))
        ax.set_xlim(1, 2 * 10 ** 4)
        ax.set_xlabel("percentile (1/(1−p) scale;\ndrawn while ≥ 10 samples lie beyond)")
        style.ms_axis(ax)
        ax.grid(True, which="major", alpha=0.3)

    return _per_panel(data, scenario, "latency percentile spectrum", draw, frame)


def cdf(data, scenario):
    """Cumulative distribution of latency: where the bulk sits and how long the tail is."""
    def draw(ax, r, **line):
        values, counts = stats.counts_of(stats.decode(r["hdr"]))
        ax.step(values / 1000, 100 * np.cumsum(counts) / counts.sum(), where="post", **line)

    def frame(ax):
        style.ms_axis(ax, "x")
        ax.set_ylabel("messages at or below (%)")
        ax.set_ylim(0, 101)
        ax.grid(True, alpha=0.3)

    return _per_panel(data, scenario, "latency CDF", draw, frame)


def bar(ax, x, height, row, width, colour, alpha=1.0, err=None):
    """One bar, hatched the way its row is flagged (driver-bound, invalid)."""
    hatch = style.STYLE[style.flag(row)][1]
    ax.bar(x, height, width, color=colour, alpha=alpha, hatch=hatch,
           edgecolor="black" if hatch else colour, linewidth=0.6,
           yerr=err, error_kw=dict(lw=0.9, capsize=2, ecolor="black"))


def whisker(row, metric):
    """Error bar (ms) of a row's interval around its value (over repeats, or one repeat's
    per-step interval); None when it has none."""
    lo, hi, _ = compare.interval_of(row, metric)
    mid = row[f"{metric}_us"]
    if any(pd.isna(v) for v in (lo, hi, mid)):
        return None
    return [[max(mid - lo, 0) / 1000], [max(hi - mid, 0) / 1000]]


def grouped_bars(ax, rows, group_col, metric, pal):
    """Bars of ``metric`` per series within each ``group_col`` value. A row with no data, or
    an empty percentile cell (too few samples), gets a note instead of a bar."""
    order = load_order(rows) if group_col == "load_point" else list(dict.fromkeys(rows[group_col]))
    series = sorted(rows["series"].unique())
    width = 0.8 / max(len(series), 1)
    heights = []
    for gi, value in enumerate(order):
        group = rows[rows[group_col] == value]
        for si, name in enumerate(series):
            sel = group[group["series"] == name]
            if sel.empty:
                continue
            r = sel.iloc[0]
            x = gi + (si - (len(series) - 1) / 2) * width
            v = r[f"{metric}_us"]
            if has_data(r) and pd.notna(v):
                h = v / 1000
                heights.append(h)
                bar(ax, x, h, r, width, pal[name], err=whisker(r, metric))
                ax.text(x, h, ("≥" if style.censored(r, metric) else "") + f"{h:.3g}",
                        ha="center", va="bottom", fontsize=6.5,
                        rotation=90 if len(series) * len(order) > 10 else 0)
            else:
                why = "no data" if not has_data(r) else "too few samples"
                ax.text(x, 0.02, why, rotation=90, ha="center", va="bottom", fontsize=7,
                        color="#b00", transform=ax.get_xaxis_transform())
    if heights and max(heights) > 20 * min(heights):
        style.log_axis(ax)
    ax.set_xlim(-0.5, len(order) - 0.5)
    ax.set_xticks(range(len(order)), [str(v) for v in order], fontsize=8)
    ax.set_ylabel(f"{metric} latency (ms)")
    ax.grid(True, axis="y", alpha=0.3)


def bars(data, scenario):
    """p50 and p99 per series (95 % interval whiskers: over repeats, or one repeat's per-step
    interval), per load point."""
    pal = style.colours(data)
    rows = scenario_rows(data, scenario)
    group_col = "mix" if (rows["mix"] != "").any() else "load_point"
    n_bars = rows["series"].nunique() * max(rows[group_col].nunique(), 1)
    fig, axes = style.figure(2, ncols=1, width=min(16, max(7, 0.4 * n_bars + 2)), height=3.4)
    for ax, metric in zip(axes, ("p50", "p99")):
        grouped_bars(ax, rows, group_col, metric, pal)
        ax.set_title(metric, fontsize=10)
    axes[-1].set_xlabel(group_col.replace("_", " "))
    return style.finish(fig, data, f"{scenario}: p50 and p99 per variant",
                        style.series_handles(rows, pal))
