"""A results folder read once into typed frames: what the report, charts, compare and notebooks use.

``read(run_dir)`` parses ``meta.json``, ``summary.csv`` (split into per-repeat rows and
aggregate rows, with real dtypes: bools, ints, floats with NaN for empty cells, ``repeat`` an
int and ``is_aggregate`` a bool; the CSV's ``all`` becomes repeat 0), ``knees.csv``,
``resources.csv``, ``capacity.csv`` and the listings of ``hlog/`` and ``profiles/``; samples are
read on first use. Columns a folder lacks (older schema) are added empty, so a missing column is
an absent feature, never an error. Two derived columns serve every consumer:

* ``load_value``: the load point as a number (rate, connections, payload bytes), taken from the
  numeric columns the run wrote, so nothing parses a label to order or plot load points;
* ``series``: the variant, plus client and transport where the run measured several of them
  side by side: the name a chart or table gives one line of measurements.

Aggregate intervals come from the CSV; a folder written before ``ci_method`` existed gets its
p50/p99 intervals recomputed from its repeats with ``stats.interval``, so old and new runs are
judged by one method.
"""
import json
import os
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from bench.analysis import columns, stats
from bench.errors import UsageError
from bench.plan.scenarios import SCENARIOS

KEY = ("variant", "scenario", "load_point")
# Columns that split a row's key further where a run varies them (in this order).
KEY_EXTRAS = ("client", "transport", "server_nodelay", "profiled", "server_gc",
              "server_events", "recipient", "mix")
SPLITS = ("recipient", "mix")               # scenario columns that split a load point's panel
# dtypes from the schema (bench/analysis/columns.py); ``repeat`` is parsed on its own
BOOLS = columns.named(type_="bool")
INTS = columns.named(type_="int")
TEXT = tuple(c for c in columns.named(type_="text") if c != "repeat")
FLOATS = columns.named(type_="float")
# Which numeric column holds a load point's number, by the scenario record's load unit
# (scenarios the table does not know fall back to the rate, then connections).
UNIT_COLUMN = {"connections": "connections", "members": "connections", "size": "payload_bytes",
               "msg/s": "target_rate", "connects/s": "target_rate"}
LOAD_COLUMN = {s.name: UNIT_COLUMN.get(s.load_unit) for s in SCENARIOS.values()}
KNEE_TEXT = ("variant", "bound", "slo", "reason", "client", "transport", "attempts")


# What a run written before reason codes put in its notes (their wording is frozen with those
# runs): the codes it meant. Only runs without a ``reasons`` column are read this way.
LEGACY_NOTES = (("Nagle signature", "nagle:"), ("although the server sets TCP_NODELAY", "cluster:"),
                ("driver send lag", "driver_bound:send_lag"),
                ("driver receive wait", "driver_bound:recv_wait"),
                ("driver loop busy", "driver_bound:busy"))


def legacy_reasons(note):
    """The reason codes an older run's ``note`` stands for (see ``LEGACY_NOTES``)."""
    note = note if isinstance(note, str) else ""
    codes = []
    for phrase, code in LEGACY_NOTES:
        if phrase in note:
            if code.endswith(":"):
                code += "send_interval" if "send interval" in note else "delayed_ack"
            codes.append(code)
    return ";".join(codes)


def truthy(value):
    """A CSV cell read as a flag: true/1/yes/on in any case (what pandas leaves as text)."""
    return str(value).strip().lower() in ("true", "1", "yes", "on")


def _typed(frame, bools=BOOLS, ints=INTS, text=TEXT, floats=FLOATS):
    """``frame`` with every known column in its dtype; absent ones added empty."""
    frame = frame.copy()
    for col in bools:
        frame[col] = frame[col].map(truthy).astype(bool) if col in frame else False
    for col in text:
        frame[col] = frame[col].fillna("").astype(str) if col in frame else ""
    for col in ints:
        if col in frame:
            frame[col] = pd.to_numeric(frame[col], errors="coerce").fillna(0).astype(np.int64)
    for col in floats:
        frame[col] = pd.to_numeric(frame[col], errors="coerce").astype(float) if col in frame \
            else np.nan
    for col in set(frame.columns) - set(bools) - set(ints) - set(text) - set(floats):
        numbers = pd.to_numeric(frame[col], errors="coerce")
        if numbers.notna().sum() == frame[col].notna().sum():      # every filled cell a number
            frame[col] = numbers.astype(float)
    return frame


def _csv(path, **kw):
    if not os.path.exists(path):
        return pd.DataFrame()
    try:
        return pd.read_csv(path, **kw)
    except pd.errors.EmptyDataError:
        return pd.DataFrame()


def _listing(path):
    return sorted(os.listdir(path)) if os.path.isdir(path) else []


def has_data(row):
    """Whether a summary row measured anything (an encoded histogram and ≥ 1 reply)."""
    return bool(row["hdr"]) and row["ok"] > 0


def key_columns(*frames):
    """The row key shared by ``frames``: variant, scenario, load point and every key extra
    that at least one of them actually varies or fills."""
    extras = [c for c in KEY_EXTRAS
              if any(c in f and f[c].astype(str).replace("False", "").ne("").any()
                     for f in frames)]
    return [*KEY, *extras]


def _load_value(row):
    if row["scenario"] in LOAD_COLUMN and LOAD_COLUMN[row["scenario"]] is None:
        return np.nan                                   # categorical (blocking's mix)
    for col in (LOAD_COLUMN.get(row["scenario"]), "target_rate", "connections", "payload_bytes"):
        if col and col in row and pd.notna(row[col]) and row[col] != 0:
            return float(row[col])
    return np.nan


