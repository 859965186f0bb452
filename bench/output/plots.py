"""Charts of one results folder, from its files alone; the report and the notebooks share them.

Every chart gives each variant the same colour, puts units on every axis and the machine and
date in a footer, and marks rows that are not clean measurements instead of hiding them:
driver-bound rows are dashed/hatched ``//``, other invalid rows dotted/hatched ``xx``, rows
with no data at all are named in the panel. Percentiles come from the rows' HDR histograms,
never from averaging percentiles.
"""
import functools
import json
import math
import os
import re
import zlib
from dataclasses import dataclass, field

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from hdrh.histogram import HdrHistogram  # noqa: E402
from matplotlib.patches import Patch  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402

from bench.errors import UsageError  # noqa: E402

EXTRAS = ("recipient", "mix")          # scenario columns that split a load point further
BOOL_COLUMNS = ("valid", "driver_bound", "unstable")
COLOURS = {
    "socketio-run-threading": "#1f77b4", "flask-run-threading": "#6baed6",
    "socketio-run-eventlet": "#2ca02c", "flask-run-eventlet": "#74c476",
    "socketio-run-gevent": "#d62728", "flask-run-gevent": "#fb8072",
    "seed-socketio-run": "#9467bd", "seed-app-run": "#e377c2",
    "gunicorn-gevent": "#8c564b", "gunicorn-gevent-websocket": "#ff7f0e",
    "gunicorn-gthread": "#17becf", "gunicorn-eventlet": "#bcbd22",
    "uvicorn-asgi": "#7f7f7f", "scaleout-redis": "#000000",
}
SPARE_COLOURS = ["#393b79", "#637939", "#8c6d31", "#843c39", "#7b4173", "#3182bd",
                 "#e6550d", "#31a354", "#756bb1", "#636363", "#ad494a", "#a55194"]
PERCENTILE_TICKS = {2: "50 %", 10: "90 %", 100: "99 %", 1000: "99.9 %", 10_000: "99.99 %"}
RECIPIENTS = ("first", "median", "last")
MAX_TIMELINE_POINTS = 60_000
STYLE = {"ok": ("-", None), "driver-bound": ("--", "//"), "invalid": (":", "xx")}
MARKING = "dashed / hatched // = driver-bound · dotted / hatched xx = invalid (see report notes)"


def colour(variant):
    """The variant's colour: fixed for known variants, a stable hash of the name otherwise."""
    return COLOURS.get(variant) or SPARE_COLOURS[zlib.crc32(variant.encode()) % len(SPARE_COLOURS)]


# ---------------------------------------------------------------- loading

def _truthy(value):
    return str(value).strip().lower() in ("true", "1", "yes")


@dataclass
class RunData:
    """A results folder's files, loaded once; samples lazily (they can be large)."""
    run_dir: str
    meta: dict
    summary: pd.DataFrame
    resources: pd.DataFrame
    knees: pd.DataFrame
    _samples: pd.DataFrame = field(default=None, repr=False)

    @property
    def aggregates(self):
        return self.summary[self.summary["repeat"] == "all"]

    @property
    def repeats(self):
        return self.summary[self.summary["repeat"] != "all"]

    @property
    def samples(self):
        if self._samples is None:
            path = os.path.join(self.run_dir, "samples.csv.gz")
            self._samples = pd.read_csv(path, dtype={"repeat": str}) if os.path.exists(path) \
                else pd.DataFrame()
        return self._samples

    def scenarios(self):
        return list(dict.fromkeys(self.aggregates["scenario"]))

    def footer(self):
        host = self.meta.get("host", {})
        date = str(self.meta.get("started_utc", ""))[:16].replace("T", " ")
        return (f"{host.get('cpu_model', 'unknown CPU')}, {host.get('cores', '?')} cores · "
                f"{date} UTC · {os.path.basename(os.path.abspath(self.run_dir))}")


def _read_csv(path, **kw):
    return pd.read_csv(path, **kw) if os.path.exists(path) else pd.DataFrame()


