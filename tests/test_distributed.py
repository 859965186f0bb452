"""Load from several machines, on one machine: a master and two workers on loopback
against the real reference server, each a real process talking through Locust's engine."""
import os
import signal
import sys
import time
from dataclasses import replace

import numpy as np
import pandas as pd
import psutil
import pytest

from bench import processes

RATE, CONNS, WARMUP, DURATION = 300, 4, 0.3, 1.0


@pytest.fixture
def refserver(tmp_path):
    argv = lambda port: [sys.executable, "-m", "bench.driver.refserver", str(port)]  # noqa: E731
    with processes.serving(argv, str(tmp_path / "ref.log"), ready_timeout=30) as server:
        yield f"http://{server.host}:{server.port}"


def run_args(url, out, *extra):
    return ("run", "--target", url, "--scenario", "rate", "--rate", RATE, "--connections",
            CONNS, "--warmup", WARMUP, "--repeats", 1, "--deadline-ms", 2000, "--out", out,
            "--no-report", *extra)


def start_workers(bench, port, drivers=(1, 1)):
    return [bench.popen("worker", "--master", f"127.0.0.1:{port}", "--connect-timeout", 30,
                        "--drivers", d) for d in drivers]


def finish(bench, procs, timeout=60):
    outs = []
    for p in procs:
        try:
            outs.append(p.communicate(timeout=timeout))
        finally:
            bench.kill(p)
    return outs


def measured_row(bench, run_dir):
    s = bench.summary(run_dir)
    return s[s["repeat"] == "1"].iloc[0]