def _series(summary):
    """variant, plus ' · client · transport' parts the run measured side by side."""
    parts = [c for c in ("client", "transport")
             if summary.groupby("variant")[c].nunique().gt(1).any()]
    if not parts:
        return summary["variant"]
    return summary.apply(lambda r: " · ".join([r["variant"], *[r[c] or "none" for c in parts]]),
                         axis=1)


def _recompute_intervals(repeats, aggregates, key):
    """p50/p99 intervals of aggregates from their repeats, with stats.interval (old schema)."""
    measured = repeats[repeats.apply(has_data, axis=1)] if len(repeats) else repeats
    groups = {k: g for k, g in measured.groupby(key, sort=False)} if len(measured) else {}
    aggregates = aggregates.copy()
    for i, row in aggregates.iterrows():
        g = groups.get(tuple(row[key]))
        for metric in ("p50", "p99"):
            values = [] if g is None else g[f"{metric}_us"].tolist()
            low, high, method = stats.interval(values)
            aggregates.at[i, f"{metric}_ci_low"], aggregates.at[i, f"{metric}_ci_high"] = low, high
            aggregates.at[i, "ci_method"] = method
        if g is not None:
            aggregates.at[i, "p99_cv"] = stats.cv(g["p99_us"].tolist())
    return aggregates


@dataclass
class Results:
    """One results folder, parsed once; ``samples`` is read on first use (it can be large)."""
    run_dir: str
    meta: dict
    repeats: pd.DataFrame
    aggregates: pd.DataFrame
    knees: pd.DataFrame
    resources: pd.DataFrame
    capacity: pd.DataFrame
    hlogs: list
    profiles: list
    _samples: pd.DataFrame = field(default=None, repr=False)

    @property
    def name(self):
        return os.path.basename(os.path.abspath(self.run_dir))

    @property
    def summary(self):
        return pd.concat([self.repeats, self.aggregates], ignore_index=True)

    @property
    def samples(self):
        if self._samples is None:
            frame = _csv(os.path.join(self.run_dir, "samples.csv.gz"))
            if len(frame):
                frame["repeat"] = pd.to_numeric(frame["repeat"], errors="coerce") \
                    .fillna(0).astype(np.int64)
                for col in ("transport", "load_point", "outcome", "phase"):
                    if col in frame:
                        frame[col] = frame[col].fillna("").astype(str)
            self._samples = frame
        return self._samples

    def key(self):
        """This run's row key (see ``key_columns``)."""
        return key_columns(self.aggregates)

    def scenarios(self):
        return list(dict.fromkeys(self.aggregates["scenario"]))

    def footer(self):
        host = self.meta.get("host", {})
        date = str(self.meta.get("started_utc", ""))[:16].replace("T", " ")
        return (f"{host.get('cpu_model', 'unknown CPU')}, {host.get('cores', '?')} cores · "
                f"{date} UTC · {self.name}")


def read(run_dir):
    """The results folder at ``run_dir``; UsageError (one line) if it is not one."""
    run_dir = str(run_dir)
    if not os.path.isdir(run_dir):
        raise UsageError(f"no such results folder: {run_dir}")
    path = os.path.join(run_dir, "summary.csv")
    if not os.path.exists(path):
        raise UsageError(f"{run_dir} has no summary.csv: not a results folder")
    try:
        raw = pd.read_csv(path, dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as e:
        raise UsageError(f"{path} is not a readable summary: {str(e).splitlines()[0]}") from None
    missing = [c for c in ("variant", "scenario", "load_point", "repeat") if c not in raw]
    if missing:
        raise UsageError(f"{path} lacks column(s) {', '.join(missing)}: not a results summary")
    raw = raw.replace("", np.nan)
    is_aggregate = raw["repeat"].astype(str).str.strip().str.lower().eq("all")
    legacy = "reasons" not in raw
    summary = _typed(raw)
    if legacy:  # a run written before reason codes: its notes upgraded once, here
        summary["reasons"] = summary["note"].map(legacy_reasons)
    summary["is_aggregate"] = is_aggregate.to_numpy()
    summary["repeat"] = pd.to_numeric(raw["repeat"].where(~is_aggregate, "0"),
                                      errors="coerce").fillna(0).astype(np.int64)
    summary["load_value"] = summary.apply(_load_value, axis=1) if len(summary) else np.nan
    summary["series"] = _series(summary) if len(summary) else ""
    try:
        with open(os.path.join(run_dir, "meta.json")) as f:
            meta = json.load(f)
    except (OSError, ValueError):
        meta = {}
    repeats = summary[~summary["is_aggregate"]].reset_index(drop=True)
    aggregates = summary[summary["is_aggregate"]].reset_index(drop=True)
    if "ci_method" not in raw and len(aggregates):
        aggregates = _recompute_intervals(repeats, aggregates, key_columns(summary))
    knees = _csv(os.path.join(run_dir, "knees.csv"))
    if len(knees):
        knees = _typed(knees, bools=(), ints=(), text=KNEE_TEXT,
                       floats=("knee_msg_s", "next_msg_s"))
        knees["repeat"] = pd.to_numeric(knees.get("repeat"), errors="coerce")
    resources = _csv(os.path.join(run_dir, "resources.csv"))
    capacity = _csv(os.path.join(run_dir, "capacity.csv"))
    return Results(run_dir, meta, repeats, aggregates, knees, resources, capacity,
                   _listing(os.path.join(run_dir, "hlog")),
                   _listing(os.path.join(run_dir, "profiles")))
