"""NEW against BASE, row by row: intervals over repeats on each side, and the one rule that
says whether one measurement is materially above another (used by compare and the report).

Each side's interval is ``stats.interval`` of its per-repeat p50 (and p99) values — the same
method as the aggregate rows — or, for a single repeat, the per-step interval from its own
samples; ``stats.differ`` says whether the two intervals are apart. A row that failed a
self-check (arrivals, stationarity, independence, precision) is still compared, and its
verdict says which check it failed.
A regression is a metric whose NEW interval lies entirely above BASE's AND whose ratio of the
merged values exceeds 1 + threshold, or a row that served in BASE and fails in NEW. Overlapping
intervals say "no difference"; empty ones (fewer than 3 repeats with a value, e.g. a p99 cell
left empty by the min-count rule) say "no difference (cannot tell …)".
Rows are matched on their full key: variant, scenario, load point, client, transport (and
server_nodelay, profiled, recipient, mix where present). Runs from different machines, plans
or package versions are refused unless forced: their ratios would measure the setup.
``bench.output.comparison`` writes what this module finds.
"""
import math

import numpy as np

from bench.analysis import reader, selfcheck, stats
from bench.analysis.reader import has_data
from bench.errors import UsageError

HOST_KEYS = ("cpu_model", "cores")
PLAN_KEYS = ("duration", "warmup", "rate", "connections", "payload", "timeout", "pin", "app",
             "client")
NEWER_PLAN_KEYS = ("deadline_ms", "arrivals", "transport")   # compared when both runs have them
METRICS = ("p50", "p99")
CANNOT_TELL = "cannot tell"
WHY_NOT = f"needs ≥ {stats.LOG_T_MIN} repeats with a value on each side"
# What judge() can say about "new against base" on one metric.
SLOWER, FASTER, HIGHER, LOWER = "slower", "faster", "higher", "lower"
SAME, OVERLAP, MISSING = "same", "overlap", "missing"


STEP_METHOD = "per-step order statistics (one repeat)"
CHECKS = {"arrivals_ok": "arrivals", "stationary": "stationarity",
          "independent": "independence", "precision_met": "precision"}


def interval_of(row, metric, repeats=None):
    """(low, high, method) of ``metric`` for an aggregate ``row``: over its repeats where they
    give one (``repeats``: per-repeat values, else the row's own interval columns), otherwise
    the per-step interval a row measured as one repeat carries from its own samples. A row
    planned over several repeats is judged over them only: when too few of them have a value it
    has no interval, since one repeat's own interval says nothing of the spread between them."""
    if repeats is not None:
        low, high, method = stats.interval(repeats)
    else:
        low, high = row.get(f"{metric}_ci_low", np.nan), row.get(f"{metric}_ci_high", np.nan)
        method = row.get("ci_method", "")
    step = row.get(f"{metric}_step_ci_low", np.nan), row.get(f"{metric}_step_ci_high", np.nan)
    merged = row.get("repeats", 1)
    one_repeat = not _finite(merged) or merged <= 1
    if not _finite(low, high) and one_repeat and _finite(*step):
        return (*step, STEP_METHOD)
    return low, high, method


def checks_made(row):
    """The self-checks that were made for ``row``: the step checks where it carries an
    effective n (every checked step writes one) or a failed check's code, precision where a
    target was set. A run written before the checks made none, so it fails none."""
    codes = str(row.get("reasons") if isinstance(row.get("reasons"), str) else "").split(";")
    effective = row.get("effective_n")
    checked = (isinstance(effective, (int, float)) and math.isfinite(effective)) or \
        any(c in selfcheck.REASONS for c in codes)
    target = row.get("precision_target")
    return [name for col, name in CHECKS.items()
            if (checked and col != "precision_met") or
            (col == "precision_met" and isinstance(target, str) and target)]


def failed_checks(row):
    """The names of the self-checks ``row`` failed (a verdict that uses it says so), among
    those that were made."""
    made = checks_made(row)
    return [name for col, name in CHECKS.items()
            if name in made and col in row and not bool(row[col])]


def _finite(*values):
    return all(v is not None and isinstance(v, (int, float, np.floating, np.integer))
               and math.isfinite(v) for v in values)


def judge(new, new_interval, base, base_interval, threshold):
    """How a NEW value stands against a BASE value on one metric, from their intervals:
    (outcome, ratio NEW ÷ BASE). The one rule behind compare's regressions and the report's
    verdicts.

    slower / faster: the intervals do not overlap and the ratio is beyond 1 + threshold (or
    1 ÷ (1 + threshold)); higher / lower: apart, but within that; same: they overlap and even
    NEW's upper end is within the threshold of BASE's lower end; overlap: they overlap more
    widely; cannot tell: an interval is empty; missing: a value is.
    """
    if not _finite(new, base):
        return MISSING, np.nan
    ratio = new / base if base else np.nan
    apart = stats.differ(tuple(base_interval[:2]), tuple(new_interval[:2]))
    if apart == CANNOT_TELL:
        return CANNOT_TELL, ratio
    if apart == "higher":
        return (SLOWER if ratio > 1 + threshold else HIGHER), ratio
    if apart == "lower":
        return (FASTER if ratio < 1 / (1 + threshold) else LOWER), ratio
    return (SAME if new_interval[1] <= base_interval[0] * (1 + threshold) else OVERLAP), ratio


def comparison(base_dir, new_dir, threshold=0.10, force=False):
    """Both runs read and matched: (base, new, rows, only_base, only_new, differences)."""
    if not (isinstance(threshold, (int, float)) and 0 < threshold < 10):
        raise UsageError(f"--threshold must be in (0, 10), got {threshold}")
    base, new = reader.read(base_dir), reader.read(new_dir)
    differences = incomparable(base.meta, new.meta)
    if differences and not force:
        raise UsageError("runs are not comparable: " + "; ".join(differences)
                         + " (use --force to compare anyway)")
    rows, only_base, only_new = match(base, new, threshold)
    return base, new, rows, only_base, only_new, differences


