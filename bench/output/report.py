"""report.md and a self-contained report.html for one results folder, rebuilt from its files alone.

Both documents render one list of blocks, so they never disagree. Findings are explicit rules
over the aggregate rows (``repeat = all``), each stated with the numbers it rests on, so a reader
can check every sentence against the tables.
"""
import base64
import html
import os
import re

import pandas as pd

from bench.output import plots
from bench.output.results import atomic_write

MATERIAL = 0.10          # a difference below 10 % is "the same" for the findings
LOG_PATTERN = re.compile(r"Warning|Error|Traceback")
LOG_EXAMPLES = 4
CLAIM1_PAIRS = [("seed-app-run", "seed-socketio-run")] + [
    (f"flask-run-{m}", f"socketio-run-{m}") for m in ("threading", "eventlet", "gevent")]
CLAIM2_BASE, CLAIM2_ALTERNATIVES = "socketio-run-eventlet", ("socketio-run-threading",
                                                             "socketio-run-gevent")
# Both claims say "the first variant of each pair is worse": what each comparison says to that.
SUPPORTS = {"slower": True, "a-failed": True, "same": False, "faster": False, "b-failed": False}


def build(run_dir):
    """Regenerate plots/, report.md and report.html in ``run_dir`` from its CSVs and meta.json."""
    data = plots.load(run_dir)
    charts = plots.save_all(data, os.path.join(run_dir, "plots"))
    blocks = document(data, charts)
    atomic_write(os.path.join(run_dir, "report.md"), to_markdown(blocks))
    atomic_write(os.path.join(run_dir, "report.html"), to_html(blocks, run_dir))


# ---------------------------------------------------------------- formatting

def ms(us):
    return "–" if us is None or pd.isna(us) else f"{us / 1000:.3f}"


def ci(row, key):
    lo, hi = row.get(f"{key}_ci_low"), row.get(f"{key}_ci_high")
    return "" if lo is None or hi is None or pd.isna(lo) or pd.isna(hi) \
        else f" [{ms(lo)}–{ms(hi)}]"


def flags(row):
    out = ["valid" if row["valid"] else "**invalid**"]
    out += ["**driver-bound**"] * bool(row["driver_bound"]) + ["unstable"] * bool(row["unstable"])
    return ", ".join(out)


def where(row):
    extra = [str(row[e]) for e in plots.EXTRAS if e in row and row[e]]
    return " · ".join(dict.fromkeys([row["scenario"], str(row["load_point"]), *extra]))


# ---------------------------------------------------------------- comparisons

def compare_rows(a, b):
    """How row ``a`` compares with row ``b`` at p50: (verdict, evidence text).

    Verdicts: slower, faster, same (within 10 %), inconclusive (95 % CIs overlap or a
    driver-bound measurement), a-failed / b-failed (no data on one side), no-data.
    """
    name_a, name_b = a["variant"], b["variant"]
    if not plots.has_data(a) or not plots.has_data(b):
        if plots.has_data(a) or plots.has_data(b):
            failed, other = (a, b) if not plots.has_data(a) else (b, a)
            return ("a-failed" if failed is a else "b-failed",
                    f"{failed['variant']} served nothing "
                    f"({plots.short(failed['note'] or 'failed', 160)}) "
                    f"while {other['variant']} served over {other['transport']} at p50 "
                    f"{ms(other['p50_us'])} ms")
        return "no-data", f"neither {name_a} nor {name_b} served"
    r50, r99 = a["p50_us"] / b["p50_us"], a["p99_us"] / b["p99_us"]
    text = (f"{name_a} p50 {ms(a['p50_us'])}{ci(a, 'p50')} ms over {a['transport']} vs "
            f"{name_b} {ms(b['p50_us'])}{ci(b, 'p50')} ms over {b['transport']}: "
            f"{r50:.2f}× (p99 {ms(a['p99_us'])} vs {ms(b['p99_us'])} ms, {r99:.2f}×)")
    bounds = [a.get("p50_ci_low"), a.get("p50_ci_high"), b.get("p50_ci_low"),
              b.get("p50_ci_high")]
    have_ci = all(v is not None and not pd.isna(v) for v in bounds)
    overlap = have_ci and bounds[0] <= bounds[3] and bounds[2] <= bounds[1]
    if not have_ci:
        text += "; single repeat, no CI"
    if a["driver_bound"] or b["driver_bound"]:
        return "inconclusive", text + "; driver-bound, so not a server measurement"
    if 1 / (1 + MATERIAL) <= r50 <= 1 + MATERIAL:
        return "same", text
    if overlap:
        return "inconclusive", text + "; the 95 % CIs overlap"
    return ("slower" if r50 > 1 else "faster"), text


