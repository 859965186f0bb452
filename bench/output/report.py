"""report.md and a self-contained report.html of one results folder, from its files alone.

``context(data, charts)`` gathers everything the report says into one dict; the Jinja2
templates ``templates/report.md.j2`` and ``templates/report.html.j2`` lay it out, so the two
documents never disagree. Findings are explicit rules over the aggregate rows, each stated with
the numbers and intervals it rests on, so a reader can check every sentence against the tables.
"""
import base64
import os
import re

import jinja2
import markupsafe
import pandas as pd

from bench.analysis import reader, stats
from bench.analysis.reader import has_data
from bench.output import capacity_chart, explain, plots
from bench.output.plots import style
from bench.output.plots.rows import panels, scenario_rows, splits
from bench.output.results import atomic_write

MATERIAL = 0.10          # a difference within 10 % is "the same" for the findings
LOG_PATTERN = re.compile(r"Warning|Error|Traceback")
LOG_EXAMPLES = 4
CLAIM1_PAIRS = [("seed-app-run", "seed-socketio-run")] + [
    (f"flask-run-{m}", f"socketio-run-{m}") for m in ("threading", "eventlet", "gevent")]
CLAIM2_BASE, CLAIM2_ALTERNATIVES = "socketio-run-eventlet", ("socketio-run-threading",
                                                             "socketio-run-gevent")
METRICS = ("p50", "p99")
NO_INTERVAL = f"n/a (needs ≥ {stats.LOG_T_MIN} repeats)"
# The report's prose, in one place for both templates (**bold** and `code` are its only marks).
TEXT = dict(
    rules="Rules: a verdict rests on p50 AND p99 with their 95 % intervals over repeats (the "
          "interval of each row's median per-repeat value; see the `interval` column). “Above” "
          "or “below” means the intervals do not overlap; overlapping intervals count as “the "
          f"same” only when even the worse end is within {MATERIAL * 100:.0f} %; otherwise, or "
          f"with no interval ({NO_INTERVAL}), the comparison is inconclusive. Driver-bound rows "
          "measure the driver and decide nothing.",
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
           "all repeats; [95 % interval over repeats] where there were enough (`interval` says "
           "which method, or why none). “–” = too few samples for that percentile; “≥” = "
           "censored at the deadline (more than 1 − q of the messages timed out). Driver share "
           "= the driver's own lag p50 ÷ latency p50. Invalid, driver-bound and noisy rows are "
           "kept and flagged.",
    logs="Lines of logs/<variant>.log containing Warning, Error or Traceback, and the first "
         f"{LOG_EXAMPLES} distinct ones.",
)
TEMPLATES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "templates")


def build(run_dir):
    """Regenerate plots/, report.md and report.html in ``run_dir`` from its CSVs and meta.json."""
    data = reader.read(run_dir)
    charts = plots.save_all(data, os.path.join(run_dir, "plots"))
    charts += capacity_chart.save(run_dir, os.path.join(run_dir, "plots"))
    ctx = context(data, charts)
    atomic_write(os.path.join(run_dir, "report.md"), render("report.md.j2", ctx))
    for chart in ctx["charts"]:
        with open(os.path.join(run_dir, chart["path"]), "rb") as f:
            chart["data_uri"] = "data:image/png;base64," + base64.b64encode(f.read()).decode()
    atomic_write(os.path.join(run_dir, "report.html"), render("report.html.j2", ctx))


# ---------------------------------------------------------------- rendering

def _md_cell(value):
    return str(value).replace("|", "\\|").replace("\n", " ")


def _inline(text):
    """HTML of a text with the report's two inline marks: **bold** and `code`."""
    text = str(markupsafe.escape(str(text)))
    text = re.sub(r"\*\*(.+?)\*\*", r"<strong>\1</strong>", text)
    text = re.sub(r"\[([^\]]+)\]\(([^)\s\"]+)\)", r'<a href="\2">\1</a>', text)
    return markupsafe.Markup(re.sub(r"`(.+?)`", r"<code>\1</code>", text))


