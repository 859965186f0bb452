"""NEW against BASE: p50 and p99 ratios with bootstrap 95 % CIs, exit 1 on a regression.

The interval resamples whole repeats on each side (a repeat is a fresh server and load run: the
unit that varies between runs), merging their HDR histograms, so percentiles are never averaged.
Up to 6 repeats every resample is enumerated with its exact weight, so the verdict is
deterministic. A regression is a ratio above 1 + threshold whose interval lies wholly above 1;
with one repeat on either side there is no interval and no regression can be called.
Runs from different machines, plans or package versions are refused unless forced: their
ratios would measure the difference in setup, not in the code.
"""
import itertools
import math
import os

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from bench.output import plots
from bench.errors import UsageError
from bench.output.report import ms, to_markdown
from bench.output.results import atomic_write

HOST_KEYS = ("cpu_model", "cores")
PLAN_KEYS = ("duration", "warmup", "rate", "connections", "payload", "timeout", "pin", "app",
             "client")
EXACT_LIMIT, DRAWS, CHUNK = 6, 2000, 256
METRICS = {"p50": 50.0, "p99": 99.0}


def run(base_dir, new_dir, threshold=0.10, force=False):
    """Compare two results folders, write compare.md and compare.png into NEW; 1 on regression."""
    if not (isinstance(threshold, (int, float)) and 0 < threshold < 10):
        raise UsageError(f"--threshold must be in (0, 10), got {threshold}")
    base, new = plots.load(base_dir), plots.load(new_dir)
    differences = incomparable(base.meta, new.meta)
    if differences and not force:
        raise UsageError("runs are not comparable: " + "; ".join(differences)
                         + " (use --force to compare anyway)")
    rows, only_base, only_new = match(base, new, threshold)
    atomic_write(os.path.join(new_dir, "compare.md"),
                 to_markdown(document(base, new, rows, only_base, only_new, threshold,
                                      differences)))
    fig = figure(base, new, rows, threshold)
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
    ka, kb = base_meta.get("packages", {}), new_meta.get("packages", {})
    for env in sorted(set(ka) | set(kb)):
        va, vb = ka.get(env, {}), kb.get(env, {})
        out += [f"{env} {name} {va.get(name)} vs {vb.get(name)}"
                for name in sorted(set(va) | set(vb)) if va.get(name) != vb.get(name)]
    return out


# ---------------------------------------------------------------- bootstrap

def _resamples(n, rng):
    """(multiplicities m×n, weights m) of the bootstrap resamples of n repeats."""
    if n <= EXACT_LIMIT:
        combos = list(itertools.combinations_with_replacement(range(n), n))
        mult = np.zeros((len(combos), n), dtype=np.int64)
        for i, combo in enumerate(combos):
            np.add.at(mult[i], list(combo), 1)
        weights = np.array([math.factorial(n) / math.prod(math.factorial(int(c)) for c in m)
                            for m in mult]) / n ** n
    else:
        picks = rng.integers(0, n, (DRAWS, n))
        mult = np.stack([np.bincount(p, minlength=n) for p in picks])
        weights = np.full(DRAWS, 1.0 / DRAWS)
    return mult, weights


def _percentile_draws(counts, values, mult):
    """Each resample's merged p50 and p99: array (resamples × metrics)."""
    out = []
    for start in range(0, len(mult), CHUNK):
        cum = np.cumsum(mult[start:start + CHUNK] @ counts, axis=1)
        total = cum[:, -1:]
        cols = []
        for p in METRICS.values():
            target = np.maximum((p * total / 100 + 0.5).astype(np.int64), 1)
            cols.append(values[np.minimum((cum < target).sum(axis=1), len(values) - 1)])
        out.append(np.stack(cols, axis=1))
    return np.concatenate(out)


def _weighted_quantiles(values, weights, qs):
    order = np.argsort(values)
    cum = np.cumsum(weights[order]) / weights.sum()
    return [float(values[order][min(np.searchsorted(cum, q), len(values) - 1)]) for q in qs]