MIXED = "verified in some scenarios, refuted in others"


def judge(pairs):
    """Overall verdict of a claim from [(label, [(supports: bool|None, text)])]."""
    groups = {"verified": [], "refuted": [], MIXED: []}
    for label, ev in pairs:
        yes, no = sum(s is True for s, _ in ev), sum(s is False for s, _ in ev)
        if yes and no:
            groups[MIXED].append(f"{label} ({yes} of {yes + no} decisive comparisons support it)")
        elif yes or no:
            groups["verified" if yes else "refuted"].append(label)
    decided = [k for k, v in groups.items() if v]
    if not decided:
        return "not testable (every comparison inconclusive)"
    if decided in (["verified"], ["refuted"]):
        return decided[0]
    return "; ".join(f"{k} for {', '.join(groups[k])}" for k in decided)


def _pair_evidence(agg, a_name, b_name, support):
    """[(supports, text)] for every load point both variants were measured at."""
    a_rows = agg[agg["variant"] == a_name]
    out = []
    for _, a in a_rows.iterrows():
        match = agg[(agg["variant"] == b_name) & (agg["scenario"] == a["scenario"])
                    & (agg["load_point"] == a["load_point"])]
        for e in plots.EXTRAS:
            if e in agg:
                match = match[match[e] == a[e]]
        if match.empty:
            continue
        verdict, text = compare_rows(a, match.iloc[0])
        out.append((support.get(verdict), f"{where(a)}: {verdict} — {text}"))
    return out


def claim(agg, title, statement, pairs, support, needs):
    present = set(agg["variant"])
    evidence = [(f"{a} vs {b}", _pair_evidence(agg, a, b, support))
                for a, b in pairs if a in present and b in present]
    evidence = [(label, ev) for label, ev in evidence if ev]
    blocks = [("h", 3, title), ("p", statement)]
    if not evidence:
        blocks.append(("p", f"**Verdict: not testable** — needs {needs}; this run measured "
                            f"{', '.join(sorted(present)) or 'nothing'}."))
        return blocks
    caveat = " Single repeats, so no confidence intervals: indicative only." if any(
        "no CI" in text for _, ev in evidence for _, text in ev) else ""
    blocks.append(("p", f"**Verdict: {judge(evidence)}.**{caveat}"))
    items = []
    for label, ev in evidence:
        items += [f"{label} — {text}" for _, text in ev]
    blocks.append(("ul", items))
    return blocks


# ---------------------------------------------------------------- findings

def findings(data):
    agg = data.aggregates
    per_scenario = pd.concat([plots.scenario_rows(agg, s) for s in data.scenarios()]) \
        if len(agg) else agg
    blocks = [("h", 2, "Findings"),
              ("p", f"Rules: a p50 difference within {MATERIAL * 100:.0f} % is “the same”; a "
                    "larger one counts only where the 95 % CIs (when repeats allow) do not "
                    "overlap; driver-bound rows measure the driver and decide nothing.")]
    downgraded = agg[agg["transport"] != "websocket"]
    items = []
    for (variant, transport), g in downgraded.groupby(["variant", "transport"], sort=False):
        reasons = dict.fromkeys(plots.short(n.split("; measured over")[0], 200) for n in g["note"])
        items.append(f"{variant}: {transport or 'no transport (served nothing)'} in "
                     f"{len(g)} row(s) ({', '.join(where(r) for _, r in g.iterrows())}) — "
                     + " / ".join(reasons))
    blocks += [("h", 3, "Transport downgrades (transport ≠ websocket)"),
               ("ul", items) if items else ("p", "None: every row ran over WebSocket.")]
    bound = agg[agg["driver_bound"]]
    if not bound.empty:
        items = [f"{variant}: " + ", ".join(
            f"{where(r)} ({'; '.join(s for s in r['note'].split('; ') if s.startswith('driver'))})"
            for _, r in g.iterrows()) for variant, g in bound.groupby("variant", sort=False)]
        blocks += [("h", 3, "Driver-bound rows (the driver, not the server, set the pace)"),
                   ("ul", items)]
    blocks += [("h", 3, "Fastest and slowest variant (valid rows, p50)"), ("ul", ranking(agg))]
    blocks += claim(
        per_scenario, "Claim 1: “app.run() blocks / is slow; socketio.run() fixes it”",
        "Compared: seed-app-run vs seed-socketio-run (the tutorial's snippets verbatim) and "
        "flask-run-X vs socketio-run-X for each async mode X. Supports the claim: app.run() "
        "materially slower or serving nothing while socketio.run() serves.",
        CLAIM1_PAIRS, SUPPORTS, "an app.run()/socketio.run() pair of variants")
    blocks += claim(
        per_scenario, "Claim 2: “eventlet is the fix”",
        "Compared: socketio-run-threading and socketio-run-gevent against socketio-run-eventlet. "
        "Supports the claim: the alternative materially slower than eventlet (or failing).",
        [(alt, CLAIM2_BASE) for alt in CLAIM2_ALTERNATIVES], SUPPORTS,
        f"{CLAIM2_BASE} and at least one of {', '.join(CLAIM2_ALTERNATIVES)}")
    blocks += scenario_findings(data)
    return blocks