def environment(html):
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(TEMPLATES),
                             autoescape=html, undefined=jinja2.StrictUndefined,
                             trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=True)
    env.filters["cell"] = _md_cell
    env.filters["inline"] = _inline
    return env


def render(template, ctx):
    return environment(template.endswith(".html.j2")).get_template(template).render(**ctx)


# ---------------------------------------------------------------- formatting

def ms(us):
    return "–" if us is None or pd.isna(us) else f"{us / 1000:.3f}"


def interval_text(row, metric):
    """' [low–high]' in ms, or '' when the row has no interval."""
    lo, hi = row.get(f"{metric}_ci_low", float("nan")), row.get(f"{metric}_ci_high", float("nan"))
    return "" if pd.isna(lo) or pd.isna(hi) else f" [{ms(lo)}–{ms(hi)}]"


def interval_method(row):
    method = str(row.get("ci_method") or "")
    if pd.isna(row["p50_ci_low"]) and pd.isna(row["p99_ci_low"]):
        return NO_INTERVAL if not method or method.startswith("none") else method
    return method.split(" (")[0] or "from the CSV"


def value_text(row, metric):
    """A percentile cell: '–' when empty (too few samples), '≥' when censored, its interval."""
    v = row[f"{metric}_us"]
    if pd.isna(v):
        return "–"
    return ("≥ " if style.censored(row, metric) else "") + ms(v) + interval_text(row, metric)


def share(value):
    return "–" if pd.isna(value) else f"{100 * value:.0f} %"


def flags(row):
    out = ["valid" if row["valid"] else "**invalid**"]
    out += ["**driver-bound**"] * bool(row["driver_bound"]) + ["unstable"] * bool(row["unstable"])
    out += ["noisy"] * bool(row["noisy"])
    return ", ".join(out)


def where(row):
    extra = [str(row[e]) for e in reader.SPLITS if row[e]]
    return " · ".join(dict.fromkeys([row["scenario"], str(row["load_point"]), *extra]))


def who(row, key_extras=()):
    """The series of a row plus any further key parts (client, transport…) asked for."""
    return " · ".join([row["series"], *[str(row[c]) for c in key_extras if row[c]]])


# ---------------------------------------------------------------- verdicts

def _interval(row, metric):
    return row[f"{metric}_ci_low"], row[f"{metric}_ci_high"]


def _metric(a, b, metric):
    """(outcome, text) of "a is materially worse than b" on one metric, from the intervals.

    worse / better: the intervals do not overlap (stats.differ); same: they overlap and even
    a's upper bound is within MATERIAL of b's lower bound; otherwise unclear (overlap, or an
    interval or value is missing).
    """
    ia, ib = _interval(a, metric), _interval(b, metric)
    text = (f"{metric} {ms(a[f'{metric}_us'])}{interval_text(a, metric) or ' [no interval]'} vs "
            f"{ms(b[f'{metric}_us'])}{interval_text(b, metric) or ' [no interval]'} ms")
    if pd.isna(a[f"{metric}_us"]) or pd.isna(b[f"{metric}_us"]):
        return "unclear", f"{metric}: too few samples on one side"
    difference = stats.differ(ib, ia)
    if difference == "higher":
        return "worse", text + ": a above b"
    if difference == "lower":
        return "better", text + ": a below b"
    if difference == "cannot tell":
        return "unclear", text + f": no interval ({NO_INTERVAL})"
    if ia[1] <= ib[0] * (1 + MATERIAL):
        return "same", text + f": overlap, a within {MATERIAL * 100:.0f} % of b"
    return "unclear", text + ": intervals overlap"


