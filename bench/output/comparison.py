"""compare's documents: compare.md, a self-contained compare.html (regressions first) and compare.png.

``bench.analysis.compare`` reads and matches the two runs and judges each row; this module only
lays the result out, with the report's formatting and template environment.
"""
import base64
import io
import os

import numpy as np

from bench.analysis import compare, reader
from bench.output import junit, templating
from bench.output.formatting import ms, row_flags, short
from bench.output.plots import style
from bench.output.plots.style import plt
from bench.output.results import atomic_write

REGRESSION_COLOUR = "#D55E00"
BASE_COLOUR, NEW_COLOUR = "0.45", "#0072B2"


def run(base_dir, new_dir, threshold=0.10, force=False, junit_path=None):
    """Compare two results folders, write compare.md, .html and .png into NEW (and JUnit XML,
    one case per compared row, when asked); 1 on regression."""
    base, new, rows, only_base, only_new, differences = compare.comparison(
        base_dir, new_dir, threshold, force)
    rows = sorted(rows, key=lambda r: not r["regression"])        # regressions first, stable
    ctx = context(base, new, rows, only_base, only_new, threshold, differences)
    fig = figure(base, new, rows)
    png = io.BytesIO()
    fig.savefig(png, format="png", dpi=110)
    plt.close(fig)
    with open(os.path.join(new_dir, "compare.png"), "wb") as f:
        f.write(png.getvalue())
    atomic_write(os.path.join(new_dir, "compare.md"), templating.render("compare.md.j2", ctx))
    ctx["chart_uri"] = "data:image/png;base64," + base64.b64encode(png.getvalue()).decode()
    atomic_write(os.path.join(new_dir, "compare.html"), templating.render("compare.html.j2", ctx))
    if junit_path:
        junit.write(junit_path, "socketio-bench compare",
                    [junit.Case(_name(r["key"]), "compare", r["verdict"] if r["regression"]
                                else "") for r in rows])
    return 1 if any(r["regression"] for r in rows) else 0


def _side(value, interval):
    lo, hi, _ = interval
    return ms(value) + (f" [{ms(lo)}–{ms(hi)}]" if np.isfinite(lo) and np.isfinite(hi)
                        else " [n/a]")


def _name(key):
    return " · ".join(str(k) for k in key if k)


def _flags(row):
    marks = row_flags(row) + ([f"censored {row['censored']}"] if row["censored"] else [])
    return ", ".join(marks)


def context(base, new, rows, only_base, only_new, threshold, differences):
    """Everything compare.md and compare.html show, as plain values."""
    key = reader.key_columns(base.aggregates, new.aggregates)
    methods = sorted({iv[2] for r in rows for pair in r["intervals"].values() for iv in pair})
    table = []
    for r in rows:
        b, n = r["base"], r["new"]
        cells = []
        for metric in compare.METRICS:
            if metric in r["intervals"]:
                ib, inew = r["intervals"][metric]
                ratio = r["ratio"][metric]
                cells += [_side(b[f"{metric}_us"], ib), _side(n[f"{metric}_us"], inew),
                          "–" if not np.isfinite(ratio) else f"{ratio:.3f}"]
            else:
                cells += [ms(b[f"{metric}_us"]), ms(n[f"{metric}_us"]), "–"]
        flags = ", ".join(x for x in (f"BASE {_flags(b)}" if _flags(b) else "",
                                      f"NEW {_flags(n)}" if _flags(n) else "") if x)
        table.append(dict(cells=[*r["key"], *cells, r["verdict"], flags],
                          regression=r["regression"]))
    return dict(
        title=f"Comparison — {new.name} against {base.name}",
        runs=[[side, d.name, d.meta.get("started_utc", "?"), d.meta.get("git_commit", "?"),
               d.footer().split(" · ")[0]] for side, d in (("BASE", base), ("NEW", new))],
        differences=differences, threshold=f"{1 + threshold:g}", methods=methods,
        regressions=[f"{_name(r['key'])} ({r['verdict']})" for r in rows
                     if r["regression"]],
        headers=[k.replace("_", " ") for k in key] + [
            "BASE p50 ms [95 %]", "NEW p50 ms [95 %]", "p50 ratio", "BASE p99 ms [95 %]",
            "NEW p99 ms [95 %]", "p99 ratio", "verdict", "flags"],
        rows=[t["cells"] for t in table], marked=table,
        notes=list(dict.fromkeys(f"{_name(r['key'])} NEW: {short(r['new']['note'])}"
                                 for r in rows if r["new"]["note"])),
        only_base=[_name(k) for k in only_base], only_new=[_name(k) for k in only_new],
        chart_uri="")


def figure(base, new, rows):
    """Per compared row and metric: BASE and NEW intervals (bars) and merged values (points)."""
    fig, axes = plt.subplots(1, 2, figsize=(12, 2.0 + 0.5 * max(len(rows), 1)), sharey=True,
                             layout="constrained", squeeze=False)
    labels = [_name(r["key"]) + ("  REGRESSION" if r["regression"] else "") for r in rows]
    for ax, metric in zip(axes[0], compare.METRICS):
        for i, r in enumerate(rows):
            if metric not in r["intervals"]:
                ax.text(0.5, i, r["verdict"], transform=ax.get_yaxis_transform(), ha="center",
                        va="center", fontsize=8,
                        color=REGRESSION_COLOUR if r["regression"] else "0.3")
                continue
            for (side, row, interval), dy, c in zip(
                    (("BASE", r["base"], r["intervals"][metric][0]),
                     ("NEW", r["new"], r["intervals"][metric][1])), (-0.15, 0.15),
                    (BASE_COLOUR, REGRESSION_COLOUR if r["regression"] else NEW_COLOUR)):
                value = row[f"{metric}_us"] / 1000
                lo, hi = interval[0] / 1000, interval[1] / 1000
                if np.isfinite(lo) and np.isfinite(hi):
                    ax.plot([lo, hi], [i + dy] * 2, color=c, lw=3, alpha=0.6, solid_capstyle="butt")
                if np.isfinite(value):
                    ax.plot(value, i + dy, "o" if side == "BASE" else "s", color=c, ms=5,
                            label=side if i == 0 else None)
        ax.set_yticks(range(len(rows)), labels, fontsize=8)
        ax.set_ylim(len(rows) - 0.4, -0.6)
        style.ms_axis(ax, "x")
        ax.set_title(metric, fontsize=10)
        ax.grid(True, axis="x", which="both", alpha=0.3)
    for tick, r in zip(axes[0][0].get_yticklabels(), rows):
        if r["regression"]:
            tick.set_color(REGRESSION_COLOUR)
            tick.set_fontweight("bold")
    fig.suptitle(f"NEW {new.name} vs BASE {base.name}", fontsize=10)
    fig.supxlabel("○ BASE, □ NEW: merged value; bars: 95 % interval of the median per-repeat "
                  f"value\nBASE: {base.footer()}\nNEW: {new.footer()}", fontsize=7, color="0.35")
    return style.fit(fig)
