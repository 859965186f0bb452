"""Causes, against real servers at small size: TCP_NODELAY pairs and the Nagle detector, py-spy
profiles of the measured window, and the options' bad input. Ratios, never absolute times."""
import json
import os

import numpy as np
import pytest

from bench.analysis import nagle
from bench.options import build_parser
from bench.errors import UsageError
from bench.plan import steps as plan


# ---------------------------------------------------------------- fast: pure functions, plan

def test_detector_fires_on_a_peak_at_the_interval_or_the_delayed_ack_timer_only():
    rng = np.random.default_rng(1)
    fast = rng.normal(0.8, 0.1, 900)
    held = rng.normal(25.1, 0.05, 100)
    assert nagle.detect(np.r_[fast, held], interval=25.0)[0] == "interval"
    assert nagle.detect(np.r_[fast, rng.normal(43.0, 1.0, 50)])[0] == "delayed-ack"
    assert nagle.detect(fast, interval=25.0) is None
    # a stall drains a backlog: latencies smeared over 0–45 ms are no peak
    assert nagle.detect(np.r_[fast, rng.uniform(0, 45, 100)], interval=25.0) is None
    note = nagle.note(("interval", 25.0, 0.5), False, "python -m bench run --server-nodelay both")
    assert "Nagle" in note and note.endswith("--server-nodelay both")
    assert "not through Nagle" in nagle.note(("interval", 25.0, 0.5), True, "cmd")


def test_both_measures_each_step_without_and_with_in_one_shuffled_plan():
    args = build_parser().parse_args(["run", "--server-nodelay", "--profile", "both"])
    assert (args.server_nodelay, args.profile) == ("on", "both")
    steps, _ = plan.build(["v"], ["echo", "rate"], dict(server_nodelay="both", repeats=2))
    assert len(steps) == 8
    assert sorted((s.scenario, s.repeat, s.server_nodelay) for s in steps) == sorted(
        (sc, r, on) for sc in ("echo", "rate") for r in (1, 2) for on in (False, True))
    assert all(s.extra["server_nodelay"] == s.server_nodelay and not s.profiled for s in steps)


@pytest.mark.parametrize("args,needle", [
    (["--server-nodelay", "sometimes"], "--server-nodelay"),
    (["--profile", "maybe"], "--profile"),
    (["--profile", "--target", "http://127.0.0.1:9"], "--target"),
    (["--server-nodelay", "both", "--target", "http://127.0.0.1:9"], "--target"),
])
def test_bad_input_is_one_line_and_exit_2(bench, tmp_path, args, needle):
    r = bench.run("run", "--out", str(tmp_path), *args, timeout=60)
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 2 and len(lines) == 1 and needle in lines[0], r.stderr
    assert "Traceback" not in r.stderr and os.listdir(tmp_path) == []


# ---------------------------------------------------------------- real servers

@pytest.mark.slow
def test_server_nodelay_removes_the_binary_event_nagle_tail_on_gevent(bench, tmp_path):
    # --no-pin: Nagle does not depend on pinning, and a pinned, busy-polling driver shares
    # its core with whatever else is pinned there (other benchmarks on a shared machine)
    r = bench.run("run", "--quick", "--no-pin", "--variants", "socketio-run-gevent",
                  "--scenario", "payload", "--server-nodelay", "both", "--out", str(tmp_path),
                  timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    [run_dir] = bench.run_dirs(str(tmp_path))
    s = bench.summary(run_dir)
    binary = s[(s["load_point"] == "16 KiB binary") & (s["repeat"] != "all")]
    off = binary[~binary["server_nodelay"]].iloc[0]
    on = binary[binary["server_nodelay"]].iloc[0]
    # ~20× alone; > 2.5 even with neighbours' load (the peak tests below are the sharp ones)
    assert off["p50_us"] / on["p50_us"] > 2.5, (off["p50_us"], on["p50_us"])
    assert "Nagle signature" in off["note"] and "--server-nodelay both" in off["note"]
    assert "Nagle" not in str(on["note"]) and "cluster" not in str(on["note"])
    samples = bench.samples(run_dir)
    assert set(samples["server_nodelay"]) == {True, False}
    log = open(os.path.join(run_dir, "logs", "socketio-run-gevent.log")).read()
    assert "nodelay: TCP_NODELAY=1 on accepted socket via gevent StreamServer.do_read" in log
    report = open(os.path.join(run_dir, "report.md")).read()
    assert "TCP_NODELAY on the server: without and with" in report
    assert os.path.exists(os.path.join(run_dir, "plots", "nodelay.png"))


@pytest.mark.slow
def test_profile_puts_eventlet_unmasking_on_top(bench, tmp_path):
    from bench.execute import profiler
    try:
        profiler.check_permitted()
    except UsageError as exc:
        pytest.skip(f"ptrace not permitted here: {exc}")
    r = bench.run("run", "--quick", "--variants", "socketio-run-eventlet", "--scenario", "echo",
                  "--payload", "16384", "--profile", "--out", str(tmp_path), timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    [run_dir] = bench.run_dirs(str(tmp_path))
    s = bench.summary(run_dir)
    row = s[s["repeat"] != "all"].iloc[0]
    assert row["profiled"] and row["profile_samples"] > 20
    base = os.path.join(run_dir, row["profile_svg"][:-len(".svg")])
    assert os.path.basename(base) == "socketio-run-eventlet-echo-1_conn_closed_loop-1"
    assert "_apply_mask" in open(base + ".svg").read()
    frames = json.load(open(base + ".speedscope.json"))["shared"]["frames"]
    assert any(f["name"] == "RFC6455WebSocket._apply_mask" for f in frames)
    report = open(os.path.join(run_dir, "report.md")).read()
    table = report.split("socketio-run-eventlet: top self-time functions")[1]
    first_row = [line for line in table.splitlines() if line.startswith("| `")][0]
    assert "_apply_mask" in first_row, first_row
    assert f"]({row['profile_svg']})" in report