def judge_pair(a, b):
    """Verdict on "row a is worse (slower or failing) than row b": (verdict, why).

    verified: a served nothing while b served, or p50 AND p99 intervals both put a above b;
    refuted: b served nothing while a served, or both metrics put a below or within 10 % of b;
    inconclusive otherwise (driver-bound rows, empty or overlapping intervals, or p50 and p99
    disagreeing).
    """
    if not has_data(a) or not has_data(b):
        if has_data(a) or has_data(b):
            failed, other = (a, b) if not has_data(a) else (b, a)
            verdict = "verified" if failed is a else "refuted"
            return verdict, (f"{failed['series']} served nothing "
                             f"({style.short(failed['note'] or 'failed', 160)}) while "
                             f"{other['series']} served over {other['transport']} at p50 "
                             f"{ms(other['p50_us'])} ms")
        return "no data", f"neither {a['series']} nor {b['series']} served"
    names = f"a = {a['series']} over {a['transport']}, b = {b['series']} over {b['transport']}"
    if a["driver_bound"] or b["driver_bound"]:
        return "inconclusive", names + ": driver-bound, so not a server measurement"
    results = [_metric(a, b, m) for m in METRICS]
    outcomes = {o for o, _ in results}
    why = names + ": " + "; ".join(t for _, t in results)
    if outcomes == {"worse"}:
        return "verified", why
    if outcomes <= {"better", "same"}:
        return "refuted", why
    return "inconclusive", why


def _counterpart(a, candidates):
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


def _pair_evidence(agg, a_name, b_name):
    """[(verdict, text)] for every load point both variants were measured at."""
    key = [c for c in reader.key_columns(agg) if c not in ("variant", "client", "transport")]
    by_key = {}
    for _, b in agg[agg["variant"] == b_name].iterrows():
        by_key.setdefault(tuple(b[key]), []).append(b)
    out = []
    for _, a in agg[agg["variant"] == a_name].iterrows():
        b = _counterpart(a, by_key.get(tuple(a[key]), []))
        if b is None:
            continue
        verdict, why = judge_pair(a, b)
        if verdict != "no data":
            out.append((verdict, f"{where(a)}: {a_name} vs {b_name} — {verdict}: {why}"))
    return out


def overall(evidence):
    """A claim's verdict from its comparisons' verdicts."""
    verified = [t.split(":")[0] for v, t in evidence if v == "verified"]
    refuted = [t.split(":")[0] for v, t in evidence if v == "refuted"]
    if verified and refuted:
        return (f"verified in {len(verified)}, refuted in {len(refuted)} of {len(evidence)} "
                "comparisons (see below)")
    if verified:
        return "verified"
    if refuted:
        return "refuted"
    return "inconclusive"


def claim(agg, title, statement, pairs, needs):
    present = set(agg["variant"])
    evidence = [e for a, b in pairs if a in present and b in present
                for e in _pair_evidence(agg, a, b)]
    if not evidence:
        verdict = "not testable"
        why = (f"needs {needs}; this run measured {', '.join(sorted(present)) or 'nothing'}.")
    else:
        verdict = overall(evidence)
        counts = {v: sum(e == v for e, _ in evidence)
                  for v in ("verified", "refuted", "inconclusive")}
        why = ", ".join(f"{n} {v}" for v, n in counts.items() if n) + " comparison(s)."
    return dict(title=title, statement=statement, verdict=verdict, why=why,
                evidence=[t for _, t in evidence])


# ---------------------------------------------------------------- findings

def downgrades(agg):
    items = []
    for (variant, transport), g in agg[agg["transport"] != "websocket"].groupby(
            ["variant", "transport"], sort=False):
        reasons = dict.fromkeys(style.short(n.split("; measured over")[0], 200) for n in g["note"])
        items.append(f"{variant}: {transport or 'no transport (served nothing)'} in "
                     f"{len(g)} row(s) ({', '.join(where(r) for _, r in g.iterrows())}) — "
                     + " / ".join(reasons))
    return items


def driver_bound(agg):
    return [f"{variant}: " + ", ".join(
        f"{where(r)} ({'; '.join(s for s in r['note'].split('; ') if s.startswith('driver')) or 'driver-bound'})"
        for _, r in g.iterrows()) for variant, g in agg[agg["driver_bound"]].groupby(
            "variant", sort=False)]


