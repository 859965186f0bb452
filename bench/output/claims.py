"""The seed tutorial's claims, as data (which variant pairs test each), and their judgement.

A claim is a list of (a, b) variant pairs where "a is worse than b" is what the claim says;
``bench.output.verdicts`` judges every pair at every load point both were measured at.
Adding a claim is one more record in ``CLAIMS``.
"""
from bench.output import verdicts

MODES = ("threading", "eventlet", "gevent")
CLAIMS = (
    dict(title="Claim 1: “app.run() blocks / is slow; socketio.run() fixes it”",
         short="app.run() is slower than socketio.run()",
         statement="Compared: seed-app-run vs seed-socketio-run (the tutorial's snippets "
                   "verbatim) and flask-run-X vs socketio-run-X for each async mode X. The "
                   "claim holds where app.run() serves nothing while socketio.run() serves, or "
                   "where app.run()'s p50 and p99 intervals both lie above socketio.run()'s.",
         pairs=(("seed-app-run", "seed-socketio-run"),
                *((f"flask-run-{m}", f"socketio-run-{m}") for m in MODES)),
         needs="an app.run()/socketio.run() pair of variants"),
    dict(title="Claim 2: “eventlet is the fix”",
         short="eventlet is faster than threading and gevent under socketio.run()",
         statement="Compared: socketio-run-threading and socketio-run-gevent against "
                   "socketio-run-eventlet. The claim holds where the alternative fails while "
                   "eventlet serves, or where its p50 and p99 intervals both lie above "
                   "eventlet's.",
         pairs=(("socketio-run-threading", "socketio-run-eventlet"),
                ("socketio-run-gevent", "socketio-run-eventlet")),
         needs="socketio-run-eventlet and at least one of socketio-run-threading, "
               "socketio-run-gevent"),
)


def counts(evidence):
    """'2 verified, 6 inconclusive': how the comparisons of a claim came out."""
    return ", ".join(f"{n} {v}" for v, n in (
        (v, sum(e[0] == v for e in evidence)) for v in ("verified", "refuted", "inconclusive"))
        if n)


def reason(verdict, evidence):
    """The one-line reason under a claim's badge: the counts and the decisive comparison."""
    decisive = [e for e in evidence if e[0] == verdicts.badge(verdict)] or evidence
    return f"{counts(evidence)} of {len(evidence)} comparisons; e.g. {decisive[0][2]}"


def judge(agg, spec):
    """A claim judged on the aggregate rows: title, statement, verdict, badge class and its
    label (verified, refuted, inconclusive, not testable, mixed), one-line reason, and every
    comparison's line."""
    present = set(agg["variant"])
    evidence = [e for a, b in spec["pairs"] if a in present and b in present
                for e in verdicts.pair_evidence(agg, a, b)]
    if not evidence:
        verdict = "not testable"
        why = f"needs {spec['needs']}; this run measured {', '.join(sorted(present)) or 'nothing'}."
        line = f"not testable: needs {spec['needs']}"
    else:
        verdict = verdicts.overall(evidence)
        why = counts(evidence) + " comparison(s)."
        line = reason(verdict, evidence)
    badge = verdicts.badge(verdict)
    label = verdict if verdict in (badge, "not testable") else "mixed"
    return dict(title=spec["title"], short=spec["short"], statement=spec["statement"],
                verdict=verdict, badge=badge, label=label, reason=line, why=why,
                evidence=[t for _, t, _ in evidence])


def judged(agg):
    """Every claim judged on ``agg``."""
    return [judge(agg, spec) for spec in CLAIMS]
