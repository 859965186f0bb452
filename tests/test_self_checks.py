"""The checks each step makes of itself, against reference servers whose truth is built in.

``bench.driver.refserver`` delays each echo by a known amount (constant, log-normal, growing
linearly with time): a steady server must pass ``stationary``, a drifting one must fail it
with the drift it really has; the per-step p99 interval must cover a known p99;
``--precision`` must lengthen a step until its interval holds; Poisson arrivals pass on a
quiet driver and fail when the driver is stopped for a moment; a local ``--target`` is the
server's CPU, not foreign load. The statistics themselves are checked by simulation in
tests/test_selfcheck.py.
"""
import math
import os
import re
import signal
import subprocess
import sys
import time

import psutil
import pytest

from bench import machine, processes
from bench.execute.resources import NOISY_FOREIGN_PCT

FLOOR_MAX_US = 600.0   # the loopback round trip on top of a built-in delay, generously


def serving(tmp_path, *flags):
    """A reference server with built-in delays, pinned where the harness pins servers."""
    server_cpus, _ = machine.cpu_layout(True)
    argv = lambda port: [sys.executable, "-m", "bench.driver.refserver", str(port),  # noqa: E731
                         *map(str, flags)]
    return processes.serving(argv, str(tmp_path / "ref.log"), ready_timeout=30, cpus=server_cpus)


def run_rate(bench, url, out, *extra, timeout=180):
    r = bench.run("run", "--target", url, "--scenario", "rate", "--rate", 400, "--connections",
                  10, "--warmup", 1, "--repeats", 1, "--out", out, "--no-report", *extra,
                  timeout=timeout)
    assert r.returncode == 0, r.stderr[-2000:]
    frame = bench.summary(bench.run_dirs(str(out))[0])
    return frame[frame["repeat"] != "all"].iloc[0]


def codes(row):
    return str(row["reasons"] if isinstance(row["reasons"], str) else "").split(";")


@pytest.mark.slow
def test_a_steady_server_passes_and_its_p99_interval_sits_on_the_truth(bench, tmp_path):
    """Log-normal delays (median 5 ms, sigma 0.5): true p99 16.0 ms plus the floor. One run
    cannot show a 95 % coverage (tests/test_selfcheck.py simulates that); this one shows the
    interval sits on the truth within 10 %, from a real server, driver and recorder."""
    true_p99 = 5000.0 * math.exp(2.3263 * 0.5)
    with serving(tmp_path, "--delay-lognormal", "5000,0.5") as server:
        row = run_rate(bench, f"http://{server.host}:{server.port}", tmp_path / "out",
                       "--duration", 4)
    assert row["stationary"] and row["independent"] and row["arrivals_ok"], row.to_dict()
    assert row["p99_step_ci_low"] <= 1.1 * (true_p99 + FLOOR_MAX_US), row.to_dict()
    assert row["p99_step_ci_high"] >= 0.9 * true_p99, row.to_dict()
    assert row["p50_step_ci_low"] <= row["p50_us"] <= row["p50_step_ci_high"]
    assert abs(row["drift_pct"]) < 20 and row["effective_n"] > 0.8 * row["attempted"]
    # the target's CPU is the server's, not foreign load (steal time is the host's affair)
    assert row["server_cpu_pct"] > 0 and row["foreign_cpu_pct"] < NOISY_FOREIGN_PCT, \
        row.to_dict()
    assert "server_unobserved" not in codes(row)


@pytest.mark.slow
def test_a_server_whose_delay_grows_fails_stationary_with_its_drift(bench, tmp_path):
    """Delay 1 ms + 0.5 ms per second since the server's first request (its log says when,
    on the clock the samples are stamped with): the true drift from the window's first fifth
    to its last is computed from the samples' own send times."""
    import numpy as np
    import pandas as pd

    with serving(tmp_path, "--delay-us", 1000, "--drift-us-per-s", 500) as server:
        row = run_rate(bench, f"http://{server.host}:{server.port}", tmp_path / "out",
                       "--duration", 4)
    first_ns = int(re.search(r"first request at monotonic (\d+) ns",
                             (tmp_path / "ref.log").read_text())[1])
    samples = pd.read_csv(os.path.join(bench.run_dirs(str(tmp_path / "out"))[0],
                                       "samples.csv.gz"))
    t = np.sort(samples.loc[samples["phase"] == "measure", "intended_ns"].to_numpy())
    fifth = len(t) // 5
    delay = 1000 + 500 * (t - first_ns) / 1e9
    first, last = np.median(delay[:fifth]), np.median(delay[-fifth:])
    truth_hi = 100 * (last - first) / first                    # a floor of 0
    truth_lo = 100 * (last - first) / (first + FLOOR_MAX_US)   # the largest floor allowed
    assert not row["stationary"] and "nonstationary:drift" in codes(row), row.to_dict()
    assert truth_lo - 10 <= row["drift_pct"] <= truth_hi + 10, (row["drift_pct"], truth_lo,
                                                                truth_hi)
    assert row["valid"] and "not stationary" in row["note"]  # kept, marked, still valid


