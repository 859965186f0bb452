"""The connect kind: new connections arriving at a rate, each attempt a message whose stages
(TCP, WebSocket upgrade, Engine.IO open, Socket.IO connect) are stamped and reported."""
import asyncio

import numpy as np

from bench.driver.connection import connect, mono, source_for, ssl_for, url_for, wait_until
from bench.driver.loops import offsets_ns, uniform_times
from bench.driver.store import ERROR, OK, TIMEOUT, UNSENT, Messages, record_reply
from bench.kinds import Kind

STAGES = ("tcp", "upgrade", "open", "connect")
EXTRAS = ("tcp_ns", "upgrade_ns", "open_ns", "failed_stage")
STAGE_CODES = {"": 0, "tcp": 1, "upgrade": 2, "open": 3, "connect": 4}
COLUMNS = ((" ".join(f"failed_{s}" for s in STAGES), "int", "connects", "sum"),
           (" ".join(f"{s}_p{q}_us" for s in STAGES for q in (50, 99)), "float", "us", "repeat"))


def attempts(job):
    """How many connects the step attempts: the rate over warm-up and window."""
    return int(job.rate * (job.warmup + job.duration))


async def run(job, t0_source, sink):
    """Attempts at ``job.rate``, uniform: each one connects, is stamped stage by stage, and
    is closed once connected; a failure is an error at the stage that failed."""
    n = attempts(job)
    m = sink["m"] = Messages(n, extras=EXTRAS)
    t0 = await t0_source()
    times = uniform_times(t0, n, job.rate)
    tasks = []

    async def attempt(k):
        stamps = {}
        m.sent[k] = mono()
        try:
            conn = await connect(url_for(job, k), k, Messages(1), job.deadline, stamps,
                                 source=source_for(job, k), ssl_context=ssl_for(job))
        except Exception:  # noqa: BLE001 - a failed attempt is a counted outcome
            m.outcome[k] = ERROR
            m.extras["failed_stage"][k] = STAGE_CODES[stamps.get("failed", "tcp")]
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


def scheduled(job, t0):
    """(conn, intended) of every attempt a lost share would have made."""
    n = attempts(job)
    return np.arange(n, dtype=np.int32), uniform_times(t0, n, job.rate)


def columns(step, arrays, t0):
    """Per-stage times from the attempt's start (NaN for a stage the client does not see,
    such as a browser's TCP) and failures counted by the stage that failed."""
    from bench.analysis import recorder, stats

    measure = recorder.measure_mask(arrays, step, t0)
    ok = measure & (arrays["outcome"] == OK)
    sent = arrays["sent"][ok]
    out = {}
    for stage, stamp in (("tcp", arrays["tcp_ns"][ok]), ("upgrade", arrays["upgrade_ns"][ok]),
                         ("open", arrays["open_ns"][ok]), ("connect", arrays["received"][ok])):
        seen = stamp > 0
        st = stats.summary(stats.histogram_of((stamp[seen] - sent[seen]) / 1000.0))
        out[f"{stage}_p50_us"], out[f"{stage}_p99_us"] = st["p50_us"], st["p99_us"]
    failed = arrays["failed_stage"][measure]
    for stage in STAGES:
        out[f"failed_{stage}"] = int((failed == STAGE_CODES[stage]).sum())
    return out


def rows(step, load, transport, resources, client, note):
    """The message row of the attempts, with the stage columns."""
    from bench.kinds import messages

    (row,) = messages.rows(step, load, transport, resources, client, note)
    return [dict(row, **columns(step, load.arrays, load.t0))]


def sample_columns(frame, arrays):
    """Each attempt's stage times (µs from its start) and the stage that failed."""
    for stage in ("tcp", "upgrade", "open"):
        stamp = arrays[f"{stage}_ns"]
        frame[f"{stage}_us"] = np.where(stamp > 0, (stamp - arrays["sent"]) / 1000.0, np.nan)
    frame["failed_stage"] = arrays["failed_stage"]
    return frame


def page_plan(job, plan):
    """The page makes the attempts itself, at the rate, uniform."""
    return dict(plan, kind="connect", offsets=(offsets_ns(attempts(job), job.rate) / 1e6)
                .tolist())


def page_messages(job, got, offset_ns):
    """The page's attempts as :func:`run` stores them: answered by the Socket.IO connect; a
    refusal is an error at its stage, no answer by the deadline a timeout."""
    from bench.driver.browser import EXTRAS as PAGE_EXTRAS, on_monotonic

    n = int(got["used"])
    m = Messages(max(1, n), extras=PAGE_EXTRAS + EXTRAS)
    m.deadline_ns = int(job.deadline * 1e9)
    m.used = n
    m.conn[:n] = np.arange(n, dtype=np.int32)
    m.intended[:n] = on_monotonic(got["intended"], offset_ns)
    m.sent[:n] = on_monotonic(got["sent"], offset_ns)
    m.extras["open_ns"][:n] = on_monotonic(got["opened"], offset_ns)
    m.extras["failed_stage"][:n] = np.asarray(got["failedStage"], dtype=np.int64)
    received = on_monotonic(got["received"], offset_ns)
    for k in range(n):
        if m.extras["failed_stage"][k]:
            m.outcome[k] = ERROR
        elif not (received[k] and record_reply(m, k, int(received[k]))):
            m.outcome[k] = TIMEOUT
    return m


KIND = Kind("connect", open_loop=True, clients=("lean", "browser"), split=False,
            page_connects=False, latency_series=False, extras=EXTRAS, columns=COLUMNS,
            loop=run, schedule=scheduled, rows=rows, sample_columns=sample_columns,
            page_plan=page_plan, page_messages=page_messages)
