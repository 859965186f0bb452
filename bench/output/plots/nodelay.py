"""The TCP_NODELAY chart: each step's p50 (bar) and p99 (tick) without and with it."""
import pandas as pd

from bench.output.explain import pairs
from bench.output.plots import style


def nodelay(data):
    """p50 bars (p99 ticks) without and with TCP_NODELAY per step, log scale; None if the
    run has no pairs."""
    found = pairs(data.aggregates, "server_nodelay")
    if not found:
        return None
    pal = style.colours(data)
    fig, axes = style.figure(1, ncols=1, width=max(6.0, 1.1 * len(found) + 2), height=4.0)
    ax = axes[0]
    labels = []
    for i, (key, off, on) in enumerate(found):
        for dx, row, alpha in ((-0.2, off, 0.4), (0.2, on, 1.0)):
            hatch = style.STYLE[style.flag(row)][1]
            if not pd.isna(row["p50_us"]):
                ax.bar(i + dx, row["p50_us"] / 1000, 0.38, color=pal.get(row["series"], "0.5"),
                       alpha=alpha, hatch=hatch, edgecolor="black" if hatch else "none")
            if not pd.isna(row["p99_us"]):
                ax.plot([i + dx - 0.17, i + dx + 0.17], [row["p99_us"] / 1000] * 2,
                        color="black", lw=1.4)
        labels.append("\n".join([key[0], " · ".join(dict.fromkeys(str(k) for k in key[1:]
                                                                    if k))]))
    ax.set_xticks(range(len(found)), labels, fontsize=7)
    style.ms_axis(ax)
    ax.set_ylabel("latency (ms): bar p50, tick p99")
    handles = [style.plt.Rectangle((0, 0), 1, 1, color="0.5", alpha=0.4,
                                   label="without TCP_NODELAY"),
               style.plt.Rectangle((0, 0), 1, 1, color="0.5", label="with TCP_NODELAY")]
    return style.finish(fig, data, "TCP_NODELAY on the server: without (pale) and with",
                        handles)
