"""Every default variant end to end through the real CLI, once (module-scoped: ~100 s). Real
servers, real driver, real results folder; no mocks."""
import os

import pytest

from bench.plan import registry

pytestmark = pytest.mark.slow

DEFAULT = registry.load().groups["default"]
# Transports the design's facts predict (docs/DESIGN.md, "Facts the design rests on"). Not
# listed: flask-run-gevent (the design expects polling; with gevent 26 + simple-websocket,
# Werkzeug serves WebSocket after patch_all, so only "measured" is asserted for it) and
# seed-app-run (eventlet mode on Werkzeug without monkey patching: WebSocket gets HTTP 500
# and polling acks can time out, so it may have no working transport at all; only "not
# websocket, and the row says why" is asserted).
EXPECTED_TRANSPORT = {
    "flask-run-threading": "websocket",   # app.run() + threading: simple-websocket
    "flask-run-eventlet": "polling",      # Werkzeug under eventlet: WebSocket gets HTTP 500
    "socketio-run-threading": "websocket",
    "socketio-run-eventlet": "websocket",
    "socketio-run-gevent": "websocket",
    "seed-socketio-run": "websocket",
}
MAY_FAIL = {"seed-app-run"}
SCENARIOS = ("echo", "rate")


@pytest.fixture(scope="module")
def quick_run(bench, tmp_path_factory):
    before, since = bench.snapshot()
    out = tmp_path_factory.mktemp("variants")
    args = ["run", "--quick", "--variants", ",".join(DEFAULT), "--out", out, "--no-report"]
    for s in SCENARIOS:
        args += ["--scenario", s]
    r = bench.run(*args, timeout=400)
    orphans = bench.reap_or_fail(before, since, "the quick run of every default variant")
    dirs = bench.run_dirs(out)
    run_dir = dirs[0] if len(dirs) == 1 else None
    return dict(r=r, run_dir=run_dir, dirs=dirs, orphans=orphans)


@pytest.fixture(scope="module")
def run_dir(quick_run):
    r = quick_run["r"]
    assert r.returncode == 0, r.stderr[-3000:]
    assert quick_run["run_dir"], quick_run["dirs"]
    return quick_run["run_dir"]


def test_quick_run_of_every_default_variant_leaves_nothing_running(quick_run):
    assert quick_run["orphans"] == ""


def test_results_folder_has_the_design_files(run_dir):
    for name in ("meta.json", "summary.csv", "samples.csv.gz"):
        assert os.path.getsize(os.path.join(run_dir, name)) > 0, name
    leftovers = [n for n in os.listdir(run_dir) if ".tmp" in n or n in (".work", ".parts")]
    assert leftovers == []


def test_meta_records_the_run(bench, run_dir):
    meta = bench.meta(run_dir)
    assert meta["status"] == "complete" and meta["finished_utc"]
    assert meta["schema_version"] >= 1 and meta["git_commit"]
    assert set(meta["variants"]) == set(DEFAULT)
    assert meta["plan"]["steps"] == len(DEFAULT) * len(SCENARIOS)
    assert meta["plan"]["options"]["quick"] is True
    assert meta["packages"]["default"]["flask-socketio"]
    assert meta["host"]["cores"] >= 1


def test_summary_has_every_variant_and_scenario_measured(bench, run_dir):
    summary = bench.summary(run_dir)
    for variant in DEFAULT:
        for scenario in SCENARIOS:
            rows = summary[(summary["variant"] == variant) & (summary["scenario"] == scenario)]
            assert set(rows["repeat"]) == {"1", "all"}, (variant, scenario)
            one = rows[rows["repeat"] == "1"].iloc[0]
            assert one["ok"] + one["errors"] + one["timeouts"] == one["attempted"]
            if variant in MAY_FAIL and not isinstance(one["transport"], str):
                assert "polling failed" in one["note"], (variant, scenario, one["note"])
                assert not one["valid"] and one["attempted"] == 0
                continue
            assert one["ok"] > 0, (variant, scenario, one["note"])
            assert one["p50_us"] <= one["max_us"]
            if one["attempted"] >= 1000:  # a p99 needs 10 samples beyond it
                assert one["p50_us"] <= one["p99_us"] <= one["max_us"]
            else:
                assert one["p99_us"] != one["p99_us"]  # empty, never a guess
            assert isinstance(one["hdr"], str) and one["hdr"]


