"""CI gates: ``--fail-if`` expressions parsed up front and judged on a run's aggregate rows.

An expression is ``[VARIANT:SCENARIO:]METRIC OP VALUE[UNIT]``, e.g. ``p99<50ms``,
``socketio-run-gevent:rate:p50<=2ms``, ``ok>=99.9%``, ``achieved>=95%``; ``*`` matches any
variant or scenario. Every matching aggregate row (``repeat`` = all) is judged, one
``Judgement`` per threshold × row. A gate is never passed by default:

* a threshold that matches no row fails ("no row matched"): a misspelt scope must not turn CI
  green;
* a percentile the min-count rule left empty fails with that reason (too few samples at or
  beyond it), as does a row the harness marked invalid (its note says why);
* the ok fraction counts timeouts and errors against the row (``ok / attempted``), and
  ``achieved`` is ``achieved_rate / target_rate``: it applies to rows with a target rate only
  (closed-loop rows are not in its scope).
"""
import math
import operator
import re
from dataclasses import dataclass

from bench.errors import UsageError

PERCENTILES = ("p50", "p90", "p99", "p999", "p9999", "max", "mean")
FRACTIONS = ("ok", "achieved")
COUNTS = ("errors", "timeouts")
TIME_UNITS = {"us": 1.0, "µs": 1.0, "ms": 1000.0, "s": 1_000_000.0}
OPERATORS = {"<=": operator.le, ">=": operator.ge, "<": operator.lt, ">": operator.gt}
INTERVAL = {"p50": ("p50_ci_low", "p50_ci_high"), "p99": ("p99_ci_low", "p99_ci_high")}
EXPRESSION = re.compile(r"^\s*([a-z0-9]+)\s*(<=|>=|<|>)\s*([0-9]*\.?[0-9]+)\s*(µs|us|ms|s|%)?\s*$")


@dataclass(frozen=True)
class Threshold:
    """One parsed ``--fail-if``: scope, metric, comparison and the bound in the row's unit."""
    text: str
    variant: str
    scenario: str
    metric: str
    op: str
    bound: float       # µs for latencies, a fraction for ok/achieved, a count otherwise
    unit: str

    def matches(self, row):
        """Whether ``row`` (an aggregate row) is in this threshold's scope and its metric
        means something there (``achieved`` only where the row had a target rate)."""
        if self.metric == "achieved" and not _number(row.get("target_rate")) > 0:
            return False
        return self.variant in ("*", row.get("variant")) and \
            self.scenario in ("*", row.get("scenario"))

    def shown(self, value):
        """``value`` (in the row's unit) written in the unit the user wrote the bound in."""
        if self.metric in FRACTIONS:
            return f"{100 * value:.4g}%"
        if self.metric in PERCENTILES:
            return f"{value / TIME_UNITS[self.unit]:.4g} {self.unit}"
        return f"{value:g}"


@dataclass(frozen=True)
class Judgement:
    """A threshold judged on one row (or on none: ``row_name`` says so)."""
    threshold: Threshold
    row_name: str
    passed: bool
    value: float
    message: str


def parse(text):
    """``text`` as a Threshold; UsageError (one line, exit 2) when it cannot be read."""
    parts = text.split(":")
    if len(parts) == 3:
        variant, scenario, expr = (p.strip() for p in parts)
    elif len(parts) == 1:
        variant, scenario, expr = "*", "*", parts[0]
    else:
        raise UsageError(f"--fail-if {text!r}: write METRIC OP VALUE, optionally scoped "
                         "VARIANT:SCENARIO:METRIC OP VALUE")
    if not variant or not scenario:
        raise UsageError(f"--fail-if {text!r}: an empty scope (use * for any)")
    m = EXPRESSION.match(expr)
    if not m:
        raise UsageError(f"--fail-if {text!r}: cannot read {expr.strip()!r} (e.g. p99<50ms, "
                         "ok>=99.9%, achieved>=95%, errors<=0)")
    metric, op, number, unit = m.group(1), m.group(2), float(m.group(3)), m.group(4) or ""
    known = PERCENTILES + FRACTIONS + COUNTS
    if metric not in known:
        raise UsageError(f"--fail-if {text!r}: unknown metric {metric!r} "
                         f"(one of {', '.join(known)})")
    if metric in PERCENTILES:
        if unit not in TIME_UNITS:
            raise UsageError(f"--fail-if {text!r}: {metric} is a latency: give its unit "
                             "(us, ms or s)")
        bound = number * TIME_UNITS[unit]
    elif metric in FRACTIONS:
        if unit != "%":
            raise UsageError(f"--fail-if {text!r}: {metric} is a fraction: give it in %")
        if number > 100:
            raise UsageError(f"--fail-if {text!r}: {number:g}% is above 100%")
        bound = number / 100.0
    else:
        if unit:
            raise UsageError(f"--fail-if {text!r}: {metric} is a count: no unit")
        bound = number
    return Threshold(text.strip(), variant, scenario, metric, op, bound, unit)


