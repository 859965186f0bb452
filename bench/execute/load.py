"""Harness side of a measurement: spawn driver workers, start them together, collect arrays.

Workers connect first and say ``ready``; the harness then hands all of them one start time
``t0`` so their schedules interleave exactly, and merges their per-message arrays.

Every wait is bounded (connect deadline, then the step's wall budget), every worker is killed
in ``finally``. When a worker fails, :class:`DriverError` says why in one line (the worker's
own error line) and carries whatever per-message arrays were saved (``partial``): the
complete files of workers that finished, plus ``<out>.partial.npz`` that a worker may write
when it stops early.
"""
import json
import os
import select
import subprocess
import sys
import time
from dataclasses import dataclass

import numpy as np

from bench.driver.custom import merge_replies
from bench import processes

WORKER_MODULES = {"lean": "bench.driver.lean", "python-socketio": "bench.driver.polling",
                  "browser": "bench.driver.browser"}


@dataclass(frozen=True)
class Load:
    """What the driver processes measured: merged per-message arrays, the shared start time,
    and the busiest process's loop figures (busy share of its core, or None); ``replies``:
    the user's traffic's event accounting, added over processes (bench/driver/custom.py);
    ``page``: what the browser client's page saw beyond the arrays (bench/driver/browser.py)."""
    arrays: dict
    t0: int
    busy_share: float | None
    replies: dict | None = None
    page: dict | None = None


class DriverError(Exception):
    """A driver worker failed; the message carries its stderr's error line.

    ``partial``: a :class:`Load` of what was saved before the failure (or None); ``t0``: the start time
    the workers were given (or None when they never started)."""

    def __init__(self, message, partial=None, t0=None):
        super().__init__(message)
        self.partial, self.t0 = partial, t0


def _exit_text(proc):
    """How a worker ended; waits a moment, since stdout closes just before the exit."""
    try:
        code = proc.wait(timeout=1.0)
    except subprocess.TimeoutExpired:
        return "stopped answering"
    return processes.exit_description(code)


def read_line(proc, deadline, log_path, offset, what):
    """One line from a worker's stdout before the deadline, else DriverError."""
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise DriverError(f"driver timed out {what}: "
                              f"{processes.stderr_note(log_path, offset)}")
        ready, _, _ = select.select([proc.stdout], [], [], min(remaining, 0.5))
        if ready:
            line = proc.stdout.readline().decode(errors="replace").strip()
            if not line:
                raise DriverError(f"driver {_exit_text(proc)} {what}: "
                                  f"{processes.stderr_note(log_path, offset)}")
            return line
        if proc.poll() is not None:
            raise DriverError(f"driver {processes.exit_description(proc.returncode)} {what}: "
                              f"{processes.stderr_note(log_path, offset)}")


def spawn_piped(argv, log_path, cpus=None):
    """A harness-driven process in its own group: commands in on stdin, answers out on
    stdout, stderr to ``log_path``."""
    return processes.spawn(argv, log_path, cpus=cpus, stdin=subprocess.PIPE,
                           stdout=subprocess.PIPE)


def await_ready(procs, deadline, log_path, offset, what, name="driver"):
    """Wait (until ``deadline``) for every process's ``ready`` line; else a DriverError that
    says what it printed instead, with its stderr's error line."""
    for p in procs:
        line = read_line(p, deadline, log_path, offset, what)
        if line != "ready":
            raise DriverError(f"{name} said {line[:80]!r} instead of ready: "
                              f"{processes.stderr_note(log_path, offset)}")


def _merge(paths):
    """Per-message arrays of several worker files, in intended-time order (None if none)."""
    parts = []
    for path in paths:
        try:
            with np.load(path) as data:
                parts.append({k: data[k] for k in data.files})
        except (OSError, ValueError, EOFError):
            continue
    return merge_arrays(parts)