def ranking(agg):
    items = []
    for scenario in dict.fromkeys(agg["scenario"]):
        for title, rows in panels(scenario_rows(agg, scenario)):
            ranked = rows[rows["valid"] & rows.apply(has_data, axis=1)
                          & rows["p50_us"].notna()].sort_values("p50_us")
            left = [f"{r['series']} ({'no data' if not has_data(r) else style.flag(r)})"
                    for _, r in rows.iterrows() if r["series"] not in set(ranked["series"])]
            head = f"{scenario} · {title}: "
            if len(ranked) < 2:
                text = head + f"fewer than two valid variants ({len(ranked)}), not ranked"
            else:
                fast, slow = ranked.iloc[0], ranked.iloc[-1]
                p99 = slow["p99_us"] / fast["p99_us"]
                text = head + (
                    f"fastest {fast['series']} (p50 {ms(fast['p50_us'])} ms, p99 "
                    f"{ms(fast['p99_us'])} ms), slowest {slow['series']} (p50 "
                    f"{ms(slow['p50_us'])} ms, p99 {ms(slow['p99_us'])} ms): "
                    f"{slow['p50_us'] / fast['p50_us']:.2f}× at p50, "
                    + ("–" if pd.isna(p99) else f"{p99:.2f}×") + " at p99")
            items.append(text + (f"; not ranked: {', '.join(left)}" if left else ""))
    return items


def knees(data):
    """The sweep's knees per variant with bound and first failing rate, or None."""
    k = plots.knees_per_variant(data)
    if k.empty:
        return None
    rows = []
    for _, r in k.sort_values("knee_msg_s", ascending=False, na_position="last").iterrows():
        spread = (f"{r['low']:,.0f}–{r['high']:,.0f}" if r["repeats"] > 1
                  and pd.notna(r["low"]) else "")
        rows.append([r["variant"],
                     "none (first step failed)" if r["bound"] == "none" else
                     ("≥ " if r["bound"] == "lower" else "") + (
                         f"{r['knee_msg_s']:,.0f}" if pd.notna(r["knee_msg_s"]) else "no knee"),
                     r["bound"] or "–",
                     f"{r['next_msg_s']:,.0f}" if pd.notna(r["next_msg_s"]) else "–",
                     f"{r['repeats']}" + (f" ({spread})" if spread else ""), r["reason"]])
    return dict(slo="; ".join(k["slo"].unique()),
                headers=["variant", "knee msg/s", "bound", "next step msg/s (first failing)",
                         "repeats (range)", "reason"], rows=rows)


def fanout_findings(agg):
    fan = agg[(agg["scenario"] == "fanout") & (agg["recipient"] != "")]
    items = []
    for (series, lp), g in fan.groupby(["series", "load_point"]):
        first, last = (g[g["recipient"] == k] for k in ("first", "last"))
        if first.empty or last.empty or not (has_data(first.iloc[0]) and has_data(last.iloc[0])):
            items.append(f"{series} · {lp}: first/last recipient not both measured")
            continue
        f, la = first.iloc[0], last.iloc[0]
        items.append(f"{series} · {lp}: last recipient p50 {ms(la['p50_us'])} ms vs first "
                     f"{ms(f['p50_us'])} ms ({la['p50_us'] / f['p50_us']:.2f}×)"
                     f"{' [' + style.flag(la) + ']' if style.flag(la) != 'ok' else ''}")
    return items


BLOCKING_WORDS = {"verified": "one slow handler delays everyone",
                  "refuted": "no material delay", "inconclusive": "cannot tell"}


def blocking_findings(agg):
    blk = agg[(agg["scenario"] == "blocking") & (agg["mix"] != "")]
    items = []
    for series, g in blk.groupby("series"):
        base = g[g["mix"] == "echo-only"]
        for _, r in g[g["mix"] != "echo-only"].iterrows():
            if base.empty:
                items.append(f"{series} · {r['mix']}: no echo-only baseline")
                continue
            verdict, why = judge_pair(r, base.iloc[0])
            items.append(f"{series} · {r['mix']} vs echo-only: "
                         f"{BLOCKING_WORDS.get(verdict, verdict)} — {why}")
    return items


