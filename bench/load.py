"""Harness side of a measurement: spawn driver workers, start them together, collect arrays.

Workers connect first and say ``ready``; the harness then hands all of them one start time
``t0`` so their schedules interleave exactly, and merges their per-message arrays.
"""
import json
import os
import select
import subprocess
import sys
import time

import numpy as np

from bench import lifecycle

WORKER_MODULES = {"lean": "bench.driver", "python-socketio": "bench.polling"}


class DriverError(Exception):
    """A driver worker failed; the message carries its stderr tail."""


def _readline(proc, deadline, log_path):
    """One line from a worker's stdout before the deadline, else DriverError."""
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise DriverError(f"driver timed out: {lifecycle.tail(log_path, 3)}")
        ready, _, _ = select.select([proc.stdout], [], [], min(remaining, 0.5))
        if ready:
            line = proc.stdout.readline().decode().strip()
            if not line:
                raise DriverError(f"driver exited ({proc.poll()}): {lifecycle.tail(log_path, 3)}")
            return line
        if proc.poll() is not None:
            raise DriverError(f"driver exited ({proc.returncode}): {lifecycle.tail(log_path, 3)}")


def run_load(job, workdir, workers=1, cpus=None, client="lean", on_start=None):
    """Run ``job`` split over ``workers`` processes; return merged arrays and the worker pids.

    ``on_start(pids, t0)`` is called once all workers are connected (resource sampling hooks
    in there). Every worker is killed in ``finally`` whatever happens.
    """
    conns = list(range(job["connections"]))
    procs, outs = [], []
    log_path = os.path.join(workdir, "driver.log")
    wall_budget = job["warmup"] + job["duration"] + job["timeout"] * 2 + 30
    try:
        for w in range(workers):
            mine = conns[w::workers]
            if not mine:
                continue
            out = os.path.join(workdir, f"driver-{w}.npz")
            wjob = dict(job, conns=mine, total_conns=len(conns), out=out, cpus=cpus)
            job_path = os.path.join(workdir, f"driver-{w}.json")
            with open(job_path, "w") as f:
                json.dump(wjob, f)
            argv = [sys.executable, "-m", WORKER_MODULES[client], job_path]
            procs.append(lifecycle.spawn(argv, log_path, cpus=cpus, stdin=subprocess.PIPE,
                                         stdout=subprocess.PIPE))
            outs.append(out)
        connect_deadline = time.monotonic() + job["timeout"] + 15
        for p in procs:
            line = _readline(p, connect_deadline, log_path)
            if line != "ready":
                raise DriverError(f"driver said {line!r}: {lifecycle.tail(log_path, 3)}")
        t0 = time.monotonic_ns() + 100_000_000
        if on_start:
            on_start([p.pid for p in procs], t0)
        for p in procs:
            p.stdin.write(f"{t0}\n".encode())
            p.stdin.flush()
        end = time.monotonic() + wall_budget
        for p in procs:
            line = _readline(p, end, log_path)
            if line != "done":
                raise DriverError(f"driver said {line!r}: {lifecycle.tail(log_path, 3)}")
        parts = [dict(np.load(o)) for o in outs]
        merged = {key: np.concatenate([p[key] for p in parts]) for key in parts[0]}
        order = np.argsort(merged["intended"], kind="stable")
        return {k: v[order] for k, v in merged.items()}, t0
    finally:
        for p in procs:
            lifecycle.kill_group(p, grace=1.0)
        for o in outs:
            if os.path.exists(o):
                os.remove(o)
