"""Each scenario against a real server at small size: the rows, the extra columns,
knees.csv, and that the scenario's own mechanism really ran (deliveries, stages, blockers)."""
import os

import pandas as pd
import pytest

pytestmark = pytest.mark.slow

VARIANT = "socketio-run-gevent"
SCENARIOS = ["sweep", "fanout", "connect", "payload", "blocking"]


@pytest.fixture(scope="module")
def run(bench, tmp_path_factory):
    out = str(tmp_path_factory.mktemp("scenarios"))
    args = ["run", "--quick", "--variants", VARIANT, "--out", out, "--no-report",
            "--fanout-rate", "30", "--connections", "8"]
    for s in SCENARIOS:
        args += ["--scenario", s]
    r = bench.run(*args, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    [run_dir] = bench.run_dirs(out)
    return dict(dir=run_dir, summary=bench.summary(run_dir), samples=bench.samples(run_dir))


def rows(run, scenario):
    s = run["summary"]
    return s[(s["scenario"] == scenario) & (s["repeat"] != "all")]


def test_sweep_rises_geometrically_and_writes_a_knee(run):
    sweep = rows(run, "sweep")
    rates = list(sweep["target_rate"])
    bound = list(sweep["driver_bound"])
    assert rates == sorted(rates) and len(set(rates)) <= 4
    for i, (a, b) in enumerate(zip(rates, rates[1:])):
        # doubled, or the same rate measured again because the driver was late (inconclusive)
        assert b == pytest.approx(2 * a) or (b == a and bound[i]), (rates, bound)
    knees = pd.read_csv(os.path.join(run["dir"], "knees.csv"))
    assert list(knees.columns[:6]) == ["variant", "knee_msg_s", "next_msg_s", "bound", "slo",
                                     "reason"]
    [knee] = knees.to_dict("records")
    passed = sweep[sweep["slo_pass"] == True]  # noqa: E712 - pandas column of bools
    assert knee["knee_msg_s"] == (passed["target_rate"].max() if len(passed) else 0.0)


def test_fanout_rows_per_recipient_with_reach(run):
    fan = rows(run, "fanout")
    assert sorted(fan["recipient"]) == ["all", "first", "last", "median"]
    by = fan.set_index("recipient")
    assert by.loc["first", "p50_us"] <= by.loc["median", "p50_us"] <= by.loc["last", "p50_us"]
    assert 0.99 <= by.loc["all", "reach"] <= 1.0
    # every member received every measured broadcast
    assert by.loc["all", "ok"] == by.loc["first", "broadcasts"] * 8


def test_connect_stages_are_ordered(run):
    [row] = rows(run, "connect").to_dict("records")
    assert row["ok"] > 0 and row["transport"] == "websocket"
    assert 0 < row["tcp_p50_us"] <= row["upgrade_p50_us"] <= row["open_p50_us"] \
        <= row["connect_p50_us"]
    assert row["failed_tcp"] == row["failed_upgrade"] == row["failed_open"] == 0


def test_payload_sizes_and_binary(run):
    pay = rows(run, "payload").set_index("load_point")
    assert set(pay.index) == {"64 B", "1 KiB", "16 KiB", "64 KiB", "16 KiB binary"}
    assert (pay["ok"] == pay["attempted"]).all(), pay["note"].to_dict()
    assert bool(pay.loc["16 KiB binary", "binary"]) and pay.loc["64 KiB", "payload_bytes"] == 65536


def test_blocking_mixes_and_cpu_blockers_stall_a_greenlet_server(run):
    blk = rows(run, "blocking").set_index("mix")
    assert set(blk.index) == {"echo-only", "sleep-blockers", "cpu-blockers"}
    # gevent shares one OS thread: a 50 ms CPU burn delays every echo in flight.
    assert blk.loc["cpu-blockers", "max_us"] > 20_000 > blk.loc["echo-only", "p50_us"]
    samples = run["samples"]
    assert set(samples[samples["scenario"] == "blocking"]["mix"]) == set(blk.index)


def test_clients_and_transports_are_measured_side_by_side(bench, tmp_path):
    """One server, three ways: lean/WebSocket, stock/WebSocket, stock/polling; each a key."""
    r = bench.run("run", "--quick", "--variants", "socketio-run-threading", "--scenario", "echo",
                  "--duration", "0.5", "--warmup", "0.2", "--client", "lean,python-socketio",
                  "--transport", "websocket,polling", "--out", str(tmp_path), "--no-report",
                  timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    [run_dir] = bench.run_dirs(str(tmp_path))
    s = bench.summary(run_dir)
    agg = s[s["repeat"] == "all"].set_index("requested")
    assert sorted(agg.index) == ["lean/websocket", "python-socketio/polling",
                                 "python-socketio/websocket"]
    assert agg.loc["lean/websocket", "client"] == "lean"
    assert agg.loc["python-socketio/websocket", "transport"] == "websocket"
    assert agg.loc["python-socketio/polling", "transport"] == "polling"
    assert (agg["ok"] > 0).all()


def test_lean_client_over_polling_is_refused(bench, tmp_path):
    r = bench.run("run", "--client", "lean", "--transport", "polling", "--out", str(tmp_path),
                  timeout=60)
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1
    assert "WebSocket only" in r.stderr