def test_samples_have_every_variant_and_its_transport(bench, run_dir):
    summary = bench.summary(run_dir)
    samples = bench.samples(run_dir)
    served = set(summary.loc[summary["transport"].notna() & (summary["transport"] != ""),
                             "variant"])
    assert set(DEFAULT) - MAY_FAIL <= served
    assert set(samples["variant"]) == served
    for variant in sorted(served):
        mine = samples[samples["variant"] == variant]
        assert set(mine["scenario"]) == set(SCENARIOS)
        transports = set(mine["transport"])
        assert len(transports) == 1, (variant, transports)
        rows = summary[(summary["variant"] == variant) & (summary["repeat"] == "1")]
        assert set(rows["transport"]) == transports, variant
        for scenario in SCENARIOS:
            row = rows[rows["scenario"] == scenario].iloc[0]
            m = mine[(mine["scenario"] == scenario) & (mine["phase"] == "measure")]
            assert len(m) == row["attempted"] and (m["outcome"] == "ok").sum() == row["ok"]


def transport_of(bench, run_dir, variant):
    summary = bench.summary(run_dir)
    rows = summary[(summary["variant"] == variant) & (summary["repeat"] == "1")]
    transports = set(rows["transport"].fillna(""))  # "" = no working transport
    assert len(transports) == 1, (variant, transports)
    return transports.pop()


@pytest.mark.parametrize("variant", ["flask-run-eventlet", "seed-app-run"])
def test_app_run_under_eventlet_is_not_websocket(bench, run_dir, variant):
    transport = transport_of(bench, run_dir, variant)
    assert transport != "websocket", transport
    summary = bench.summary(run_dir)
    for note in summary.loc[summary["variant"] == variant, "note"]:
        assert "websocket refused: HTTP 500" in note, note  # and the row says why


def test_socketio_run_gevent_is_websocket(bench, run_dir):
    assert transport_of(bench, run_dir, "socketio-run-gevent") == "websocket"


@pytest.mark.parametrize("variant", sorted(EXPECTED_TRANSPORT))
def test_transport_matches_the_design_facts(bench, run_dir, variant):
    assert transport_of(bench, run_dir, variant) == EXPECTED_TRANSPORT[variant]


def test_polling_rows_say_why_websocket_was_refused(bench, run_dir):
    summary = bench.summary(run_dir)
    polling = summary[(summary["transport"] == "polling") & (summary["repeat"] == "1")]
    assert len(polling) > 0
    for note in polling["note"]:
        assert "websocket" in str(note).lower() and "polling" in str(note).lower(), note


def test_server_output_is_in_variant_logs_not_in_the_harness_output(quick_run, run_dir):
    logs = os.path.join(run_dir, "logs")
    for variant in DEFAULT:
        assert os.path.getsize(os.path.join(logs, f"{variant}.log")) > 0, variant
    eventlet_log = open(os.path.join(logs, "flask-run-eventlet.log")).read()
    # recorded, not hidden: eventlet's deprecation warning and Werkzeug's 500 traceback
    assert "EventletDeprecationWarning" in eventlet_log and "Traceback" in eventlet_log
    r = quick_run["r"]
    for text in ("EventletDeprecationWarning", "Traceback", "Press CTRL+C"):
        assert text not in r.stdout and text not in r.stderr, text


def test_table_lists_every_variant(quick_run, run_dir):
    out = quick_run["r"].stdout
    for variant in DEFAULT:
        assert variant in out
    assert run_dir in out