def ratio_cis(base_hdrs, new_hdrs, seed=0):
    """{metric: (low, high)} 95 % CI of NEW/BASE, resampling each side's repeats; None if < 2."""
    if len(base_hdrs) < 2 or len(new_hdrs) < 2:
        return None
    rng = np.random.default_rng(seed)
    pairs = [plots.counts_of(h) for h in [*base_hdrs, *new_hdrs]]
    values = pairs[0][0]
    if any(len(v) != len(values) for v, _ in pairs):
        raise UsageError("the runs' histograms have different resolutions; cannot compare")
    counts = np.stack([c for _, c in pairs])
    used = int(np.nonzero(counts.any(axis=0))[0].max()) + 1
    counts, values = counts[:, :used], values[:used]
    draws = []
    for part in (counts[:len(base_hdrs)], counts[len(base_hdrs):]):
        mult, weights = _resamples(len(part), rng)
        draws.append((_percentile_draws(part, values, mult), weights))
    (b, wb), (n, wn) = draws
    out = {}
    for i, metric in enumerate(METRICS):
        ratios = (n[:, i][:, None] / b[:, i][None, :]).ravel()
        out[metric] = tuple(_weighted_quantiles(ratios, np.outer(wn, wb).ravel(), (0.025, 0.975)))
    return out


# ---------------------------------------------------------------- matching

def _key_columns(base, new):
    return ["variant", "scenario", "load_point",
            *[e for e in plots.EXTRAS if e in base.summary and e in new.summary]]


def _repeat_hdrs(data, cols, key):
    reps = data.repeats
    sel = reps[(reps[cols].astype(str) == pd.Series(key, index=cols)).all(axis=1)]
    return [h for h in sel["hdr"] if h]


def match(base, new, threshold):
    """One comparison per aggregate row present in both runs; the keys present in only one."""
    cols = _key_columns(base, new)
    index = {side: {tuple(str(v) for v in r[cols]): r for _, r in d.aggregates.iterrows()}
             for side, d in (("base", base), ("new", new))}
    rows = []
    for key in sorted(set(index["base"]) & set(index["new"]), key=lambda k: (
            k[1], plots.load_key(k[2]), k[3:], k[0])):
        b, n = index["base"][key], index["new"][key]
        rows.append(compare_pair(key, b, n, _repeat_hdrs(base, cols, key),
                                 _repeat_hdrs(new, cols, key), threshold))
    only_base = sorted(set(index["base"]) - set(index["new"]))
    only_new = sorted(set(index["new"]) - set(index["base"]))
    return rows, only_base, only_new


def compare_pair(key, b, n, base_hdrs, new_hdrs, threshold):
    out = dict(key=key, base=b, new=n, regression=False, ratio={}, ci={})
    if not plots.has_data(n) or not plots.has_data(b):
        if plots.has_data(b):
            out.update(verdict="REGRESSION: failed in NEW", regression=True)
        else:
            out["verdict"] = "fixed in NEW" if plots.has_data(n) else "no data in either"
        return out
    cis = ratio_cis(base_hdrs, new_hdrs)
    verdicts = []
    for metric in METRICS:
        ratio = n[f"{metric}_us"] / b[f"{metric}_us"]
        out["ratio"][metric] = ratio
        out["ci"][metric] = cis[metric] if cis else None
        if cis is None:
            continue
        low, high = cis[metric]
        if ratio > 1 + threshold and low > 1.0:
            verdicts.append(f"{metric} slower")
        elif ratio < 1 / (1 + threshold) and high < 1.0:
            verdicts.append(f"{metric} faster")
    out["regression"] = any(v.endswith("slower") for v in verdicts)
    if cis is None:
        out["verdict"] = "no CI (fewer than 2 repeats on a side): not judged"
    else:
        out["verdict"] = ("REGRESSION: " if out["regression"] else "") + (
            ", ".join(verdicts) or "no significant change")
    return out


# ---------------------------------------------------------------- outputs

def _ratio_text(r, metric):
    if metric not in r["ratio"]:
        return "–"
    ci = r["ci"][metric]
    return f"{r['ratio'][metric]:.3f}" + (f" [{ci[0]:.3f}–{ci[1]:.3f}]" if ci else "")


def _flags(row):
    f = plots.flag(row)
    return "" if f == "ok" else f


def _name(data):
    return os.path.basename(os.path.abspath(data.run_dir))


