"""Blocking chart: echo latency under each mix of blocking handlers, side by side."""
import pandas as pd

from bench.output.plots import style
from bench.output.plots.latency import bar
from bench.output.plots.rows import has_data, scenario_rows

MIXES = ("echo-only", "sleep-blockers", "cpu-blockers")


def blocking(data, scenario="blocking"):
    """p50 bars with p99 ticks per variant, one panel per mix, one latency scale for all."""
    rows = scenario_rows(data, scenario)
    rows = rows[rows["mix"] != ""]
    if rows.empty:
        return None
    pal = style.colours(data)
    mixes = list(dict.fromkeys(m for m in (*MIXES, *rows["mix"]) if m in set(rows["mix"])))
    fig, axes = style.figure(len(mixes), ncols=len(mixes),
                             width=max(4, 0.9 * rows["series"].nunique()), height=4.2)
    series = sorted(rows["series"].unique())
    for ax, mix in zip(axes, mixes):
        group = rows[rows["mix"] == mix]
        for si, name in enumerate(series):
            sel = group[group["series"] == name]
            if sel.empty:
                continue
            r = sel.iloc[0]
            if has_data(r) and pd.notna(r["p50_us"]):
                bar(ax, si, r["p50_us"] / 1000, r, 0.7, pal[name])
                if pd.notna(r["p99_us"]):
                    ax.plot(si, r["p99_us"] / 1000, "_", color="black", ms=14, mew=2)
            else:
                ax.text(si, 0, "no data" if not has_data(r) else "too few samples",
                        rotation=90, fontsize=7, color="#b00", ha="center")
        ax.set_xticks(range(len(series)), series, rotation=45, ha="right", fontsize=8)
        style.ms_axis(ax)
        ax.set_title(mix, fontsize=10)
        ax.grid(True, axis="y", alpha=0.3)
    axes[0].set_ylabel("echo latency (ms): bar p50, — p99")
    # One scale for every mix, spanning every value drawn (sharing after plotting kept only
    # the first panel's range and clipped the blocked bars).
    drawn = rows[rows.apply(has_data, axis=1)]
    values = pd.concat([drawn["p50_us"], drawn["p99_us"]]).dropna()
    if len(values):
        low, high = values.min() / 1000 * 0.8, values.max() / 1000 * 1.3
        for ax in axes:
            ax.set_ylim(low, high)
            for text in ax.texts:
                text.set_y(low * 1.05)
    return style.finish(fig, data, "blocking: does one slow handler delay everyone?")
