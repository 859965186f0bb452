"""How every chart looks: a colour per name, how flagged rows are drawn, axes, a frame that fits."""
import hashlib
import math
import textwrap
import warnings

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402

from bench.output import trust  # noqa: E402
from bench.output.formatting import short  # noqa: E402

# Colour-blind-safe: Paul Tol's "muted" scheme, then the Okabe–Ito colours it lacks (orange,
# blue, vermillion; black is left for error bars and p99 ticks). A name's colour is picked by a hash of the name, so it is the same
# in every chart and every run.
PALETTE = ["#332288", "#88CCEE", "#44AA99", "#117733", "#999933", "#DDCC77", "#CC6677",
           "#882255", "#AA4499", "#E69F00", "#0072B2", "#D55E00"]
FIT_ROUNDS = 6
MIN_PANEL_IN = (1.5, 0.8)   # a panel squeezed below this (inches) by its labels grows the figure
STYLE = {"ok": ("-", None), "driver-bound": ("--", "//"), "invalid": (":", "xx")}
MARKING = ("dashed / hatched // = driver-bound · dotted / hatched xx = invalid (see report "
           "notes) · “≥” = censored at the deadline · a missing point or bar = too few samples"
           " · " + " ".join(f"[{f}]" for f in trust.FLAGS.values())
           + " = the step failed that self-check (still drawn)")


def slot(name):
    """The palette index a name hashes to (stable across runs and machines)."""
    return int.from_bytes(hashlib.sha1(str(name).encode()).digest()[:4], "big") % len(PALETTE)


def palette(names):
    """{name: colour}: each name its hashed colour; two names of one run that hash alike are
    told apart, the later (sorted) taking the next free colour."""
    taken, out = set(), {}
    for name in sorted(set(map(str, names))):
        i = slot(name)
        for step in range(len(PALETTE)):
            if (i + step) % len(PALETTE) not in taken or len(taken) >= len(PALETTE):
                i = (i + step) % len(PALETTE)
                break
        taken.add(i)
        out[name] = PALETTE[i]
    return out


def colours(data):
    """The run's colours, one per series, and each variant the colour of its first series:
    the same in every chart of the run."""
    if not len(data.summary):
        return {}
    pal = palette(data.summary["series"])
    for variant, series in data.summary.sort_values("series").groupby("variant")["series"]:
        pal.setdefault(variant, pal[series.iloc[0]])
    return pal


def flag(row):
    """'ok', 'driver-bound' or 'invalid': how a row is drawn."""
    if row["driver_bound"]:
        return "driver-bound"
    return "ok" if row["valid"] else "invalid"


def censored(row, metric):
    """Whether a row's ``metric`` (p50, p99, …) is written as the deadline."""
    return metric in str(row.get("censored", "")).split(",")


def checks(row):
    """' [drift] [dependent]…': a mark per self-check the row failed ('' when none failed)."""
    return "".join(f" [{f}]" for f in trust.flags(row))


def label(row):
    """A row's legend label: its series and any flags it carries."""
    f = flag(row)
    return (row["series"] + ("" if f == "ok" else f" [{f}]")
            + (" [unstable]" if row.get("unstable") else "")
            + (" [noisy]" if row.get("noisy") else "")
            + (f" [censored {row['censored']}]" if row.get("censored") else "")
            + checks(row))


class PlainLogFormatter(matplotlib.ticker.LogFormatter):
    """Log-axis labels as plain numbers (0.5, 2, 300), on the ticks LogFormatter would label."""

    def __call__(self, x, pos=None):
        return f"{x:g}" if super().__call__(x, pos) else ""


def log_axis(ax, axis="y"):
    """A log axis labelled with plain numbers, not powers of ten."""
    getattr(ax, f"set_{axis}scale")("log")
    fmt = PlainLogFormatter(labelOnlyBase=False, minor_thresholds=(1.5, 0.6))
    getattr(ax, f"{axis}axis").set_major_formatter(fmt)
    getattr(ax, f"{axis}axis").set_minor_formatter(fmt)


def ms_axis(ax, axis="y", log=True):
    """A latency axis in ms (log unless asked otherwise)."""
    getattr(ax, f"set_{axis}label")("latency (ms)")
    if log:
        log_axis(ax, axis)