def document(base, new, rows, only_base, only_new, threshold, differences):
    regressions = [r for r in rows if r["regression"]]
    blocks = [
        ("h", 1, f"Comparison — {_name(new)} against {_name(base)}"),
        ("table", ["run", "folder", "started (UTC)", "git commit", "machine"], [
            [side, _name(d), d.meta.get("started_utc", "?"), d.meta.get("git_commit", "?"),
             d.footer().split(" · ")[0]] for side, d in (("BASE", base), ("NEW", new))]),
        ("p", "**Compared despite differences (--force):** " + "; ".join(differences)
         if differences else "Same machine, plan options and package versions."),
        ("p", f"Ratios are NEW / BASE latency (> 1 = slower) with bootstrap 95 % CIs over "
              f"repeats. A regression is a ratio above {1 + threshold:.2f} whose CI lies wholly "
              "above 1.0, or a row that served in BASE and fails in NEW."),
        ("p", f"**{len(regressions)} regression(s)**" + (": " + "; ".join(
            f"{' · '.join(r['key'])} ({r['verdict']})" for r in regressions) if regressions
            else ".")),
    ]
    extra = _key_columns(base, new)[3:]
    table = []
    for r in rows:
        b, n = r["base"], r["new"]
        table.append([*r["key"], ms(b["p50_us"]), ms(n["p50_us"]), _ratio_text(r, "p50"),
                      ms(b["p99_us"]), ms(n["p99_us"]), _ratio_text(r, "p99"), r["verdict"],
                      ", ".join(filter(None, [f"BASE {_flags(b)}" if _flags(b) else "",
                                              f"NEW {_flags(n)}" if _flags(n) else ""]))])
    blocks.append(("table", ["variant", "scenario", "load point", *extra, "BASE p50 ms",
                             "NEW p50 ms", "p50 ratio [95 % CI]", "BASE p99 ms", "NEW p99 ms",
                             "p99 ratio [95 % CI]", "verdict", "flags"], table))
    notes = [f"{' · '.join(r['key'])} NEW: {plots.short(r['new']['note'])}" for r in rows
             if r["new"]["note"]]
    if notes:
        blocks += [("p", "Notes on NEW rows:"), ("ul", notes)]
    for label, keys in (("Only in BASE (not compared)", only_base),
                        ("Only in NEW (not compared)", only_new)):
        if keys:
            blocks += [("p", label + ":"), ("ul", [" · ".join(k) for k in keys])]
    blocks += [("img", "NEW / BASE ratios", "compare.png")]
    return blocks


def figure(base, new, rows, threshold):
    """Forest plot of the ratios: one line per compared row, p50 ○ and p99 □ with CI bars."""
    fig, ax = plt.subplots(figsize=(10, 2.2 + 0.55 * max(len(rows), 1)), layout="constrained")
    ax.axvspan(1 / (1 + threshold), 1 + threshold, color="0.9", lw=0,
               label=f"within ×{1 + threshold:g}")
    ax.axvline(1.0, color="0.4", lw=1)
    for i, r in enumerate(rows):
        c = plots.colour(r["key"][0])
        if not r["ratio"]:
            ax.text(1.0, i, r["verdict"], ha="center", va="center", fontsize=8,
                    color="#b00" if r["regression"] else "0.3")
            continue
        for metric, dy, marker in (("p50", -0.15, "o"), ("p99", 0.15, "s")):
            ratio, ci = r["ratio"][metric], r["ci"][metric]
            err = [[ratio - ci[0]], [ci[1] - ratio]] if ci else None
            ax.errorbar(ratio, i + dy, xerr=err, fmt=marker, color=c, ms=6, capsize=3,
                        mfc=c if plots.flag(r["new"]) == "ok" else "none")
            ax.annotate(f"{metric} {ratio:.2f}×", (ratio, i + dy), xytext=(0, 5),
                        textcoords="offset points", ha="center", fontsize=7, color=c)
    ax.set_yticks(range(len(rows)), [" · ".join(r["key"]) + ("  REGRESSION" if r["regression"]
                                                              else "") for r in rows],
                  fontsize=8)
    for tick, r in zip(ax.get_yticklabels(), rows):
        if r["regression"]:
            tick.set_color("#b00")
            tick.set_fontweight("bold")
    ax.set_ylim(len(rows) - 0.4, -0.6)
    ax.set_xscale("log")
    fmt = plots.PlainLogFormatter(labelOnlyBase=False, minor_thresholds=(1.5, 0.6))
    ax.xaxis.set_major_formatter(fmt)
    ax.xaxis.set_minor_formatter(fmt)
    ax.set_xlabel("NEW / BASE latency ratio (log scale; > 1 = NEW slower)\n"
                  "○ p50, □ p99, bars: 95 % CI; hollow = NEW row not a clean measurement")
    ax.grid(True, axis="x", which="both", alpha=0.3)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1), frameon=False)
    ax.set_title(f"NEW {_name(new)} vs BASE {_name(base)}", fontsize=10)
    fig.supxlabel(f"BASE: {base.footer()}\nNEW: {new.footer()}", fontsize=7, color="0.35")
    return fig