def load(run_dir):
    """The folder's CSVs and meta.json; UsageError if it is not a results folder."""
    if not os.path.isdir(run_dir):
        raise UsageError(f"no such results folder: {run_dir}")
    summary_path = os.path.join(run_dir, "summary.csv")
    if not os.path.exists(summary_path):
        raise UsageError(f"{run_dir} has no summary.csv: not a results folder")
    summary = pd.read_csv(summary_path, dtype={"repeat": str, "load_point": str, "note": str,
                                               "transport": str, "hdr": str})
    for col in BOOL_COLUMNS:
        summary[col] = summary[col].map(_truthy) if col in summary else False
    for col in ("transport", "note", "hdr", *[e for e in EXTRAS if e in summary]):
        summary[col] = summary[col].fillna("").astype(str)
    try:
        with open(os.path.join(run_dir, "meta.json")) as f:
            meta = json.load(f)
    except (OSError, ValueError):
        meta = {}
    return RunData(run_dir, meta, summary, _read_csv(os.path.join(run_dir, "resources.csv")),
                   _read_csv(os.path.join(run_dir, "knees.csv")))


# ---------------------------------------------------------------- histograms

_VALUE_TABLES = {}


def _value_table(h):
    """Each bucket's value as HdrHistogram reports it (highest equivalent), cached per layout."""
    key = (h.counts_len, h.unit_magnitude, h.sub_bucket_half_count_magnitude)
    if key not in _VALUE_TABLES:
        _VALUE_TABLES[key] = np.array([h.get_highest_equivalent_value(h.get_value_from_index(i))
                                       for i in range(h.counts_len)], dtype=np.int64)
    return _VALUE_TABLES[key]


def counts_of(encoded):
    """(bucket values µs, counts) of an encoded HdrHistogram over its full bucket range."""
    h = HdrHistogram.decode(encoded.encode() if isinstance(encoded, str) else encoded)
    return _value_table(h), np.ctypeslib.as_array(h.counts)[:h.counts_len].astype(np.int64)


def values_at(counts, values, percentiles):
    """Values at ``percentiles`` (0–100) exactly as HdrHistogram.get_value_at_percentile."""
    cum = np.cumsum(counts, axis=-1)
    total = cum[..., -1:]
    target = np.maximum((np.asarray(percentiles) * total / 100 + 0.5).astype(np.int64), 1)
    index = np.array([np.searchsorted(c, t) for c, t in zip(np.atleast_2d(cum),
                                                             np.atleast_2d(target))])
    out = values[np.minimum(index, len(values) - 1)]
    return out if np.ndim(counts) > 1 else out[0]


def spectrum_points(encoded):
    """(x = 1/(1-p), latency µs) of the percentile spectrum, up to what the sample supports."""
    values, counts = counts_of(encoded)
    total = int(counts.sum())
    if total == 0:
        return np.array([]), np.array([])
    x = np.unique(np.r_[np.logspace(0, math.log10(max(total, 1)), 300), total])
    p = 100.0 * (1 - 1 / x)
    return x, values_at(counts, values, p)


# ---------------------------------------------------------------- shared helpers

def flag(row):
    """'ok', 'driver-bound' or 'invalid': how a row is drawn."""
    if row["driver_bound"]:
        return "driver-bound"
    return "ok" if row["valid"] else "invalid"


def has_data(row):
    return bool(row["hdr"]) and row.get("ok", 0) > 0


def load_key(text):
    """Numeric order of load points like '1000 msg/s', '64 B', '16 KiB', '10 members'."""
    m = re.search(r"([\d.]+)\s*(Ki|Mi|k|K|M)?", str(text))
    if not m:
        return (1, float("inf"), str(text))
    scale = {"Ki": 1024, "Mi": 1024 ** 2, "k": 1e3, "K": 1e3, "M": 1e6}.get(m.group(2), 1)
    return (0, float(m.group(1)) * scale, str(text))


def extras(frame):
    return [e for e in EXTRAS if e in frame.columns and (frame[e] != "").any()]


