"""Sweep charts: latency against achieved throughput, and the knee per variant with its bound."""
import numpy as np
import pandas as pd

from bench.analysis import stats
from bench.output.formatting import short
from bench.output.plots import style
from bench.output.plots.rows import has_data, scenario_rows

MARKERS = {"ok": "o", "driver-bound": "x", "invalid": "D"}


def knees_per_variant(data):
    """One row per variant: median knee over repeats (min, max), median first failing rate,
    the bounds and reasons of its repeats, the SLO. Empty frame without knees.csv."""
    k = data.knees
    if k.empty:
        return pd.DataFrame()
    parts = ["variant", *[c for c in ("client", "transport")
                          if c in k and k.groupby("variant")[c].nunique().gt(1).any()]]
    out = []
    for key, g in k.groupby(parts, sort=True):
        variant = " · ".join(str(x) or "none" for x in (key if isinstance(key, tuple) else (key,)))
        knees, nexts = g["knee_msg_s"].dropna(), g["next_msg_s"].dropna()
        bounds = [b for b in dict.fromkeys(g["bound"]) if b]
        out.append(dict(
            variant=variant, knee_msg_s=stats.quantiles(knees, [50])[0],
            low=knees.min() if len(knees) else np.nan, high=knees.max() if len(knees) else np.nan,
            next_msg_s=stats.quantiles(nexts, [50])[0], repeats=len(g),
            bound=", ".join(bounds) if bounds else "",
            reason="; ".join(dict.fromkeys(r for r in g["reason"] if r)),
            slo="; ".join(dict.fromkeys(s for s in g["slo"] if s))))
    return pd.DataFrame(out)


def throughput(data, scenario="sweep"):
    """p50 and p99 against the achieved throughput (replies inside the window ÷ window) of
    each sweep step; knees marked (a lower bound as an arrow to the right)."""
    rows = scenario_rows(data, scenario)
    if rows.empty:
        return None
    pal = style.colours(data)
    knees = knees_per_variant(data)
    fig, axes = style.figure(2, ncols=2)
    for ax, metric in zip(axes, ("p50", "p99")):
        for name, group in rows.groupby("series"):
            group = group[group.apply(has_data, axis=1) & group[f"{metric}_us"].notna()
                          & group["achieved_rate"].notna()].sort_values("load_value")
            c = pal[name]
            ax.plot(group["achieved_rate"], group[f"{metric}_us"] / 1000, color=c, lw=1.2)
            for _, r in group.iterrows():
                f = style.flag(r)
                ax.plot(r["achieved_rate"], r[f"{metric}_us"] / 1000, marker=MARKERS[f],
                        mfc=c if f == "ok" else "none", mec=c, color=c, ms=6)
                if style.censored(r, metric):
                    ax.annotate("≥", (r["achieved_rate"], r[f"{metric}_us"] / 1000),
                                xytext=(4, 2), textcoords="offset points", fontsize=8, color=c)
            k = knees[knees["variant"] == name] if not knees.empty else knees
            if k.empty and not knees.empty and len(group):     # knees split less finely
                k = knees[knees["variant"] == group["variant"].iloc[0]]
            if not k.empty and pd.notna(k.iloc[0]["knee_msg_s"]) and k.iloc[0]["knee_msg_s"] > 0:
                x, bound = k.iloc[0]["knee_msg_s"], k.iloc[0]["bound"]
                ax.axvline(x, color=c, ls="-.", lw=1)
                ax.annotate("knee ≥" if bound == "lower" else "knee", (x, 1),
                            xycoords=("data", "axes fraction"), rotation=90, va="top",
                            ha="right", fontsize=7, color=c)
        ax.set_xlabel("achieved throughput (msg/s: ok replies inside the window ÷ window)")
        style.log_axis(ax, "x")
        style.ms_axis(ax)
        ax.grid(True, alpha=0.3)
        ax.set_title(f"{metric}  (o valid, x driver-bound, ◇ invalid; -.- knee)", fontsize=9)
    return style.finish(fig, data, "sweep: latency vs achieved throughput",
                        style.series_handles(rows, pal))


def knee_bars(data):
    """The knee (highest rate meeting the SLO) per variant, its bound and why the sweep stopped."""
    knees = knees_per_variant(data)
    if knees.empty:
        return None
    pal = {**style.palette(knees["variant"]), **style.colours(data)}
    fig, axes = style.figure(1, ncols=1, width=11, height=0.6 * len(knees) + 1.6)
    ax = axes[0]
    top = max(knees["knee_msg_s"].max(skipna=True), 1) if knees["knee_msg_s"].notna().any() else 1
    for i, (_, k) in enumerate(knees.iterrows()):
        value = np.nan if k["bound"] == "none" else k["knee_msg_s"]
        has = pd.notna(value)
        if has:
            err = [[value - k["low"]], [k["high"] - value]] if k["repeats"] > 1 else None
            ax.barh(i, value, color=pal[k["variant"]], xerr=err, capsize=3,
                    hatch="//" if k["bound"] == "lower" else None)
        label = ("≥ " if k["bound"] == "lower" else "") + (
            f"{value:,.0f} msg/s" if has else "no knee: the first step failed"
            if k["bound"] == "none" else "no knee") + (
            f", first failing {k['next_msg_s']:,.0f}" if pd.notna(k["next_msg_s"]) else "") + (
            f" (bound {k['bound']})" if k["bound"] else "") + (
            f" (median of {k['repeats']} repeats)" if k["repeats"] > 1 else "")
        x = value if has else 0
        ax.text(x, i - 0.12, f"  {label}", va="center", fontsize=8, fontweight="bold")
        ax.text(x, i + 0.22, f"  {short(k['reason'], 110)}", va="center", fontsize=6.5,
                color="0.35")
    ax.set_xlim(0, top * 2.6)
    ax.set_yticks(range(len(knees)), knees["variant"])
    ax.invert_yaxis()
    ax.set_xlabel("knee: highest rate meeting the SLO (msg/s; hatched = lower bound)")
    ax.set_title("SLO: " + "; ".join(knees["slo"].unique()), fontsize=9)
    ax.grid(True, axis="x", alpha=0.3)
    return style.finish(fig, data, "sweep: knee per variant")