def ranking(agg):
    items = []
    for scenario in dict.fromkeys(agg["scenario"]):
        for title, rows in plots.panels(plots.scenario_rows(agg, scenario)):
            ranked = rows[rows["valid"] & rows.apply(plots.has_data, axis=1)].sort_values("p50_us")
            left = [f"{r['variant']} ({'no data' if not plots.has_data(r) else plots.flag(r)})"
                    for _, r in rows.iterrows() if r["variant"] not in set(ranked["variant"])]
            head = f"{scenario} · {title}: "
            if len(ranked) < 2:
                text = head + f"fewer than two valid variants ({len(ranked)}), not ranked"
            else:
                fast, slow = ranked.iloc[0], ranked.iloc[-1]
                text = head + (
                    f"fastest {fast['variant']} (p50 {ms(fast['p50_us'])} ms, p99 "
                    f"{ms(fast['p99_us'])} ms), slowest {slow['variant']} (p50 "
                    f"{ms(slow['p50_us'])} ms, p99 {ms(slow['p99_us'])} ms): "
                    f"{slow['p50_us'] / fast['p50_us']:.2f}× at p50, "
                    f"{slow['p99_us'] / fast['p99_us']:.2f}× at p99")
            items.append(text + (f"; not ranked: {', '.join(left)}" if left else ""))
    return items


def scenario_findings(data):
    """Knees, fan-out spread and blocking impact, where the run has those scenarios."""
    agg, blocks = data.aggregates, []
    knees = plots.knees_per_variant(data)
    if not knees.empty:
        found = knees.dropna(subset=["knee_msg_s"]).sort_values("knee_msg_s", ascending=False)
        items = [f"{k['variant']}: knee {k['knee_msg_s']:,.0f} msg/s"
                 + (f" (median of {k['repeats']} repeats, {k['low']:,.0f}–{k['high']:,.0f})"
                    if k["repeats"] > 1 else "") + f" — {k['reason']}"
                 for _, k in found.iterrows()]
        items += [f"{k['variant']}: no knee — {k['reason']}"
                  for _, k in knees[knees["knee_msg_s"].isna()].iterrows()]
        if len(found) >= 2 and found.iloc[-1]["knee_msg_s"] > 0:
            hi, lo = found.iloc[0], found.iloc[-1]
            items.insert(0, f"highest knee {hi['variant']} ({hi['knee_msg_s']:,.0f} msg/s) is "
                            f"{hi['knee_msg_s'] / lo['knee_msg_s']:.2f}× the lowest, "
                            f"{lo['variant']} ({lo['knee_msg_s']:,.0f} msg/s)")
        blocks += [("h", 3, f"Sweep knees (SLO: {'; '.join(knees['slo'].unique())})"),
                   ("ul", items)]
    fan = agg[agg["scenario"] == "fanout"]
    if not fan.empty and "recipient" in fan:
        items = []
        for (variant, lp), g in fan.groupby(["variant", "load_point"]):
            first, last = (g[g["recipient"] == k] for k in ("first", "last"))
            if first.empty or last.empty or not (plots.has_data(first.iloc[0])
                                                 and plots.has_data(last.iloc[0])):
                items.append(f"{variant} · {lp}: first/last recipient not both measured")
                continue
            f, la = first.iloc[0], last.iloc[0]
            items.append(f"{variant} · {lp}: last recipient p50 {ms(la['p50_us'])} ms vs first "
                         f"{ms(f['p50_us'])} ms ({la['p50_us'] / f['p50_us']:.2f}×)"
                         f"{' [' + plots.flag(la) + ']' if plots.flag(la) != 'ok' else ''}")
        blocks += [("h", 3, "Fan-out: last vs first recipient"), ("ul", items)]
    blk = agg[agg["scenario"] == "blocking"]
    if not blk.empty and "mix" in blk:
        items = []
        for variant, g in blk.groupby("variant"):
            base = g[g["mix"] == "echo-only"]
            for _, r in g[g["mix"] != "echo-only"].iterrows():
                if base.empty:
                    items.append(f"{variant} · {r['mix']}: no echo-only baseline")
                    continue
                verdict, text = compare_rows(r, base.iloc[0])
                delays = {"slower": "one slow handler delays everyone",
                          "a-failed": "blocked handlers stopped echo traffic",
                          "same": "no material delay"}.get(verdict, verdict)
                items.append(f"{variant} · {r['mix']} vs echo-only: {delays} — {text}")
        blocks += [("h", 3, "Blocking handlers: is echo traffic delayed?"), ("ul", items)]
    return blocks