def panels(rows):
    """Ordered (title, rows) per load point (× recipient/mix where the scenario has them)."""
    keys = ["load_point", *extras(rows)]
    out = []
    for key, group in rows.groupby(keys, sort=False):
        key = key if isinstance(key, tuple) else (key,)
        out.append((load_key(key[0]), key, group))
    out.sort(key=lambda t: (t[0], [str(k) for k in t[1][1:]]))
    return [(" · ".join(dict.fromkeys(str(k) for k in key if k != "")), g) for _, key, g in out]


def scenario_rows(data, scenario, fanout_all=True):
    """A scenario's aggregate rows (of RunData or of an aggregate frame), by variant.

    With ``fanout_all``, fan-out keeps only its all-recipients rows, and a failed step (no
    recipient split) counts as one of them, so it is shown where the others are.
    """
    agg = data.aggregates if isinstance(data, RunData) else data
    rows = agg[agg["scenario"] == scenario]
    if fanout_all and "recipient" in rows and (rows["recipient"] != "").any():
        rows = rows[rows["recipient"].isin(["all", ""])].assign(recipient="all")
    return rows.sort_values("variant")


def _figure(n_panels, ncols=2, width=6.2, height=3.8):
    ncols = max(1, min(ncols, n_panels))
    nrows = math.ceil(n_panels / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(width * ncols, height * nrows + 0.6),
                             squeeze=False, layout="constrained")
    for ax in axes.flat[n_panels:]:
        ax.set_visible(False)
    return fig, list(axes.flat[:n_panels])


def _finish(fig, data, title, handles=None):
    fig.suptitle(title, fontsize=12)
    fig.supxlabel(data.footer() + "\n" + MARKING, fontsize=7, color="0.35")
    if handles:
        fig.legend(handles=handles, loc="outside right upper", fontsize=8, frameon=False)
    return fig


def _variant_handles(rows):
    handles = []
    for _, r in rows.drop_duplicates("variant").iterrows():
        handles.append(Line2D([], [], color=colour(r["variant"]), lw=2.5, label=r["variant"]))
    return handles


def _label(row):
    f = flag(row)
    suffix = "" if f == "ok" else f" [{f}]"
    return row["variant"] + suffix + (" [unstable]" if row.get("unstable") else "")


def _legend(ax, rows):
    """Variants' legend beside the panel; rows with nothing to draw are listed as 'no data'."""
    handles, _ = ax.get_legend_handles_labels()
    handles += [Line2D([], [], color=colour(r["variant"]), ls="none", marker="x",
                       label=f"{r['variant']}: no data")
                for _, r in rows.iterrows() if not has_data(r)]
    ax.legend(handles=handles, fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1),
              frameon=False)


def _no_data(ax, rows):
    """Name every row that has nothing to draw, in the (empty) panel itself."""
    text = "\n".join(f"no data: {r['variant']} ({short(r['note'] or 'failed', 90)})"
                     for _, r in rows.iterrows())
    ax.text(0.02, 0.98, text, transform=ax.transAxes, va="top", fontsize=7, color="#b00",
            wrap=True)


def short(text, limit=240):
    """``text`` cut at a word boundary to ``limit`` characters."""
    text = str(text or "")
    return text if len(text) <= limit else text[:limit].rsplit(" ", 1)[0] + " …"


class PlainLogFormatter(matplotlib.ticker.LogFormatter):
    """Log-axis labels as plain numbers (0.5, 2, 300), on the ticks LogFormatter would label."""

    def __call__(self, x, pos=None):
        return f"{x:g}" if super().__call__(x, pos) else ""


def _ms_axis(ax, axis="y", log=True):
    getattr(ax, f"set_{axis}label")("latency (ms)")
    if log:
        getattr(ax, f"set_{axis}scale")("log")
    if log:
        fmt = PlainLogFormatter(labelOnlyBase=False, minor_thresholds=(1.5, 0.6))
        getattr(ax, f"{axis}axis").set_major_formatter(fmt)
        getattr(ax, f"{axis}axis").set_minor_formatter(fmt)


