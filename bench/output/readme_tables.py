"""README findings generated from committed runs: each marked section, one renderer.

A table in the README's findings that a committed results folder backs sits between

    <!-- generated: NAME (make findings) -->
    <!-- end generated: NAME -->

and ``make findings`` (``python -m bench.output.readme_tables``) rewrites it from that folder,
so the prose around it can be argued with but the figures cannot drift from their run.
``--check`` changes nothing and exits 1 when a section differs from what its run gives (the
test suite runs it). Every renderer reads the run through ``bench.analysis.reader`` and writes
numbers the way the report does (``bench.output.formatting``).
"""
import json
import os
import re
import sys

import pandas as pd

from bench.analysis import compare, reader
from bench.output import capacity_chart, findings, inpclaim
from bench.output.formatting import ms_short, row_flags
from bench.output.plots import style
from bench.plan.scenarios import MIXES
from bench.output.results import atomic_write

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
README = os.path.join(ROOT, "README.md")
MARK = re.compile(r"(<!-- generated: (?P<name>[\w-]+) \(make findings\) -->\n)(?P<body>.*?)"
                  r"(<!-- end generated: (?P=name) -->)", re.S)


class FindingsError(Exception):
    """A section names no renderer, or its run is missing; the message is one line."""


def _ms(value, low=float("nan"), high=float("nan")):
    """'1.66 [1.60–1.71]' (ms, with the interval where there is one), '–' when empty."""
    if value != value:
        return "–"
    span = f" [{ms_short(low)}–{ms_short(high)}]" if low == low and high == high else ""
    return f"{ms_short(value)}{span}"


def browser_table(run_dir):
    """The browser-versus-lean table: per variant, the Python client's p50 (the lean client, or
    the stock one where the server only polls) beside what the page saw."""
    data = reader.read(run_dir)
    agg = data.aggregates
    lines = ["| variant | Python client p50 | browser: frames (DevTools) p50 | ack callback p50 | reply "
             "painted p50 | click → reply painted p50 | INP | page send lag p99 | browser "
             "row |", "|---|---|---|---|---|---|---|---|---|"]
    for variant in dict.fromkeys(agg["variant"]):
        lean = agg[(agg["variant"] == variant) & (agg["client"] != "browser")]
        page = agg[(agg["variant"] == variant) & (agg["client"] == "browser")]
        if not len(page):
            continue
        b = page.iloc[0]
        if not reader.has_data(b):
            lines.append(f"| {variant} | – | served nothing | | | | | | {b['reasons']} |")
            continue
        first = lean.iloc[0] if len(lean) else None
        lean_text = _ms(first["p50_us"], *compare.interval_of(first, "p50")[:2]) \
            if first is not None and reader.has_data(first) else "–"
        click_low, click_high = inpclaim.interval(data, b, "interaction_to_reply_p50")
        inp_low, inp_high = inpclaim.interval(data, b, "inp")
        state = "driver-bound" if b["driver_bound"] else "valid" if b["valid"] else "invalid"
        lines.append(
            f"| {variant} | {lean_text} | {_ms(b['devtools_p50_us'])} | "
            f"{_ms(b['p50_us'], *compare.interval_of(b, 'p50')[:2])} | "
            f"{_ms(b['paint_p50_us'])} | "
            f"{_ms(b['interaction_to_reply_p50_us'], click_low, click_high)} | "
            f"{_ms(b['inp_us'], inp_low, inp_high)} | {_ms(b['send_lag_p99_us'])} | {state} |")
    return "\n".join(lines) + "\n"


def _markdown(headers, rows):
    """A markdown table of ``headers`` and ``rows`` (cells already text)."""
    return "\n".join(["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers),
                      *("| " + " | ".join(str(c) for c in row) + " |" for row in rows)]) + "\n"


def _state(row):
    """What weakens a figure, beside it: ' (invalid, noisy, …)' from the report's own row
    flags, then the self-checks it failed; '' for a clean row."""
    marks = row_flags(row)
    return (f" ({', '.join(marks)})" if marks else "") + style.checks(row)


def sweep_table(run_dir):
    """Where each variant breaks: the sweep's knee per variant (the report's knee table)."""
    table = findings.knees(reader.read(run_dir))
    if table is None:
        raise FindingsError(f"{os.path.relpath(run_dir, ROOT)} has no sweep rows")
    return _markdown(table["headers"], table["rows"])


def blocking_table(run_dir):
    """Does one slow handler delay everyone: echo p50 / p99 per variant and blocking mix, with
    the p50's interval over repeats."""
    agg = reader.read(run_dir).aggregates
    rows = agg[agg["scenario"] == "blocking"]
    if not len(rows):
        raise FindingsError(f"{os.path.relpath(run_dir, ROOT)} has no blocking rows")
    mixes = sorted(dict.fromkeys(rows["mix"]), key=lambda m: MIXES.index(m) if m in MIXES
                   else len(MIXES))
    lines = []
    for variant, group in rows.groupby("variant", sort=True):
        cells = []
        for mix in mixes:
            found = group[group["mix"] == mix]
            r = found.iloc[0] if len(found) else None
            cells.append("–" if r is None or not reader.has_data(r) else
                         f"{_ms(r['p50_us'], *compare.interval_of(r, 'p50')[:2])} / "
                         f"{_ms(r['p99_us'])}{_state(r)}")
        served = sorted({t for t in group["transport"] if isinstance(t, str) and t})
        lines.append([variant + ("" if served in ([], ["websocket"]) else
                                 f" ({'/'.join(served)})"), *cells])
    return _markdown(["variant", *(f"{mix}: echo p50 / p99 ms" for mix in mixes)], lines)


