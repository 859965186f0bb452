"""Can I trust this row? The self-checks a row passed, its interval widths and its sample count.

Every table of the report gives each row one compact cell built here: the checks each step
made of its own samples (``bench/analysis/selfcheck.py``: arrivals, stationarity,
independence, and precision where ``--precision`` asked for it), how far the p50 and p99
intervals reach from the value as ± % of it (``compare.interval_of``: over repeats, or the
one repeat's per-step interval), and the samples n with the effective n when correlation
leaves less than ``EFFECTIVE_SHARE`` of it. A row whose run predates the checks is "not
checked", never failed: a check counts only where the step recorded it.
"""
import math

from bench.analysis import compare

NOT_CHECKED = "not checked"
NO_DATA = "–"
EFFECTIVE_SHARE = 0.9       # effective n is shown when it is below 90 % of n
STEP_CHECKS = ("arrivals", "stationarity", "independence")   # every measured step runs these
# One short flag per check, for chart legends and the terminal ("[drift]").
FLAGS = {"arrivals": "arrivals", "stationarity": "drift", "independence": "dependent",
         "precision": "imprecise"}
STATISTIC = {"arrivals": "arrivals_stat", "stationarity": "drift_pct",
             "independence": "lag1_rho"}   # what each check judged on
LEGEND = ("Can I trust this row? ✓ k/k = every self-check the steps made of their own samples "
          "passed (arrivals kept, no drift, no lag-1 dependence, and the `--precision` target "
          "where one was set), ✗ = the check it failed, with its statistic (a failed row stays "
          "valid and is drawn, marked); “not checked” = the run predates the checks. ± = how far "
          "the 95 % interval reaches from the value, as % of it (over repeats; one repeat: the "
          "step's own interval; what `--precision` judges). n = messages; eff = effective n "
          "where correlated latencies are worth less than 90 % of n.")


def _float(value):
    """A value as a finite float, or None when it is missing, empty or not a number."""
    try:
        value = float(value)
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None


def _number(row, col):
    """A cell of ``row`` as a finite float, or None."""
    return _float(row.get(col))


def _self_checked(row):
    """Whether ``row`` carries its steps' self-checks."""
    return any(name in compare.checks_made(row) for name in STEP_CHECKS)


def checks_run(row, repeats=()):
    """The checks that were made for ``row`` (so that an unchecked one is never a failure)."""
    made = compare.checks_made(row)
    if not any(name in made for name in STEP_CHECKS) and any(map(_self_checked, repeats)):
        made = [*STEP_CHECKS, *made]
    return made


def failed(row, repeats=()):
    """The checks ``row`` failed, among those that were made."""
    made = checks_run(row, repeats)
    return [name for col, name in compare.CHECKS.items()
            if name in made and col in row and not bool(row[col])]


def flags(row):
    """The legend flags of the checks a row failed (one word each, from ``FLAGS``)."""
    return [FLAGS[name] for name in failed(row)]


def _statistic(name, row):
    """The number a check judged on one row, as text; '' when the row has none."""
    if name == "precision":
        return f"target {row.get('precision_target')}"
    value = _number(row, STATISTIC[name])
    if value is None:
        return ""
    if name == "arrivals":
        return f"A² {value:.2f}" if row.get("arrivals") == "poisson" else \
            f"{100 * value:.1f} % late"
    return f"drift {value:+.0f} %" if name == "stationarity" else f"ρ {value:.2f}"


def detail(name, row, repeats=()):
    """What a failed check saw: its statistic, from the row or from its worst failing repeat
    (and how many of the repeats failed it)."""
    said = _statistic(name, row)
    if said:
        return said
    bad = [r for r in repeats if _self_checked(r) and name in compare.failed_checks(r)]
    if not bad:
        return ""
    worst = max(bad, key=lambda r: abs(_number(r, STATISTIC[name]) or 0.0))
    measured = sum(map(_self_checked, repeats))
    return _statistic(name, worst) + (f" in {len(bad)}/{measured} repeats" if measured > 1
                                      else "")


def half_width_pct(row, metric):
    """How far the 95 % interval of ``metric`` reaches from its value, as % of it (the farther
    end, as ``--precision`` judges it); None without an interval."""
    low, high = map(_float, compare.interval_of(row, metric)[:2])
    value = _number(row, f"{metric}_us")
    if low is None or high is None or value is None or value <= 0:
        return None
    return 100.0 * max(value - low, high - value) / value


def effective(row, repeats=()):
    """The effective sample count of a row: its own, or the sum over its measured repeats."""
    own = _number(row, "effective_n")
    if own is not None:
        return own
    values = [_number(r, "effective_n") for r in repeats if (_number(r, "attempted") or 0) > 0]
    return sum(values) if values and None not in values else None


def _pct(value):
    """'±4 %', '±0.3 %', '±<0.1 %', or '± –' without an interval."""
    if value is None:
        return "± –"
    return "±<0.1 %" if value < 0.1 else f"±{value:.1f} %" if value < 1 else f"±{value:.0f} %"


def _measured(row):
    """Whether the row measured anything (attempted messages and a histogram)."""
    return (_number(row, "attempted") or 0) > 0 and bool(row.get("hdr"))


def cell(row, repeats=()):
    """The report's trust cell as short lines (HTML stacks them, Markdown joins them with
    ' · '): the checks (**bold** on a failure), how far the intervals reach, n."""
    if not _measured(row):
        return (NO_DATA,)
    made, bad = checks_run(row, repeats), failed(row, repeats)
    if not made:
        checks = [NOT_CHECKED]
    elif bad:
        checks = [f"**✗ {name}**" + (f" ({d})" if (d := detail(name, row, repeats)) else "")
                  for name in bad]
    else:
        checks = [f"✓ {len(made)}/{len(made)}"]
    n = int(_number(row, "attempted"))
    n_eff = effective(row, repeats)
    samples = f"n {n:,}" + (f" (eff {n_eff:,.0f})" if n_eff is not None
                            and n_eff < EFFECTIVE_SHARE * n else "")
    widths = " · ".join(f"{m} {_pct(half_width_pct(row, m))}" for m in ("p50", "p99"))
    return (*checks, widths, samples)


def plain(row, repeats=()):
    """The terminal's short trust cell: 'ok 3/3', 'FAIL drift,dependent', 'not checked'."""
    if not _measured(row):
        return "-"
    made, bad = checks_run(row, repeats), failed(row, repeats)
    if not made:
        return NOT_CHECKED
    return f"FAIL {','.join(FLAGS[b] for b in bad)}" if bad else f"ok {len(made)}/{len(made)}"


def repeats_of(data):
    """A function giving an aggregate row of ``data`` (reader.Results) its per-repeat rows."""
    key = data.key()
    groups = {}
    for _, r in data.repeats.iterrows():
        groups.setdefault(tuple(r[key]), []).append(r)
    return lambda row: groups.get(tuple(row[key]), [])