# ---------------------------------------------------------------- latency distributions

def spectrum(data, scenario):
    """Latency against percentile on a 1/(1-p) axis: the tail made visible."""
    rows = scenario_rows(data, scenario)
    groups = panels(rows)
    fig, axes = _figure(len(groups))
    for ax, (title, group) in zip(axes, groups):
        for _, r in group.iterrows():
            if not has_data(r):
                continue
            x, y = spectrum_points(r["hdr"])
            ax.plot(x, y / 1000, color=colour(r["variant"]), ls=STYLE[flag(r)][0], lw=1.6,
                    label=_label(r))
        ax.set_xscale("log")
        ax.set_xticks(list(PERCENTILE_TICKS), list(PERCENTILE_TICKS.values()))
        ax.set_xlim(1, 2 * 10 ** 4)
        ax.set_xlabel("percentile (1/(1−p) scale)")
        _ms_axis(ax)
        ax.grid(True, which="major", alpha=0.3)
        ax.set_title(title, fontsize=10)
        _legend(ax, group)
    return _finish(fig, data, f"{scenario}: latency percentile spectrum")


def cdf(data, scenario):
    """Cumulative distribution of latency: where the bulk sits and how long the tail is."""
    rows = scenario_rows(data, scenario)
    groups = panels(rows)
    fig, axes = _figure(len(groups))
    for ax, (title, group) in zip(axes, groups):
        for _, r in group.iterrows():
            if not has_data(r):
                continue
            values, counts = counts_of(r["hdr"])
            nz = counts > 0
            ax.step(values[nz] / 1000, 100 * np.cumsum(counts[nz]) / counts.sum(), where="post",
                    color=colour(r["variant"]), ls=STYLE[flag(r)][0], lw=1.6, label=_label(r))
        _ms_axis(ax, "x")
        ax.set_ylabel("messages at or below (%)")
        ax.set_ylim(0, 101)
        ax.grid(True, alpha=0.3)
        ax.set_title(title, fontsize=10)
        _legend(ax, group)
    return _finish(fig, data, f"{scenario}: latency CDF")


def _bar(ax, x, height, row, width, alpha=1.0, err=None):
    style = STYLE[flag(row)]
    ax.bar(x, height, width, color=colour(row["variant"]), alpha=alpha, hatch=style[1],
           edgecolor="black" if style[1] else colour(row["variant"]), linewidth=0.6,
           yerr=err, error_kw=dict(lw=0.9, capsize=2, ecolor="black"))


def _ci(row, key):
    lo, hi, mid = row.get(f"{key}_ci_low"), row.get(f"{key}_ci_high"), row[f"{key}_us"]
    if lo is None or hi is None or any(pd.isna(v) for v in (lo, hi, mid)):
        return None
    return [[max(mid - lo, 0) / 1000], [max(hi - mid, 0) / 1000]]


def _grouped_bars(ax, rows, group_col, metric, ylabel_ms=True):
    """Bars of ``metric`` per variant within each ``group_col`` value; no-data rows named."""
    groups = [g for _, g in sorted(rows.groupby(group_col, sort=False),
                                   key=lambda t: load_key(t[0]))]
    variants = sorted(rows["variant"].unique())
    width = 0.8 / max(len(variants), 1)
    heights = []
    for gi, group in enumerate(groups):
        for vi, variant in enumerate(variants):
            sel = group[group["variant"] == variant]
            if sel.empty:
                continue
            r = sel.iloc[0]
            x = gi + (vi - (len(variants) - 1) / 2) * width
            if has_data(r):
                h = r[f"{metric}_us"] / 1000
                heights.append(h)
                _bar(ax, x, h, r, width, err=_ci(r, metric))
                ax.text(x, h, f"{h:.3g}", ha="center", va="bottom", fontsize=6.5, rotation=90
                        if len(variants) * len(groups) > 10 else 0)
            else:
                ax.text(x, 0.02, "no data", rotation=90, ha="center", va="bottom", fontsize=7,
                        color="#b00", transform=ax.get_xaxis_transform())
    if heights and max(heights) > 20 * min(heights):
        _ms_axis(ax)
    ax.set_xlim(-0.5, len(groups) - 0.5)
    ax.set_xticks(range(len(groups)), [str(g[group_col].iloc[0]) for g in groups], fontsize=8)
    if ylabel_ms:
        ax.set_ylabel(f"{metric} latency (ms)")
    ax.grid(True, axis="y", alpha=0.3)