def test_master_and_two_workers_measure_what_one_machine_measures(bench, refserver, tmp_path):
    port = processes.free_port()
    master = bench.popen(*run_args(refserver, tmp_path / "dist", "--duration", DURATION,
                                   "--expect-workers", 2, "--master-bind", f"127.0.0.1:{port}",
                                   "--worker-wait", 30))
    workers = start_workers(bench, port, drivers=(2, 1))  # a worker's share splits again
    try:
        (m_out, m_err), = finish(bench, [master], timeout=120)
        assert master.returncode == 0, m_err[-3000:]
        w_outs = finish(bench, workers, timeout=30)  # they leave when the master ends the run
        assert [w.returncode for w in workers] == [0, 0], [e[-500:] for _, e in w_outs]
        assert all("the master ended the run" in e for _, e in w_outs), w_outs
    finally:
        for p in [master, *workers]:
            bench.kill(p)
    # one machine, driven as a worker drives (not pinned, not busy-polling), same schedule
    local = bench.run(*run_args(refserver, tmp_path / "local", "--duration", DURATION,
                                "--no-pin"), timeout=120)
    assert local.returncode == 0, local.stderr[-3000:]

    (dist_dir,), (local_dir,) = bench.run_dirs(str(tmp_path / "dist")), \
        bench.run_dirs(str(tmp_path / "local"))
    d, single = measured_row(bench, dist_dir), measured_row(bench, local_dir)
    # counts: exactly one machine's, and exactly the sum of the workers'
    assert d["attempted"] == single["attempted"] == int(RATE * DURATION)
    assert d["ok"] == single["ok"] == d["attempted"]
    meta = bench.meta(dist_dir)["distributed"]
    assert len(meta["workers"]) == 2 and all(w["pid"] for w in meta["workers"])
    assert all(w["clock_uncertainty_ns"] is not None and w["clock_uncertainty_ns"] >= 0
               for w in meta["workers"])
    (step,) = meta["steps"]
    assert [w["status"] for w in step["workers"]] == ["done", "done"]
    assert [w["connections"] for w in step["workers"]] == [CONNS // 2, CONNS // 2]
    assert sorted(w["drivers"] for w in meta["workers"]) == [1, 2]
    assert sum(w["attempted"] for w in step["workers"]) == d["attempted"]
    assert sum(w["ok"] for w in step["workers"]) == d["ok"]
    # latency: the same server, the same schedule: within noise of each other (other jobs
    # share this machine's two cores, so the band is wide; a clock or merge error is not)
    assert abs(d["p50_us"] - single["p50_us"]) < max(5000, 2 * min(d["p50_us"],
                                                                   single["p50_us"])), \
        (d["p50_us"], single["p50_us"])
    # per-message rows: the same messages, per connection, on one timeline
    ds = pd.read_csv(os.path.join(dist_dir, "samples.csv.gz"))
    ls = pd.read_csv(os.path.join(local_dir, "samples.csv.gz"))
    assert len(ds) == len(ls) == int(RATE * (WARMUP + DURATION))
    assert ds.groupby("conn").size().to_dict() == ls.groupby("conn").size().to_dict()
    gaps = np.diff(np.sort(ds["intended_ns"].to_numpy()))  # shifted onto one clock:
    assert np.ptp(gaps) <= 1 and abs(gaps.mean() - 1e9 / RATE) <= 1  # one interleaved stream
    assert (ds["phase"] == "measure").sum() == d["attempted"]
    ok = ds[ds["outcome"] == "ok"]
    assert (ok["received_ns"] > ok["sent_ns"]).all() and (ok["sent_ns"] > 0).all()
    assert (ok["latency_us"] > 0).all()


def descendants_and_self(pid):
    proc = psutil.Process(pid)
    return [proc, *proc.children(recursive=True)]


def test_a_worker_killed_mid_step_is_a_failed_share(bench, refserver, tmp_path):
    port = processes.free_port()
    duration = 3.0
    master = bench.popen(*run_args(refserver, tmp_path / "dist", "--duration", duration,
                                   "--expect-workers", 2, "--master-bind", f"127.0.0.1:{port}",
                                   "--worker-wait", 30))
    workers = start_workers(bench, port)
    try:
        victim = workers[0]
        drivers = bench.wait_for(
            lambda: [p for p in descendants_and_self(victim.pid)
                     if "bench.driver.lean" in " ".join(p.cmdline())],
            timeout=60, what="the first worker's driver process")
        assert drivers
        time.sleep(WARMUP + 1.0)  # inside the measured window
        for p in descendants_and_self(victim.pid):  # the whole machine dies
            p.send_signal(signal.SIGKILL)
        (_, m_err), = finish(bench, [master], timeout=120)
        assert master.returncode == 0, m_err[-3000:]
        finish(bench, workers[1:], timeout=30)
        assert workers[1].returncode == 0
    finally:
        for p in [master, *workers]:
            bench.kill(p)
    (run_dir,) = bench.run_dirs(str(tmp_path / "dist"))
    row = measured_row(bench, run_dir)
    assert str(row["valid"]) == "False"
    assert "counted as failed" in row["note"] and "lost" in row["note"], row["note"]
    # nothing silently dropped: the whole schedule is attempted, the lost share's rest errors
    assert row["attempted"] == int(RATE * duration)
    assert row["errors"] > 0 and row["ok"] + row["errors"] + row["timeouts"] == row["attempted"]
    (step,) = bench.meta(run_dir)["distributed"]["steps"]
    status = sorted(w["status"] for w in step["workers"])
    assert status == ["done", "failed"]
    assert sum(w["attempted"] for w in step["workers"]) == row["attempted"]
    survivor = next(w for w in step["workers"] if w["status"] == "done")
    assert survivor["ok"] == survivor["attempted"] == row["attempted"] // 2


@pytest.mark.parametrize("args, says", [
    (("run", "--expect-workers", "2", "--master-bind", "0.0.0.0:5557"), "--allow-remote"),
    (("run", "--master-bind", "127.0.0.1:5557"), "needs --expect-workers"),
    (("run", "--expect-workers", "1", "--master-bind", "127.0.0.1:99999"), "1..65535"),
    (("worker", "--master", "nohost"), "HOST:PORT"),
    (("worker",), "--master"),
])
def test_bad_distributed_input_is_one_line_and_exit_2(bench, args, says, tmp_path):
    r = bench.run(*args, "--out", str(tmp_path)) if args[0] == "run" else bench.run(*args)
    assert r.returncode == 2, r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and says in r.stderr, r.stderr
    assert not bench.run_dirs(str(tmp_path))


def test_waits_are_bounded_without_the_other_side(bench, tmp_path):
    port = processes.free_port()
    t = time.monotonic()
    w = bench.run("worker", "--master", f"127.0.0.1:{port}", "--connect-timeout", 2, timeout=30)
    assert w.returncode == 1 and "no master" in w.stderr, w.stderr
    m = bench.run("run", "--target", "http://127.0.0.1:9", "--expect-workers", 1,
                  "--master-bind", f"127.0.0.1:{port}", "--worker-wait", 1, "--out",
                  str(tmp_path), timeout=30)
    assert m.returncode == 1 and "0 of 1 workers joined within 1 s" in m.stderr, m.stderr
    assert "Traceback" not in m.stderr + w.stderr
    assert time.monotonic() - t < 25


def test_a_lost_share_is_its_whole_schedule_with_what_it_saved_kept():
    """Pure merge rules: a failed share's unsent messages are added as errors, the messages
    it saved are kept as measured, and shifting onto the master's clock leaves 0 as 0."""
    from bench.distributed.master import counted_share, shifted
    from bench.execute.load import merge_arrays as merge
    from bench.driver.loops import open_schedule
    from bench.plan.job import Job, Outcome

    job = Job(targets=(("127.0.0.1", 1),), connections=4, rate=100.0, warmup=0.5,
              duration=1.5, conns=(1, 3))
    t0 = 10**12
    conn, intended = open_schedule(job, t0)
    assert len(intended) == 100  # half of 200: connections 1 and 3
    saved = dict(conn=conn[:30], intended=intended[:30], sent=intended[:30] + 5,
                 received=np.where(np.arange(30) < 20, intended[:30] + 50, 0),
                 outcome=np.where(np.arange(30) < 20, int(Outcome.OK),
                                  int(Outcome.TIMEOUT)).astype(np.int8),
                 recv_wait=np.zeros(30, np.int64))
    share = counted_share(job, saved, t0)
    assert len(share["intended"]) == 100 and len(np.unique(share["intended"])) == 100
    assert (share["outcome"] == int(Outcome.OK)).sum() == 20
    assert (share["outcome"] == int(Outcome.TIMEOUT)).sum() == 10
    assert (share["outcome"] == int(Outcome.UNSENT)).sum() == 70
    moved = shifted(saved, -7)
    assert (moved["received"][20:] == 0).all() and (moved["received"][:20] ==
                                                     saved["received"][:20] - 7).all()
    other = counted_share(replace(job, conns=(0, 2)), None, t0)
    both = merge([share, other])
    assert len(both["intended"]) == 200 and np.all(np.diff(both["intended"]) > 0)