def _cell(row):
    """'p50 [interval] / p99' ms with the row's flags, '–' when the row measured nothing."""
    if row is None or not reader.has_data(row):
        return "–"
    return (f"{_ms(row['p50_us'], *compare.interval_of(row, 'p50')[:2])} / "
            f"{_ms(row['p99_us'])}{_state(row)}")


def modes_table(run_dir):
    """An echo-and-rate matrix (``make bench``'s development group, or the production group):
    echo and rate per variant, fastest echo first, with the transport it served over."""
    agg = reader.read(run_dir).aggregates
    scenarios = [s for s in ("echo", "rate") if (agg["scenario"] == s).any()]
    if not scenarios:
        raise FindingsError(f"{os.path.relpath(run_dir, ROOT)} has no echo or rate rows")
    labels = {s: f"{s} {agg[agg['scenario'] == s]['load_point'].iloc[0]}" for s in scenarios}

    def speed(variant):
        echo = agg[(agg["variant"] == variant) & (agg["scenario"] == scenarios[0])]
        p50 = echo["p50_us"].iloc[0] if len(echo) and reader.has_data(echo.iloc[0]) else None
        return (p50 is None, p50 or 0.0, variant)

    lines = []
    for variant in sorted(dict.fromkeys(agg["variant"]), key=speed):
        rows = agg[agg["variant"] == variant]
        served = sorted({t for t in rows["transport"] if isinstance(t, str) and t})
        cells = []
        for s in scenarios:
            found = rows[rows["scenario"] == s]
            cells.append(_cell(found.iloc[0] if len(found) else None))
        lines.append([variant, "/".join(served) or "none", *cells])
    return _markdown(["variant", "transport", *(f"{labels[s]}: p50 [95 %] / p99 ms"
                                                for s in scenarios)], lines)


def capacity_table(run_dir):
    """How many clients each variant held: per variant, the walk's top step, what stopped it,
    the knee, the server's memory per 1,000 clients and its idle CPU (from capacity.csv)."""
    frame = capacity_chart.read(run_dir)
    if frame is None:
        raise FindingsError(f"{os.path.relpath(run_dir, ROOT)} has no capacity rows")
    lines = []
    for variant, walk in frame.groupby("variant", sort=True):
        walk = walk.sort_values("connections")
        last, first = walk.iloc[-1], walk.iloc[0]
        held = walk[walk["step_ok"].astype(str) == "True"]
        grown = last["connections"] > first["connections"]
        mb_per_1000 = ((last["server_rss_mb"] - first["server_rss_mb"]) * 1000
                       / (last["held"] - first["held"])) if grown and last["held"] > first["held"] \
            else float("nan")
        stopped = str(last["step_reason"]) if isinstance(last["step_reason"], str) and \
            last["step_reason"] else "nothing: every step held"
        knee = int(last["knee_connections"]) if last["knee_connections"] > 0 else "none"
        lines.append([variant, f"{int(last['held']):,} of {int(last['connections']):,}", stopped,
                      f"{knee:,}" if isinstance(knee, int) else knee,
                      f"{mb_per_1000:.0f} ({first['server_rss_mb']:.0f} → "
                      f"{last['server_rss_mb']:.0f} MB)" if mb_per_1000 == mb_per_1000 else "–",
                      f"{first['server_cpu_pct']:.0f} % at {int(first['connections']):,}, "
                      f"{last['server_cpu_pct']:.0f} % at {int(last['connections']):,}",
                      f"{ms_short(held['probe_p50_us'].min())}–"
                      f"{ms_short(held['probe_p50_us'].max())}" if len(held) else "–",
                      ms_short(last["probe_p99_us"])])
    return _markdown(["variant", "held at the top step", "what stopped it",
                      "knee (probe p99 within the SLO)", "server MB per 1,000 clients",
                      "server CPU, clients idle", "probe p50 over the steps that held, ms",
                      "probe p99 at the top step, ms"], lines)


