"""NEW against BASE, row by row: intervals over repeats on each side, exit 1 on a shown regression.

Each side's interval is ``stats.interval`` of its per-repeat p50 (and p99) values — the same
method as the aggregate rows — and ``stats.differ`` says whether the two intervals are apart.
A regression is a metric whose NEW interval lies entirely above BASE's AND whose ratio of the
merged values exceeds 1 + threshold, or a row that served in BASE and fails in NEW. Overlapping
intervals say "no difference"; empty ones (fewer than 3 repeats with a value, e.g. a p99 cell
left empty by the min-count rule) say "no difference (cannot tell …)".
Rows are matched on their full key: variant, scenario, load point, client, transport (and
server_nodelay, profiled, recipient, mix where present). Runs from different machines, plans
or package versions are refused unless forced: their ratios would measure the setup.
"""
import os

import matplotlib.pyplot as plt
import numpy as np

from bench.analysis import reader, stats
from bench.analysis.reader import has_data
from bench.errors import UsageError
from bench.output.plots import style
from bench.output.results import atomic_write

HOST_KEYS = ("cpu_model", "cores")
PLAN_KEYS = ("duration", "warmup", "rate", "connections", "payload", "timeout", "pin", "app",
             "client")
NEWER_PLAN_KEYS = ("deadline_ms", "arrivals", "transport")   # compared when both runs have them
METRICS = ("p50", "p99")
CANNOT_TELL = "cannot tell"
WHY_NOT = f"needs ≥ {stats.LOG_T_MIN} repeats with a value on each side"


def run(base_dir, new_dir, threshold=0.10, force=False):
    """Compare two results folders, write compare.md and compare.png into NEW; 1 on regression."""
    if not (isinstance(threshold, (int, float)) and 0 < threshold < 10):
        raise UsageError(f"--threshold must be in (0, 10), got {threshold}")
    base, new = reader.read(base_dir), reader.read(new_dir)
    differences = incomparable(base.meta, new.meta)
    if differences and not force:
        raise UsageError("runs are not comparable: " + "; ".join(differences)
                         + " (use --force to compare anyway)")
    rows, only_base, only_new = match(base, new, threshold)
    from bench.output.report import render       # the report's template environment
    atomic_write(os.path.join(new_dir, "compare.md"),
                 render("compare.md.j2", context(base, new, rows, only_base, only_new,
                                                 threshold, differences)))
    fig = figure(base, new, rows)
    fig.savefig(os.path.join(new_dir, "compare.png"), dpi=110)
    plt.close(fig)
    return 1 if any(r["regression"] for r in rows) else 0


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


def _per_repeat(data, key, values):
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
        rows.append(compare_pair(kb, ib[kb], inew[kn], _per_repeat(base, key, kb),
                                 _per_repeat(new, key, kn), threshold))
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
        ib = stats.interval(base_reps[col].tolist() if len(base_reps) else [])
        inew = stats.interval(new_reps[col].tolist() if len(new_reps) else [])
        out["intervals"][metric] = (ib, inew)
        ratio = n[col] / b[col] if b[col] and np.isfinite(b[col]) else np.nan
        out["ratio"][metric] = ratio
        d = stats.differ(ib[:2], inew[:2])
        if d == "higher" and ratio > 1 + threshold:
            verdict = f"{metric} slower"
            out["regression"] = True
        elif d == "lower" and ratio < 1 / (1 + threshold):
            verdict = f"{metric} faster"
        elif d in ("higher", "lower"):
            verdict = f"{metric} {d}, within ×{1 + threshold:g}"
        else:
            verdict = "no difference" if d == "no difference" else CANNOT_TELL
        out["verdicts"][metric] = verdict
        said.append(verdict)
    decisive = [v for v in said if v not in ("no difference", CANNOT_TELL)]
    if not decisive:
        blind = [m for m in METRICS if out["verdicts"][m] == CANNOT_TELL]
        out["verdict"] = "no difference" + (
            f" (cannot tell {' or '.join(blind)}: {WHY_NOT})" if blind else "")
    else:
        out["verdict"] = ("REGRESSION: " if out["regression"] else "") + ", ".join(decisive)
    return out


# ---------------------------------------------------------------- outputs

def _ms(us):
    return "–" if us is None or not np.isfinite(us) else f"{us / 1000:.3f}"


def _side(row, interval):
    lo, hi, method = interval
    text = _ms(row)
    return text + (f" [{_ms(lo)}–{_ms(hi)}]" if np.isfinite(lo) and np.isfinite(hi)
                   else " [n/a]")


def _name(key):
    return " · ".join(str(k) for k in key if k)


