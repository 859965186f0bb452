"""The lean driver's message loops: closed (one message in flight per connection), open (each
message at its intended time, on the one schedule), the blocking scenario's slow handlers, and
the end of every loop (outstanding replies awaited to their deadline, the rest settled by the
store's one rule). The kinds (bench/kinds) build their loops from these.

Every loop is bounded in count (preallocated arrays) and in time (the step's window plus the
deadline).
"""
import asyncio

import numpy as np

from bench.driver import protocol, store
from bench.driver.connection import mono, send_recorded, wait_for_replies, wait_until


async def closed_loop(conns, m, body, t0, end_ns, capacity, spin):
    """One message in flight per connection: each ack triggers the next send at once."""
    finished = asyncio.get_running_loop().create_future()
    live = [len(conns)]

    def retire(conn):
        conn.on_ack = conn.on_disconnect = None
        live[0] -= 1
        if live[0] == 0 and not finished.done():
            finished.set_result(None)

    def next_message(conn, now):
        if now >= end_ns or m.used >= capacity or not conn.alive:
            retire(conn)
            return
        k = m.used
        m.used += 1
        m.conn[k] = conn.index
        m.intended[k] = now
        send_recorded(conn, m, k, body, now)

    for conn in conns:
        conn.on_ack, conn.on_disconnect = next_message, retire
    await wait_until(t0, spin)
    now = mono()
    for conn in conns:
        next_message(conn, now)
    # A frozen server never acks: stop waiting at the window's end (settle() then turns the
    # message in flight into a timeout).
    await wait_for_replies(lambda: not finished.done(), end_ns + 1_000_000, spin)


async def open_loop(conns, m, schedule, body, spin):
    """Send each message at its intended time (catching up at once when late, as wrk2 does)."""
    ks_conn, ks_time = schedule[0].tolist(), schedule[1].tolist()  # plain ints: cheaper per send
    n = len(ks_time)
    by_index = {c.index: c for c in conns}
    i = 0
    while i < n:
        now = mono()
        while i < n and ks_time[i] <= now:
            k = m.used
            m.used += 1
            c = by_index[ks_conn[i]]
            m.conn[k] = c.index
            m.intended[k] = ks_time[i]
            if c.alive:
                send_recorded(c, m, k, body, now)
                now = mono()
            else:  # its connection is gone (server, proxy or network died): lost to it
                store.lost(m, k)
            i += 1
        if i < n:
            await wait_until(ks_time[i], spin)


def offsets_ns(n, rate, arrivals="uniform", seed=1):
    """When each of ``n`` events at ``rate`` per second falls after the start (ns, float):
    the one schedule formula of every loop. Uniform: j / R. Poisson: exponential gaps of mean
    1 / R drawn from ``seed`` (the same stream in every process that draws it)."""
    if arrivals == "poisson":
        gaps = np.random.default_rng(seed).exponential(1e9 / rate, n)
        return np.cumsum(gaps) - gaps[0] if n else gaps
    return np.arange(n, dtype=np.int64) * (1e9 / rate)


def uniform_times(t0, n, rate):
    """Monotonic ns of ``n`` events evenly at ``rate`` per second from ``t0``."""
    return t0 + np.round(offsets_ns(n, rate)).astype(np.int64)


def open_schedule(job, t0):
    """This process's slice of the global schedule: message j goes to connection j % C at
    its intended time, so the total rate is exactly R. Uniform: t0 + j / R (connections
    staggered evenly). Poisson: exponential gaps of mean 1 / R from ``job.seed``, the same
    in every driver process, so their slices interleave into one Poisson stream."""
    total_conns, rate = job.total_conns, job.rate
    n_total = int(rate * (job.warmup + job.duration))
    j = np.arange(n_total, dtype=np.int64)
    offsets = offsets_ns(n_total, rate, job.arrivals, job.seed)
    mine = np.isin(j % total_conns, np.asarray(job.conns, dtype=np.int64))
    keep = mine & (offsets < job.window_ns)
    times = t0 + np.round(offsets[keep]).astype(np.int64)
    return (j[keep] % total_conns).astype(np.int32), times


async def block_calls(conn, spec, t0, end_ns):
    """Fire-and-forget ``block`` events (sleep or CPU for ``ms``) at ``rate`` per second,
    beside the measured echo traffic: the blocking scenario's slow handlers."""
    body = protocol.event_body("block", {"ms": spec["ms"], "kind": spec["kind"]})
    interval = int(1e9 / spec["rate"])
    at = t0 + interval // 2
    while at < end_ns and conn.alive:
        delay = (at - mono()) / 1e9
        if delay > 0:
            await asyncio.sleep(delay)
        conn.send_text("42" + body)
        at += interval


async def settle_and_close(m, conns, job, linger_s=0.0):
    """Wait for outstanding replies until the last message's deadline, then end the rest by
    the one settle rule (bench/driver/store.py) and close every connection. ``linger_s``: stay
    connected that long once nothing is outstanding, so replies in surplus still arrive and
    are counted (in-order matching shifted by an unprompted reply leaves exactly one over)."""
    last_intended = int(m.intended[:m.used].max()) if m.used else mono()
    until = max(mono(), last_intended + m.deadline_ns)
    await wait_for_replies(lambda: any(c.outstanding > 0 and c.alive for c in conns), until,
                           job.spin)
    if linger_s > 0:
        await asyncio.sleep(linger_s)
    store.settle(m, store.liveness(conns))
    for c in conns:
        c.close()
    await asyncio.sleep(0)


def payload(nbytes):
    """An echo argument whose JSON encoding is ``nbytes`` long (minimum 8): ``{"p":"xx…"}``."""
    return {"p": "x" * max(0, int(nbytes) - 8)}
