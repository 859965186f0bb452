"""The seed's third claim, "socketio.run() improves INP", judged on browser rows.

INP (Interaction to Next Paint) is a browser metric: an input event's delay, handlers and the
next paint after them. A Socket.IO handler that emits and returns never waits for the
server, so the server can reach INP only through the page's main thread (replies parsed and
painted between inputs); what a user waits for after a click is interaction → reply painted.
Both are judged per pair of deployments (app.run() against socketio.run(), as in the first
claim) with ``compare.judge`` on intervals over repeats, and each variant gets one line with
its figures. The same verdict words and badges as the other claims.
"""
from bench.analysis import compare, reader
from bench.analysis.reader import has_data
from bench.output import verdicts
from bench.output.claims import CLAIMS
from bench.output.formatting import ms_short, where

TITLE = "Claim 3: “socketio.run() improves INP”"
METRICS = {"inp": "INP", "interaction_to_reply_p50": "interaction → reply painted p50"}
STATEMENT = ("Compared on browser rows (--client browser): the same app.run()/socketio.run() "
             "pairs as claim 1, on INP (web-vitals' definition, from the page's Event Timing "
             "entries for real clicks) and on interaction → reply painted (the click to the "
             "next frame after the reply). The claim holds where app.run()'s intervals of both "
             "lie materially above socketio.run()'s; Event Timing rounds durations to 8 ms, so "
             "INP differences below that cannot show.")
NEEDS = "browser rows (--client browser) of an app.run()/socketio.run() pair"


def interval(data, row, metric):
    """(low, high) of ``metric`` over the row's repeats (empty with fewer than 3)."""
    key = reader.key_columns(data.aggregates)
    values = compare.per_repeat(data, key, tuple(str(row[k]) for k in key))
    column = f"{metric}_us"
    repeats = values[column].tolist() if column in values else []
    return compare.interval_of(row, metric, repeats)[:2]


def figures(data, row):
    """One variant's line: INP and interaction → reply painted, with their intervals."""
    parts = []
    for metric, name in METRICS.items():
        value = row.get(f"{metric}_us")
        low, high = interval(data, row, metric)
        span = f" [{ms_short(low)}–{ms_short(high)}]" if low == low and high == high else ""
        parts.append(f"{name} {ms_short(value)}{span} ms")
    return f"{row['series']} · {where(row)}: " + ", ".join(parts)


def judge_pair(data, a, b):
    """(verdict, why) of "a's INP and interaction → reply are worse than b's"."""
    outcomes, said = [], []
    for metric, name in METRICS.items():
        outcome, _ = compare.judge(a[f"{metric}_us"], interval(data, a, metric),
                                   b[f"{metric}_us"], interval(data, b, metric),
                                   verdicts.MATERIAL)
        outcomes.append(verdicts.OUTCOME[outcome])
        said.append(f"{name}: {verdicts.WHY[outcome]}")
    why = f"a = {a['series']}, b = {b['series']}: " + "; ".join(said)
    if a["driver_bound"] or b["driver_bound"]:
        why += " (a page was the limit: driver-bound)"
    if set(outcomes) == {"worse"}:
        return "verified", why
    if set(outcomes) <= {"better", "same"}:
        return "refuted", why
    return "inconclusive", why


def judge(data, agg):
    """The claim in the shape of ``claims.judge``'s records, from the browser rows of ``agg``."""
    rows = agg[agg["client"] == "browser"] if "client" in agg else agg.iloc[0:0]
    rows = rows[rows.apply(has_data, axis=1)] if len(rows) else rows
    pairs = CLAIMS[0]["pairs"]
    evidence = []
    for a_name, b_name in pairs:
        for a, b in verdicts.measured_pairs(rows, a_name, b_name):
            verdict, why = judge_pair(data, a, b)
            evidence.append((verdict, f"{where(a)}: {a_name} vs {b_name} — {verdict}: {why}",
                             why))
    lines = [figures(data, r) for _, r in rows.iterrows() if r.get("inp_us") == r.get("inp_us")]
    if not evidence:
        verdict, reason = "not testable", f"not testable: needs {NEEDS}"
        why = f"needs {NEEDS}."
    else:
        verdict = verdicts.overall(evidence)
        reason = f"{evidence[0][0]}: {evidence[0][2]}" if len(evidence) == 1 else \
            f"{len(evidence)} comparisons; e.g. {evidence[0][2]}"
        why = f"{len(evidence)} comparison(s)."
    badge = verdicts.badge(verdict)
    return dict(title=TITLE, short="socketio.run() gives a better INP than app.run()",
                statement=STATEMENT, verdict=verdict, badge=badge,
                label=verdict if verdict in (badge, "not testable") else "mixed",
                reason=reason, why=why, evidence=[t for _, t, _ in evidence] + lines)
