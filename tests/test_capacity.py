"""Thousands of clients, at small size: capacity steps, fan-out over several driver processes,
a reconnect storm, and the machine's connection limits checked before anything starts.

The server's ping interval is shortened (1 s, through a test-only variants file) so a hold
longer than the ping interval takes seconds; ``BENCH_PER_DRIVER_PROCESS`` spreads a few
dozen connections over several driver processes, as 10,000 are spread in a real run.
"""
import json
import os
import subprocess

import pandas as pd
import pytest

from bench.plan import limits

VARIANT = "socketio-run-gevent"
VARIANTS_TOML = """
[environments.default]
requirements = ["flask", "flask-socketio", "gevent"]

[groups]
default = ["socketio-run-gevent"]

[variants.socketio-run-gevent]
description = "socketio.run() gevent, ping interval 1 s (capacity tests)"
launcher = "socketio.run"
patch = "gevent"
environment = "default"
socketio_kwargs = { async_mode = "gevent", ping_interval = 1, ping_timeout = 1 }
"""


@pytest.fixture(scope="module")
def variants_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("capvariants") / "variants.toml"
    path.write_text(VARIANTS_TOML)
    return str(path)


def run_ok(bench, out, *args, env=None, timeout=240):
    r = bench.run("run", "--out", out, "--no-report", "--repeats", "1", *args, timeout=timeout,
                  env=env)
    assert r.returncode == 0, r.stderr[-2000:]
    [run_dir] = bench.run_dirs(out)
    return run_dir


# ----------------------------------------------------------------------------- plan only

def test_capacity_levels_rise_to_the_maximum():
    assert limits.capacity_levels(10_000) == (100, 300, 1000, 3000, 10_000)
    assert limits.capacity_levels(250) == (100, 250)
    assert limits.capacity_levels(40) == (40,)
    assert limits.capacity_levels(20_000)[-2:] == (10_000, 20_000)


def test_driver_processes_split_connections(monkeypatch):
    monkeypatch.delenv("BENCH_PER_DRIVER_PROCESS", raising=False)
    assert limits.driver_processes(10) == 1
    assert limits.driver_processes(10_000) == 1     # one busy-polling load process holds them
    assert limits.driver_processes(10_001) == 2
    assert limits.driver_processes(10_000, limits.HELD_PER_PROCESS) == 4  # held clients
    assert limits.source_addresses(10) == ()
    assert len(set(limits.source_addresses(10_000))) == limits.SOURCE_ADDRESSES


@pytest.mark.parametrize("args, needle", [
    (["--scenario", "capacity", "--max-connections", "0"], "--max-connections must be at least 1"),
    (["--scenario", "capacity", "--max-connections", "5000000"], "more than this machine allows"),
    (["--connections", "5000000"], "more than this machine allows"),
    (["--scenario", "fanout", "--members", "0"], "--members sizes must be at least 1"),
    (["--scenario", "fanout", "--members", "ten"], "--members takes whole numbers"),
])
def test_bad_counts_are_one_line_before_anything_starts(bench, tmp_path, args, needle):
    out = str(tmp_path / "out")
    r = bench.run("run", "--variants", VARIANT, "--out", out, *args, timeout=60)
    assert r.returncode == 2
    assert r.stderr.count("\n") == 1 and needle in r.stderr, r.stderr
    assert "Traceback" not in r.stderr
    assert not os.path.exists(out)  # nothing started, nothing written


