"""Verdicts on "deployment a is worse than deployment b", row against row, with the reason.

Each metric (p50, p99) is judged by ``bench.analysis.compare.judge`` — the rule compare uses for
regressions — with a materiality threshold of 10 %. A pair is verified only when both metrics
say a is materially above b (or a served nothing while b served), refuted when both say it is
not (below, or within 10 %), inconclusive otherwise.
"""
from bench.analysis import compare, reader
from bench.analysis.reader import has_data
from bench.output.formatting import NO_INTERVAL, interval_text, ms, ms_short, short, where

MATERIAL = 0.10          # a difference within 10 % is "the same"
METRICS = compare.METRICS
# compare.judge's outcome for "a against b" → what it says about "a is worse than b"
OUTCOME = {compare.SLOWER: "worse", compare.HIGHER: "same", compare.SAME: "same",
           compare.FASTER: "better", compare.LOWER: "better", compare.OVERLAP: "unclear",
           compare.CANNOT_TELL: "unclear", compare.MISSING: "unclear"}
WHY = {compare.SLOWER: "a above b", compare.HIGHER: f"a above b, within {MATERIAL:.0%}",
       compare.FASTER: "a below b", compare.LOWER: "a below b",
       compare.SAME: f"overlap, a within {MATERIAL:.0%} of b", compare.OVERLAP: "intervals overlap",
       compare.CANNOT_TELL: f"no interval ({NO_INTERVAL})",
       compare.MISSING: "too few samples on one side"}


def _interval(row, metric):
    return compare.interval_of(row, metric)[:2]


def metric_verdict(a, b, metric):
    """(worse|better|same|unclear, text) of "a is materially worse than b" on one metric."""
    outcome, _ = compare.judge(a[f"{metric}_us"], _interval(a, metric), b[f"{metric}_us"],
                               _interval(b, metric), MATERIAL)
    if outcome == compare.MISSING:
        return "unclear", f"{metric}: {WHY[outcome]}"
    text = (f"{metric} {ms(a[f'{metric}_us'])}{interval_text(a, metric) or ' [no interval]'} vs "
            f"{ms(b[f'{metric}_us'])}{interval_text(b, metric) or ' [no interval]'} ms")
    return OUTCOME[outcome], f"{text}: {WHY[outcome]}"


def judge_pair(a, b):
    """Verdict on "row a is worse (slower or failing) than row b": (verdict, why).

    verified: a served nothing while b served, or p50 AND p99 both put a materially above b;
    refuted: b served nothing while a served, or both metrics put a below or within 10 % of b;
    inconclusive otherwise (driver-bound rows, empty or overlapping intervals, or p50 and p99
    disagreeing); "no data" when neither served.
    """
    if not has_data(a) or not has_data(b):
        if has_data(a) or has_data(b):
            failed, other = (a, b) if not has_data(a) else (b, a)
            verdict = "verified" if failed is a else "refuted"
            return verdict, (f"{failed['series']} served nothing "
                             f"({short(failed['note'] or 'failed', 160)}) while "
                             f"{other['series']} served over {other['transport']} at p50 "
                             f"{ms(other['p50_us'])} ms")
        return "no data", f"neither {a['series']} nor {b['series']} served"
    names = f"a = {a['series']} over {a['transport']}, b = {b['series']} over {b['transport']}"
    if a["driver_bound"] or b["driver_bound"]:
        return "inconclusive", names + ": driver-bound, so not a server measurement"
    results = [metric_verdict(a, b, m) for m in METRICS]
    outcomes = {o for o, _ in results}
    why = names + ": " + "; ".join(t for _, t in results) + "".join(
        f"; {side} failed {', '.join(compare.failed_checks(r))}"
        for side, r in (("a", a), ("b", b)) if compare.failed_checks(r))
    if outcomes == {"worse"}:
        return "verified", why
    if outcomes <= {"better", "same"}:
        return "refuted", why
    return "inconclusive", why


def brief(a, b):
    """One short clause for a badge's reason: the pair, where, and its p50s."""
    if not has_data(a) or not has_data(b):
        failed = a if not has_data(a) else b
        return f"{failed['series']} served nothing at {where(failed)}"
    return (f"{where(a)}: {a['series']} p50 {ms_short(a['p50_us'])} vs {b['series']} "
            f"{ms_short(b['p50_us'])} ms")


def counterpart(a, candidates):
    """The row of ``candidates`` (same load point, other variant) to judge ``a`` against: the
    one measured with the same client and transport, else the only one, else lean · websocket
    (a variant that fell back to another client or transport is judged as deployed)."""
    if not candidates:
        return None
    same = [b for b in candidates if (b["client"], b["transport"]) == (a["client"], a["transport"])]
    if same:
        return same[0]
    if len(candidates) == 1:
        return candidates[0]
    lean = [b for b in candidates if (b["client"], b["transport"]) == ("lean", "websocket")]
    return lean[0] if lean else None


def measured_pairs(agg, a_name, b_name):
    """[(a row, b row)] of every load point both variants were measured at (a row of a with
    its counterpart among b's rows)."""
    key = [c for c in reader.key_columns(agg) if c not in ("variant", "client", "transport")]
    by_key = {}
    for _, b in agg[agg["variant"] == b_name].iterrows():
        by_key.setdefault(tuple(b[key]), []).append(b)
    out = []
    for _, a in agg[agg["variant"] == a_name].iterrows():
        b = counterpart(a, by_key.get(tuple(a[key]), []))
        if b is not None:
            out.append((a, b))
    return out


def pair_evidence(agg, a_name, b_name):
    """[(verdict, text, brief)] for every load point both variants were measured at."""
    out = []
    for a, b in measured_pairs(agg, a_name, b_name):
        verdict, why = judge_pair(a, b)
        if verdict != "no data":
            out.append((verdict, f"{where(a)}: {a_name} vs {b_name} — {verdict}: {why}",
                        brief(a, b)))
    return out


def overall(evidence):
    """A claim's verdict from its comparisons' verdicts: verified, refuted, inconclusive, or
    mixed ('verified in N, refuted in M …') when comparisons disagree."""
    verdicts = [v for v, *_ in evidence]
    if "verified" in verdicts and "refuted" in verdicts:
        return (f"verified in {verdicts.count('verified')}, refuted in "
                f"{verdicts.count('refuted')} of {len(evidence)} comparisons (see below)")
    for verdict in ("verified", "refuted"):
        if verdict in verdicts:
            return verdict
    return "inconclusive"


def badge(verdict):
    """The badge class of a verdict (mixed and untestable verdicts are inconclusive)."""
    return verdict if verdict in ("verified", "refuted") else "inconclusive"


def tied(rows, best, metric="p50"):
    """Rows not shown materially slower than ``best`` on ``metric`` (``best`` included): the
    intervals overlap, lie within 10 %, or one is missing."""
    return [r for r in rows
            if r.name == best.name or metric_verdict(r, best, metric)[0] != "worse"]
