"""Runs that last until they are precise: ``--precision METRIC=PCT`` and ``--max-duration S``.

A step with a precision target is measured, and when its per-step interval of the metric
(bench/analysis/selfcheck.py: order statistics of its own samples, widened for correlation)
is not within ±PCT of the metric's value, it is measured again for longer: an interval's
width shrinks as 1/√n, so the next window is the one that width predicts (× 1.2, at least
twice the last one), capped at ``--max-duration`` (a limit on each window: warm-ups and the
shorter windows before it come on top). The row kept is the last attempt's, with
``precision_met`` saying whether the interval held; earlier attempts keep their samples,
marked superseded. An invalid step is not measured again, and an attempt that fails leaves
the one before it standing.
"""
import math
import re

from bench.errors import UsageError

METRICS = ("p50", "p99")          # the percentiles that carry a per-step interval
MAX_DURATION_S = 60.0
GROWTH_MARGIN, MIN_GROWTH = 1.2, 2.0


def parse(texts):
    """``["p99=5%", …]`` → {"p99": 0.05, …}; anything else is one clear UsageError."""
    targets = {}
    for text in texts or ():
        found = re.fullmatch(r"\s*(p\d+)\s*=\s*([0-9]*\.?[0-9]+)\s*%\s*", str(text))
        if not found or found[1] not in METRICS:
            raise UsageError(f"--precision takes METRIC=PCT with METRIC one of "
                             f"{', '.join(METRICS)} (e.g. p99=5%), got {text!r}")
        pct = float(found[2])
        if not 0 < pct < 100:
            raise UsageError(f"--precision {found[1]} must be within (0, 100) %, got {pct:g}")
        targets[found[1]] = pct / 100.0
    return targets


def target_text(targets):
    """The ``precision_target`` cell: ``p99=5%;p50=2%``."""
    return ";".join(f"{m}={100 * p:g}%" for m, p in targets.items())


def relative_halfwidth(row, metric):
    """The larger distance from the value to either end of its per-step interval, as a
    fraction of the value; inf when the row has no such interval (too few samples)."""
    value = row.get(f"{metric}_us")
    low, high = row.get(f"{metric}_step_ci_low"), row.get(f"{metric}_step_ci_high")
    if not all(isinstance(v, (int, float)) and math.isfinite(v) for v in (value, low, high)) \
            or value <= 0:
        return math.inf
    return max(value - low, high - value) / value


def unmet(row, targets):
    """The metrics of ``targets`` whose interval is still wider than asked."""
    return [m for m, pct in targets.items() if relative_halfwidth(row, m) > pct]


def next_duration(row, targets, duration, max_duration):
    """How long the next attempt measures: the window the widest shortfall predicts (width
    ∝ 1/√n), × 1.2 and at least twice the last, capped at ``max_duration``; None when the
    last attempt already measured for ``max_duration``."""
    if duration >= max_duration - 1e-9:
        return None
    ratios = [relative_halfwidth(row, m) / targets[m] for m in unmet(row, targets)]
    growth = max([MIN_GROWTH] + [GROWTH_MARGIN * r * r for r in ratios if math.isfinite(r)])
    return round(min(duration * growth, max_duration), 3)


def judge(row, targets):
    """Mark ``row`` with ``precision_target``/``precision_met`` and the reason codes and
    sentence of a target missed (the row stays valid: its interval says how wide it is)."""
    missed = unmet(row, targets)
    row["precision_target"] = target_text(targets)
    row["precision_met"] = not missed
    if missed:
        codes = [c for c in str(row.get("reasons") or "").split(";") if c]
        row["reasons"] = ";".join(codes + [f"precision_unmet:{m}" for m in missed])
        widths = ", ".join(f"{m} ±{100 * relative_halfwidth(row, m):.1f} % > "
                           f"±{100 * targets[m]:g} %" for m in missed)
        row["note"] = "; ".join(filter(None, [row.get("note"), f"imprecise after "
                                              f"{row.get('duration_s', 0):g} s: {widths}"]))
    return row