def test_the_open_file_limit_bounds_connections(bench, tmp_path):
    """With a hard limit of 1,000 open files, 900 connections is all one server may hold."""
    out = str(tmp_path / "out")
    argv = " ".join(bench.argv("run", "--variants", VARIANT, "--out", out, "--scenario",
                               "capacity", "--max-connections", "2000"))
    r = subprocess.run(["bash", "-c", f"ulimit -n 1000 && exec {argv}"], cwd=bench.root,
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 2
    assert "open-file hard limit (1000)" in r.stderr and r.stderr.count("\n") == 1, r.stderr
    assert not os.path.exists(out)


def test_knee_bound_as_for_sweeps():
    from bench.execute.capacity_table import knee_rows
    from bench.plan.steps import Step

    step = Step(index=0, variant="v", scenario="capacity", load_point="up to 3000", repeat=1,
                rate=None, connections=3000, warmup=0, duration=1, payload=64, deadline=5)
    table = [dict(connections=n, held=n) for n in (100, 300, 1000)]
    rows = knee_rows(step, table, 300, "held 900 of 1000 at 1000 connections")
    assert [r["bound"] for r in rows] == ["exact"] * 3
    assert [r["knee"] for r in rows] == [False, True, False]
    assert rows[0]["reason"] == "held 900 of 1000 at 1000 connections"
    assert {r["bound"] for r in knee_rows(step, table, 1000, "")} == {"lower"}
    rows = knee_rows(step, table[:1], None, "held 0 of 100 at 100 connections")
    assert rows[0]["bound"] == "none" and rows[0]["knee_connections"] == 0


# ----------------------------------------------------------------------------- real servers

@pytest.mark.slow
def test_capacity_steps_hold_idle_clients_that_answer_pings(bench, tmp_path, variants_file):
    """Also: the step's server is deployed like every other step's, so the server knobs and
    --server-nodelay reach it (seen from outside: the ping interval its Engine.IO OPEN packet
    announces, and the TCP_NODELAY it reads back from an accepted socket)."""
    env = bench.env(BENCH_PER_DRIVER_PROCESS=120)
    run_dir = run_ok(bench, str(tmp_path), "--variants-file", variants_file, "--variants",
                     VARIANT, "--scenario", "capacity", "--max-connections", "300",
                     "--duration", "1", "--ping-interval", "2", "--ping-timeout", "1",
                     "--server-nodelay", env=env)
    cap = pd.read_csv(os.path.join(run_dir, "capacity.csv"))
    # the knob, not the variant's own 1 s, is what the server announced to every client
    # (whole seconds: engineio announces int(interval) * 1000, so 1.5 s would read 1000)
    assert set(cap["ping_interval_ms"]) == {2000} and cap["server_nodelay"].all()
    log = open(os.path.join(run_dir, "logs", f"{VARIANT}.log")).read()
    assert "nodelay: TCP_NODELAY=1 on accepted socket" in log
    knobs = [json.loads(line.split("knobs ", 1)[1]) for line in log.splitlines()
             if "launch: knobs" in line]
    assert knobs and knobs[0]["ping_interval"] == 2 and knobs[0]["ping_timeout"] == 1
    assert list(cap.columns[:16]) == [
        "variant", "repeat", "connections", "held", "dropped", "ping_timeouts",
        "connect_p50_us", "connect_p99_us", "probe_p50_us", "probe_p99_us", "server_rss_mb",
        "rss_per_conn_kb", "server_cpu_pct", "driver_rss_mb", "bound", "reason"]
    assert list(cap["connections"]) == [100, 300]
    assert list(cap["held"]) == [100, 300] and cap["dropped"].sum() == 0
    assert cap["ping_timeouts"].sum() == 0
    # the hold outlasted the ping interval: every held client was pinged and answered
    assert (cap["hold_s"] > cap["ping_interval_ms"] / 1000).all()
    assert list(cap["pinged"]) == [100, 300]
    assert list(cap["driver_processes"]) == [3, 3]
    assert (cap["server_rss_mb"] > 0).all() and (cap["driver_rss_mb"] > 0).all()
    assert cap["server_rss_mb"].iloc[1] > cap["server_rss_base_mb"].iloc[1]
    assert (cap["probes"] > 0).all() and cap["probes_lost"].sum() == 0
    # the knee: the last step, a lower bound (nothing broke)
    assert set(cap["bound"]) == {"lower"} and list(cap["knee"]) == [False, True]
    summary = bench.summary(run_dir)
    probes = summary[(summary["scenario"] == "capacity") & (summary["repeat"] != "all")]
    assert sorted(probes["load_point"]) == ["100 connections", "300 connections"]
    assert (probes["ok"] == probes["attempted"]).all() and probes["server_nodelay"].all()
    res = pd.read_csv(os.path.join(run_dir, "resources.csv"))
    assert {"server", "driver"} <= set(res["role"])


@pytest.mark.slow
def test_fanout_members_over_several_driver_processes(bench, tmp_path):
    env = bench.env(BENCH_PER_DRIVER_PROCESS=20)
    run_dir = run_ok(bench, str(tmp_path), "--quick", "--variants", VARIANT, "--scenario",
                     "fanout", "--members", "50,30", "--connections", "7",
                     "--fanout-rate", "20", env=env)
    s = bench.summary(run_dir)
    fan = s[(s["scenario"] == "fanout") & (s["repeat"] != "all")]
    assert sorted(set(fan["connections"])) == [30, 50]  # --members wins over --connections
    for members, rows in fan.groupby("connections"):
        by = rows.set_index("recipient")
        assert by.loc["all", "reach"] == 1.0
        assert by.loc["all", "ok"] == by.loc["all", "broadcasts"] * members
        assert by.loc["first", "p50_us"] <= by.loc["median", "p50_us"] <= by.loc["last", "p50_us"]
    samples = bench.samples(run_dir)
    fan50 = samples[(samples["scenario"] == "fanout") & samples["load_point"].str.startswith("50")]
    assert fan50["conn"].nunique() == 50  # members of three processes on one clock
    assert (fan50["latency_us"].dropna() > 0).all()


@pytest.mark.slow
def test_reconnect_after_a_server_restart(bench, tmp_path, variants_file):
    env = bench.env(BENCH_PER_DRIVER_PROCESS=25)
    run_dir = run_ok(bench, str(tmp_path), "--variants-file", variants_file, "--variants",
                     VARIANT, "--scenario", "reconnect", "--connections", "60",
                     "--duration", "1", env=env)
    s = bench.summary(run_dir)
    [row] = s[(s["scenario"] == "reconnect") & (s["repeat"] != "all")].to_dict("records")
    assert row["back"] == 60 and row["never_back"] == 0 and row["ok"] == 60
    assert row["restart_ms"] > 0 and row["all_back_ms"] >= row["restart_ms"]
    assert row["p50_us"] >= row["restart_ms"] * 1000 * 0.5
    assert row["sessions_lost"] == 60  # a restarted server knows none of its old sessions


def test_churn_soak_bad_input_is_one_line(bench):
    for args, needle in ((["--duration", "1"], "--duration must be in"),
                         (["--rate", "0"], "--rate must be in"),
                         (["--variants", "nope"], "nope")):
        r = subprocess.run([bench.python, "-m", "bench.churn", *args], cwd=bench.root,
                           capture_output=True, text=True, timeout=60)
        assert r.returncode == 2 and r.stderr.count("\n") == 1 and needle in r.stderr, r.stderr


@pytest.mark.slow
def test_churn_soak_keeps_clients_coming_and_going(bench, tmp_path, variants_file):
    r = subprocess.run([bench.python, "-m", "bench.churn", "--variants-file", variants_file,
                        "--variants", VARIANT, "--duration", "6", "--rate", "20",
                        "--population", "40", "--json", "--out", str(tmp_path)],
                       cwd=bench.root, capture_output=True, text=True, timeout=120)
    assert r.returncode in (0, 1), r.stderr[-2000:]
    [result] = json.loads(r.stdout)["results"]
    counts = result["counts"]
    assert counts["opened"] >= 40 + 20 * 6 * 0.8 and counts["closed"] >= 20 * 6 * 0.8
    assert counts.get("failed", 0) == 0 and counts["alive_at_end"] > 0
    samples = pd.read_csv(tmp_path / "churn.csv")
    assert len(samples) >= 3 and (samples["server_rss_mb"] > 0).all()
    assert "server RSS" in result["verdict"]


REFERENCE = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                         "results", "reference", "capacity")