def merge_arrays(parts):
    """Several processes' per-message arrays as one set, in intended-time order, keeping the
    arrays every part has (None when no part has any): the one merge of every driver."""
    parts = [p for p in parts if p]
    if not parts:
        return None
    keys = set.intersection(*(set(p) for p in parts))
    merged = {key: np.concatenate([p[key] for p in parts]) for key in keys}
    order = np.argsort(merged["intended"], kind="stable")
    return {k: v[order] for k, v in merged.items()}


def run_load(job, workdir, workers=1, client="lean", on_start=None, start_at=None,
             on_done=None):
    """Run ``job`` split over ``workers`` processes; return a :class:`Load`.

    ``on_start(pids, t0)`` is called once all workers are connected (resource sampling hooks
    in there), ``on_done()`` once every worker said done, before any is reaped.
    ``start_at()``, if given, returns the start time t0 (monotonic ns) instead of "now +
    100 ms" (a distributed worker waits there for the master's agreed start).
    Every worker is killed in ``finally`` whatever happens.
    """
    procs, outs = [], []
    log_path = os.path.join(workdir, "driver.log")
    offset = os.path.getsize(log_path) if os.path.exists(log_path) else 0
    wall_budget = job.warmup + job.duration + job.deadline * 2 + 30
    cpus = list(job.cpus) or None
    t0 = None
    try:
        for w in range(min(workers, job.connections)):
            out = os.path.join(workdir, f"driver-{w}.npz")
            job_path = os.path.join(workdir, f"driver-{w}.json")
            job.share(w, workers, out).dump(job_path)
            argv = [sys.executable, "-m", WORKER_MODULES[client], job_path]
            outs.append(out)
            procs.append(spawn_piped(argv, log_path, cpus))
        # handshakes go CONNECTS_IN_FLIGHT at a time: thousands take seconds
        connect_deadline = time.monotonic() + job.deadline + 15 + job.connections / 250
        await_ready(procs, connect_deadline, log_path, offset, "while connecting")
        t0 = start_at() if start_at else time.monotonic_ns() + 100_000_000
        if on_start:
            on_start([p.pid for p in procs], t0)
        for p in procs:
            p.stdin.write(f"{t0}\n".encode())
            p.stdin.flush()
        end = time.monotonic() + wall_budget
        shares, replies, pages = [], [], []
        for p in procs:
            line = read_line(p, end, log_path, offset, "while measuring")
            word, _, stats = line.partition(" ")
            if word != "done":
                raise DriverError(f"driver said {line[:80]!r} instead of done: "
                                  f"{processes.stderr_note(log_path, offset)}")
            loop = json.loads(stats or "{}")
            if loop.get("busy_ns") is not None and loop.get("total_ns"):
                shares.append(loop["busy_ns"] / loop["total_ns"])
            replies.append(loop.get("replies"))
            pages.append(loop.get("browser"))
        if on_done:
            on_done()
        arrays = _merge(outs)
        if arrays is None:
            raise DriverError("driver said done but saved no results")
        return Load(arrays, t0, max(shares) if shares else None, merge_replies(replies),
                    next((p for p in pages if p), None))
    except DriverError as exc:
        if t0 is not None and exc.partial is None:
            for p in procs:  # stop them before reading what they saved
                processes.kill_group(p, grace=1.0)
            merged = _merge([o for o in outs if os.path.exists(o)] +
                            [o + ".partial.npz" for o in outs
                             if os.path.exists(o + ".partial.npz")])
            exc.partial = Load(merged, t0, None) if merged is not None else None
            exc.t0 = t0
        raise
    except (BrokenPipeError, ConnectionResetError) as exc:
        raise DriverError(f"driver {_exit_text(procs[-1]) if procs else 'gone'} before start "
                          f"({exc.strerror}): {processes.stderr_note(log_path, offset)}") from None
    finally:
        for p in procs:
            processes.kill_group(p, grace=1.0)
        for o in outs:
            for path in (o, o + ".partial.npz"):
                if os.path.exists(path):
                    os.remove(path)
