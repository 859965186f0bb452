"""Harness side of the ``emit`` scenario: the external emitter process beside the driver.

The emitter (bench/driver/emitter.py, run by path) is spawned through the lifecycle with the variant's
interpreter, connects to the deployment's Redis and says ``ready``; the driver's shared start
time t0 is handed to it in the driver's ``on_start`` hook, so both walk one schedule on one
monotonic clock. Afterwards its actual send times replace the schedule's as the rows'
``sent`` (service time = receipt - emit call), and failed publishes are noted.
"""
import contextlib
import json
import os
import sys
import time

import numpy as np

from bench import paths
from bench import processes
from bench.execute.load import DriverError, await_ready, read_line, spawn_piped

EMITTER = os.path.join(paths.PACKAGE, "driver", "emitter.py")


def python_for(variant):
    """The interpreter the variant's servers run with (its environment's), so the emitter
    uses the same flask-socketio and redis versions."""
    argv = variant.argv(0)
    return argv[0] if argv and "python" in os.path.basename(argv[0]) else sys.executable


class Emitter:
    """The running emitter process of one emit step."""
    def __init__(self, proc, log_path, offset, out, budget):
        self.proc, self.log_path, self.offset, self.out = proc, log_path, offset, out
        self.budget = budget

    def start(self, t0):
        """Hand the emitter the driver's start time, so both walk one schedule."""
        self.proc.stdin.write(f"{t0}\n".encode())
        self.proc.stdin.flush()

    def finish(self, arrays, members):
        """Wait (bounded) for ``done``; put the emitter's send times into ``arrays``; return
        a note ("" when every publish went out)."""
        try:
            line = read_line(self.proc, time.monotonic() + self.budget, self.log_path,
                             self.offset, "while emitting")
        except DriverError as exc:
            return f"emitter failed: {str(exc).replace('driver ', '', 1)}"
        if line != "done":
            return f"emitter said {line[:80]!r} instead of done"
        with open(self.out) as f:
            data = json.load(f)
        sent = np.asarray(data["sent"], dtype=np.int64)
        outcome = np.asarray(data["outcome"], dtype=np.int8)
        if arrays is not None and len(arrays["sent"]) == len(sent) * members:
            arrays["sent"] = np.where(np.repeat(sent, members) > 0, np.repeat(sent, members),
                                      arrays["sent"])
        failed = int((outcome != 1).sum())
        return f"emitter: {failed}/{len(outcome)} publishes failed" if failed else ""


@contextlib.contextmanager
def emitting(variant, deployment, step, room, workdir, cpus):
    """Spawn the emitter for ``step`` and yield it once its queue answers; always kill it."""
    log_path = os.path.join(workdir, "emitter.log")
    offset = os.path.getsize(log_path) if os.path.exists(log_path) else 0
    out = os.path.join(workdir, "emitter.json.out")
    job = dict(queue=deployment.redis_url, room=room, rate=step.rate, warmup=step.warmup,
               duration=step.duration, payload=step.payload, out=out, cpus=cpus)
    job_path = os.path.join(workdir, "emitter.json")
    with open(job_path, "w") as f:
        json.dump(job, f)
    proc = spawn_piped([python_for(variant), EMITTER, job_path], log_path, cpus)
    try:
        await_ready([proc], time.monotonic() + step.deadline + 15, log_path, offset,
                    "while connecting to the queue", name="emitter")
        yield Emitter(proc, log_path, offset, out,
                      budget=step.warmup + step.duration + step.deadline + 15)
    finally:
        processes.kill_group(proc, grace=1.0)
        for path in (out, out + ".tmp"):
            if os.path.exists(path):
                os.remove(path)
