"""Driver process of the lean Socket.IO client: ``python -m bench.driver.lean JOB.json``.

Runs as its own process, pinned to the driver core, so it never shares an interpreter with the
harness: it reads its job, connects (bench/driver/connection.py), runs the scenario's loop
(bench/kinds: each kind names its loop) and saves the
per-message arrays (bench/driver/store.py). Arrays are preallocated and bounded: a load loop
can never run past its count or its deadline.

Protocol with the parent: after connecting it prints ``ready``; it then reads the shared
start time ``t0`` (monotonic ns, same clock in every process) from stdin, runs, writes an
``.npz`` of per-message arrays and prints ``done {"busy_ns": .., "total_ns": ..}``.

The driver's own share of each latency is measured, and kept small where that is honest:
``send lag`` (actual − intended send) and ``recv wait`` (reply timestamp − the moment the
loop woke with it ready: time the reply queued behind other work in this process). A driver
that owns its core alone busy-polls (``job.spin``): it never sleeps in the kernel while a send
is due or a reply is outstanding, so neither includes an OS wake-up. Its CPU figure is the
loop's busy time (not time spent polling for nothing), which the OS figure cannot tell apart.
"""
import asyncio
import json
import os
import signal
import sys

import numpy as np

from bench import kinds
from bench.driver import connection
from bench.driver.connection import run_loop
from bench.machine import raise_nofile
from bench.plan.job import Job


async def run_job(job, t0_source, sink):
    """Run the job's kind's loop (bench/kinds): connect, wait for t0, load, settle, close.
    ``sink["m"]`` holds the arrays as soon as they exist, so an early exit can save them."""
    return await kinds.get(job.kind).loop(job, t0_source, sink)


def stdin_t0():
    """An awaitable source of the start time t0 (monotonic ns) the parent writes on stdin."""
    async def read():
        loop = asyncio.get_running_loop()
        line = await loop.run_in_executor(None, sys.stdin.readline)
        if not line.strip():
            raise SystemExit("driver: parent closed stdin before t0")
        return int(line)
    return read


def tighten_timer_slack():
    """Linux delays timer wake-ups by up to 50 µs (timer slack) to batch them; a load
    generator wants its sends on time, so ask for 1 ns. Best effort: no-op elsewhere."""
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(29, 1, 0, 0, 0)  # PR_SET_TIMERSLACK
    except (OSError, AttributeError):
        pass


def process_job(argv):
    """A driver process's start: its job, the open-file limit raised, pinned, tight timers."""
    job = Job.load(argv[0])
    raise_nofile()
    if job.cpus:
        os.sched_setaffinity(0, job.cpus)
    tighten_timer_slack()
    return job


def main(argv=None):
    """The driver process: job in, ready, t0, the loop, arrays saved (also on SIGTERM), done."""
    job = process_job(sys.argv[1:] if argv is None else argv)
    sink = {}

    async def go():
        t0_source = stdin_t0()
        task = asyncio.current_task()

        def terminated():
            sink["signal"] = signal.SIGTERM
            task.cancel()
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, terminated)

        async def announce_then_read():
            print("ready", flush=True)
            return await t0_source()
        return await run_job(job, announce_then_read, sink)

    try:
        m = run_loop(go(), len(job.conns) + job.members, job.spin)
    except BaseException:
        # Stopped early (SIGTERM, a crash): keep what was measured for the parent.
        if "m" in sink:
            save(sink["m"], job.out + ".partial.npz")
        if "signal" in sink:  # die of the signal, so the parent sees what happened
            signal.signal(sink["signal"], signal.SIG_DFL)
            os.kill(os.getpid(), sink["signal"])
        raise
    save(m, job.out)
    print("done " + json.dumps(dict(connection.SELECTOR.loop_stats(), **m.counters)), flush=True)


def save(m, path):
    """Write the arrays atomically (a reader never sees half a file)."""
    tmp = path + ".tmp.npz"
    np.savez(tmp, **m.trimmed())
    os.replace(tmp, path)


if __name__ == "__main__":
    main()
