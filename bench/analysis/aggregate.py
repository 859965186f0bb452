"""Aggregate rows (``repeat = all``): merged HDR histograms and bootstrap CIs over repeats.

Percentiles are never averaged: the aggregate's percentiles come from the merged histogram.
The 95 % interval resamples whole repeats (the unit that varies between runs); for up to 6
repeats every resample multiset is enumerated with its exact multinomial weight, so the
interval is deterministic.
"""
import itertools
import math
from collections import Counter

import numpy as np

from bench.analysis import recorder
EXACT_LIMIT = 6
UNSTABLE_CV = 0.10
COUNTS = ["attempted", "ok", "errors", "timeouts"]
STATIC = ["target_rate", "connections", "duration_s", "client", "mix", "recipient",
          "payload_bytes", "binary"]
SUMMED = ["failed_tcp", "failed_upgrade", "failed_open", "failed_connect", "broadcasts"]


def _multisets(n, rng, draws=2000):
    """(indices, weight) of bootstrap resamples of n repeats."""
    if n <= EXACT_LIMIT:
        for combo in itertools.combinations_with_replacement(range(n), n):
            counts = Counter(combo).values()
            weight = math.factorial(n) / math.prod(math.factorial(c) for c in counts)
            yield combo, weight / n ** n
    else:
        for _ in range(draws):
            yield tuple(sorted(rng.integers(0, n, n))), 1.0 / draws


def _weighted_quantile(values, weights, q):
    order = np.argsort(values)
    v, w = np.asarray(values)[order], np.asarray(weights)[order]
    cum = np.cumsum(w) / np.sum(w)
    return float(v[min(np.searchsorted(cum, q), len(v) - 1)])


def bootstrap_ci(histograms, percentile, seed=0):
    """95 % interval of ``percentile`` of the merged histogram, resampling repeats."""
    if len(histograms) < 2:
        return float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    cache, values, weights = {}, [], []
    for combo, weight in _multisets(len(histograms), rng):
        if combo not in cache:
            merged = recorder.new_histogram()
            for i in combo:
                merged.add(histograms[i])
            cache[combo] = float(merged.get_value_at_percentile(percentile))
        values.append(cache[combo])
        weights.append(weight)
    return _weighted_quantile(values, weights, 0.025), _weighted_quantile(values, weights, 0.975)


def aggregate(rows):
    """One ``repeat = all`` row per (variant, scenario, load_point) with ≥ 1 measured repeat."""
    groups = {}
    for r in rows:
        if str(r["repeat"]) != "all":
            key = (r["variant"], r["scenario"], r["load_point"], r.get("recipient") or "")
            groups.setdefault(key, []).append(r)
    out = []
    for (variant, scenario, load_point, _), reps in groups.items():
        measured = [r for r in reps if isinstance(r.get("hdr"), str) and r["hdr"]]
        hists = [recorder.decode(r["hdr"].encode()) for r in measured]
        merged = recorder.merge([r["hdr"] for r in measured])
        service = recorder.merge([r.get("hdr_service", "") for r in measured])
        service_stats = recorder.stats(service)
        p50s = np.array([r["p50_us"] for r in measured], dtype=float)
        cv = float(np.std(p50s, ddof=1) / np.mean(p50s)) if len(p50s) > 1 else float("nan")
        p50_lo, p50_hi = bootstrap_ci(hists, 50)
        p99_lo, p99_hi = bootstrap_ci(hists, 99)
        transports = sorted({r["transport"] for r in reps if r["transport"]})
        notes = sorted({r["note"] for r in reps if r.get("note")})
        row = {k: reps[0][k] for k in STATIC if k in reps[0]}
        row.update({k: int(sum(r[k] for r in measured)) for k in SUMMED if k in reps[0]})
        if "reach" in reps[0]:
            row["reach"] = round(_mean(measured, "reach"), 6)
        row.update(
            variant=variant, scenario=scenario, load_point=load_point, repeat="all",
            transport="/".join(transports),
            achieved_rate=round(float(np.mean([r["achieved_rate"] for r in measured])), 1)
            if measured else float("nan"),
            **{k: int(sum(r[k] for r in reps)) for k in COUNTS},
            **recorder.stats(merged),
            service_p50_us=service_stats["p50_us"], service_p99_us=service_stats["p99_us"],
            server_cpu_pct=_mean(measured, "server_cpu_pct"),
            server_rss_mb=_max(measured, "server_rss_mb"),
            driver_cpu_pct=_mean(measured, "driver_cpu_pct"),
            lag_p50_us=_mean(measured, "lag_p50_us"), lag_p99_us=_max(measured, "lag_p99_us"),
            driver_bound=any(bool(r["driver_bound"]) for r in reps),
            valid=bool(reps) and all(bool(r["valid"]) for r in reps),
            note=" | ".join(notes)[:500],
            hdr=merged.encode().decode() if measured else "",
            hdr_service=service.encode().decode() if measured else "",
            p50_ci_low=p50_lo, p50_ci_high=p50_hi, p99_ci_low=p99_lo, p99_ci_high=p99_hi,
            unstable=bool(cv > UNSTABLE_CV) if not math.isnan(cv) else False,
            p50_cv=round(cv, 4) if not math.isnan(cv) else float("nan"),
            repeats=len(reps),
        )
        out.append(row)
    return out


def _mean(rows, key):
    vals = [float(r[key]) for r in rows if r.get(key) is not None and not _nan(r[key])]
    return round(float(np.mean(vals)), 1) if vals else float("nan")


def _max(rows, key):
    vals = [float(r[key]) for r in rows if r.get(key) is not None and not _nan(r[key])]
    return round(float(np.max(vals)), 1) if vals else float("nan")


def _nan(x):
    try:
        return math.isnan(float(x))
    except (TypeError, ValueError):
        return True