@pytest.mark.skipif(not os.path.isfile(os.path.join(REFERENCE, "capacity.csv")),
                    reason="results/reference/capacity/ is not committed")
def test_capacity_notebook_runs_on_the_committed_run():
    import nbclient
    import nbformat

    path = os.path.join(os.path.dirname(REFERENCE), "..", "..", "notebooks", "capacity.ipynb")
    nb = nbformat.read(path, as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert all(not c.outputs and c.execution_count is None for c in code)  # committed clean
    nbclient.NotebookClient(nb, timeout=120, kernel_name="python3", resources={
        "metadata": {"path": os.path.dirname(path)}}).execute()
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]
    assert not [o for o in outputs if o.get("output_type") == "error"]
    assert sum("image/png" in o.get("data", {}) for o in outputs) == 1


@pytest.mark.slow
def test_calibrate_reports_the_driver_at_many_connections(bench):
    """--quick measures 10 and 1,000 connections (a full calibrate: 10 and 10,000), here
    over 3 driver processes against the reference server."""
    import math

    r = bench.run("calibrate", "--json", "--quick", timeout=500,
                  env=bench.env(BENCH_PER_DRIVER_PROCESS=400))
    assert r.returncode == 0, r.stderr[-2000:]
    lines = [line for line in r.stdout.splitlines() if line.strip()]
    assert len(lines) == 1, r.stdout[-2000:]  # one JSON object; progress goes to stderr
    out = json.loads(lines[0])
    for key in ("floor_p50_us", "floor_p99_us", "capacity_msg_s", "lag_p99_us"):
        assert isinstance(out[key], (int, float)) and math.isfinite(out[key]), key
    assert 0 < out["floor_p50_us"] <= out["floor_p99_us"]
    assert out["capacity_msg_s"] > 0 and out["lag_p99_us"] >= 0
    assert out["driver_processes_10"] == 1 and out["driver_processes_1000"] == 3
    from bench.calibrate import SCALE_RATES
    for n in (10, 1000):
        assert math.isfinite(out[f"floor_{n}_p50_us"]) and out[f"floor_{n}_p50_us"] > 0
    # the highest rate that held: 10 connections hold the first rate; at 1,000 none may hold
    # (0), else it is one that did (replies ≥ 99 % of it)
    assert out["capacity_10_msg_s"] >= 0.99 * SCALE_RATES[0]
    assert out["capacity_1000_msg_s"] == 0 or out["capacity_1000_msg_s"] >= 0.99 * SCALE_RATES[0]
    assert "floor_p50_us" in out and "capacity_msg_s" in out  # the existing keys stay
    from bench.driver import browser
    if browser.unavailable_reason():
        assert out["browser"] == f"unavailable: {browser.unavailable_reason()}"
        return
    assert out["browser"] == "measured", out["browser"]
    # per message: intended ≤ frame out < ack frame in ≤ ack callback ≤ painted, and the page
    # costs more than the lean client on the same server
    assert out["browser_floor_devtools_p50_us"] < out["browser_floor_p50_us"]
    assert out["browser_floor_p50_us"] <= out["browser_floor_paint_p50_us"]
    assert out["browser_floor_added_us"] > 0
    steps = out["browser_steps"]
    assert [s["rate"] for s in steps if s["connections"] == 10][:1] == [50]
    held = [s for s in steps if s["connections"] == 10 and s["passed"]]
    assert out["browser_capacity_msg_s"] == (held[-1]["achieved"] if held else 0.0)
    for s in held:
        assert s["achieved"] >= 0.99 * s["rate"] and s["browser_cpu_pct"] < 90