def parse_all(texts):
    """Every ``--fail-if`` of the command line, parsed before anything starts."""
    return [parse(t) for t in texts or ()]


def _number(value):
    try:
        value = float(value)
    except (TypeError, ValueError):
        return math.nan
    return value


def row_name(row):
    """How a line names a row: variant · scenario · load point (and client/transport if set)."""
    extra = "/".join(str(row[k]) for k in ("client", "transport")
                     if isinstance(row.get(k), str) and row.get(k))
    name = f"{row.get('variant')} · {row.get('scenario')} · {row.get('load_point')}"
    return f"{name} ({extra})" if extra else name


def value_of(threshold, row):
    """The row's value of the threshold's metric (NaN when the row has none) and why not."""
    metric = threshold.metric
    if metric in PERCENTILES:
        value = _number(row.get(f"{metric}_us"))
        return value, "" if value == value else (
            f"{metric} is empty: too few samples at or beyond it (min-count rule)")
    if metric == "ok":
        attempted = _number(row.get("attempted"))
        if not attempted or attempted != attempted:
            return math.nan, "no message was attempted"
        return _number(row.get("ok")) / attempted, ""
    if metric == "achieved":
        achieved = _number(row.get("achieved_rate"))
        if achieved != achieved:
            return math.nan, "no reply was received in the window"
        return achieved / _number(row.get("target_rate")), ""
    value = _number(row.get(metric))
    return value, "" if value == value else f"the row has no {metric} count"


def _interval(threshold, row):
    low_key, high_key = INTERVAL.get(threshold.metric, (None, None))
    low, high = _number(row.get(low_key)), _number(row.get(high_key))
    if low != low or high != high:
        return ""
    return f", 95% interval {threshold.shown(low)}–{threshold.shown(high)}"


def judge_row(threshold, row):
    """One threshold on one row: passes only on a measured value that holds on a valid row."""
    name = row_name(row)
    value, missing = value_of(threshold, row)
    bound = f"{threshold.op} {threshold.shown(threshold.bound)}"
    if missing:
        return Judgement(threshold, name, False, value,
                         f"{name}: {threshold.metric} {bound} cannot be judged: {missing}")
    held = OPERATORS[threshold.op](value, threshold.bound)
    said = f"{name}: {threshold.metric} = {threshold.shown(value)}, bound {bound}" \
           f"{_interval(threshold, row)}"
    if held and str(row.get("valid")).strip().lower() in ("false", "0"):
        note = row.get("note") if isinstance(row.get("note"), str) else ""
        return Judgement(threshold, name, False, value,
                         f"{said}: the row is not valid" + (f" ({note})" if note else ""))
    return Judgement(threshold, name, held, value, said)


def judge(thresholds, aggregate_rows):
    """Every threshold on every aggregate row it matches; one failing Judgement for a
    threshold that matched none."""
    out = []
    for t in thresholds:
        matched = [r for r in aggregate_rows if t.matches(r)]
        if not matched:
            out.append(Judgement(t, f"{t.variant} · {t.scenario}", False, math.nan,
                                 f"{t.text}: no row matched (variant {t.variant!r}, scenario "
                                 f"{t.scenario!r})"))
        out.extend(judge_row(t, r) for r in matched)
    return out
