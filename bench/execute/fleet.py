"""Harness side of the idle-client driver (``bench.driver.capacity``): its processes, their
line-by-line commands, and the probe echoes they bring back.

Used by the capacity and reconnect scenarios and the churn soak. Every process is spawned in
its own process group and killed in :meth:`Workers.close`; every answer is awaited with a
deadline.
"""
import json
import os
import sys
import time

import numpy as np
import psutil

from bench import processes
from bench.execute.load import DriverError, Load, await_ready, read_line, spawn_piped
from bench.plan import limits

GROW_MAX_S = 900.0          # the longest one capacity step may spend connecting


class Workers:
    """The driver processes of one capacity, reconnect or churn step."""

    def __init__(self, job, workdir, cpus):
        self.procs, self.job = [], job
        self.log_path = os.path.join(workdir, "capacity-driver.log")
        self.offset = os.path.getsize(self.log_path) if os.path.exists(self.log_path) else 0
        n = limits.driver_processes(job.connections, limits.HELD_PER_PROCESS)
        try:
            for w in range(min(n, job.connections)):
                path = os.path.join(workdir, f"capacity-{w}.json")
                job.share(w, n, "").dump(path)
                self.procs.append(spawn_piped(
                    [sys.executable, "-m", "bench.driver.capacity", path], self.log_path, cpus))
            await_ready(self.procs, time.monotonic() + 30, self.log_path, self.offset,
                        "while starting")
        except BaseException:
            self.close()
            raise

    @property
    def pids(self):
        """The processes to sample as the step's driver."""
        return [p.pid for p in self.procs]

    def send(self, command):
        """Hand ``command`` to every process (answers are read with :meth:`read`)."""
        for p in self.procs:
            p.stdin.write(f"{command}\n".encode())
            p.stdin.flush()

    def read(self, timeout, what):
        """One JSON answer from every process before ``timeout`` seconds, else DriverError."""
        deadline = time.monotonic() + timeout
        out = []
        for p in self.procs:
            line = read_line(p, deadline, self.log_path, self.offset, what)
            try:
                out.append(json.loads(line))
            except ValueError:
                raise DriverError(f"driver said {line[:80]!r} {what}") from None
        return out

    def ask(self, command, timeout):
        """Send ``command`` and wait for every process's answer."""
        self.send(command)
        return self.read(timeout, f"answering {command!r}")

    def rss_mb(self):
        """The driver processes' own memory: a step's client side, beside the server's."""
        total = 0.0
        for pid in self.pids:
            try:
                total += psutil.Process(pid).memory_info().rss / 2 ** 20
            except psutil.Error:
                pass
        return total

    def close(self):
        """Ask every process to quit, then kill its group (whatever it answered)."""
        for p in self.procs:
            try:
                p.stdin.write(b"quit\n")
                p.stdin.flush()
            except (OSError, ValueError):
                pass
        for p in self.procs:
            processes.kill_group(p, grace=2.0)


def grow_budget(step, level, processes):
    """Seconds a ``grow`` may take: every handshake wave may wait out its deadline on every
    attempt (a slow server), bounded by GROW_MAX_S."""
    from bench.driver.capacity import CONNECT_ATTEMPTS, IN_FLIGHT, RETRY_S
    waves = -(-level // max(1, processes) // IN_FLIGHT) + 1
    return min(GROW_MAX_S, 30 + waves * CONNECT_ATTEMPTS * (step.deadline + RETRY_S * 3))


def probe_arrays(replies, key="probe"):
    """The probe echoes of every process's answer, merged in intended-time order (None when
    no process probed)."""
    parts = [r[key] for r in replies if r.get(key)]
    if not parts:
        return None
    arrays = {k: np.concatenate([np.asarray(p[k], dtype=np.int64) for p in parts])
              for k in ("conn", "intended", "sent", "received", "outcome", "recv_wait")}
    order = np.argsort(arrays["intended"], kind="stable")
    return {k: v[order] for k, v in arrays.items()}


def probe_load(arrays):
    """A Load whose window holds every probe (t0 just before the first)."""
    return Load(arrays, int(arrays["intended"].min()) - 1 if len(arrays["intended"]) else 0, None)