CALIBRATE_ROWS = [
    ("closed-loop floor p50 / p99 (1 connection)", "floor_p50_us", "floor_p99_us", "µs"),
    ("floor p50 / p99 at 400 msg/s over 10 connections", "floor_10_p50_us", "floor_10_p99_us",
     "µs"),
    ("floor p50 / p99 at 400 msg/s over 10,000 connections", "floor_10000_p50_us",
     "floor_10000_p99_us", "µs"),
    ("driver processes at 10 / 10,000 connections", "driver_processes_10",
     "driver_processes_10000", ""),
    ("open-loop capacity, one driver process / at 10 / at 10,000 connections", None, None,
     "msg/s"),
    ("p50 at 100 / 800 msg/s (10 connections)", "p50_100_us", "p50_800_us", "µs"),
    ("the driver's part of that p50 (send lag + receive wait) at 100 / 800 msg/s",
     "driver_lag_100_us", "driver_lag_800_us", "µs"),
    ("the driver's part at 2,000 / 20,000 msg/s over 10 connections", "driver_lag_10_2000_us",
     "driver_lag_10_20000_us", "µs"),
    ("the driver's part at 2,000 / 20,000 msg/s over 10,000 connections",
     "driver_lag_10000_2000_us", "driver_lag_10000_20000_us", "µs"),
    ("browser: floor p50 / added over the lean client", "browser_floor_p50_us",
     "browser_floor_added_us", "µs"),
]


def calibrate_table(run_dir):
    """The driver's own limits, from ``calibrate --json`` saved as ``calibrate.json``."""
    path = os.path.join(run_dir, "calibrate.json")
    if not os.path.isfile(path):
        raise FindingsError(f"{os.path.relpath(path, ROOT)} is not there (save "
                            f"`python -m bench calibrate --json` into it)")
    with open(path, encoding="utf-8") as f:
        out = json.load(f)
    number = lambda v: "–" if v is None else f"{v:,.0f}" if v >= 100 or float(v).is_integer() \
        else f"{v:,.1f}"  # noqa: E731
    lines = []
    for label, first, second, unit in CALIBRATE_ROWS:
        if first is None:
            text = " / ".join(number(out.get(k)) for k in (
                "capacity_msg_s", "capacity_10_msg_s", "capacity_10000_msg_s"))
        else:
            text = f"{number(out.get(first))} / {number(out.get(second))}"
        lines.append([label, f"{text} {unit}".strip()])
    return _markdown(["calibrate --json", "value"], lines)


def checkrates_table(run_dir):
    """How often each self-check fired against servers with a built-in truth
    (``python -m bench.checkrates``): steps, failures, and what the truth expects."""
    path = os.path.join(run_dir, "checkrates.csv")
    if not os.path.isfile(path):
        raise FindingsError(f"{os.path.relpath(path, ROOT)} is not there "
                            f"(`python -m bench.checkrates` writes it)")
    lines = []
    for r in pd.read_csv(path).itertuples():
        meaning = {"pass": "false positives", "fail": "detections",
                   "reported": "no promise either way"}[r.expected]
        lines.append([r.truth, f"`{r.check}`", f"should {r.expected}" if r.expected != "reported"
                      else "–", f"failed in {r.failed} of {r.steps} steps "
                      f"({100 * r.failed / r.steps:.0f} %): {meaning}"
                      + (f" ({r.noisy_left_out} noisy steps left out)" if r.noisy_left_out
                         else "")])
    return _markdown(["server (truth)", "check", "expected", "measured"], lines)


REFERENCE = os.path.join("results", "reference")
RENDERERS = {"browser": (os.path.join(REFERENCE, "browser"), browser_table),
             "sweep": (os.path.join(REFERENCE, "sweep"), sweep_table),
             "blocking": (os.path.join(REFERENCE, "blocking"), blocking_table),
             "modes": (REFERENCE, modes_table),
             "production": (os.path.join(REFERENCE, "production"), modes_table),
             "capacity": (os.path.join(REFERENCE, "capacity"), capacity_table),
             "calibrate": (os.path.join(REFERENCE, "calibrate"), calibrate_table),
             "checkrates": (os.path.join(REFERENCE, "checkrates"), checkrates_table)}


def render(name):
    """The markdown of section ``name`` from its committed run."""
    if name not in RENDERERS:
        raise FindingsError(f"README section {name!r} names no renderer "
                            f"(known: {', '.join(RENDERERS)})")
    run, renderer = RENDERERS[name]
    path = os.path.join(ROOT, run)
    if not os.path.isdir(path):
        raise FindingsError(f"README section {name!r}: its run {run} is not there")
    return renderer(path)


def rewrite(readme=README, check=False):
    """Rewrite every marked section of ``readme`` from its run (``check``: only compare);
    returns the names of the sections that differed."""
    with open(readme, encoding="utf-8") as f:
        text = f.read()
    changed = []

    def fill(match):
        body = render(match.group("name"))
        if body != match.group("body"):
            changed.append(match.group("name"))
        return match.group(1) + body + match.group(4)

    new = MARK.sub(fill, text)
    if changed and not check:
        atomic_write(readme, new)
    return changed


def main(argv=None):
    """``python -m bench.output.readme_tables [--check] [README]``."""
    args = sys.argv[1:] if argv is None else argv
    check = "--check" in args
    paths = [a for a in args if a != "--check"]
    try:
        changed = rewrite(paths[0] if paths else README, check=check)
    except (FindingsError, OSError, ValueError) as exc:  # ValueError: a broken JSON or CSV
        print(f"findings: {exc}", file=sys.stderr)
        return 2
    for name in changed:
        print(f"findings: {name} {'differs from its run' if check else 'rewritten'}")
    return 1 if check and changed else 0


if __name__ == "__main__":
    sys.exit(main())