def delta(row, ref, metric):
    """``row``'s metric minus the reference row's, in ms ('–' where either cell is empty)."""
    if row.name == ref.name:
        return "reference"
    a, b = row[f"{metric}_us"], ref[f"{metric}_us"]
    return "–" if pd.isna(a) or pd.isna(b) else f"{(a - b) / 1000:+.3f}"


def client_transport(agg):
    """Rows of variants measured with several (client, transport) at one load point, and the
    p50/p99 difference of each from the group's lean · websocket row (or its first)."""
    key = [c for c in reader.key_columns(agg) if c not in ("client", "transport")]
    rows = []
    for _, g in agg.groupby(key, sort=False):
        g = g[g.apply(has_data, axis=1)]
        if g[["client", "transport"]].drop_duplicates().shape[0] < 2:
            continue
        lean = g[(g["client"] == "lean") & (g["transport"] == "websocket")]
        ref = (lean if len(lean) else g).iloc[0]
        for _, r in g.sort_values(["client", "transport"]).iterrows():
            rows.append([r["variant"], where(r), r["client"] or "?", r["transport"],
                         value_text(r, "p50"), value_text(r, "p99"),
                         *[delta(r, ref, m) for m in METRICS]])
    return rows


# ---------------------------------------------------------------- sections

def metadata(data):
    m, host = data.meta, data.meta.get("host", {})
    options = m.get("plan", {}).get("options", {})
    pin = m.get("pinning", {})
    calib = m.get("calibration") or {}
    rows = [
        ("run folder", data.name),
        ("started / finished (UTC)", f"{m.get('started_utc', '?')} / {m.get('finished_utc', '?')}"),
        ("status", f"{m.get('status', '?')}, {m.get('steps_done', '?')} of "
                   f"{m.get('plan', {}).get('steps', '?')} steps"),
        ("machine", f"{host.get('cpu_model', '?')}, {host.get('cores', '?')} cores, "
                    f"{host.get('system', '')} {host.get('kernel', '')} {host.get('machine', '')}"),
        ("Python", host.get("python", "?")),
        ("harness", f"{m.get('harness_version', '?')} (git {m.get('git_commit', '?')}), "
                    f"schema {m.get('schema_version', '?')}"),
        ("plan", ", ".join(f"{k}={options[k]}" for k in (
            "duration", "warmup", "repeats", "rate", "connections", "payload", "timeout",
            "deadline_ms", "client", "transport", "arrivals", "seed", "quick") if k in options)),
        ("variants", ", ".join(options.get("variants", []))
         or ", ".join(sorted(data.aggregates["variant"].unique()))),
        ("scenarios", ", ".join(options.get("scenarios", [])) or ", ".join(data.scenarios())),
        ("pinning", f"server CPUs {pin.get('server_cpus')}, driver CPUs {pin.get('driver_cpus')}"
         if pin.get("enabled") else "off"),
        ("calibration", ", ".join(f"{k}={v}" for k, v in calib.items()) or "not run"),
    ]
    rows += [(k, v) for k, v in (  # the user's own app, traffic and server knobs (#13)
        ("app override", (m.get("app_override") or {}).get("text")),
        ("scenario file", m.get("scenario_file")),
        ("server knobs", ", ".join(f"{k}={v}" for k, v in (m.get("server_knobs") or {}).items())))
        if v]
    rows += [(f"packages ({env})", ", ".join(f"{k} {v}" for k, v in versions.items() if v))
             for env, versions in m.get("packages", {}).items()]
    return rows


