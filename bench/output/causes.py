"""The report's causes: one line per regime change (when, how large, what coincided), the
``--server-gc`` settings side by side, and the servers' events read back from ``events/``.

From the results folder alone: summary.csv's ``onset_s, onset_cause, regime_before_us,
regime_after_us, server_gc_*`` and ``server_gc`` columns, and ``events/<step>.csv``.
"""
import glob
import os

import numpy as np
import pandas as pd

from bench.output.formatting import ms

COLUMNS = ["t_ns", "kind", "duration_ns", "detail"]
SHOWN_PAUSE_NS = 1_000_000   # the timeline marks pauses at least this long


def events(run_dir):
    """Every step's events (``events/*.csv``) in one frame, with the step's file name."""
    frames = []
    for path in sorted(glob.glob(os.path.join(str(run_dir), "events", "*.csv"))):
        try:
            frame = pd.read_csv(path, dtype={"detail": str})
        except (pd.errors.EmptyDataError, pd.errors.ParserError, OSError):
            continue
        if list(frame.columns[:4]) == COLUMNS:
            frames.append(frame.assign(step=os.path.basename(path)[:-4]))
    if not frames:
        return pd.DataFrame(columns=COLUMNS + ["step"])
    return pd.concat(frames, ignore_index=True)


def _where(row):
    """``variant · scenario load point #repeat`` with the step's varied settings."""
    extra = "".join(f" [{label} {row[col]}]" for col, label in
                    (("server_gc", "gc"),) if isinstance(row.get(col), str) and row[col])
    return f"{row['variant']} · {row['scenario']} {row['load_point']} #{row['repeat']}{extra}"


def cause_lines(repeats):
    """One sentence per step whose latency changed regime."""
    if "onset_s" not in repeats:
        return []
    found = repeats[pd.to_numeric(repeats["onset_s"], errors="coerce").notna()]
    lines = []
    for _, r in found.sort_values(["variant", "scenario", "load_point", "repeat"]).iterrows():
        change = "regime" if r["regime_after_us"] > r["regime_before_us"] else "recovery"
        lines.append(f"{_where(r)}: {ms(r['regime_after_us'])} ms {change} from "
                     f"{r['onset_s']:.3f} s (before: {ms(r['regime_before_us'])} ms), "
                     f"coinciding with: {r['onset_cause']}")
    return lines


def gc_table(aggregates):
    """``--server-gc`` settings side by side: p50, p99, GC time and the regime count."""
    if "server_gc" not in aggregates or aggregates["server_gc"].astype(str).nunique() < 2:
        return []
    rows = []
    for _, r in aggregates.sort_values(["variant", "scenario", "load_point",
                                        "server_gc"]).iterrows():
        rows.append([r["variant"], r["scenario"], r["load_point"],
                     r["server_gc"] + (" (diagnostic)" if r["server_gc"] == "off" else ""),
                     ms(r["p50_us"]), ms(r["p99_us"]), _fmt(r.get("server_gc_ms")),
                     _fmt(r.get("server_gc_max_ms")), "noisy" if r.get("noisy") else ""])
    return [("h", 3, "The server's garbage collector: settings side by side"),
            ("p", "`--server-gc`: default = CPython's collector as configured; freeze = "
                  "`gc.freeze()` once the app is built; off = `gc.disable()`, a diagnostic "
                  "(no cyclic garbage is ever freed). GC ms: collection time per step in "
                  "the measured window (mean over repeats); max: the longest pause."),
            ("table", ["variant", "scenario", "load point", "server GC", "p50 ms", "p99 ms",
                       "GC ms", "max pause ms", ""], rows)]


def _fmt(value):
    try:
        v = float(value)
    except (TypeError, ValueError):
        return "–"
    return "–" if not np.isfinite(v) else f"{v:.1f}"


def blocks(data):
    """The causes section (none when no step recorded an onset or varied the GC)."""
    lines = cause_lines(data.repeats)
    table = gc_table(data.aggregates)
    if not lines and not table:
        return []
    out = [("h", 2, "What threw a step into its regime"),
           ("p", "Each step's latencies in order of intended send are tested for one change "
                 "point (Pettitt's rank test, p < 1e-6, medians or upper quartiles at least "
                 "2× apart); the cause is what overlapped the 50 ms before it: a server GC "
                 "pause, a blocked server loop, a driver stall or a harness sampler tick "
                 "(`--server-events on` records the server's side into `events/`).")]
    out += [("p", line) for line in lines] or [("p", "No step changed regime.")]
    return out + table
