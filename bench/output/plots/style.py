"""How every chart looks: colours by order, how flagged rows are drawn, axes, figure frame."""
import math
import textwrap

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402

# tab10 then tab20's light shades: distinct, colour-blind-aware, stable by position.
PALETTE = [*plt.get_cmap("tab10").colors, *plt.get_cmap("tab20").colors[1::2]]
STYLE = {"ok": ("-", None), "driver-bound": ("--", "//"), "invalid": (":", "xx")}
MARKING = ("dashed / hatched // = driver-bound · dotted / hatched xx = invalid (see report "
           "notes) · “≥” = censored at the deadline · a missing point or bar = too few samples")


def palette(names):
    """{name: colour}: the sorted names take the palette's colours in order."""
    return {n: PALETTE[i % len(PALETTE)] for i, n in enumerate(sorted(set(names)))}


def colours(data):
    """The run's series colours (one per variant, or variant · client · transport)."""
    return palette(data.summary["series"]) if len(data.summary) else {}


def flag(row):
    """'ok', 'driver-bound' or 'invalid': how a row is drawn."""
    if row["driver_bound"]:
        return "driver-bound"
    return "ok" if row["valid"] else "invalid"


def censored(row, metric):
    """Whether a row's ``metric`` (p50, p99, …) is written as the deadline."""
    return metric in str(row.get("censored", "")).split(",")


def label(row):
    f = flag(row)
    return (row["series"] + ("" if f == "ok" else f" [{f}]")
            + (" [unstable]" if row.get("unstable") else "")
            + (" [noisy]" if row.get("noisy") else "")
            + (f" [censored {row['censored']}]" if row.get("censored") else ""))


def short(text, limit=240):
    """``text`` cut at a word boundary to ``limit`` characters."""
    text = str(text or "")
    return text if len(text) <= limit else text[:limit].rsplit(" ", 1)[0] + " …"


class PlainLogFormatter(matplotlib.ticker.LogFormatter):
    """Log-axis labels as plain numbers (0.5, 2, 300), on the ticks LogFormatter would label."""

    def __call__(self, x, pos=None):
        return f"{x:g}" if super().__call__(x, pos) else ""


def log_axis(ax, axis="y"):
    getattr(ax, f"set_{axis}scale")("log")
    fmt = PlainLogFormatter(labelOnlyBase=False, minor_thresholds=(1.5, 0.6))
    getattr(ax, f"{axis}axis").set_major_formatter(fmt)
    getattr(ax, f"{axis}axis").set_minor_formatter(fmt)


def ms_axis(ax, axis="y", log=True):
    getattr(ax, f"set_{axis}label")("latency (ms)")
    if log:
        log_axis(ax, axis)


def figure(n_panels, ncols=2, width=6.2, height=3.8):
    ncols = max(1, min(ncols, n_panels))
    nrows = math.ceil(n_panels / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(width * ncols, height * nrows + 0.6),
                             squeeze=False, layout="constrained")
    for ax in axes.flat[n_panels:]:
        ax.set_visible(False)
    return fig, list(axes.flat[:n_panels])


def finish(fig, data, title, handles=None):
    fig.suptitle(title, fontsize=12)
    fig.supxlabel("\n".join([data.footer(), *textwrap.wrap(MARKING, 130)]), fontsize=7,
                  color="0.35")
    if handles:
        fig.legend(handles=handles, loc="outside right upper", fontsize=8, frameon=False)
    return fig


def series_handles(rows, pal):
    return [Line2D([], [], color=pal[s], lw=2.5, label=s)
            for s in dict.fromkeys(rows.sort_values("series")["series"])]


def legend(ax, rows, pal, has_data):
    """Series legend beside the panel; rows with nothing to draw are listed as 'no data'."""
    handles, _ = ax.get_legend_handles_labels()
    handles += [Line2D([], [], color=pal[r["series"]], ls="none", marker="x",
                       label=f"{r['series']}: no data")
                for _, r in rows.iterrows() if not has_data(r)]
    ax.legend(handles=handles, fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1),
              frameon=False)


def no_data(ax, rows):
    """Name every row that has nothing to draw, in the (empty) panel itself."""
    text = "\n".join(f"no data: {r['series']} ({short(r['note'] or 'failed', 90)})"
                     for _, r in rows.iterrows())
    ax.text(0.02, 0.98, text, transform=ax.transAxes, va="top", fontsize=7, color="#b00",
            wrap=True)
