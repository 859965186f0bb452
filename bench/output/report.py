"""report.md, a self-contained report.html and its screenshot report.png, from a results folder alone.

``context(data, charts)`` gathers everything the report says into one dict; the Jinja2
templates ``templates/report.md.j2`` and ``templates/report.html.j2`` lay it out, so the two
documents never disagree. Both open with the answer (``answer``): the fastest deployments per
scenario and load point, the seed's claims as verdicts (``claims``), and a banner for what
weakens the run; the evidence follows, each section with its chart beside its numbers.
"""
import base64
import os

import pandas as pd

from bench.analysis import reader
from bench.output import (answer, browser, capacity_chart, claims, explain, findings, inpclaim,
                          logscan, plots, tables, templating)
from bench.output.formatting import NO_INTERVAL, who, where
from bench.output.plots import style
from bench.output.plots.rows import scenario_rows
from bench.output.results import atomic_write
from bench.output.verdicts import MATERIAL
from bench.plan.scenarios import SCENARIOS

SCREENSHOT = "report.png"
# The report's prose, in one place for both templates (**bold** and `code` are its only marks).
TEXT = dict(
    rules="Rules: a verdict rests on p50 AND p99 with their 95 % intervals over repeats (the "
          "interval of each row's median per-repeat value; see the `interval` column), or, for "
          "a single repeat, the step's own interval from its samples. “Above” "
          "or “below” means the intervals do not overlap and the values differ by more than "
          f"{MATERIAL * 100:.0f} %; apart but closer, or overlapping with even the worse end "
          f"within {MATERIAL * 100:.0f} %, counts as “the same”; otherwise, or with no interval "
          f"({NO_INTERVAL}), the comparison is inconclusive. Driver-bound rows measure the "
          "driver and decide nothing. The same rule marks a regression in `compare`.",
    answer="Fastest = lowest p50 among valid rows that are not driver-bound; “not separable” = "
           "not shown materially slower at p50 (the p50 intervals overlap, lie within "
           f"{MATERIAL * 100:.0f} %, or one is missing); “next” = the fastest deployment that "
           "is, with its p50 and p99 as multiples of the fastest's. ms, [95 % interval over "
           "repeats, or the one repeat's own].",
    knees="A knee is the highest rate that met the SLO; bound `exact` when a higher step failed "
          "(the next step is the first failing rate), `lower` when the sweep never broke or "
          "broke only because the driver did, `none` when the first step failed.",
    clients="The same variant and load point measured with several clients and transports side "
            "by side; the differences are from the lean · websocket row of each group (its "
            "first row when there is none): client cost = stock client vs lean client over "
            "WebSocket, transport cost = polling vs WebSocket with the stock client.",
    no_clients="This run measured one client and one transport per variant and load point; run "
               "with `--client lean,python-socketio --transport websocket,polling` to separate "
               "the client's cost from the transport's.",
    tables="Latency in ms from each message's intended send time, from the merged histogram of "
           "all repeats; [95 % interval over repeats, or a single repeat's own from its samples] "
           "where there were enough (`interval` says which method, or why none). A row that "
           "failed a self-check stays valid and says which in “Can I trust this row?”. “–” = too few samples for that percentile; “≥” = "
           "censored at the deadline (more than 1 − q of the messages timed out). Driver share "
           "= the driver's own lag p50 ÷ latency p50. Invalid, driver-bound and noisy rows are "
           "kept and flagged.",
    logs="Lines of logs/<variant>.log containing Warning, Error or Traceback, and the first "
         f"{logscan.LOG_EXAMPLES} distinct ones.",
)
# Where each chart sits: the section it illustrates (scenario charts by prefix).
SCENARIO_CHARTS = ("bars", "spectrum", "cdf", "timeline")
SECTION_OF_OWN_CHART = {"sweep": "knees", "fanout": "fanout", "blocking": "blocking"}


def build(run_dir):
    """Regenerate plots/, report.md, report.html and (with Chromium) report.png in ``run_dir``
    from its CSVs and meta.json; returns why there is no screenshot, or ''."""
    data = reader.read(run_dir)
    charts = plots.save_all(data, os.path.join(run_dir, "plots"))
    charts += capacity_chart.save(run_dir, os.path.join(run_dir, "plots"))
    ctx = context(data, charts)
    atomic_write(os.path.join(run_dir, "report.md"), templating.render("report.md.j2", ctx))
    for chart in ctx["charts"]:
        with open(os.path.join(run_dir, chart["path"]), "rb") as f:
            chart["data_uri"] = "data:image/png;base64," + base64.b64encode(f.read()).decode()
    html = os.path.join(run_dir, "report.html")
    atomic_write(html, templating.render("report.html.j2", ctx))
    if not browser.find():
        return "no report.png: chromium is not installed"
    try:
        browser.screenshot(html, os.path.join(run_dir, SCREENSHOT))
    except browser.BrowserError as err:
        return f"no report.png: {err}"
    return ""


def _section(name):
    """The report section a chart file belongs to."""
    kind, _, scenario = name.partition("-")
    if kind in SCENARIO_CHARTS and scenario:
        return f"scenario:{scenario}"
    if kind == "claim":
        return f"claim:{scenario}"
    if name == "nodelay":
        return "explain"
    return SECTION_OF_OWN_CHART.get(plots.own_chart(kind), "other") if kind in SCENARIOS \
        else "other"


def findings_of(data):
    """The findings sections: downgrades, driver-bound rows, ranking, claims, knees, …"""
    agg = data.aggregates
    return dict(downgrades=findings.downgrades(agg), driver_bound=findings.driver_bound(agg),
                ranking=findings.ranking(agg), claims=judged_claims(data),
                knees=findings.knees(data), fanout=findings.fanout_findings(agg),
                blocking=findings.blocking_findings(agg),
                noisy=[f"{who(r)} · {where(r)}" for _, r in agg[agg["noisy"]].iterrows()],
                material=f"{MATERIAL * 100:.0f} %")


def judged_claims(data):
    """The seed's claims: the first two on the harness's own clients' rows, the INP claim on
    browser rows (present when the run has them)."""
    rows = per_scenario(data)
    browser_rows = rows["client"] == "browser" if "client" in rows else None
    if browser_rows is None or not browser_rows.any():
        return claims.judged(rows)
    return [*claims.judged(rows[~browser_rows]), inpclaim.judge(data, rows)]


def per_scenario(data):
    """The aggregate rows each scenario's charts and verdicts use (fan-out: all recipients)."""
    agg = data.aggregates
    return pd.concat([scenario_rows(agg, s) for s in data.scenarios()]) if len(agg) else agg


def context(data, charts):
    """Everything report.md and report.html show, as plain values."""
    found = findings_of(data)
    placed = [dict(name=name, title=title, path=os.path.relpath(path, data.run_dir),
                   section=_section(name), data_uri="") for name, title, path in charts]
    colours = style.colours(data)
    return dict(
        title=f"Latency report — {data.name}", footer=data.footer(), run=tables.metadata(data),
        answer=dict(fastest=answer.fastest(data.aggregates, data.scenarios()),
                    banner=answer.banner(data.aggregates), claims=found["claims"]),
        colours=colours, findings=found, tables=tables.scenario_tables(data),
        clients=findings.client_transport(data.aggregates),
        logs=logscan.log_summary(data.run_dir, data.aggregates["variant"].unique()),
        explain=explain.items(data), text=TEXT, marking=plots.MARKING, charts=placed)