def bars(data, scenario):
    """p50 and p99 per variant (95 % CI whiskers where repeats allow), per load point."""
    rows = scenario_rows(data, scenario)
    group_col = "mix" if "mix" in extras(rows) else "load_point"
    bars_n = rows["variant"].nunique() * max(rows[group_col].nunique(), 1)
    fig, axes = _figure(2, ncols=1, width=min(16, max(7, 0.4 * bars_n + 2)), height=3.4)
    for ax, metric in zip(axes, ("p50", "p99")):
        _grouped_bars(ax, rows, group_col, metric)
        ax.set_title(metric, fontsize=10)
    axes[-1].set_xlabel(group_col.replace("_", " "))
    return _finish(fig, data, f"{scenario}: p50 and p99 per variant", _variant_handles(rows))


# ---------------------------------------------------------------- scenario specials

def throughput(data):
    """Latency against achieved throughput over the sweep's steps, knee marked."""
    rows = scenario_rows(data, "sweep")
    if rows.empty:
        return None
    fig, axes = _figure(2, ncols=2)
    knees = data.knees
    for ax, metric in zip(axes, ("p50", "p99")):
        for variant, group in rows.groupby("variant"):
            group = group[group.apply(has_data, axis=1)].sort_values("achieved_rate")
            c = colour(variant)
            ax.plot(group["achieved_rate"], group[f"{metric}_us"] / 1000, color=c, lw=1.2)
            for _, r in group.iterrows():
                f = flag(r)
                ax.plot(r["achieved_rate"], r[f"{metric}_us"] / 1000,
                        marker="o" if f == "ok" else ("x" if f == "driver-bound" else "D"),
                        mfc=c if f == "ok" else "none", mec=c, color=c, ms=6)
            k = knees[knees["variant"] == variant] if not knees.empty else knees
            if not k.empty and pd.notna(k.iloc[0]["knee_msg_s"]):
                ax.axvline(k.iloc[0]["knee_msg_s"], color=c, ls="-.", lw=1)
                ax.annotate("knee", (k.iloc[0]["knee_msg_s"], 1),
                            xycoords=("data", "axes fraction"),
                            rotation=90, va="top", ha="right", fontsize=7, color=c)
        ax.set_xlabel("achieved throughput (msg/s)")
        _ms_axis(ax)
        ax.grid(True, alpha=0.3)
        ax.set_title(f"{metric}  (o valid, x driver-bound, ◇ invalid; -.- knee)", fontsize=9)
    return _finish(fig, data, "sweep: latency vs achieved throughput", _variant_handles(rows))


def knees_per_variant(data):
    """One row per variant: median knee over repeats, min and max, repeats, reasons, SLO."""
    k = data.knees
    if k.empty:
        return k
    out = []
    for variant, g in k.groupby("variant"):
        values = g["knee_msg_s"].dropna()
        out.append(dict(variant=variant, knee_msg_s=values.median() if len(values) else np.nan,
                        low=values.min(), high=values.max(), repeats=len(g),
                        reason="; ".join(dict.fromkeys(g["reason"].dropna().astype(str))),
                        slo="; ".join(dict.fromkeys(g["slo"].dropna().astype(str)))))
    return pd.DataFrame(out)


