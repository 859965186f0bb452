"""Echo messages on a fixed set of connections: the loop, schedule and row that the closed
and open kinds share (each message answered by its ack, latency from its intended send)."""
import asyncio

import numpy as np

from bench.driver import protocol
from bench.driver.connection import connect, connect_all, source_for, ssl_for, url_for
from bench.driver.loops import (block_calls, closed_loop, open_loop, open_schedule, payload,
                                settle_and_close)
from bench.driver.store import Messages


async def run(job, t0_source, sink):
    """Connect, wait for t0, send the echo (or the user's own events) in an open or closed
    loop, settle outstanding acks, close. ``sink["m"]`` holds the arrays as soon as they
    exist, so an early exit can save them."""
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
    if job.rate:
        await open_loop(conns, m, open_schedule(job, t0), body, job.spin)
    else:
        await closed_loop(conns, m, body, t0, end_ns, m.conn.shape[0], job.spin)
    await settle_and_close(m, conns + ([blocker] if blocker else []), job)
    if background:
        background.cancel()
    return m


def scheduled(job, t0):
    """(conn, intended) a lost share counts: open loop, its slice of the global schedule;
    closed loop, one message per connection at the window's start (the share's failure,
    counted once per connection)."""
    if job.rate:
        return open_schedule(job, t0)
    conn = np.asarray(job.conns or range(job.connections), dtype=np.int32)
    return conn, np.full(len(conn), t0 + int(job.warmup * 1e9), dtype=np.int64)


def rows(step, load, transport, resources, client, note):
    """One row of the step's measured messages, with the user's reply accounting and the
    browser page's columns where they apply."""
    from bench.analysis import browserrow, recorder

    row = recorder.summarize_messages(step, load, transport, resources, client, note)
    if getattr(load, "replies", None):
        recorder.reply_columns(row, load.replies)
    if getattr(load, "page", None):
        row.update(browserrow.columns(load.arrays,
                                      recorder.measure_mask(load.arrays, step, load.t0),
                                      load.page, step.deadline * 1e6))
    return [dict(row, **step.extra)]
