"""The results schema: every summary.csv column once, with its type, unit and aggregation rule.

The recorder writes the columns in this order (columns a row adds beyond it follow), the
aggregate rows merge repeats by each column's rule, and the reader gives each column its dtype
from here, so a new column is one line in this table (or, for a kind's or a scenario's own
columns, in its kind module or scenario record), and a column that is not declared cannot be
dropped silently: tests/test_recorder.py checks that every column a run writes is declared.

Aggregation rules (how ``repeat = all`` rows get the column from the repeats they merge):

* ``key``: part of the aggregate's identity (repeats agree by construction);
* ``static``: a property of the step, taken from the first repeat;
* ``sum`` / ``mean`` / ``max``: over the repeats that measured something;
* ``any`` / ``all``: booleans, over every repeat;
* ``merged``: recomputed from the merged histograms (percentiles are never averaged);
* ``computed``: written only on aggregate rows (intervals over repeats, counts of repeats);
* ``single``: a repeat's own value, carried by the aggregate only when it merges exactly one
  measured repeat (a per-step interval describes one step, not several merged);
* ``union``: ``;``-joined codes, every code of every repeat once, in first-seen order;
* ``median``: the median of the repeats that measured something (a per-repeat percentile
  with no histogram kept: a typical repeat's, never an average of percentiles);
* ``repeat``: meaningful per repeat only; aggregate rows leave it empty.
"""
from dataclasses import dataclass

from bench import kinds
from bench.plan.scenarios import SCENARIOS

TYPES = ("text", "bool", "int", "float")
RULES = ("key", "static", "sum", "mean", "max", "any", "all", "merged", "computed", "single",
         "union", "median", "repeat")


@dataclass(frozen=True)
class Column:
    """One column: its name, type, unit and how aggregate rows get it."""
    name: str
    type: str
    unit: str = ""
    rule: str = "repeat"


def _table(spec):
    """Columns from ``(names, type, unit, rule)`` groups, names space-separated, in order."""
    out = []
    for names, type_, unit, rule in spec:
        assert type_ in TYPES and rule in RULES, (names, type_, rule)
        out.extend(Column(n, type_, unit, rule) for n in names.split())
    return tuple(out)


SUMMARY = _table([
    # the design's core columns, in the design's order
    ("variant scenario load_point", "text", "", "key"),
    ("repeat", "text", "", "computed"),
    ("transport", "text", "", "computed"),
    ("target_rate", "float", "msg/s", "static"),
    ("achieved_rate", "float", "msg/s", "mean"),
    ("attempted ok errors timeouts", "int", "messages", "sum"),
    ("p50_us p90_us p99_us p999_us p9999_us max_us mean_us", "float", "us", "merged"),
    ("server_cpu_pct", "float", "%", "mean"),
    ("server_rss_mb", "float", "MB", "max"),
    ("driver_cpu_pct", "float", "%", "mean"),
    ("driver_bound", "bool", "", "any"),
    ("valid", "bool", "", "all"),
    ("note", "text", "", "computed"),
    ("hdr", "text", "", "merged"),
    # additions (columns are added, never renamed)
    ("service_p50_us service_p99_us", "float", "us", "merged"),
    ("lag_p50_us", "float", "us", "mean"),
    ("lag_p99_us", "float", "us", "max"),
    ("connections", "int", "connections", "static"),
    ("duration_s", "float", "s", "static"),
    ("client", "text", "", "static"),
    ("hdr_service", "text", "", "merged"),
    ("sent_rate", "float", "msg/s", "mean"),
    ("censored", "text", "", "merged"),
    ("deadline_ms", "float", "ms", "static"),
    ("send_lag_p50_us", "float", "us", "mean"),
    ("send_lag_p99_us", "float", "us", "max"),
    ("recv_wait_p50_us", "float", "us", "mean"),
    ("recv_wait_p99_us", "float", "us", "max"),
    ("driver_share", "float", "ratio", "mean"),
    ("steal_pct", "float", "%", "mean"),
    ("load_avg", "float", "", "mean"),
    ("foreign_cpu_pct", "float", "%", "mean"),
    ("noisy", "bool", "", "any"),
    ("arrivals", "text", "", "static"),
    ("requested", "text", "", "key"),
    ("reply_match", "text", "", "static"),
    ("unsolicited", "int", "events", "sum"),
    ("pushed", "text", "events", "sum"),
    # the checks each step makes of its own samples (bench/analysis/selfcheck.py)
    ("reasons", "text", "", "union"),
    ("p50_step_ci_low p50_step_ci_high p99_step_ci_low p99_step_ci_high", "float", "us",
     "single"),
    ("arrivals_ok stationary independent", "bool", "", "all"),
    ("arrivals_stat trend_p lag1_rho", "float", "", "repeat"),
    ("drift_pct", "float", "%", "repeat"),
    ("effective_n", "float", "samples", "sum"),
])