def knee_bars(data):
    """The knee (highest rate within the SLO) per variant, with why the sweep stopped."""
    knees = knees_per_variant(data)
    if knees.empty:
        return None
    fig, axes = _figure(1, ncols=1, width=11, height=0.6 * len(knees) + 1.6)
    ax = axes[0]
    top = max(knees["knee_msg_s"].max(skipna=True), 1) if knees["knee_msg_s"].notna().any() else 1
    for i, (_, k) in enumerate(knees.iterrows()):
        value = k["knee_msg_s"]
        has = pd.notna(value)
        if has:
            err = [[value - k["low"]], [k["high"] - value]] if k["repeats"] > 1 else None
            ax.barh(i, value, color=colour(k["variant"]), xerr=err, capsize=3)
        label = (f"{value:,.0f} msg/s" if has else "no knee") + (
            f" (median of {k['repeats']} repeats)" if k["repeats"] > 1 else "")
        x = value if has else 0
        ax.text(x, i - 0.12, f"  {label}", va="center", fontsize=8, fontweight="bold")
        ax.text(x, i + 0.22, f"  {short(k['reason'], 110)}", va="center", fontsize=6.5,
                color="0.35")
    ax.set_xlim(0, top * 2.6)
    ax.set_yticks(range(len(knees)), knees["variant"])
    ax.invert_yaxis()
    ax.set_xlabel("knee: highest rate meeting the SLO (msg/s)")
    ax.set_title("SLO: " + "; ".join(knees["slo"].unique()), fontsize=9)
    ax.grid(True, axis="x", alpha=0.3)
    return _finish(fig, data, "sweep: knee per variant")


def fanout(data):
    """First, median and last recipient of a broadcast: bars p50, black ticks p99."""
    rows = scenario_rows(data, "fanout", fanout_all=False)
    if rows.empty or "recipient" not in rows:
        return None
    rows = rows[rows["recipient"].isin(RECIPIENTS)]
    if rows.empty:
        return None
    load_points = sorted(rows["load_point"].unique(), key=load_key)
    fig, axes = _figure(len(load_points), ncols=1, width=max(7, 1.4 * rows["variant"].nunique()))
    shades = dict(zip(RECIPIENTS, (0.35, 0.65, 1.0)))
    for ax, lp in zip(axes, load_points):
        group = rows[rows["load_point"] == lp]
        variants = sorted(group["variant"].unique())
        for vi, variant in enumerate(variants):
            for ri, recipient in enumerate(RECIPIENTS):
                sel = group[(group["variant"] == variant) & (group["recipient"] == recipient)]
                if sel.empty:
                    continue
                r, x = sel.iloc[0], vi + (ri - 1) * 0.27
                if not has_data(r):
                    ax.text(x, 0, "no data", rotation=90, fontsize=7, color="#b00", ha="center")
                    continue
                _bar(ax, x, r["p50_us"] / 1000, r, 0.25, alpha=shades[recipient])
                ax.plot(x, r["p99_us"] / 1000, "_", color="black", ms=12, mew=2)
        ax.set_xticks(range(len(variants)), variants, fontsize=8)
        ax.set_ylabel("latency (ms)")
        ax.set_title(f"{lp} — bars p50 (light→dark: first, median, last), — p99", fontsize=9)
        ax.grid(True, axis="y", alpha=0.3)
    handles = [Patch(facecolor="0.3", alpha=a, label=f"{k} recipient") for k, a in shades.items()]
    return _finish(fig, data, "fanout: broadcast latency by recipient", handles)


