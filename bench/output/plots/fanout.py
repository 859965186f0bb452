"""Fan-out chart: first, median and last recipient of a broadcast per variant."""
import pandas as pd
from matplotlib.patches import Patch

from bench.output.plots import style
from bench.output.plots.latency import bar
from bench.output.plots.rows import has_data, load_order, scenario_rows

RECIPIENTS = ("first", "median", "last")


def fanout(data, scenario="fanout"):
    """Bars p50 (light → dark: first, median, last recipient), black ticks p99."""
    rows = scenario_rows(data, scenario, fanout_all=False)
    rows = rows[rows["recipient"].isin(RECIPIENTS)]
    if rows.empty:
        return None
    pal = style.colours(data)
    load_points = load_order(rows)
    fig, axes = style.figure(len(load_points), ncols=1,
                             width=max(7, 1.4 * rows["series"].nunique()))
    shades = dict(zip(RECIPIENTS, (0.35, 0.65, 1.0)))
    for ax, lp in zip(axes, load_points):
        group = rows[rows["load_point"] == lp]
        series = sorted(group["series"].unique())
        for si, name in enumerate(series):
            for ri, recipient in enumerate(RECIPIENTS):
                sel = group[(group["series"] == name) & (group["recipient"] == recipient)]
                if sel.empty:
                    continue
                r, x = sel.iloc[0], si + (ri - 1) * 0.27
                if not has_data(r) or pd.isna(r["p50_us"]):
                    ax.text(x, 0, "no data" if not has_data(r) else "too few samples",
                            rotation=90, fontsize=7, color="#b00", ha="center")
                    continue
                bar(ax, x, r["p50_us"] / 1000, r, 0.25, pal[name], alpha=shades[recipient])
                if pd.notna(r["p99_us"]):
                    ax.plot(x, r["p99_us"] / 1000, "_", color="black", ms=12, mew=2)
        ax.set_xticks(range(len(series)), series, fontsize=8)
        ax.set_ylabel("latency (ms)")
        ax.set_title(f"{lp} — bars p50 (light→dark: first, median, last), — p99", fontsize=9)
        ax.grid(True, axis="y", alpha=0.3)
    handles = [Patch(facecolor="0.3", alpha=a, label=f"{k} recipient") for k, a in shades.items()]
    return style.finish(fig, data, "fanout: broadcast latency by recipient", handles)