def _flags(row):
    f = style.flag(row)
    return ", ".join(x for x in (f if f != "ok" else "", "noisy" if row["noisy"] else "",
                                 "censored " + row["censored"] if row["censored"] else "") if x)


def context(base, new, rows, only_base, only_new, threshold, differences):
    key = reader.key_columns(base.aggregates, new.aggregates)
    methods = sorted({iv[2] for r in rows for pair in r["intervals"].values() for iv in pair})
    table = []
    for r in rows:
        b, n = r["base"], r["new"]
        cells = []
        for metric in METRICS:
            if metric in r["intervals"]:
                ib, inew = r["intervals"][metric]
                ratio = r["ratio"][metric]
                cells += [_side(b[f"{metric}_us"], ib), _side(n[f"{metric}_us"], inew),
                          "–" if not np.isfinite(ratio) else f"{ratio:.3f}"]
            else:
                cells += [_ms(b[f"{metric}_us"]), _ms(n[f"{metric}_us"]), "–"]
        flags = ", ".join(x for x in (f"BASE {_flags(b)}" if _flags(b) else "",
                                      f"NEW {_flags(n)}" if _flags(n) else "") if x)
        table.append([*r["key"], *cells, r["verdict"], flags])
    return dict(
        title=f"Comparison — {new.name} against {base.name}",
        runs=[[side, d.name, d.meta.get("started_utc", "?"), d.meta.get("git_commit", "?"),
               d.footer().split(" · ")[0]] for side, d in (("BASE", base), ("NEW", new))],
        differences=differences, threshold=f"{1 + threshold:g}", methods=methods,
        regressions=[f"{_name(r['key'])} ({r['verdict']})" for r in rows
                     if r["regression"]],
        headers=[k.replace("_", " ") for k in key] + [
            "BASE p50 ms [95 %]", "NEW p50 ms [95 %]", "p50 ratio", "BASE p99 ms [95 %]",
            "NEW p99 ms [95 %]", "p99 ratio", "verdict", "flags"],
        rows=table,
        notes=[f"{_name(r['key'])} NEW: {style.short(r['new']['note'])}" for r in rows
               if r["new"]["note"]],
        only_base=[_name(k) for k in only_base], only_new=[_name(k) for k in only_new])


def figure(base, new, rows):
    """Per compared row and metric: BASE and NEW intervals (bars) and merged values (points)."""
    fig, axes = plt.subplots(1, 2, figsize=(12, 2.0 + 0.5 * max(len(rows), 1)), sharey=True,
                             layout="constrained", squeeze=False)
    labels = [_name(r["key"]) + ("  REGRESSION" if r["regression"] else "") for r in rows]
    for ax, metric in zip(axes[0], METRICS):
        for i, r in enumerate(rows):
            if metric not in r["intervals"]:
                ax.text(0.5, i, r["verdict"], transform=ax.get_yaxis_transform(), ha="center",
                        va="center", fontsize=8, color="#b00" if r["regression"] else "0.3")
                continue
            for (side, row, interval), dy, c in zip(
                    (("BASE", r["base"], r["intervals"][metric][0]),
                     ("NEW", r["new"], r["intervals"][metric][1])), (-0.15, 0.15),
                    ("0.45", "#b00" if r["regression"] else "#1f77b4")):
                value = row[f"{metric}_us"] / 1000
                lo, hi = interval[0] / 1000, interval[1] / 1000
                if np.isfinite(lo) and np.isfinite(hi):
                    ax.plot([lo, hi], [i + dy] * 2, color=c, lw=3, alpha=0.6, solid_capstyle="butt")
                if np.isfinite(value):
                    ax.plot(value, i + dy, "o" if side == "BASE" else "s", color=c, ms=5,
                            label=side if i == 0 else None)
        ax.set_yticks(range(len(rows)), labels, fontsize=8)
        ax.set_ylim(len(rows) - 0.4, -0.6)
        style.ms_axis(ax, "x")
        ax.set_title(metric, fontsize=10)
        ax.grid(True, axis="x", which="both", alpha=0.3)
    for tick, r in zip(axes[0][0].get_yticklabels(), rows):
        if r["regression"]:
            tick.set_color("#b00")
            tick.set_fontweight("bold")
    fig.suptitle(f"NEW {new.name} vs BASE {base.name}", fontsize=10)
    fig.supxlabel("○ BASE, □ NEW: merged value; bars: 95 % interval of the median per-repeat "
                  f"value\nBASE: {base.footer()}\nNEW: {new.footer()}", fontsize=7, color="0.35")
    return fig
