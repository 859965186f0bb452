"""The report's first screen: which deployment is fastest, is the tutorial right, and what
weakens the answer.

Per scenario and load point, the fastest valid deployment, every deployment not shown
materially slower than it at p50 (``verdicts.tied``), and the next one that is, with p50 and p99 and
their intervals in ms (3 significant digits). The banner lists what makes the run weaker than
it looks: noisy steps, driver-bound rows, variants that served nothing, invalid rows, rows
without an interval.
"""
import pandas as pd

from bench.analysis import compare
from bench.analysis.reader import has_data
from bench.analysis.stats import LOG_T_MIN
from bench.output import verdicts
from bench.output.formatting import ms_short, value_text, where
from bench.output.plots.rows import panels, scenario_rows


def _figures(row):
    return dict(name=row["series"], p50=value_text(row, "p50", ms_short),
                p99=value_text(row, "p99", ms_short))


def _times(row, best, metric):
    a, b = row[f"{metric}_us"], best[f"{metric}_us"]
    return "" if pd.isna(a) or pd.isna(b) or not b else f"{a / b:.2g}×"


def ranked(rows):
    """The rows that can be ranked (valid, served, not driver-bound, a p50), fastest first."""
    ok = rows[rows["valid"] & ~rows["driver_bound"] & rows.apply(has_data, axis=1)
              & rows["p50_us"].notna()]
    return ok.sort_values("p50_us", kind="stable")


def fastest(agg, scenarios):
    """Per scenario and load point: the fastest deployment(s) and what separates them."""
    out = []
    for scenario in scenarios:
        for title, rows in panels(scenario_rows(agg, scenario)):
            order = ranked(rows)
            entry = dict(where=f"{scenario} · {title}", best=None, tied=[], next=None,
                         unranked=[r["series"] for _, r in rows.iterrows()
                                   if r.name not in order.index])
            if len(order):
                best = order.iloc[0]
                tied = verdicts.tied([r for _, r in order.iterrows()], best)
                names = {r.name for r in tied}
                after = [r for _, r in order.iterrows() if r.name not in names]
                entry.update(best=_figures(best),
                             tied=[r["series"] for r in tied if r.name != best.name])
                if after:
                    nxt = after[0]
                    entry["next"] = dict(_figures(nxt), p50_times=_times(nxt, best, "p50"),
                                         p99_times=_times(nxt, best, "p99"))
            out.append(entry)
    return out


def banner(agg):
    """What weakens this run's answer: [{head, detail}] (empty when nothing does)."""
    items = []
    failed = agg[~agg.apply(has_data, axis=1)]
    for variant, g in failed.groupby("variant", sort=True):
        items.append(dict(head=f"{variant} failed", detail="served nothing at " + ", ".join(
            where(r) for _, r in g.iterrows())))
    for column, text in (("noisy", "noisy step(s): steal time or foreign load while measuring"),
                         ("driver_bound", "driver-bound row(s): they measure the driver")):
        hit = agg[agg[column]]
        if len(hit):
            items.append(dict(head=f"{len(hit)} {text}", detail=", ".join(
                f"{r['series']} at {where(r)}" for _, r in hit.iterrows())))
    invalid = agg[~agg["valid"] & agg.apply(has_data, axis=1)]
    if len(invalid):
        items.append(dict(head=f"{len(invalid)} invalid row(s): messages lost or rate not reached",
                          detail=", ".join(f"{r['series']} at {where(r)}"
                                           for _, r in invalid.iterrows())))
    served = agg[agg.apply(has_data, axis=1)]
    blind = [(r, [m for m in verdicts.METRICS if pd.isna(compare.interval_of(r, m)[0])])
             for _, r in served.iterrows()]
    blind = [(r, m) for r, m in blind if m]
    if blind:
        items.append(dict(head=f"{len(blind)} row(s) without an interval (needs ≥ {LOG_T_MIN} "
                               "repeats with a value, or one repeat with enough samples; their "
                               "comparisons stay inconclusive)",
                          detail=", ".join(f"{r['series']} at {where(r)} ({'/'.join(m)})"
                                           for r, m in blind)))
    return items
