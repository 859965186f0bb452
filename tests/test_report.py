"""The report, built from a real quick run: every file, the findings' rules, and report.html as a
real browser renders it (headless Chromium: every image decoded, every table laid out); the
committed reference run (an older schema) still reports; verdicts follow the intervals; the
client/transport and knees tables follow the data."""
import os
import re
import shutil
import signal
import subprocess

import pytest

import pandas as pd

from bench.analysis import reader
from bench.output import report
from bench.errors import UsageError

VARIANTS = ["socketio-run-gevent", "flask-run-eventlet"]
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--no-first-run"]

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
REFERENCE = os.path.join(ROOT, "results", "reference")


@pytest.fixture(scope="module")
def run_dir(bench, tmp_path_factory):
    out = tmp_path_factory.mktemp("report-run")
    proc = bench.run("run", "--quick", "--variants", ",".join(VARIANTS), "--no-report",
                     "--out", out, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (run,) = bench.run_dirs(str(out))
    report.build(run)
    return run


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
        assert report.ms(r["p50_us"]) in line and report.ms(r["p99_us"]) in line
        assert ("valid" if r["valid"] else "**invalid**") in line
        assert ("driver-bound" in line) == bool(r["driver_bound"])


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
    pairs = [p for p in report.CLAIM1_PAIRS if set(p) <= present]
    claim1 = section(md, "Claim 1")
    assert ("Verdict: not testable" in claim1) == (not pairs)
    alternatives = [a for a in report.CLAIM2_ALTERNATIVES if {a, report.CLAIM2_BASE} <= present]
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


def render(html_path, profile):
    """report.html's <body> attributes after Chromium loaded it and its check script ran."""
    proc = subprocess.Popen([CHROMIUM, *CHROMIUM_FLAGS, f"--user-data-dir={profile}",
                             "--dump-dom", f"file://{html_path}"], stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, text=True, start_new_session=True)
    try:
        dom, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    body = re.search(r"<body([^>]*)>", dom)
    assert body, f"chromium returned no DOM (exit {proc.returncode})"
    return dict(re.findall(r'data-([\w-]+)="([^"]*)"', body.group(1)))


@pytest.mark.slow
@pytest.mark.skipif(not CHROMIUM, reason="chromium is not installed (apt-get install chromium); "
                                         "CI installs it")
@pytest.mark.slow
def test_html_renders_in_chromium(run_dir, tmp_path):
    html_path = os.path.join(run_dir, "report.html")
    with open(html_path) as f:
        source = f.read()
    assert not re.search(r'(src|href)="(?!data:)', source), "report.html must be self-contained"
    attrs = render(html_path, tmp_path / "profile")
    assert int(attrs["images"]) == len(os.listdir(os.path.join(run_dir, "plots"))) > 0
    assert attrs["images-ok"] == "yes"
    assert int(attrs["tables-rendered"]) == int(attrs["tables"]) >= 3


@pytest.mark.slow
@pytest.mark.skipif(not CHROMIUM, reason="chromium is not installed (apt-get install chromium); "
                                         "CI installs it")
@pytest.mark.slow
def test_chromium_check_catches_a_broken_image(run_dir, tmp_path):
    with open(os.path.join(run_dir, "report.html")) as f:
        broken = f.read().replace("data:image/png;base64,", "data:image/png;base64,AAAA", 1)
    path = tmp_path / "broken.html"
    path.write_text(broken)
    assert render(path, tmp_path / "profile")["images-ok"] == "no"


# ------------------------------------------------------------ the committed reference run

@pytest.fixture
def reference_copy(tmp_path):
    copy = tmp_path / "reference"
    shutil.copytree(REFERENCE, copy, ignore=shutil.ignore_patterns("plots", "report.*"))
    return copy


def test_reference_run_reports_through_the_cli(bench, reference_copy):
    """The committed reference run reports through the CLI and is judged with its intervals
    (log-t over 3 repeats); a claim is inconclusive where intervals overlap or are missing."""
    proc = bench.run("report", reference_copy, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    md = (reference_copy / "report.md").read_text()
    header = next(l for l in md.splitlines() if l.startswith("| variant | load point |"))
    for column in ("interval", "driver share", "censored", "flags", "achieved msg/s"):
        assert f"| {column} |" in header
    failed = next(l for l in md.splitlines() if l.startswith("| seed-app-run | 400 msg/s |"))
    assert report.NO_INTERVAL in failed and "**invalid**" in failed
    assert "| log-t |" in md
    claim1 = section(md, "Claim 1")
    assert "**Verdict: verified**" in claim1      # seed-app-run served nothing
    assert "seed-app-run served nothing" in claim1
    for line in claim1.splitlines():
        if "inconclusive:" in line:
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
    got, why = report.judge_pair(a, b)
    assert got == verdict, why
    if a["ok"] and b["ok"]:
        assert "p50 " in why and "p99 " in why


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
