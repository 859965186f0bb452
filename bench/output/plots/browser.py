"""The browser chart: where a browser round trip's time goes, per variant, beside INP.

For each browser row (a variant at a load point), five bars from the same page: the WebSocket
frames as DevTools saw them (server + network), the ack callback (+ the client library), the
reply painted (+ rendering), a click to its reply painted, and INP. Intervals are not drawn
here: the claim's lines give them; a row that is not a clean measurement is hatched.
"""
import numpy as np

from bench.output.formatting import where
from bench.output.plots import style

VIEWS = (("devtools_p50_us", "WebSocket frames (DevTools) p50"),
         ("p50_us", "ack callback p50"),
         ("paint_p50_us", "reply painted p50"),
         ("interaction_to_reply_p50_us", "click → reply painted p50"),
         ("inp_us", "INP"))


def browser_views(data, title):
    """Grouped horizontal bars of :data:`VIEWS` per browser row; None without browser rows."""
    agg = data.aggregates
    if "client" not in agg or "inp_us" not in agg:
        return None
    rows = agg[(agg["client"] == "browser") & agg["inp_us"].notna()]
    if not len(rows):
        return None
    fig, (ax,) = style.figure(1, ncols=1, width=7.5, height=0.9 * len(rows) + 1.4)
    height = 0.8 / len(VIEWS)
    shades = ("#4c72b0", "#55a868", "#c44e52", "#8172b2", "#ccb974")
    labels = []
    for i, (_, row) in enumerate(rows.iterrows()):
        labels.append(f"{row['series']}{style.checks(row)}\n{where(row)}")
        clean = style.flag(row) == "ok"
        for j, (column, name) in enumerate(VIEWS):
            value = row.get(column)
            if value is None or not np.isfinite(value):
                continue
            ax.barh(i + (j - len(VIEWS) / 2 + 0.5) * height, value / 1000, height,
                    color=shades[j], label=name if i == 0 else None,
                    hatch=None if clean else "//", edgecolor="white")
    ax.set_yticks(range(len(rows)), labels, fontsize=7)
    ax.set_ylim(len(rows) - 0.5, -0.5)
    style.ms_axis(ax, "x", log=False)  # INP may be 0
    ax.grid(True, axis="x", which="both", alpha=0.3)
    ax.legend(fontsize=7, loc="lower right")
    return style.finish(fig, data, title)
