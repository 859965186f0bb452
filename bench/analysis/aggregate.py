"""Aggregate rows (written with ``repeat = all``): repeats merged, with intervals over repeats.

Percentiles are never averaged: the aggregate's percentiles come from the merged histogram
(unanswered messages at the deadline, so censoring carries over). Failed or empty repeats are
excluded and counted in ``repeats_failed``. The 95 % intervals and ``unstable`` are defined in
bench/analysis/stats.py.
"""
import numpy as np

from bench.analysis import columns, stats

KEY = columns.named("key")
COUNTS = ["attempted", "ok", "errors", "timeouts"]  # summed over every repeat, failed ones too
STATIC = columns.named("static") + KEY
SUMMED = [c for c in columns.named("sum", "int") if c not in COUNTS]  # over measured repeats
SUMMED_FLOATS = columns.named("sum", "float")
MEANS = columns.named("mean")
MAXES = columns.named("max")
ALLS, ANYS = columns.named("all"), columns.named("any")
SINGLES, UNIONS = columns.named("single"), columns.named("union")
MEDIANS = columns.named("median")

def key_of(row):
    return tuple(str(row.get(k) if row.get(k) == row.get(k) else "") for k in KEY)


def measured(row):
    return isinstance(row.get("hdr"), str) and bool(row["hdr"]) and row.get("attempted", 0) > 0


def aggregate(rows):
    """One aggregate row per key with ≥ 1 repeat (rows in first-seen order)."""
    groups = {}
    for r in rows:
        if not r.get("aggregate"):
            groups.setdefault(key_of(r), []).append(r)
    return [merge_repeats(reps) for reps in groups.values()]


def merge_repeats(reps):
    good = [r for r in reps if measured(r)]
    first = reps[0]
    merged = stats.merge(r["hdr"] for r in good)
    service = stats.merge(r.get("hdr_service", "") for r in good)
    attempted = int(sum(r["attempted"] for r in good))
    unanswered = attempted - int(sum(r["ok"] for r in good))
    deadline_us = float(first.get("deadline_ms") or 5000.0) * 1000.0
    per_repeat = [stats.summary(stats.decode(r["hdr"]), r["attempted"] - r["ok"], deadline_us)
                  for r in good]  # the same rules (censoring, min count) as every row
    p50s = [s["p50_us"] for s in per_repeat]
    p99s = [s["p99_us"] for s in per_repeat]
    p50_lo, p50_hi, method = stats.interval(p50s)
    p99_lo, p99_hi, _ = stats.interval(p99s)
    row = {k: first[k] for k in STATIC if k in first}
    row.update({k: int(sum(r.get(k, 0) or 0 for r in good)) for k in SUMMED if k in first})
    row.update({k: round(sum(_values(good, k)), 1) if _values(good, k) else float("nan")
                for k in SUMMED_FLOATS if k in first})
    row.update({k: _mean(good, k) for k in MEANS if k in first})
    row.update({k: _max(good, k) for k in MAXES if k in first})
    row.update({k: all(bool(r[k]) for r in good) for k in ALLS if k in first and good})
    row.update({k: any(bool(r[k]) for r in good) for k in ANYS if k in first and good})
    row.update({k: (good[0][k] if len(good) == 1 else float("nan")) for k in SINGLES
                if k in first})
    row.update({k: union(r.get(k) for r in reps) for k in UNIONS if k in first})
    row.update({k: _median(good, k) for k in MEDIANS if k in first})
    if isinstance(first.get("pushed"), str):  # per-name counts added over repeats
        row["pushed"] = _pushed_sum(good)
    notes = sorted({r["note"] for r in reps if isinstance(r.get("note"), str) and r["note"]})
    row.update(
        variant=first["variant"], scenario=first["scenario"], load_point=first["load_point"],
        repeat=0, aggregate=True,
        transport="/".join(sorted({r["transport"] for r in reps if r.get("transport")})),
        **{k: int(sum(r[k] for r in reps)) for k in COUNTS},
        **stats.summary(merged, unanswered, deadline_us),
        service_p50_us=stats.summary(service)["p50_us"],
        service_p99_us=stats.summary(service)["p99_us"],
        driver_bound=any(bool(r["driver_bound"]) for r in reps),
        valid=bool(good) and all(bool(r["valid"]) for r in reps),
        noisy=any(bool(r.get("noisy")) for r in reps),
        note=" | ".join(notes)[:500],
        hdr=stats.encode(merged), hdr_service=stats.encode(service),
        p50_ci_low=p50_lo, p50_ci_high=p50_hi, p99_ci_low=p99_lo, p99_ci_high=p99_hi,
        ci_method=method, unstable=stats.unstable(p50s, p99s),
        p50_cv=_round(stats.cv(p50s), 4), p99_cv=_round(stats.cv(p99s), 4),
        repeats=len(reps), repeats_failed=len(reps) - len(good),
    )
    return row


def union(cells):
    """Codes of several ``;``-joined cells, each once, in first-seen order."""
    codes = [c for cell in cells if isinstance(cell, str) for c in cell.split(";") if c]
    return ";".join(dict.fromkeys(codes))


def _values(rows, key):
    out = []
    for r in rows:
        try:
            v = float(r.get(key))
        except (TypeError, ValueError):
            continue
        if np.isfinite(v):
            out.append(v)
    return out


def _mean(rows, key):
    v = _values(rows, key)
    return round(float(np.mean(v)), 3) if v else float("nan")


def _max(rows, key):
    v = _values(rows, key)
    return round(float(np.max(v)), 1) if v else float("nan")


def _median(rows, key):
    """The median repeat's value (the lower middle one of an even count: never an average)."""
    v = _values(rows, key)
    return round(float(np.percentile(v, 50, method="lower")), 1) if v else float("nan")


def _round(x, digits):
    return round(x, digits) if np.isfinite(x) else float("nan")


def _pushed_sum(rows):
    """``pushed`` cells (``name=count;…``) of several rows added name by name."""
    total = {}
    for r in rows:
        for part in filter(None, str(r.get("pushed") or "").split(";")):
            name, _, n = part.rpartition("=")
            total[name] = total.get(name, 0) + int(n)
    return ";".join(f"{name}={n}" for name, n in sorted(total.items()))