def incomparable(base_meta, new_meta):
    """What differs between two runs' machine, plan options and package versions."""
    out = [f"{side} has no meta.json" for side, m in (("BASE", base_meta), ("NEW", new_meta))
           if not m]
    if out:
        return out
    for key in HOST_KEYS:
        a, b = base_meta.get("host", {}).get(key), new_meta.get("host", {}).get(key)
        if a != b:
            out.append(f"host {key} {a!r} vs {b!r}")
    pa = base_meta.get("plan", {}).get("options", {})
    pb = new_meta.get("plan", {}).get("options", {})
    out += [f"plan {k} {pa.get(k)!r} vs {pb.get(k)!r}" for k in PLAN_KEYS if pa.get(k) != pb.get(k)]
    out += [f"plan {k} {pa[k]!r} vs {pb[k]!r}" for k in NEWER_PLAN_KEYS
            if k in pa and k in pb and pa[k] != pb[k]]
    ka, kb = base_meta.get("packages", {}), new_meta.get("packages", {})
    for env in sorted(set(ka) | set(kb)):
        va, vb = ka.get(env, {}), kb.get(env, {})
        out += [f"{env} {name} {va.get(name)} vs {vb.get(name)}"
                for name in sorted(set(va) | set(vb)) if va.get(name) != vb.get(name)]
    return out


# ---------------------------------------------------------------- matching

def _index(frame, key):
    return {tuple(str(v) for v in r[key]): r for _, r in frame.iterrows()}


def per_repeat(data, key, values):
    """Each measured repeat's row of one key (failed or empty repeats left out)."""
    reps = data.repeats
    if reps.empty:
        return reps
    sel = reps[(reps[key].astype(str) == list(values)).all(axis=1)]
    return sel[sel.apply(has_data, axis=1)]


def _rekey(unmatched, other, key):
    """Pair keys left unmatched because one side's failed row has no transport (or client):
    the same key without those parts, when that names exactly one row on the other side."""
    loose = [i for i, c in enumerate(key) if c not in ("client", "transport")]
    by_loose = {}
    for k in other:
        by_loose.setdefault(tuple(k[i] for i in loose), []).append(k)
    out = {}
    for k in unmatched:
        cands = by_loose.get(tuple(k[i] for i in loose), [])
        if len(cands) == 1:
            out[k] = cands[0]
    return out


def match(base, new, threshold):
    """One comparison per aggregate row present in both runs; the keys present in only one."""
    key = reader.key_columns(base.aggregates, new.aggregates)
    ib, inew = _index(base.aggregates, key), _index(new.aggregates, key)
    pairs = {k: k for k in set(ib) & set(inew)}
    left_b, left_n = set(ib) - set(inew), set(inew) - set(ib)
    for kb, kn in _rekey(left_b, left_n, key).items():
        if kn in left_n:
            pairs[kb] = kn
            left_n.discard(kn)
    left_b -= set(pairs)
    order = {k: (ib[k]["scenario"], ib[k]["load_value"], k) for k in pairs}
    rows = []
    for kb in sorted(pairs, key=lambda k: (order[k][0], np.nan_to_num(order[k][1], nan=np.inf),
                                           order[k][2])):
        kn = pairs[kb]
        rows.append(compare_pair(kb, ib[kb], inew[kn], per_repeat(base, key, kb),
                                 per_repeat(new, key, kn), threshold))
    return rows, sorted(left_b), sorted(left_n)


def compare_pair(key, b, n, base_reps, new_reps, threshold):
    """The verdict on one row: intervals per side and metric, ratio of merged values."""
    out = dict(key=key, base=b, new=n, regression=False, ratio={}, intervals={}, verdicts={})
    if not has_data(n) or not has_data(b):
        if has_data(b):
            out.update(verdict="REGRESSION: failed in NEW", regression=True)
        else:
            out["verdict"] = "fixed in NEW" if has_data(n) else "no data in either"
        return out
    said = []
    for metric in METRICS:
        col = f"{metric}_us"
        ib = interval_of(b, metric, base_reps[col].tolist() if len(base_reps) else [])
        inew = interval_of(n, metric, new_reps[col].tolist() if len(new_reps) else [])
        out["intervals"][metric] = (ib, inew)
        outcome, out["ratio"][metric] = judge(n[col], inew, b[col], ib, threshold)
        if outcome in (SLOWER, FASTER):
            verdict = f"{metric} {outcome}"
            out["regression"] |= outcome == SLOWER
        elif outcome in (HIGHER, LOWER):
            verdict = f"{metric} {outcome}, within ×{1 + threshold:g}"
        else:
            verdict = "no difference" if outcome in (SAME, OVERLAP) else CANNOT_TELL
        out["verdicts"][metric] = verdict
        said.append(verdict)
    decisive = [v for v in said if v not in ("no difference", CANNOT_TELL)]
    if not decisive:
        blind = [m for m in METRICS if out["verdicts"][m] == CANNOT_TELL]
        out["verdict"] = "no difference" + (
            f" (cannot tell {' or '.join(blind)}: {WHY_NOT})" if blind else "")
    else:
        out["verdict"] = ("REGRESSION: " if out["regression"] else "") + ", ".join(decisive)
    marked = [f"{side} failed {', '.join(failed_checks(row))}"
              for side, row in (("BASE", b), ("NEW", n)) if failed_checks(row)]
    if marked:
        out["verdict"] += f" ({'; '.join(marked)})"
    return out
