"""Driver process of the lean Socket.IO client: ``python -m bench.driver.lean JOB.json``.

Runs as its own process, pinned to the driver core, so it never shares an interpreter with the
harness: it reads its job, connects (bench/driver/connection.py), runs the scenario's loop
(bench/driver/loops.py, or the user's traffic: bench/driver/custom.py) and saves the
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

from bench.driver import connection, protocol
from bench.driver.loops import (block_calls, closed_loop, open_loop, open_schedule, payload,
                                run_connect, run_fanout, settle_and_close)
from bench.driver.connection import connect, connect_all, run_loop, source_for, ssl_for, url_for
from bench.machine import raise_nofile
from bench.plan.job import Job
from bench.driver.store import Messages
# Names the drivers built on this one (the user's traffic, verification) and tests read
# through this module:
from bench.driver.connection import mono  # noqa: F401
from bench.driver.store import (DISCONNECT, ERROR, OK, TIMEOUT, UNSENT,  # noqa: F401
                                record_reply)


async def run_job(job, t0_source, sink):
    """Connect, wait for t0, run the scenario's loop, settle outstanding acks, close.
    ``sink["m"]`` holds the arrays as soon as they exist, so an early exit can save them."""
    if job.kind in ("fanout", "emit"):
        return await run_fanout(job, t0_source, sink)
    if job.kind == "connect":
        return await run_connect(job, t0_source, sink)
    if job.traffic:  # the user's own events (--scenario-file)
        from bench.driver.custom import run_custom
        return await run_custom(job, t0_source, sink)
    m = sink["m"] = Messages(job.max_messages)
    m.deadline_ns = int(job.deadline * 1e9)
    conns = await connect_all(job, job.conns, m)
    if job.binary:
        body = protocol.event_body(job.event, protocol.PLACEHOLDER)
        for c in conns:
            c.binary = b"\xa5" * max(1, int(job.payload))
    else:
        body = protocol.event_body(job.event, payload(job.payload))
    blocker = None
    if job.blockers and 0 in job.conns:
        blocker = await connect(url_for(job, 0), -1, Messages(1), job.deadline,
                                source=source_for(job, 0), ssl_context=ssl_for(job))
    t0 = await t0_source()
    end_ns = t0 + job.window_ns
    background = asyncio.ensure_future(block_calls(blocker, job.blockers, t0, end_ns)) \
        if blocker else None
    if job.kind == "open":
        await open_loop(conns, m, open_schedule(job, t0), body, job.spin)
    else:
        await closed_loop(conns, m, body, t0, end_ns, m.conn.shape[0], job.spin)
    await settle_and_close(m, conns + ([blocker] if blocker else []), job)
    if background:
        background.cancel()
    return m


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
