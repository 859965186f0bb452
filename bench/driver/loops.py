"""The lean driver's load loops: closed (one message in flight per connection), open (each
message at its intended time), fan-out (room members receiving broadcasts), connect (new
connections at a rate), the blocking scenario's slow handlers, and the end of every loop
(outstanding replies awaited to their deadline, the rest settled by the store's one rule).

Every loop is bounded in count (preallocated arrays) and in time (the step's window plus the
deadline).
"""
import asyncio

import numpy as np

from bench.driver import protocol, store
from bench.driver.connection import (connect, connect_all, mono, send_recorded, source_for,
                                     ssl_for, url_for, wait_for_replies, wait_until, woke_ns)
from bench.driver.store import ERROR, OK, TIMEOUT, UNSENT, Messages, record_reply

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


async def run_fanout(job, t0_source, sink):
    """Members join one room; a sender triggers ``broadcast`` at ``rate``. Each delivery is a
    message whose intended time is its trigger's (known from the schedule, so every driver
    process stamps its own members against it on the one monotonic clock). This process holds
    its share of the members (``job.conns``): arrays are trigger-major, ``len(conns)`` per
    trigger, so the merged arrays of all processes have exactly ``members`` per trigger. The
    sender lives in the process holding member 0. Members are spread over ``job.targets``
    (a scale-out delivers through its queue).

    ``kind = "emit"``: no sender; another process (bench/driver/emitter.py) emits to the room
    through the message queue on the same schedule (same t0, same monotonic clock); members
    only receive. The harness fills in the emitter's actual send times afterwards."""
    members, rate = job.members, job.rate
    emit = job.kind == "emit"
    mine = list(job.conns) if job.conns else list(range(members))
    slot = {member: s for s, member in enumerate(mine)}
    n_triggers = int(rate * (job.warmup + job.duration))
    width = len(mine)
    m = sink["m"] = Messages(n_triggers * width)
    m.deadline_ns = int(job.deadline * 1e9)
    room = job.room or f"fan-{job.targets[0][1]}"
    sender_msgs = Messages(n_triggers + width + 1)
    conns = await connect_all(job, mine, sender_msgs)
    sender = None
    if 0 in slot and not emit:
        sender = await connect(url_for(job, members), members, sender_msgs, job.deadline,
                               source=source_for(job, members), ssl_context=ssl_for(job))
    for c in conns:  # join, each acked, before the clock starts
        k = sender_msgs.used
        sender_msgs.used += 1
        send_recorded(c, sender_msgs, k, protocol.event_body("join", {"room": room}), mono())
    await wait_for_replies(lambda: any(c.outstanding for c in conns),
                           mono() + int(job.deadline * 1e9) + width * 10_000_000, False)
    if any(c.outstanding for c in conns):
        raise ConnectionError("members did not all join the room in time")
    m.used = n_triggers * width
    m.conn[:] = np.tile(np.asarray(mine, dtype=np.int32), n_triggers)

    def delivered(conn, packet, now):
        trigger = protocol.parse_trigger_id(packet)
        if trigger is not None and 0 <= trigger < n_triggers:
            record_reply(m, trigger * width + slot[conn.index], now, woke_ns())

    for c in conns:
        c.on_event = delivered
    pad = "x" * max(0, int(job.payload) - 40)
    t0 = await t0_source()
    times = uniform_times(t0, n_triggers, rate)
    m.intended[:m.used] = np.repeat(times, width)
    m.sent[:m.used] = m.intended[:m.used]  # the sender's own process overwrites its spans
    if sender is not None:
        for trigger in range(n_triggers):
            await wait_until(int(times[trigger]), job.spin)
            now = mono()
            m.sent[trigger * width:(trigger + 1) * width] = now
            if sender.alive:
                sender.send_text("42" + protocol.event_body(
                    "broadcast", {"room": room, "id": trigger, "p": pad}))
    until = (int(times[-1]) if n_triggers else mono()) + m.deadline_ns
    await wait_for_replies(lambda: np.any(m.outcome[:m.used] == UNSENT), until, job.spin)
    store.settle(m, store.liveness(conns))  # every delivery was due: sent at its trigger
    for c in [*conns, *([sender] if sender else [])]:
        c.close()
    await asyncio.sleep(0)
    return m


async def run_connect(job, t0_source, sink):
    """New connections arriving at ``rate``: each attempt is a message whose stages (TCP,
    upgrade, Engine.IO open, Socket.IO connect) are stamped; it is closed once connected."""
    rate = job.rate
    n = int(rate * (job.warmup + job.duration))
    m = sink["m"] = Messages(n, extras=("tcp_ns", "upgrade_ns", "open_ns", "failed_stage"))
    t0 = await t0_source()
    times = uniform_times(t0, n, rate)
    stages = {"": 0, "tcp": 1, "upgrade": 2, "open": 3, "connect": 4}
    tasks = []

    async def attempt(k):
        stamps = {}
        m.sent[k] = mono()
        try:
            conn = await connect(url_for(job, k), k, Messages(1), job.deadline, stamps,
                                 source=source_for(job, k), ssl_context=ssl_for(job))
        except Exception:  # noqa: BLE001 - a failed attempt is a counted outcome
            m.outcome[k] = ERROR
            m.extras["failed_stage"][k] = stages[stamps.get("failed", "tcp")]
            for key in ("tcp", "upgrade"):
                m.extras[f"{key}_ns"][k] = stamps.get(key, 0)
            return
        m.received[k], m.outcome[k] = stamps["connect"], OK
        m.extras["tcp_ns"][k], m.extras["upgrade_ns"][k] = stamps["tcp"], stamps["upgrade"]
        m.extras["open_ns"][k] = stamps["open"]
        conn.close()

    for k in range(n):
        await wait_until(int(times[k]), False)
        m.used, m.conn[k], m.intended[k] = k + 1, k, times[k]
        tasks.append(asyncio.ensure_future(attempt(k)))
    if tasks:
        await asyncio.wait(tasks, timeout=job.deadline * 2 + 1)
    for t in tasks:
        t.cancel()
    m.outcome[:m.used][m.outcome[:m.used] == UNSENT] = TIMEOUT
    return m


def payload(nbytes):
    """An echo argument whose JSON encoding is ``nbytes`` long (minimum 8): ``{"p":"xx…"}``."""
    return {"p": "x" * max(0, int(nbytes) - 8)}
