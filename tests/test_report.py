"""The report, built from a real quick run: every file, the findings' rules, and report.html as a
real browser renders it (headless Chromium: every image decoded, every table laid out)."""
import os
import re
import shutil
import signal
import subprocess

import pytest

from bench.output import plots
from bench.output import report
from bench.errors import UsageError

VARIANTS = ["socketio-run-gevent", "flask-run-eventlet"]
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--no-first-run"]

pytestmark = pytest.mark.slow


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
    return plots.load(run_dir)


@pytest.fixture(scope="module")
def md(run_dir):
    with open(os.path.join(run_dir, "report.md")) as f:
        return f.read()


def section(md, title):
    """The text of one '### title' section of report.md."""
    start = md.index(f"### {title}")
    end = md.find("\n#", start + 1)
    return md[start:end if end > 0 else None]


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


def test_tables_list_every_aggregate_row(data, md):
    for _, r in data.aggregates.iterrows():
        line = next((l for l in md.splitlines() if l.startswith(f"| {r['variant']} | "
                                                                  f"{r['load_point']} |")), None)
        assert line, f"no table row for {r['variant']} {r['load_point']}"
        assert report.ms(r["p50_us"]) in line and report.ms(r["p99_us"]) in line
        assert ("valid" if r["valid"] else "**invalid**") in line
        assert ("driver-bound" in line) == bool(r["driver_bound"])


def test_transport_downgrades_follow_the_data(data, md):
    text = section(md, "Transport downgrades")
    downgraded = data.aggregates[data.aggregates["transport"] != "websocket"]
    for _, r in data.aggregates.iterrows():
        line = next((l for l in text.splitlines()
                     if l.startswith(f"- {r['variant']}: {r['transport'] or 'no transport'}")), "")
        assert (f"{r['scenario']} · {r['load_point']}" in line) == (r["transport"] != "websocket")
    if downgraded.empty:
        assert "every row ran over WebSocket" in text


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


def test_claims_are_judged(data, md):
    present = set(data.aggregates["variant"])
    pairs = [p for p in report.CLAIM1_PAIRS if set(p) <= present]
    claim1 = section(md, "Claim 1")
    assert ("Verdict: not testable" in claim1) == (not pairs)
    alternatives = [a for a in report.CLAIM2_ALTERNATIVES if {a, report.CLAIM2_BASE} <= present]
    claim2 = section(md, "Claim 2")
    assert ("Verdict: not testable" in claim2) == (not alternatives)
    for text in (claim1, claim2):
        assert re.search(r"\*\*Verdict: (verified|refuted|not testable)", text)


def test_server_log_warnings_are_counted(run_dir, data, md):
    text = md[md.index("## Server stderr"):]
    for variant in VARIANTS:
        with open(os.path.join(run_dir, "logs", f"{variant}.log"), errors="replace") as f:
            hits = [l for l in f if any(w in l for w in ("Warning", "Error", "Traceback"))]
        assert f"| {variant} | {len(hits)} |" in text
        if hits:
            assert hits[0].strip()[:60] in text


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


@pytest.mark.skipif(not CHROMIUM, reason="chromium is not installed (apt-get install chromium); "
                                         "CI installs it")
def test_html_renders_in_chromium(run_dir, tmp_path):
    html_path = os.path.join(run_dir, "report.html")
    with open(html_path) as f:
        source = f.read()
    assert not re.search(r'(src|href)="(?!data:)', source), "report.html must be self-contained"
    attrs = render(html_path, tmp_path / "profile")
    assert int(attrs["images"]) == len(os.listdir(os.path.join(run_dir, "plots"))) > 0
    assert attrs["images-ok"] == "yes"
    assert int(attrs["tables-rendered"]) == int(attrs["tables"]) >= 3


@pytest.mark.skipif(not CHROMIUM, reason="chromium is not installed (apt-get install chromium); "
                                         "CI installs it")
def test_chromium_check_catches_a_broken_image(run_dir, tmp_path):
    with open(os.path.join(run_dir, "report.html")) as f:
        broken = f.read().replace("data:image/png;base64,", "data:image/png;base64,AAAA", 1)
    path = tmp_path / "broken.html"
    path.write_text(broken)
    assert render(path, tmp_path / "profile")["images-ok"] == "no"