# ---------------------------------------------------------------- sections

def metadata(data):
    m, host = data.meta, data.meta.get("host", {})
    options = m.get("plan", {}).get("options", {})
    pin = m.get("pinning", {})
    calib = m.get("calibration") or {}
    packages = m.get("packages", {})
    rows = [
        ("run folder", os.path.basename(os.path.abspath(data.run_dir))),
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
            "seed", "quick") if k in options)),
        ("variants", ", ".join(options.get("variants", [])) or ", ".join(
            sorted(data.summary["variant"].unique()))),
        ("scenarios", ", ".join(options.get("scenarios", [])) or ", ".join(data.scenarios())),
        ("pinning", f"server CPUs {pin.get('server_cpus')}, driver CPUs {pin.get('driver_cpus')}"
         if pin.get("enabled") else "off"),
        ("calibration", ", ".join(f"{k}={v}" for k, v in calib.items()) or "not run"),
    ]
    rows += [(f"packages ({env})", ", ".join(f"{k} {v}" for k, v in versions.items() if v))
             for env, versions in packages.items()]
    return [("h", 2, "Run"), ("table", ["field", "value"], rows)]


def scenario_tables(data):
    blocks = [("h", 2, "Results per scenario"),
              ("p", "Latency in ms from each message's intended send time; [95 % bootstrap CI "
                    "over repeats] where there were repeats. Aggregate rows (all repeats "
                    "merged); invalid and driver-bound rows are kept and flagged.")]
    agg = data.aggregates
    for scenario in data.scenarios():
        rows = agg[agg["scenario"] == scenario]
        extra = [e for e in plots.extras(rows) if (rows[e] != rows["load_point"]).any()]
        headers = ["variant", "load point", *extra, "transport", "p50 ms", "p99 ms", "p99.9 ms",
                   "max ms", "ok %", "flags"]
        table, notes = [], []
        for _, group in plots.panels(rows):
            for _, r in group.sort_values("p50_us", na_position="last").iterrows():
                okp = f"{100 * r['ok'] / r['attempted']:.2f}" if r["attempted"] else "–"
                table.append([r["variant"], r["load_point"], *[r[e] for e in extra],
                              r["transport"] or "none", ms(r["p50_us"]) + ci(r, "p50"),
                              ms(r["p99_us"]) + ci(r, "p99"), ms(r["p999_us"]), ms(r["max_us"]),
                              okp, flags(r)])
                if r["note"]:
                    notes.append(f"{r['variant']} · {r['load_point']}: {r['note']}")
        blocks += [("h", 3, scenario), ("table", headers, table)]
        if notes:
            blocks += [("p", "Notes:"), ("ul", list(dict.fromkeys(notes)))]
    return blocks


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
        hits = []
        with open(path, errors="replace") as f:
            hits = [line.strip() for line in f if LOG_PATTERN.search(line)]
        first = list(dict.fromkeys(hits))[:LOG_EXAMPLES]
        rows.append([name, str(len(hits)), " ⏎ ".join(f"`{h[:160]}`" for h in first)])
    return [("h", 2, "Server stderr: warnings and errors"),
            ("p", "Lines of logs/<variant>.log containing Warning, Error or Traceback, and the "
                  f"first {LOG_EXAMPLES} distinct ones."),
            ("table", ["variant", "lines", "first distinct lines"], rows)]


