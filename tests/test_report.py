"""The report, built from a real quick run: every file, the answer first, the findings' rules,
and report.html as a real browser renders it (headless Chromium: every image decoded, every
table laid out, the answer in the first 1280 × 800 screen, nothing wider than its container,
report.png saved); the committed reference run still reports; verdicts follow the intervals;
the client/transport and knees tables follow the data; notes say each message once."""
import os
import re
import shutil
import struct

import pytest

import pandas as pd

from bench.analysis import reader
from bench.output import browser, claims, report, verdicts
from bench.output.formatting import NO_INTERVAL, ms
from bench.errors import UsageError

VARIANTS = ["socketio-run-gevent", "flask-run-eventlet"]
CHROMIUM = browser.find()
CLAIM1_PAIRS, CLAIM2_PAIRS = (c["pairs"] for c in claims.CLAIMS)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
REFERENCE = os.path.join(ROOT, "results", "reference")


@pytest.fixture(scope="module")
def measured(bench, tmp_path_factory):
    """(the run's folder, what `run` printed)."""
    out = tmp_path_factory.mktemp("report-run")
    proc = bench.run("run", "--quick", "--variants", ",".join(VARIANTS), "--no-report",
                     "--out", out, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (run,) = bench.run_dirs(str(out))
    report.build(run)
    return run, proc.stdout


@pytest.fixture(scope="module")
def run_dir(measured):
    return measured[0]


@pytest.fixture(scope="module")
def data(run_dir):
    return reader.read(run_dir)


@pytest.fixture(scope="module")
def md(run_dir):
    with open(os.path.join(run_dir, "report.md")) as f:
        return f.read()


def section(md, title):
    """The text of one '### title' section of report.md."""
    start = md.index(f"### {title}")
    end = md.find("\n#", start + 1)
    return md[start:end if end > 0 else None]


@pytest.mark.slow
def test_files_and_charts_exist(run_dir, data):
    pngs = set(os.listdir(os.path.join(run_dir, "plots")))
    for scenario in data.scenarios():
        for kind in ("spectrum", "cdf", "bars", "timeline"):
            assert f"{kind}-{scenario}.png" in pngs
    if not data.resources.empty:
        assert "resources.png" in pngs
    for name in pngs:
        with open(os.path.join(run_dir, "plots", name), "rb") as f:
            assert f.read(8) == b"\x89PNG\r\n\x1a\n", name
    for name in ("report.md", "report.html"):
        assert os.path.getsize(os.path.join(run_dir, name)) > 1000


@pytest.mark.slow
def test_tables_list_every_aggregate_row(data, md):
    for _, r in data.aggregates.iterrows():
        line = next((l for l in md.splitlines() if l.startswith(f"| {r['variant']} | "
                                                                  f"{r['load_point']} |")), None)
        assert line, f"no table row for {r['variant']} {r['load_point']}"
        assert ms(r["p50_us"]) in line and ms(r["p99_us"]) in line
        assert ("valid" if r["valid"] else "**invalid**") in line
        assert ("driver-bound" in line) == bool(r["driver_bound"])


@pytest.mark.slow
def test_terminal_table_sizes_its_columns_to_their_content(measured, data):
    """Every cell printed whole (`python-socketio/polling` included) and every column aligned
    under its header."""
    _, stdout = measured
    lines = stdout.splitlines()
    top = next(i for i, l in enumerate(lines) if l.startswith("scenario "))
    header, body = lines[top], lines[top + 2:]
    body = body[:next(i for i, l in enumerate(body) if l.startswith("(* ="))]
    assert lines[top + 1] == "-" * len(header)
    assert len(body) == len(data.aggregates) > 0
    column = header.index("client/transport")
    p50_end = header.index("p50 ms") + len("p50 ms")
    for _, r in data.aggregates.iterrows():
        via = f"{r['client'] or '-'}/{r['transport'] or 'failed'}"
        line = next(l for l in body if f" {r['variant']} " in l and f" {via} " in l
                    and f" {r['load_point']} " in l)
        assert line.index(via) == column, (line, header)
        assert line[p50_end - 1] != " ", (line, header)         # right-aligned under p50 ms
    assert any("python-socketio/polling" in l for l in body)    # flask-run-eventlet falls back


@pytest.mark.slow
def test_transport_downgrades_follow_the_data(data, md):
    text = section(md, "Transport downgrades")
    downgraded = data.aggregates[data.aggregates["transport"] != "websocket"]
    for _, r in data.aggregates.iterrows():
        line = next((l for l in text.splitlines()
                     if l.startswith(f"- {r['variant']}: {r['transport'] or 'no transport'}")), "")
        assert (f"{r['scenario']} · {r['load_point']}" in line) == (r["transport"] != "websocket")
    if downgraded.empty:
        assert "every row ran over WebSocket" in text


@pytest.mark.slow
def test_fastest_and_slowest_follow_the_data(data, md):
    text = section(md, "Fastest and slowest")
    for scenario in data.scenarios():
        rows = data.aggregates[(data.aggregates["scenario"] == scenario)
                               & data.aggregates["valid"]].dropna(subset=["p50_us"])
        if len(rows) < 2:
            assert f"{scenario} · " in text and "not ranked" in text
            continue
        fast, slow = rows.loc[rows["p50_us"].idxmin()], rows.loc[rows["p50_us"].idxmax()]
        assert f"fastest {fast['variant']}" in text and f"slowest {slow['variant']}" in text
        assert f"{slow['p50_us'] / fast['p50_us']:.2f}× at p50" in text


@pytest.mark.slow
def test_claims_are_judged(data, md):
    present = set(data.aggregates["variant"])
    pairs = [p for p in CLAIM1_PAIRS if set(p) <= present]
    claim1 = section(md, "Claim 1")
    assert ("Verdict: not testable" in claim1) == (not pairs)
    alternatives = [p for p in CLAIM2_PAIRS if set(p) <= present]
    claim2 = section(md, "Claim 2")
    assert ("Verdict: not testable" in claim2) == (not alternatives)
    for text in (claim1, claim2):
        assert re.search(r"\*\*Verdict: (verified|refuted|inconclusive|not testable)", text)


@pytest.mark.slow
def test_server_log_warnings_are_counted(run_dir, data, md):
    text = md[md.index("## Server stderr"):]
    for variant in VARIANTS:
        with open(os.path.join(run_dir, "logs", f"{variant}.log"), errors="replace") as f:
            hits = [l for l in f if any(w in l for w in ("Warning", "Error", "Traceback"))]
        assert f"| {variant} | {len(hits)} |" in text
        if hits:
            assert hits[0].strip()[:60] in text


@pytest.mark.slow
def test_rebuilds_from_the_files_alone(run_dir, tmp_path):
    copy = tmp_path / os.path.basename(run_dir)
    copy.mkdir()
    for name in ("meta.json", "summary.csv", "samples.csv.gz", "resources.csv"):
        if os.path.exists(os.path.join(run_dir, name)):
            shutil.copy(os.path.join(run_dir, name), copy)
    shutil.copytree(os.path.join(run_dir, "logs"), copy / "logs")
    report.build(str(copy))
    assert sorted(os.listdir(copy / "plots")) == sorted(os.listdir(os.path.join(run_dir, "plots")))
    with open(os.path.join(run_dir, "report.md")) as a, open(copy / "report.md") as b:
        assert a.read() == b.read()


def test_bad_input_is_a_usage_error(tmp_path):
    with pytest.raises(UsageError):
        report.build(str(tmp_path / "missing"))
    with pytest.raises(UsageError):
        report.build(str(tmp_path))


def png_size(path):
    """(width, height) from a PNG's IHDR chunk."""
    with open(path, "rb") as f:
        head = f.read(24)
    assert head[:8] == b"\x89PNG\r\n\x1a\n", path
    return struct.unpack(">II", head[16:24])


def answer_first(md, html):
    """Both documents open with the answer: nothing but the title and footer before it."""
    assert md.index('<section id="answer">') < md.index("## Findings") < md.index("## Run")
    body = html[html.index("<body>"):]
    assert re.match(r"<body>\s*<h1>[^<]*</h1>\s*<p[^>]*>.*?</p>\s*<section id=\"answer\">", body,
                    re.S), body[:400]


def in_chromium(run_dir):
    """What Chromium saw of a run's report.html; the common checks on it."""
    html_path = os.path.join(run_dir, "report.html")
    with open(html_path) as f:
        source = f.read()
    assert not re.search(r'(src|href)="(?!data:|#)', source), "report.html must be self-contained"
    attrs = browser.checks(html_path)
    assert int(attrs["images"]) == len(os.listdir(os.path.join(run_dir, "plots"))) > 0
    assert attrs["images-ok"] == "yes"
    assert int(attrs["tables-rendered"]) == int(attrs["tables"]) >= 3
    assert attrs["overflow"] == "0", attrs["overflow-first"]
    assert int(attrs["viewport-width"]) == browser.WINDOW[0]
    # the whole answer section lies in the first screen
    assert 0 <= int(attrs["answer-top"]) < int(attrs["answer-bottom"]) \
        <= min(int(attrs["viewport-height"]), browser.WINDOW[1])
    assert png_size(os.path.join(run_dir, "report.png")) == browser.WINDOW
    return attrs


needs_chromium = pytest.mark.skipif(not CHROMIUM, reason="chromium is not installed "
                                                         "(apt-get install chromium); CI installs it")


@pytest.mark.slow
@needs_chromium
def test_html_renders_in_chromium(run_dir, md):
    in_chromium(run_dir)
    with open(os.path.join(run_dir, "report.html")) as f:
        answer_first(md, f.read())


@pytest.mark.slow
@needs_chromium
def test_chromium_check_catches_a_broken_image_and_an_overflow(run_dir, tmp_path):
    with open(os.path.join(run_dir, "report.html")) as f:
        source = f.read()
    path = tmp_path / "broken.html"
    path.write_text(source.replace("data:image/png;base64,", "data:image/png;base64,AAAA", 1))
    assert browser.checks(path)["images-ok"] == "no"
    path.write_text(source.replace("<h1>", '<h1><span style="display:inline-block;width:3000px">'
                                           "wide</span>", 1))
    assert browser.checks(path)["overflow"] != "0"
    path.write_text(source.replace('<section id="answer">', '<div style="height:900px"></div>'
                                                            '<section id="answer">', 1))
    assert int(browser.checks(path)["answer-top"]) > browser.WINDOW[1]


# ------------------------------------------------------------ the committed reference run

@pytest.fixture
def reference_copy(tmp_path):
    copy = tmp_path / "reference"
    shutil.copytree(REFERENCE, copy, ignore=shutil.ignore_patterns("plots", "report.*"))
    return copy


def test_reference_run_reports_through_the_cli(bench, reference_copy):
    """The committed reference run reports through the CLI and is judged with its intervals
    (log-t over 3 repeats); a claim is inconclusive where intervals overlap or are missing;
    the answer comes first, and (with Chromium) renders in the first screen as report.png."""
    proc = bench.run("report", reference_copy, timeout=180)
    assert proc.returncode == 0, proc.stderr[-2000:]
    md = (reference_copy / "report.md").read_text()
    html = (reference_copy / "report.html").read_text()
    answer_first(md, html)
    data = reader.read(reference_copy)
    for c in claims.judged(report.per_scenario(data)):
        assert f'class="verdict {c["badge"]}"' in html and c["reason"] in html
    answer = md[md.index('<section id="answer">'):md.index("</section>")]
    for scenario in data.scenarios():
        rows = data.aggregates[(data.aggregates["scenario"] == scenario)
                               & data.aggregates["valid"] & ~data.aggregates["driver_bound"]]
        best = rows.loc[rows["p50_us"].idxmin()]
        line = next(l for l in answer.splitlines() if l.startswith(f"| {scenario} · "))
        assert f"| {best['variant']} | " in line
        assert re.search(r"\| \d[\d.,]* \[\d[\d.,]*–\d[\d.,]*\] \|", line), line
    assert "seed-app-run failed" in answer          # the banner names the failed variant
    if CHROMIUM:
        in_chromium(str(reference_copy))
    header = next(l for l in md.splitlines() if l.startswith("| variant | load point |"))
    for column in ("interval", "driver share", "censored", "flags", "achieved msg/s"):
        assert f"| {column} |" in header
    failed = next(l for l in md.splitlines() if l.startswith("| seed-app-run | 400 msg/s |"))
    assert NO_INTERVAL in failed and "**invalid**" in failed
    assert "| log-t |" in md
    claim1 = section(md, "Claim 1")
    assert "**Verdict: verified**" in claim1      # seed-app-run served nothing
    assert "seed-app-run served nothing" in claim1
    for line in claim1.splitlines():
        if "inconclusive:" in line and "driver-bound, so not a server measurement" not in line:
            assert "p50 " in line and "p99 " in line
            assert "intervals overlap" in line or "no interval" in line


def row(p50, p50_ci, p99, p99_ci, series="a", served=True):
    """An aggregate row as the reader types it, with the fields a verdict reads."""
    return pd.Series(dict(
        series=series, variant=series, client="lean", transport="websocket" if served else "",
        note="" if served else "failed", hdr="x" if served else "", ok=100 if served else 0,
        driver_bound=False, p50_us=p50, p99_us=p99, p50_ci_low=p50_ci[0], p50_ci_high=p50_ci[1],
        p99_ci_low=p99_ci[0], p99_ci_high=p99_ci[1]))


NAN = float("nan")


@pytest.mark.parametrize("a, b, verdict", [
    # both metrics' intervals apart, a above
    (row(500, (480, 520), 900, (850, 950)), row(300, (290, 310), 600, (550, 650)), "verified"),
    # p50 apart but p99 intervals overlap: the tail decides nothing, so inconclusive
    (row(500, (480, 520), 900, (500, 1300)), row(300, (290, 310), 600, (550, 650)),
     "inconclusive"),
    # p50 above, p99 below: the metrics disagree
    (row(500, (480, 520), 300, (280, 320)), row(300, (290, 310), 600, (550, 650)),
     "inconclusive"),
    # both below
    (row(200, (190, 210), 300, (280, 320)), row(300, (290, 310), 600, (550, 650)), "refuted"),
    # overlapping but tight: even a's upper end within 10 % of b's lower end: the same
    (row(300, (295, 305), 600, (590, 610)), row(300, (290, 310), 600, (560, 640)), "refuted"),
    # apart on both metrics, but within 10 %: not materially worse
    (row(310, (305, 315), 610, (605, 615)), row(300, (290, 304), 600, (590, 604)), "refuted"),
    # no intervals (too few repeats): cannot be judged
    (row(500, (NAN, NAN), 900, (NAN, NAN)), row(300, (NAN, NAN), 600, (NAN, NAN)),
     "inconclusive"),
    # a failing while b serves is the claim; b failing refutes it
    (row(NAN, (NAN, NAN), NAN, (NAN, NAN), served=False), row(300, (290, 310), 600, (550, 650)),
     "verified"),
    (row(300, (290, 310), 600, (550, 650)), row(NAN, (NAN, NAN), NAN, (NAN, NAN), served=False),
     "refuted"),
])
def test_verdicts_follow_both_intervals(a, b, verdict):
    got, why = verdicts.judge_pair(a, b)
    assert got == verdict, why
    if a["ok"] and b["ok"]:
        assert "p50 " in why and "p99 " in why


def test_notes_say_each_message_once_per_variant(reference_copy):
    """A server error repeated across repeats, load points and within one note (the handler's
    and the server's copy) is listed once per variant and scenario, with where it was said."""
    report.build(str(reference_copy))
    md = (reference_copy / "report.md").read_text()
    for scenario in ("echo", "rate"):
        text = section(md, scenario)
        notes = [l for l in text.splitlines() if l.startswith("- ")]
        assert notes and len(notes) == len(set(notes))
        for line in notes:
            assert line.count("You need to use the eventlet server") <= 1, line
        failed = [l for l in notes if l.startswith("- seed-app-run (")]
        assert sum("You need to use the eventlet server" in l for l in failed) == 1
    html = (reference_copy / "report.html").read_text()
    assert html.count("You need to use the eventlet server") == md.count(
        "You need to use the eventlet server")


def test_client_transport_and_knee_tables_follow_the_data(reference_copy):
    """A variant measured with two clients/transports gets the side-by-side table with its
    differences; knees show their bound and first failing rate; an empty percentile is '–'."""
    s = pd.read_csv(reference_copy / "summary.csv", dtype=str, keep_default_na=False)
    stock = s[s["variant"] == "socketio-run-gevent"].copy()
    stock["client"], stock["transport"] = "python-socketio", "polling"
    for col in ("p50_us", "p99_us"):
        stock[col] = (stock[col].astype(float) + 1000).astype(str)
    stock.loc[stock["repeat"] == "all", "p99_us"] = ""      # too few samples for a p99
    pd.concat([s, stock]).to_csv(reference_copy / "summary.csv", index=False)
    pd.DataFrame([dict(variant="socketio-run-gevent", knee_msg_s=1600, next_msg_s=3200,
                       bound="exact", slo="p99 <= 50 ms", reason="p99 over the SLO", repeat=1),
                  dict(variant="socketio-run-threading", knee_msg_s=25600, next_msg_s="",
                       bound="lower", slo="p99 <= 50 ms", reason="never broke", repeat=1)]
                 ).to_csv(reference_copy / "knees.csv", index=False)
    report.build(str(reference_copy))
    md = (reference_copy / "report.md").read_text()
    clients = section(md, "Client cost and transport cost")
    lines = [l for l in clients.splitlines() if l.startswith("| socketio-run-gevent |")]
    assert len(lines) == 4                  # echo and rate, each lean and stock
    assert all("reference" in l for l in lines if "| lean | websocket |" in l)
    assert all("+1.000" in l for l in lines if "| python-socketio | polling |" in l)
    stock_rate = next(l for l in lines if "rate" in l and "polling" in l)
    assert "| – |" in stock_rate            # the empty p99 cell is left out, not 0
    knees = section(md, "Sweep knees")
    assert re.search(r"\| socketio-run-gevent \| 1,600 \| exact \| 3,200 \|", knees)
    assert re.search(r"\| socketio-run-threading \| ≥ 25,600 \| lower \| – \|", knees)
    assert os.path.exists(reference_copy / "plots" / "sweep-knees.png")


def test_charts_leave_an_empty_percentile_out(reference_copy):
    """An empty p99 cell (too few samples) gets no bar and a note, never a bar at 0."""
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle

    from bench.output import plots

    s = pd.read_csv(reference_copy / "summary.csv", dtype=str, keep_default_na=False)
    empty = (s["variant"] == "socketio-run-gevent") & (s["scenario"] == "rate") \
        & (s["repeat"] == "all")
    s.loc[empty, "p99_us"] = ""
    s.to_csv(reference_copy / "summary.csv", index=False)
    data = reader.read(reference_copy)
    fig = plots.bars(data, "rate")
    try:
        p50, p99 = fig.axes[:2]

        def bars(ax):
            return [p for p in ax.patches if isinstance(p, Rectangle) and p.get_height() > 0]

        measured = data.aggregates[(data.aggregates["scenario"] == "rate")
                                   & (data.aggregates["ok"] > 0)]
        assert len(bars(p50)) == len(measured)
        assert len(bars(p99)) == len(measured) - 1
        assert not [p for p in p99.patches if isinstance(p, Rectangle) and p.get_height() == 0]
        assert "too few samples" in [t.get_text() for t in p99.texts]
    finally:
        plt.close(fig)


def test_sweep_chart_puts_achieved_rate_on_the_throughput_axis(reference_copy):
    import matplotlib.pyplot as plt

    from bench.output import plots

    s = pd.read_csv(reference_copy / "summary.csv", dtype=str, keep_default_na=False)
    s = s[s["scenario"] == "rate"].assign(scenario="sweep")
    s["achieved_rate"] = [str(300 + i) for i in range(len(s))]      # below the 400 target
    s.to_csv(reference_copy / "summary.csv", index=False)
    data = reader.read(reference_copy)
    fig = plots.throughput(data)
    try:
        xs = {x for line in fig.axes[0].lines for x in line.get_xdata()}
        achieved = set(data.aggregates.loc[data.aggregates["ok"] > 0, "achieved_rate"])
        assert xs == achieved and 400.0 not in xs
    finally:
        plt.close(fig)
