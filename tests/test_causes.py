"""Server events and onsets against servers whose behaviour is built in: a generation-2 GC
pause (or a blocked gevent loop) at a moment the server logs, followed by a slower regime;
a steady server with its collector off. Real variant servers, short steps."""
import os
import re

import numpy as np
import pandas as pd
import pytest

from bench.analysis import onsets
from tests.conftest import ROOT

APP = "tests/causes_app.py:app"
# The app's cause fires CAUSES_AT_S after its first echo, the harness's verify round trip;
# the driver starts 0.5-1.5 s after that, so 2.0 s lands inside the 0.3 s + 3 s step.
SHORT = ["--scenario", "rate", "--rate", "200", "--connections", "4", "--duration", "3",
         "--warmup", "0.3", "--repeats", "1", "--server-events", "on",
         "--server-nodelay", "on", "--no-report"]


def run_one(bench, tmp_path, *args):
    """The run folder and its one measured row."""
    proc = bench.run("run", *SHORT, *args, "--out", tmp_path, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (run,) = bench.run_dirs(str(tmp_path))
    rows = bench.summary(run)
    (row,) = rows[rows["repeat"] != "all"].to_dict("records")
    return run, row


def events_of(run):
    (name,) = os.listdir(os.path.join(run, "events"))
    frame = pd.read_csv(os.path.join(run, "events", name))
    assert list(frame.columns) == ["t_ns", "kind", "duration_ns", "detail"]
    return frame


def true_onset(run, variant):
    """(monotonic ns the server logged for its built-in cause, seconds after the step's
    first intended send)."""
    with open(os.path.join(run, "logs", f"{variant}.log")) as f:
        (at_ns,) = [int(n) for n in re.findall(r"causes_app: cause at (\d+) ns", f.read())]
    samples = pd.read_csv(os.path.join(run, "samples.csv.gz"))
    return at_ns, (at_ns - samples["intended_ns"].min()) / 1e9


@pytest.mark.slow
def test_a_gc_pause_is_named_as_the_onset(bench, tmp_path):
    run, row = run_one(bench, tmp_path, "--variants", "socketio-run-threading", "--app", APP,
                       "--app-env", "CAUSES_AT_S=2.0")
    at_ns, at_s = true_onset(run, "socketio-run-threading")
    assert abs(row["onset_s"] - at_s) < 0.1, (row["onset_s"], at_s)
    assert row["regime_after_us"] > 5 * row["regime_before_us"]
    assert "server GC pause (generation 2," in row["onset_cause"], row["onset_cause"]
    events = events_of(run)
    gc = events[events["kind"] == "gc"]
    forced = gc[(gc["t_ns"] - at_ns).abs() < 20_000_000]
    assert forced["detail"].str.contains("generation=2").any(), forced
    assert forced["duration_ns"].max() > 5_000_000
    assert 0 < row["server_gc_count"] <= len(gc)  # the measured window's share of the file


@pytest.mark.slow
def test_a_blocked_gevent_loop_is_named(bench, tmp_path):
    run, row = run_one(bench, tmp_path, "--variants", "socketio-run-gevent", "--app", APP,
                       "--app-env", "CAUSES_AT_S=2.0", "--app-env", "CAUSES_BLOCK_MS=80")
    _, at_s = true_onset(run, "socketio-run-gevent")
    assert abs(row["onset_s"] - at_s) < 0.1, (row["onset_s"], at_s)
    assert row["onset_cause"].startswith("blocked server loop (gevent, "), row["onset_cause"]
    blocked = events_of(run).query("kind == 'blocked'")
    assert blocked["duration_ns"].max() >= 70_000_000
    assert row["server_blocked_ms"] >= 70


@pytest.mark.slow
def test_gc_off_records_no_collection_and_a_steady_step_has_no_onset(bench, tmp_path):
    run, row = run_one(bench, tmp_path, "--variants", "socketio-run-threading",
                       "--server-gc", "off")
    assert row["server_gc"] == "off"
    assert row["server_gc_count"] == 0 and row["server_gc_ms"] == 0
    assert row["onset_cause"] == "none found" and pd.isna(row["onset_s"])
    events = events_of(run)
    assert not (events["kind"] == "gc").any()
    assert (events["kind"] == "sampler").any()  # the harness's own ticks are there too
    with open(os.path.join(run, "logs", "socketio-run-threading.log")) as f:
        assert "events: gc disabled" in f.read()


def test_bad_settings_are_one_line(bench):
    for args in (["--server-gc", "sometimes"], ["--server-events", "maybe"]):
        proc = bench.run("run", "--variants", "socketio-run-threading", *args, "--dry-run",
                         cwd=ROOT)
        assert proc.returncode == 2 and "Traceback" not in proc.stderr
        assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr


def test_a_step_change_is_found_where_it_is_and_noise_is_not():
    rng = np.random.default_rng(7)
    intended = np.arange(1400, dtype=np.int64) * 2_500_000 + 10**12
    steady = rng.lognormal(0, 0.3, 1400) * 1000
    for start in rng.integers(0, 1380, 5):  # short bursts are not a regime
        steady[start:start + 20] *= 6
    assert onsets.find(intended, steady) is None
    shifted = steady.copy()
    shifted[1000:] = 25_000 + rng.normal(0, 300, 400)
    found = onsets.find(intended, shifted)
    assert found.onset_s == pytest.approx(2.5, abs=0.01)
    assert found.after_us == pytest.approx(25_000, rel=0.05)
    gc = pd.DataFrame({"t_ns": [found.at_ns - 10_000_000, found.at_ns - 3_000_000],
                       "kind": ["gc", "gc"], "duration_ns": [4_000_000, 300_000],
                       "detail": ["generation=2 collected=9 pid=1", "generation=0 pid=1"]})
    sent = intended + 20_000
    assert onsets.cause(found, gc, intended, sent) == \
        "server GC pause (generation 2, 4.0 ms, 10 ms before the onset)"
    assert onsets.cause(found, gc.iloc[1:], intended, sent) == "none found"
    stalled = sent.copy()
    stalled[1000] += 3_000_000
    assert onsets.cause(found, gc.iloc[1:], intended, stalled) == \
        "driver stall (send lag 3.0 ms)"


def test_a_blocked_loop_stamped_one_heartbeat_late_is_still_the_cause():
    """The server stamps a block when its 5 ms heartbeat was due, up to one beat after the
    block began, so the first slow message may precede the stamp by more than AFTER_NS."""
    at_ns = 10**12
    found = onsets.Onset(at_ns, 2.0, 500.0, 80_000.0, 1e-60)
    events = pd.DataFrame({"t_ns": [at_ns + 5_000_000, at_ns + 9_000_000, at_ns + 12_000_000],
                           "kind": ["sampler", "blocked", "blocked"],
                           "duration_ns": [800_000, 80_000_000, 90_000_000],
                           "detail": ["", "loop=gevent pid=1", "loop=gevent pid=1"]})
    intended = np.array([at_ns], dtype=np.int64)
    assert onsets.cause(found, events.iloc[:2], intended, intended + 20_000) == \
        "blocked server loop (gevent, 80.0 ms, 9 ms after the onset)"
    assert onsets.cause(found, events.iloc[[0, 2]], intended, intended + 20_000) == \
        "harness sampler tick (0.8 ms, 5 ms after the onset)"