@pytest.mark.slow
def test_precision_lengthens_a_step_until_its_interval_holds(bench, tmp_path):
    with serving(tmp_path, "--delay-lognormal", "1000,0.5") as server:
        row = run_rate(bench, f"http://{server.host}:{server.port}", tmp_path / "out",
                       "--duration", 1, "--precision", "p99=10%", "--max-duration", 30)
    assert row["precision_target"] == "p99=10%"
    assert row["precision_met"], row.to_dict()
    assert 1 < row["duration_s"] <= 30
    half = max(row["p99_us"] - row["p99_step_ci_low"], row["p99_step_ci_high"] - row["p99_us"])
    assert half <= 0.10 * row["p99_us"], row.to_dict()
    run_dir = bench.run_dirs(str(tmp_path / "out"))[0]
    import pandas as pd
    phases = set(pd.read_csv(os.path.join(run_dir, "samples.csv.gz"))["phase"])
    assert phases == {"warmup", "measure", "superseded"}  # the shorter attempts are kept


@pytest.mark.slow
def test_precision_that_cannot_be_met_says_so_at_the_cap(bench, tmp_path):
    with serving(tmp_path, "--delay-lognormal", "1000,0.5") as server:
        row = run_rate(bench, f"http://{server.host}:{server.port}", tmp_path / "out",
                       "--duration", 1, "--precision", "p99=0.5%", "--max-duration", 3)
    assert not row["precision_met"], row.to_dict()
    assert row["duration_s"] == 3 and "precision_unmet:p99" in codes(row)
    assert "imprecise after 3 s" in row["note"]


def driver_processes(proc):
    """The lean driver processes under a running ``bench run``."""
    try:
        return [p for p in psutil.Process(proc.pid).children(recursive=True)
                if "bench.driver.lean" in " ".join(p.cmdline())]
    except psutil.Error:
        return []


@pytest.mark.slow
def test_poisson_arrivals_pass_quietly_and_fail_when_the_driver_is_stopped(bench, tmp_path):
    with serving(tmp_path, "--delay-us", 200) as server:
        url = f"http://{server.host}:{server.port}"
        quiet = run_rate(bench, url, tmp_path / "quiet", "--duration", 3, "--arrivals",
                         "poisson")
        assert quiet["arrivals_ok"], quiet.to_dict()
        proc = bench.popen("run", "--target", url, "--scenario", "rate", "--rate", 400,
                           "--connections", 10, "--warmup", 1, "--duration", 3, "--repeats", 1,
                           "--arrivals", "poisson", "--out", tmp_path / "stopped",
                           "--no-report")
        try:
            deadline = time.monotonic() + 60
            drivers = []
            while not drivers and time.monotonic() < deadline:
                drivers = driver_processes(proc)
                time.sleep(0.05)
            assert drivers, "no driver process appeared"
            time.sleep(2.5)  # inside the measured window (warm-up 1 s, after ready)
            for d in drivers:
                d.send_signal(signal.SIGSTOP)
            time.sleep(0.3)
            for d in drivers:
                d.send_signal(signal.SIGCONT)
            proc.communicate(timeout=120)
            assert proc.returncode == 0
        finally:
            bench.kill(proc)
    frame = bench.summary(bench.run_dirs(str(tmp_path / "stopped"))[0])
    row = frame[frame["repeat"] != "all"].iloc[0]
    assert not row["arrivals_ok"] and "arrivals:not_poisson" in codes(row), row.to_dict()
    assert row["arrivals_stat"] > 3.857


@pytest.mark.slow
def test_checkrates_counts_what_each_check_said_of_a_built_in_truth(tmp_path):
    """``python -m bench.checkrates`` runs the real harness against a truth and tabulates it:
    a server whose delay grows fails ``stationary`` in every step, and the CSV says so."""
    import pandas as pd

    r = subprocess.run([sys.executable, "-m", "bench.checkrates", "--truths", "drift",
                        "--repeats", "2", "--out", str(tmp_path)], capture_output=True,
                       text=True, timeout=240)
    assert r.returncode == 0, r.stderr[-2000:]
    [folder] = [p for p in tmp_path.iterdir() if p.name.endswith("-checkrates")]
    table = pd.read_csv(folder / "checkrates.csv")
    row = table[(table["truth"] == "drift") & (table["check"] == "stationary")].iloc[0]
    # a step flagged noisy is left out and counted; every step judged must have caught it
    assert row["steps"] + row["noisy_left_out"] == 2 and row["steps"] >= 1, table
    assert row["failed"] == row["steps"] and row["expected"] == "fail", table


def test_checkrates_refuses_an_unknown_truth_in_one_line(tmp_path):
    r = subprocess.run([sys.executable, "-m", "bench.checkrates", "--truths", "nope", "--out",
                        str(tmp_path)], capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "unknown truth nope" in r.stderr and "Traceback" not in r.stderr
    assert not list(tmp_path.iterdir())  # nothing started, nothing written