def blocking(data):
    """Echo latency under each blocking mix, side by side, p50 bars with p99 ticks."""
    rows = scenario_rows(data, "blocking")
    if rows.empty or "mix" not in rows:
        return None
    mixes = list(dict.fromkeys(m for m in ("echo-only", "sleep-blockers", "cpu-blockers",
                                           *rows["mix"].unique()) if m in set(rows["mix"])))
    fig, axes = _figure(len(mixes), ncols=len(mixes), width=max(4, 0.9 * rows["variant"]
                                                                 .nunique()), height=4.2)
    variants = sorted(rows["variant"].unique())
    for ax, mix in zip(axes, mixes):
        group = rows[rows["mix"] == mix]
        for vi, variant in enumerate(variants):
            sel = group[group["variant"] == variant]
            if sel.empty:
                continue
            r = sel.iloc[0]
            if has_data(r):
                _bar(ax, vi, r["p50_us"] / 1000, r, 0.7)
                ax.plot(vi, r["p99_us"] / 1000, "_", color="black", ms=14, mew=2)
            else:
                ax.text(vi, 0, "no data", rotation=90, fontsize=7, color="#b00", ha="center")
        ax.set_xticks(range(len(variants)), variants, rotation=45, ha="right", fontsize=8)
        _ms_axis(ax)
        ax.set_title(mix, fontsize=10)
        ax.grid(True, axis="y", alpha=0.3)
    axes[0].set_ylabel("echo latency (ms): bar p50, — p99")
    # One scale for every mix, spanning every value (sharing after plotting kept only the
    # first panel's range and clipped the blocked bars).
    measured = rows[rows.apply(has_data, axis=1)]
    if not measured.empty:
        low = measured["p50_us"].min() / 1000 * 0.8
        high = measured["p99_us"].max() / 1000 * 1.3
        for ax in axes:
            ax.set_ylim(low, high)
            for text in ax.texts:
                text.set_y(low * 1.05)
    return _finish(fig, data, "blocking: does one slow handler delay everyone?")


# ---------------------------------------------------------------- time series

def timeline(data, scenario):
    """Every message's latency over each step of the scenario, warm-up shaded, per variant.

    A variant's steps (load points, repeats) are laid end to end; failed messages are red
    crosses along the top edge.
    """
    s = data.samples
    if s.empty:
        return None
    s = s[s["scenario"] == scenario]
    if s.empty:
        return None
    variants = sorted(s["variant"].unique())
    rows = scenario_rows(data, scenario, fanout_all=False)
    variants = sorted(set(variants) | set(rows["variant"]))
    fig, axes = _figure(len(variants), ncols=2, height=3.0)
    for ax, variant in zip(axes, variants):
        v = s[s["variant"] == variant]
        if v.empty:
            ax.set_title(variant, fontsize=9, color=colour(variant))
            _no_data(ax, rows[rows["variant"] == variant])
            ax.set_axis_off()
            continue
        steps = sorted(v.groupby(["load_point", "repeat"], sort=False).groups,
                       key=lambda k: (load_key(k[0]), str(k[1])))
        stride = max(1, math.ceil(len(v) / MAX_TIMELINE_POINTS))
        size = min(12, max(2, 4000 / (len(v) / stride)))
        offset = 0.0
        for load_point, repeat in steps:
            step = v[(v["load_point"] == load_point) & (v["repeat"] == repeat)]
            t0 = step["intended_ns"].min()
            t = (step["intended_ns"] - t0) / 1e9 + offset
            measured = step.loc[step["phase"] == "measure", "intended_ns"]
            warm_end = (measured.min() - t0) / 1e9 if len(measured) else t.max() - offset
            ax.axvspan(offset, offset + warm_end, color="0.85", lw=0)
            ok = step["outcome"] == "ok"
            ax.scatter(t[ok][::stride], step.loc[ok, "latency_us"][::stride] / 1000, s=size,
                       color=colour(variant), alpha=0.6, lw=0, rasterized=True)
            if (~ok).any():
                ax.scatter(t[~ok], np.full((~ok).sum(), 0.97), marker="x", s=12, color="#b00",
                           transform=ax.get_xaxis_transform())
            if len(steps) > 1:
                ax.text(offset, 1.0, f" {load_point} #{repeat}", transform=ax.get_xaxis_transform(),
                        fontsize=6, va="bottom", color="0.3")
            offset = t.max() + 0.3
        _ms_axis(ax)
        ax.set_xlabel("time within step (s); grey = warm-up")
        flags = sorted({flag(r) for _, r in rows[rows["variant"] == variant].iterrows()} - {"ok"})
        ax.set_title(variant + (f" [{', '.join(flags)}]" if flags else "")
                     + (f" (1 in {stride} points shown)" if stride > 1 else ""),
                     fontsize=9, color=colour(variant), pad=12)
        ax.grid(True, alpha=0.3)
    handles = [Patch(color="0.85", label="warm-up (not counted)"),
               Line2D([], [], marker="x", ls="", color="#b00", label="failed message")]
    return _finish(fig, data, f"{scenario}: latency of every message over time", handles)