def scenario_tables(data):
    agg, out = data.aggregates, []
    varied = [c for c in ("client", "server_nodelay", "profiled")
              if agg[c].astype(str).nunique() > 1]
    for scenario in data.scenarios():
        rows = agg[agg["scenario"] == scenario]
        extra = [e for e in splits(rows) if (rows[e] != rows["load_point"]).any()]
        headers = ["variant", "load point", *extra, *varied, "transport", "achieved msg/s",
                   "p50 ms", "p99 ms", "interval", "p99.9 ms", "max ms", "ok %",
                   "driver share", "censored", "flags"]
        table, notes = [], []
        for _, group in panels(rows):
            for _, r in group.sort_values("p50_us", na_position="last").iterrows():
                okp = f"{100 * r['ok'] / r['attempted']:.2f}" if r["attempted"] else "–"
                table.append([r["variant"], r["load_point"], *[r[e] for e in extra],
                              *[r[c] for c in varied], r["transport"] or "none",
                              "–" if pd.isna(r["achieved_rate"]) else f"{r['achieved_rate']:,.0f}",
                              value_text(r, "p50"), value_text(r, "p99"), interval_method(r),
                              value_text(r, "p999"), ms(r["max_us"]), okp,
                              share(r["driver_share"]), r["censored"] or "–", flags(r)])
                if r["note"]:
                    notes.append(f"{r['variant']} · {r['load_point']}: {r['note']}")
        out.append(dict(name=scenario, headers=headers, rows=table,
                        notes=list(dict.fromkeys(notes))))
    return out


def log_summary(run_dir, variants):
    """Per variant: how many server log lines mention Warning/Error/Traceback, first distinct."""
    logs = os.path.join(run_dir, "logs")
    names = sorted(set(variants) | {f[:-4] for f in os.listdir(logs) if f.endswith(".log")}
                   if os.path.isdir(logs) else set(variants))
    rows = []
    for name in names:
        path = os.path.join(logs, f"{name}.log")
        if not os.path.exists(path):
            rows.append([name, "no log", ""])
            continue
        with open(path, errors="replace") as f:
            hits = [line.strip() for line in f if LOG_PATTERN.search(line)]
        first = list(dict.fromkeys(hits))[:LOG_EXAMPLES]
        rows.append([name, str(len(hits)), " ⏎ ".join(f"`{h[:160]}`" for h in first)])
    return rows


def findings(data):
    agg = data.aggregates
    per_scenario = pd.concat([scenario_rows(agg, s) for s in data.scenarios()]) \
        if len(agg) else agg
    claims = [
        claim(per_scenario, "Claim 1: “app.run() blocks / is slow; socketio.run() fixes it”",
              "Compared: seed-app-run vs seed-socketio-run (the tutorial's snippets verbatim) "
              "and flask-run-X vs socketio-run-X for each async mode X. The claim holds where "
              "app.run() serves nothing while socketio.run() serves, or where app.run()'s p50 "
              "and p99 intervals both lie above socketio.run()'s.",
              CLAIM1_PAIRS, "an app.run()/socketio.run() pair of variants"),
        claim(per_scenario, "Claim 2: “eventlet is the fix”",
              "Compared: socketio-run-threading and socketio-run-gevent against "
              "socketio-run-eventlet. The claim holds where the alternative fails while eventlet "
              "serves, or where its p50 and p99 intervals both lie above eventlet's.",
              [(alt, CLAIM2_BASE) for alt in CLAIM2_ALTERNATIVES],
              f"{CLAIM2_BASE} and at least one of {', '.join(CLAIM2_ALTERNATIVES)}"),
    ]
    return dict(downgrades=downgrades(agg), driver_bound=driver_bound(agg),
                ranking=ranking(agg), claims=claims, knees=knees(data),
                fanout=fanout_findings(agg), blocking=blocking_findings(agg),
                noisy=[f"{who(r)} · {where(r)}" for _, r in agg[agg["noisy"]].iterrows()],
                material=f"{MATERIAL * 100:.0f} %")


def context(data, charts):
    """Everything report.md and report.html show, as plain values."""
    return dict(
        title=f"Latency report — {data.name}", footer=data.footer(), run=metadata(data),
        findings=findings(data), tables=scenario_tables(data),
        clients=client_transport(data.aggregates),
        logs=log_summary(data.run_dir, data.aggregates["variant"].unique()),
        explain=explain.items(data),  # TCP_NODELAY pairs, where the time went (issue 15)
        text=TEXT, marking=plots.MARKING,
        charts=[dict(title=title, path=os.path.relpath(path, data.run_dir), data_uri="")
                for _, title, path in charts])
