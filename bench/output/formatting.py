"""Numbers as text: µs → ms for tables and for prose, intervals, shares, row flags and places.

The one place that turns a latency in µs into the text a reader sees: tables use a fixed three
decimals (columns align), prose and the answer use 2–3 significant digits.
"""
import math

import pandas as pd

from bench.analysis import compare, reader, stats

NO_INTERVAL = f"n/a (needs ≥ {stats.LOG_T_MIN} repeats)"
EMPTY = "–"
# Each flag a row can carry: its badge text and what it means (shown on hover in HTML).
FLAGS = {
    "invalid": "invalid: messages were lost, the achieved rate fell below 95 % of the target "
               "or nothing was served",
    "driver-bound": "driver-bound: the load driver, not the server, set the pace; the row "
                    "measures the driver and decides nothing",
    "unstable": "unstable: the repeats disagree more than the spread allows (see the interval)",
    "noisy": "noisy: steal time or foreign load on the machine above the threshold while the "
             "step ran",
}


def _missing(us):
    return us is None or (isinstance(us, float) and math.isnan(us)) or pd.isna(us)


def ms(us):
    """A latency in µs as ms with three decimals (tables), '–' when there is none."""
    return EMPTY if _missing(us) else f"{us / 1000:.3f}"


def ms_short(us, digits=3):
    """A latency in µs as ms with ``digits`` significant digits (prose: 0.432, 1.46, 25.1)."""
    if _missing(us):
        return EMPTY
    value = us / 1000
    if value == 0:
        return "0"
    decimals = max(0, digits - 1 - math.floor(math.log10(abs(value))))
    return f"{value:,.{decimals}f}"


def interval_text(row, metric, fmt=ms):
    """' [low–high]' in ms (over repeats, or the one repeat's per-step interval), or '' when
    the row has none."""
    lo, hi, _ = compare.interval_of(row, metric)
    return "" if pd.isna(lo) or pd.isna(hi) else f" [{fmt(lo)}–{fmt(hi)}]"


def interval_method(row):
    """How a row's interval was made, or why it has none."""
    methods = [compare.interval_of(row, m) for m in ("p50", "p99")]
    found = [m for lo, _, m in methods if not pd.isna(lo)]
    if not found:
        method = str(row.get("ci_method") or "")
        return NO_INTERVAL if not method or method.startswith("none") else method
    return str(found[0]).split(" (")[0] or "from the CSV"


def value_text(row, metric, fmt=ms):
    """A percentile cell: '–' when empty (too few samples), '≥' when censored, its interval."""
    v = row[f"{metric}_us"]
    if pd.isna(v):
        return EMPTY
    censored = metric in str(row.get("censored", "")).split(",")
    return ("≥ " if censored else "") + fmt(v) + interval_text(row, metric, fmt)


def share(value):
    """A fraction as a whole percentage."""
    return EMPTY if pd.isna(value) else f"{100 * value:.0f} %"


def ratio(a, b):
    """a ÷ b as '1.23×', '–' when either is missing or b is 0."""
    return EMPTY if _missing(a) or _missing(b) or not b else f"{a / b:.2f}×"


def row_flags(row):
    """The flags a row carries, in FLAGS order (empty for a clean, valid row)."""
    return [f for f, on in (("invalid", not row["valid"]), ("driver-bound", row["driver_bound"]),
                            ("unstable", row.get("unstable")), ("noisy", row.get("noisy"))) if on]


def flags(row):
    """The flags as table text: 'valid' or the **bold** problems and the plain caveats."""
    marks = row_flags(row)
    out = ["valid"] if "invalid" not in marks else []
    out += [f"**{f}**" if f in ("invalid", "driver-bound") else f for f in marks]
    return ", ".join(out)


def where(row):
    """The scenario, load point and split (recipient, mix) a row was measured at."""
    extra = [str(row[e]) for e in reader.SPLITS if row[e]]
    return " · ".join(dict.fromkeys([row["scenario"], str(row["load_point"]), *extra]))


def who(row, key_extras=()):
    """The series of a row plus any further key parts (client, transport…) asked for."""
    return " · ".join([row["series"], *[str(row[c]) for c in key_extras if row[c]]])


def short(text, limit=240):
    """``text`` cut at a word boundary to ``limit`` characters."""
    text = str(text or "")
    return text if len(text) <= limit else text[:limit].rsplit(" ", 1)[0] + " …"
