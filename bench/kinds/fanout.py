"""The fan-out kind: room members receive broadcasts; each delivery is a message whose
intended time is its broadcast's, reported as first / median / last recipient and reach.
The emit kind reuses it with the sender replaced by an emitter process (bench/kinds/emit.py).
"""
import asyncio

import numpy as np

from bench.driver import protocol, store
from bench.driver.connection import (connect, connect_all, mono, send_recorded, source_for,
                                     ssl_for, url_for, wait_for_replies, wait_until, woke_ns)
from bench.driver.loops import offsets_ns, uniform_times
from bench.driver.store import OK, UNSENT, Messages, record_reply
from bench.kinds import Kind, get


COLUMNS = (("recipient", "text", "", "key"), ("reach", "float", "ratio", "mean"),
           ("broadcasts", "int", "broadcasts", "sum"))


def broadcast_count(job):
    """How many broadcasts the step sends: the rate over warm-up and window."""
    return int(job.rate * (job.warmup + job.duration))


async def run(job, t0_source, sink):
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
    emit = get(job.kind).emitted
    mine = list(job.conns) if job.conns else list(range(members))
    slot = {member: s for s, member in enumerate(mine)}
    n_triggers = broadcast_count(job)
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


def rows(step, load, transport, resources, client, note):
    """first / median / last recipient per broadcast, and all deliveries, plus ``reach``.
    A recipient that missed a broadcast leaves it without a median or last: that broadcast
    is censored at the deadline for those rows (it is counted, never dropped). A browser
    page's interaction columns go on every row."""
    from bench.analysis import browserrow, recorder, stats

    arrays, members = load.arrays, step.connections
    deadline_us = step.deadline * 1e6
    measure = recorder.measure_mask(arrays, step, load.t0)
    n_triggers = len(arrays["intended"]) // members
    shape = (n_triggers, members)
    latency = ((arrays["received"] - arrays["intended"]) / 1000.0).reshape(shape)
    delivered = (arrays["outcome"] == OK).reshape(shape)
    in_window = measure.reshape(shape)[:, 0]
    lat = np.where(delivered, latency, np.nan)[in_window]
    full = delivered[in_window].all(axis=1)
    reach = float(delivered[in_window].mean()) if lat.size else float("nan")
    base = recorder.summarize_messages(step, load, transport, resources, client, note)
    counted = int(in_window.sum())
    rows = []
    any_ok = ~np.all(np.isnan(lat), axis=1) if lat.size else np.zeros(0, bool)
    for recipient, values, answered in (
            ("first", np.nanmin(lat[any_ok], axis=1) if any_ok.any() else [], any_ok),
            ("median", np.nanmedian(lat[full], axis=1) if full.any() else [], full),
            ("last", np.nanmax(lat[full], axis=1) if full.any() else [], full)):
        values = np.asarray(values, dtype=float)
        missing = counted - int(np.sum(answered))
        h = stats.histogram_of(values, censored=missing, deadline_us=deadline_us)
        row = dict(base, **stats.summary(h, missing, deadline_us), hdr=stats.encode(h),
                   recipient=recipient, reach=round(reach, 6), broadcasts=counted,
                   attempted=counted, ok=len(values), errors=0, timeouts=missing,
                   achieved_rate=round(len(values) / step.duration, 1), **step.extra)
        rows.append(row)
    rows.append(dict(base, recipient="all", reach=round(reach, 6), broadcasts=counted, **step.extra))
    if not reach >= 0.999:
        for row in rows:
            recorder.mark_invalid(row, "reach_below")
            row["note"] = "; ".join(filter(None, [row["note"], f"reach {100 * reach:.2f} %"]))
    if getattr(load, "page", None):  # the page's interactions while it received
        shared = browserrow.columns(arrays, measure, load.page, deadline_us)
        rows = [dict(row, **shared) for row in rows]
    return rows


def scheduled(job, t0):
    """(conn, intended) of every delivery a lost share would have received: each member at
    each broadcast's time."""
    n = broadcast_count(job)
    conn = np.tile(np.arange(job.members, dtype=np.int32), n)
    return conn, np.repeat(uniform_times(t0, n, job.rate), job.members)


def page_plan(job, plan):
    """The page holds the members and sends the broadcasts itself, at the rate, uniform."""
    return dict(plan, kind="fanout", offsets=(offsets_ns(broadcast_count(job), job.rate) / 1e6)
                .tolist(), room=job.room or f"fan-{job.targets[0][1]}")


def page_messages(job, got, offset_ns):
    """The page's deliveries as :func:`run` stores them: trigger-major, one message per
    (broadcast, member), sent when the sender emitted, settled by each member's liveness."""
    from bench.driver.browser import EXTRAS as PAGE_EXTRAS, on_monotonic

    n, width = int(got["used"]), int(got["width"])
    m = Messages(max(1, n * width), extras=PAGE_EXTRAS)
    m.deadline_ns = int(job.deadline * 1e9)
    m.used = n * width
    m.conn[:m.used] = np.tile(np.asarray(job.conns, dtype=np.int32), n)
    m.intended[:m.used] = np.repeat(on_monotonic(got["intended"], offset_ns), width)
    m.sent[:m.used] = np.repeat(on_monotonic(got["sent"], offset_ns), width)
    for k, at in enumerate(on_monotonic(got["received"], offset_ns)):
        if at:
            record_reply(m, k, int(at))
    store.settle(m, {job.conns[i]: bool(up) for i, up in enumerate(got["alive"])})
    return m


KIND = Kind("fanout", open_loop=True, clients=("lean", "browser"), members=True,
            one_row=False, latency_series=False, split=False, columns=COLUMNS,
            loop=run, schedule=scheduled, rows=rows, page_plan=page_plan,
            page_messages=page_messages)