def resources(data):
    """Server and driver CPU and RSS over the run (a line per variant's steps).

    psutil's first CPU reading of a process is always 0.0 by definition, so it is skipped.
    """
    r = data.resources
    if r.empty:
        return None
    r = r.sort_values("t")
    first = ~r.duplicated(["variant", "role", "pid"])
    cpu = r[~first].groupby(["variant", "role", "t"], as_index=False)["cpu_pct"].sum()
    rss = r.groupby(["variant", "role", "t"], as_index=False)["rss_mb"].sum()
    fig, axes = _figure(4, ncols=2, height=3.0)
    for ax, (frame, col, role, label) in zip(axes, [
            (cpu, "cpu_pct", "server", "server CPU (% of one core)"),
            (cpu, "cpu_pct", "driver", "driver CPU (% of one core)"),
            (rss, "rss_mb", "server", "server RSS (MB)"),
            (rss, "rss_mb", "driver", "driver RSS (MB)")]):
        part = frame[frame["role"] == role]
        for variant, g in part.groupby("variant"):
            t, y = g["t"].to_numpy(float), g[col].to_numpy(float)
            gaps = np.nonzero(np.diff(t) > 2.5)[0] + 1
            ax.plot(np.insert(t, gaps, np.nan), np.insert(y, gaps, np.nan), marker="o",
                    color=colour(variant), lw=1.2, ms=3.5)
        if part.empty:
            ax.text(0.5, 0.5, "no readings (steps shorter than two 1 Hz samples)",
                    transform=ax.transAxes, ha="center", fontsize=8, color="0.4")
        ax.set_xlabel("time since run start (s)")
        ax.set_ylabel(label)
        ax.set_ylim(bottom=0)
        ax.set_title(label, fontsize=9)
        ax.grid(True, alpha=0.3)
    for ax in axes[1:]:
        ax.sharex(axes[0])
    return _finish(fig, data, "resources: server and driver CPU and memory (1 Hz; a process's "
                   "first CPU reading is skipped)",
                   [Line2D([], [], color=colour(v), lw=2.5, label=v)
                    for v in sorted(r["variant"].unique())])


# ---------------------------------------------------------------- all of them

def charts(data):
    """(file name, title, builder) of every chart that applies to this run."""
    out = []
    for scenario in data.scenarios():
        for kind, fn, title in (("spectrum", spectrum, "percentile spectrum"),
                                ("cdf", cdf, "latency CDF")):
            out.append((f"{kind}-{scenario}", f"{scenario}: {title}",
                        functools.partial(fn, data, scenario)))
        if scenario not in ("fanout", "blocking"):
            out.append((f"bars-{scenario}", f"{scenario}: p50 and p99",
                        functools.partial(bars, data, scenario)))
    out += [("sweep-throughput", "sweep: latency vs achieved throughput",
             functools.partial(throughput, data)),
            ("sweep-knees", "sweep: knee per variant", functools.partial(knee_bars, data)),
            ("fanout", "fanout: first/median/last recipient", functools.partial(fanout, data)),
            ("blocking", "blocking: mixes side by side", functools.partial(blocking, data))]
    for scenario in data.scenarios():
        out.append((f"timeline-{scenario}", f"{scenario}: latency over time",
                    functools.partial(timeline, data, scenario)))
    out.append(("resources", "resources: CPU and RSS", functools.partial(resources, data)))
    return out


def save_all(data, out_dir):
    """Write every applicable chart as PNG; [(name, title, path)] of those written."""
    os.makedirs(out_dir, exist_ok=True)
    written = []
    for name, title, build in charts(data):
        fig = build()
        if fig is None:
            continue
        path = os.path.join(out_dir, f"{name}.png")
        fig.savefig(path, dpi=110)
        plt.close(fig)
        written.append((name, title, path))
    return written
