"""A step's server events on the harness side: the environment that turns recording on,
the step's window gathered into ``events/<step>.csv``, and the row's cause columns.

The servers write ``<folder>/<pid>.csv`` (servers/events.py: ``t_ns, kind, duration_ns,
detail`` on the driver's monotonic clock); the harness adds its own sampler ticks, keeps the
rows from the step's first intended send to the end of the load, and fills
``server_gc_count, server_gc_ms, server_gc_max_ms, server_blocked_ms`` (the measured window)
and ``onset_s, onset_cause, regime_before_us, regime_after_us`` (bench/analysis/onsets.py).
"""
import glob
import os
import shutil
import time

import numpy as np
import pandas as pd

from bench import kinds
from bench.analysis import onsets
from bench.analysis.recorder import OK, window

COLUMNS = ["t_ns", "kind", "duration_ns", "detail"]
FLUSH_WAIT_S = 0.15     # the servers append every 0.1 s (servers/events.py FLUSH_S)


def environment(step, work, part):
    """(variables for the servers' environment, the folder they write to or None)."""
    env = {}
    if step.server_gc != "default":
        env["BENCH_SERVER_GC"] = step.server_gc
    folder = None
    if step.server_events:
        folder = os.path.join(work, "events", f"{step.index:05d}-{part:02d}")
        shutil.rmtree(folder, ignore_errors=True)
        os.makedirs(folder)
        env["BENCH_SERVER_EVENTS"] = folder
    return env, folder


def read(folder, ticks, start_ns, end_ns):
    """The servers' events plus the sampler ``ticks`` ((t_ns, duration_ns) pairs) that
    overlap [start_ns, end_ns], in time order; waits for the servers' last flush."""
    frames = [pd.DataFrame([(t, "sampler", d, "harness resource sampler")
                            for t, d in ticks], columns=COLUMNS)]
    if folder:
        wait = end_ns / 1e9 + FLUSH_WAIT_S - time.monotonic()
        if wait > 0:
            time.sleep(min(wait, FLUSH_WAIT_S))
        for path in sorted(glob.glob(os.path.join(folder, "*.csv"))):
            try:
                frames.append(pd.read_csv(path, names=COLUMNS, header=None,
                                          dtype={"detail": str}))
            except (pd.errors.EmptyDataError, OSError):
                continue
    frame = pd.concat(frames, ignore_index=True)
    frame["t_ns"] = frame["t_ns"].astype(np.int64)
    frame["duration_ns"] = frame["duration_ns"].astype(np.int64)
    keep = (frame["t_ns"] + frame["duration_ns"] >= start_ns) & (frame["t_ns"] <= end_ns)
    return frame[keep].sort_values("t_ns", kind="stable").reset_index(drop=True)


def totals(events, start_ns, end_ns, recorded):
    """The row's GC and blocked-loop columns over [start_ns, end_ns) (NaN when not
    recorded)."""
    if not recorded:
        return dict(server_gc_count=float("nan"), server_gc_ms=float("nan"),
                    server_gc_max_ms=float("nan"), server_blocked_ms=float("nan"))
    inside = events[(events["t_ns"] >= start_ns) & (events["t_ns"] < end_ns)]
    gc = inside[inside["kind"] == "gc"]["duration_ns"]
    blocked = inside[inside["kind"] == "blocked"]["duration_ns"]
    return dict(server_gc_count=int(gc.size), server_gc_ms=round(gc.sum() / 1e6, 3),
                server_gc_max_ms=round(gc.max() / 1e6, 3) if gc.size else 0.0,
                server_blocked_ms=round(blocked.sum() / 1e6, 3))


def onset_columns(arrays, events, recorded):
    """``onset_s, onset_cause, regime_before_us, regime_after_us`` of one step's messages."""
    ok = arrays["outcome"] == OK
    latency = np.where(ok, (arrays["received"] - arrays["intended"]) / 1000.0, np.nan)
    found = onsets.find(arrays["intended"], latency)
    if found is None:
        return dict(onset_s=float("nan"), onset_cause=onsets.NONE,
                    regime_before_us=float("nan"), regime_after_us=float("nan"))
    return dict(onset_s=found.onset_s, regime_before_us=found.before_us,
                regime_after_us=found.after_us,
                onset_cause=onsets.cause(found, events, arrays["intended"], arrays["sent"],
                                         recorded))


def finish(step, load, folder, ticks):
    """The step's cause columns and its events (sampler ticks at least) for ``events/``;
    ({}, None) for a step of a kind without a latency series."""
    if not kinds.get(step.kind).latency_series or not len(load.arrays["intended"]):
        return {}, None
    intended = load.arrays["intended"]
    first, last = int(intended.min()), int(np.max(load.arrays["received"]))
    events = read(folder, ticks, first, max(last, int(intended.max())))
    start, end = window(step, load.t0)
    return dict(totals(events, start, end, folder is not None),
                **onset_columns(load.arrays, events, folder is not None)), events[COLUMNS]