def document(data, charts):
    blocks = [("h", 1, f"Latency report — {os.path.basename(os.path.abspath(data.run_dir))}"),
              ("p", data.footer())]
    blocks += metadata(data) + findings(data) + scenario_tables(data)
    blocks += log_summary(data.run_dir, data.summary["variant"].unique())
    blocks += [("h", 2, "Charts"), ("p", plots.MARKING)]
    for name, title, path in charts:
        blocks += [("h", 3, title), ("img", title, os.path.relpath(path, data.run_dir))]
    return blocks


# ---------------------------------------------------------------- rendering

def _md_cell(value):
    return str(value).replace("|", "\\|").replace("\n", " ")


def to_markdown(blocks):
    out = []
    for b in blocks:
        if b[0] == "h":
            out.append("#" * b[1] + " " + b[2])
        elif b[0] == "p":
            out.append(b[1])
        elif b[0] == "ul":
            out.append("\n".join(f"- {_md_cell(i)}" for i in b[1]))
        elif b[0] == "table":
            head, rows = b[1], b[2]
            lines = ["| " + " | ".join(map(_md_cell, head)) + " |",
                     "|" + "|".join("---" for _ in head) + "|"]
            lines += ["| " + " | ".join(map(_md_cell, r)) + " |" for r in rows]
            out.append("\n".join(lines))
        elif b[0] == "img":
            out.append(f"![{b[1]}]({b[2]})")
    return "\n\n".join(out) + "\n"


def _inline(text):
    text = html.escape(str(text))
    text = re.sub(r"\*\*(.+?)\*\*", r"<strong>\1</strong>", text)
    return re.sub(r"`(.+?)`", r"<code>\1</code>", text)


CSS = """body{font-family:system-ui,sans-serif;max-width:1200px;margin:2em auto;padding:0 1em;
color:#222}table{border-collapse:collapse;margin:.5em 0 1em;font-size:13px}
td,th{border:1px solid #ccc;padding:3px 7px;text-align:left;vertical-align:top}
th{background:#f2f2f2}img{max-width:100%;border:1px solid #eee}code{font-size:12px}
li{margin:.25em 0}"""
# Sets data attributes a headless browser can read: every image decoded, every table laid out.
CHECK = """<script>window.addEventListener("load",function(){var i=Array.from(document.images),
t=Array.from(document.querySelectorAll("table"));var b=document.body.dataset;b.images=i.length;
b.imagesOk=i.every(function(x){return x.complete&&x.naturalWidth>0})?"yes":"no";
b.tables=t.length;b.tablesRendered=t.filter(function(x){return x.offsetHeight>0}).length;});
</script>"""


def to_html(blocks, run_dir):
    out = []
    for b in blocks:
        if b[0] == "h":
            out.append(f"<h{b[1]}>{_inline(b[2])}</h{b[1]}>")
        elif b[0] == "p":
            out.append(f"<p>{_inline(b[1])}</p>")
        elif b[0] == "ul":
            out.append("<ul>" + "".join(f"<li>{_inline(i)}</li>" for i in b[1]) + "</ul>")
        elif b[0] == "table":
            head = "".join(f"<th>{_inline(h)}</th>" for h in b[1])
            rows = "".join("<tr>" + "".join(f"<td>{_inline(c)}</td>" for c in r) + "</tr>"
                           for r in b[2])
            out.append(f"<table><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>")
        elif b[0] == "img":
            with open(os.path.join(run_dir, b[2]), "rb") as f:
                encoded = base64.b64encode(f.read()).decode()
            out.append(f'<img alt="{html.escape(b[1])}" src="data:image/png;base64,{encoded}">')
    title = html.escape(os.path.basename(os.path.abspath(run_dir)))
    return (f"<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>Latency report — {title}</title><style>{CSS}</style></head><body>\n"
            + "\n".join(out) + f"\n{CHECK}</body></html>\n")
