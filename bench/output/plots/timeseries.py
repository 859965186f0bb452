"""Charts over time: every message's latency through each step, and CPU/RSS of the processes."""
import math

import numpy as np
from matplotlib.lines import Line2D
from matplotlib.patches import Patch

from bench.output import trust
from bench.output.causes import SHOWN_PAUSE_NS, events as read_events
from bench.output.plots import style
from bench.output.plots.rows import scenario_rows

MAX_TIMELINE_POINTS = 60_000


def timeline(data, scenario):
    """Every message's latency over each step of the scenario, warm-up shaded, per variant.

    A variant's steps (load points in numeric order, then repeats) are laid end to end;
    failed messages are red crosses along the top edge.
    """
    s = data.samples
    if s.empty:
        return None
    s = s[(s["scenario"] == scenario) & (s["phase"] != "superseded")]  # the kept attempts
    if s.empty:
        return None
    rows = scenario_rows(data, scenario, fanout_all=False)
    order = rows.groupby("load_point")["load_value"].min().to_dict()
    variants = sorted(set(s["variant"]) | set(rows["variant"]))
    pal = {**style.palette(variants), **style.colours(data)}
    marks = read_events(data.run_dir)
    marks = marks[marks["kind"].isin(["gc", "blocked"]) & (marks["duration_ns"] >=
                                                           SHOWN_PAUSE_NS)]
    split = [c for c in ("server_gc", "server_nodelay") if c in s and s[c].nunique() > 1]
    reps = data.repeats[data.repeats["scenario"] == scenario]
    fig, axes = style.figure(len(variants), ncols=2, height=3.0)
    for ax, variant in zip(axes, variants):
        v = s[s["variant"] == variant]
        if v.empty:
            ax.set_title(variant, fontsize=9, color=pal[variant])
            style.no_data(ax, rows[rows["variant"] == variant])
            ax.set_axis_off()
            continue
        steps = sorted(v.groupby(["load_point", "repeat", *split], sort=False).groups,
                       key=lambda k: (order.get(k[0], math.inf), k[1:]))
        stride = max(1, math.ceil(len(v) / MAX_TIMELINE_POINTS))
        size = min(12, max(2, 4000 / (len(v) / stride)))
        offset = 0.0
        for load_point, repeat, *settings in steps:
            step = v[(v["load_point"] == load_point) & (v["repeat"] == repeat)]
            for column, value in zip(split, settings):
                step = step[step[column] == value]
            t0 = step["intended_ns"].min()
            t = (step["intended_ns"] - t0) / 1e9 + offset
            measured = step.loc[step["phase"] == "measure", "intended_ns"]
            warm_end = (measured.min() - t0) / 1e9 if len(measured) else t.max() - offset
            ax.axvspan(offset, offset + warm_end, color="0.85", lw=0)
            ok = step["outcome"] == "ok"
            ax.scatter(t[ok][::stride], step.loc[ok, "latency_us"][::stride] / 1000, s=size,
                       color=pal[variant], alpha=0.6, lw=0, rasterized=True)
            if (~ok).any():
                ax.scatter(t[~ok], np.full((~ok).sum(), 0.97), marker="x", s=12, color="#b00",
                           transform=ax.get_xaxis_transform())
            _mark(ax, marks, reps, step, t0, offset)
            if len(steps) > 1:
                label = f" #{repeat}" if split and len(order) == 1 else \
                    f" {load_point} #{repeat}"
                ax.text(offset, 1.0, label + "".join(f" {SHORT[c]}={x}"
                                                     for c, x in zip(split, settings)),
                        transform=ax.get_xaxis_transform(), fontsize=6, va="bottom", color="0.3")
            offset = t.max() + 0.3
        style.ms_axis(ax)
        ax.set_xlabel("time within step (s); grey = warm-up")
        mine = [r for _, r in rows[rows["variant"] == variant].iterrows()]
        flags = sorted({style.flag(r) for r in mine} - {"ok"}) \
            + list(dict.fromkeys(f for r in mine for f in trust.flags(r)))
        ax.set_title(variant + (f" [{', '.join(flags)}]" if flags else "")
                     + (f" (1 in {stride} points shown)" if stride > 1 else ""),
                     fontsize=9, color=pal[variant], pad=12)
        ax.grid(True, alpha=0.3)
    handles = [Patch(color="0.85", label="warm-up (not counted)"),
               Line2D([], [], marker="x", ls="", color="#b00", label="failed message"),
               Line2D([], [], marker="|", ls="", color=PAUSE_COLOURS["gc"],
                      label="server GC pause ≥ 1 ms"),
               Line2D([], [], marker="|", ls="", color=PAUSE_COLOURS["blocked"],
                      label="blocked server loop ≥ 1 ms"),
               Line2D([], [], ls="--", color="k", label="onset of a regime")]
    return style.finish(fig, data, f"{scenario}: latency of every message over time", handles)


PAUSE_COLOURS = {"gc": "#d95f02", "blocked": "#7570b3"}
SHORT = {"server_gc": "gc", "server_nodelay": "nodelay"}


def _mark(ax, marks, rows, step, t0, offset):
    """The step's server pauses (ticks at the bottom) and its onset (a dashed line)."""
    mine = marks[(marks["t_ns"] >= t0) & (marks["t_ns"] <= step["received_ns"].max())]
    for kind, colour in PAUSE_COLOURS.items():
        t = (mine.loc[mine["kind"] == kind, "t_ns"] - t0) / 1e9 + offset
        if len(t):
            ax.scatter(t, np.full(len(t), 0.02), marker="|", s=60, color=colour,
                       transform=ax.get_xaxis_transform(), zorder=3)
    first = step.iloc[0]
    same = rows[(rows["variant"] == first["variant"]) & (rows["load_point"] == first["load_point"])
                & (rows["repeat"] == first["repeat"])]
    if "server_gc" in step and "server_gc" in same:
        same = same[same["server_gc"].astype(str) == str(first["server_gc"])]
    if "onset_s" in same:
        for onset in same["onset_s"].dropna():
            ax.axvline(offset + onset, ls="--", lw=1.0, color="k", alpha=0.7)


def resources(data):
    """Server and driver CPU and RSS over the run (a line per variant's steps).

    psutil's first CPU reading of a process is always 0.0 by definition, so it is skipped.
    """
    r = data.resources
    if r.empty:
        return None
    r = r.sort_values("t")
    pal = {**style.palette(r["variant"]), **style.colours(data)}
    first = ~r.duplicated(["variant", "role", "pid"])
    cpu = r[~first].groupby(["variant", "role", "t"], as_index=False)["cpu_pct"].sum()
    rss = r.groupby(["variant", "role", "t"], as_index=False)["rss_mb"].sum()
    fig, axes = style.figure(4, ncols=2, height=3.0)
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
                    color=pal[variant], lw=1.2, ms=3.5)
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
    return style.finish(fig, data, "resources: server and driver CPU and memory (1 Hz; a "
                        "process's first CPU reading is skipped)",
                        [Line2D([], [], color=pal[v], lw=2.5, label=v)
                         for v in sorted(set(r["variant"]))])