def figure(n_panels, ncols=2, width=6.2, height=3.8):
    """A constrained-layout figure with ``n_panels`` panels; [axes] of the visible ones."""
    ncols = max(1, min(ncols, n_panels))
    nrows = math.ceil(n_panels / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(width * ncols, height * nrows + 0.6),
                             squeeze=False, layout="constrained")
    for ax in axes.flat[n_panels:]:
        ax.set_visible(False)
    return fig, list(axes.flat[:n_panels])


def _title_overlap(fig, renderer):
    """How far (inches) the centred title runs into a figure legend beside it; 0 if clear."""
    title = fig._suptitle
    if title is None or not title.get_text():
        return 0.0
    t = title.get_window_extent(renderer)
    overlap = [t.x1 - e.x0 for e in (lg.get_window_extent(renderer) for lg in fig.legends)
               if e.x0 < t.x1 and e.x1 > t.x0 and e.y0 < t.y1 and e.y1 > t.y0]
    return max(overlap, default=0.0) / fig.dpi


def _squeezed(fig, renderer, collapsed):
    """(width, height) in inches the figure lacks so that no panel is squeezed below
    MIN_PANEL_IN, nor is shorter than the legend beside it (which would then hang into the
    footer): layout shrinks or gives up on a panel it cannot fit."""
    width, height = fig.get_size_inches()
    if collapsed:
        return 0.3 * width, 0.5 * height
    panels = [(ax.get_position(), ax.get_legend()) for ax in fig.axes if ax.get_visible()]
    tall = [lg.get_window_extent(renderer).height / fig.dpi - box.height * height
            for box, lg in panels if lg is not None]
    return (max([MIN_PANEL_IN[0] - box.width * width for box, _ in panels] + [0.0]),
            max([MIN_PANEL_IN[1] - box.height * height for box, _ in panels] + tall + [0.0]))


def fit(fig):
    """Grow ``fig`` until everything drawn (labels, legends, footer) lies inside it, the
    title clears the legend and every panel keeps room to draw in: layout alone cannot place
    a label wider than its figure, and a clipped or overlapped label misleads."""
    for _ in range(FIT_ROUNDS):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            fig.canvas.draw()
        renderer = fig.canvas.get_renderer()
        tight = fig.get_tightbbox(renderer)
        width, height = fig.get_size_inches()
        squeeze_w, squeeze_h = _squeezed(fig, renderer,
                                         any("collapsed" in str(w.message) for w in caught))
        grow_w = max(0.0, -tight.x0) + max(0.0, tight.x1 - width, _title_overlap(fig, renderer),
                                           squeeze_w)
        grow_h = max(0.0, -tight.y0) + max(0.0, tight.y1 - height, squeeze_h)
        if grow_w < 0.01 and grow_h < 0.01:
            break
        # the panels take only part of the growth: overshoot so it converges in a few rounds
        fig.set_size_inches(width + (2 * grow_w + 0.15 if grow_w >= 0.01 else 0),
                            height + (2 * grow_h + 0.15 if grow_h >= 0.01 else 0))
    return fig


def finish(fig, data, title, handles=None):
    """Title, footer (machine, run, how flagged rows are drawn) and legend; then fitted."""
    fig.suptitle(title, fontsize=12)
    width = max(60, int(fig.get_size_inches()[0] * 15))     # about 15 footer characters/inch
    fig.supxlabel("\n".join([*textwrap.wrap(data.footer(), width), *textwrap.wrap(MARKING, width)]),
                  fontsize=7, color="0.35")
    if handles:
        fig.legend(handles=handles, loc="outside right upper", fontsize=8, frameon=False)
    return fit(fig)


def series_handles(rows, pal):
    """Legend handles, one per series of ``rows``, in its colour, marked with every
    self-check that any of its rows failed."""
    marks = {}
    for _, r in rows.sort_values("series").iterrows():
        marks.setdefault(r["series"], {}).update(dict.fromkeys(trust.flags(r)))
    return [Line2D([], [], color=pal[s], lw=2.5, label=s + "".join(f" [{f}]" for f in found))
            for s, found in marks.items()]


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