def declared_by_kinds_and_scenarios():
    """The columns each kind of load (bench/kinds) and each scenario record declares for its
    own rows; one declared twice must be declared alike."""
    groups = [g for name in kinds.NAMES for g in kinds.get(name).columns]
    groups += [g for scenario in SCENARIOS.values() for g in scenario.columns]
    out = {}
    for column in _table(groups):
        assert out.setdefault(column.name, column) == column, f"{column.name}: two declarations"
    return tuple(out.values())


EXTRAS = declared_by_kinds_and_scenarios() + _table([
    # columns a toggle or a deployment adds (present where they apply)
    ("tls", "bool", "", "static"),
    ("servers", "int", "servers", "static"),
    ("server_nodelay profiled server_events", "bool", "", "key"),
    ("server_gc", "text", "", "key"),
    ("precision_target", "text", "", "static"),
    ("precision_met", "bool", "", "all"),
    # what the server did during the step (servers/events.py, bench/analysis/onsets.py)
    ("server_gc_count", "float", "collections", "mean"),
    ("server_gc_ms server_blocked_ms", "float", "ms", "mean"),
    ("server_gc_max_ms", "float", "ms", "max"),
    ("onset_s", "float", "s", "repeat"),
    ("onset_cause", "text", "", "repeat"),
    ("regime_before_us regime_after_us", "float", "us", "repeat"),
    ("clients_per_server", "text", "", "repeat"),
    ("profile_error profile_svg profile_speedscope", "text", "", "repeat"),
    ("profile_samples", "int", "samples", "repeat"),
    ("gil_held_pct", "float", "%", "repeat"),
    # browser rows (bench/analysis/browserrow.py)
    ("paint_p50_us paint_p99_us devtools_p50_us devtools_p99_us inp_us "
     "interaction_to_reply_p50_us interaction_to_reply_p99_us", "float", "us", "median"),
    # aggregate rows only: intervals and spread over repeats (bench/analysis/stats.py)
    ("p50_ci_low p50_ci_high p99_ci_low p99_ci_high", "float", "us", "computed"),
    ("ci_method", "text", "", "computed"),
    ("unstable", "bool", "", "computed"),
    ("p50_cv p99_cv", "float", "ratio", "computed"),
    ("repeats repeats_failed", "int", "repeats", "computed"),
])

COLUMNS = {c.name: c for c in SUMMARY + EXTRAS}
ORDER = [c.name for c in SUMMARY]  # summary.csv's leading columns, in this order


def named(rule=None, type_=None):
    """Names of the declared columns with this aggregation ``rule`` and/or ``type_``."""
    return tuple(c.name for c in COLUMNS.values()
                 if (rule is None or c.rule == rule) and (type_ is None or c.type == type_))


def undeclared(names):
    """The names in ``names`` this schema does not declare (a test keeps this empty)."""
    return sorted(set(names) - set(COLUMNS) - {"aggregate"})
