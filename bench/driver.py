"""Driver worker: a lean Socket.IO client (picows + uvloop) firing echo round trips.

Runs as its own process (``python -m bench.driver JOB.json``), pinned to the driver core, so
it never shares an interpreter with the harness. Every message has an index ``k`` that is
also its Socket.IO ack id, so an ack is matched by array index, without a dict. Arrays are
preallocated and bounded: a load loop can never run past its count or its deadline.

Protocol with the parent: after connecting it prints ``ready``; it then reads the shared
start time ``t0`` (monotonic ns, same clock in every process) from stdin, runs, writes an
``.npz`` of per-message arrays and prints ``done``.
"""
import asyncio
import json
import os
import sys
import time

import numpy as np

from bench import protocol

OK, TIMEOUT, DISCONNECT, ERROR, UNSENT = 1, 2, 3, 4, 0
OUTCOMES = {OK: "ok", TIMEOUT: "timeout", DISCONNECT: "disconnect", ERROR: "error", UNSENT: "error"}

mono = time.monotonic_ns


class Messages:
    """Per-message arrays for one worker, indexed by message number (= ack id)."""

    def __init__(self, capacity):
        self.conn = np.full(capacity, -1, dtype=np.int32)
        self.intended = np.zeros(capacity, dtype=np.int64)
        self.sent = np.zeros(capacity, dtype=np.int64)
        self.received = np.zeros(capacity, dtype=np.int64)
        self.outcome = np.zeros(capacity, dtype=np.int8)
        self.used = 0

    def trimmed(self):
        n = self.used
        return dict(conn=self.conn[:n], intended=self.intended[:n], sent=self.sent[:n],
                    received=self.received[:n], outcome=self.outcome[:n])


def _listener_class():
    from picows import WSListener, WSMsgType

    class Connection(WSListener):
        """One Socket.IO connection; frames are handled inline in the loop callback."""

        def __init__(self, index, messages):
            self.index = index
            self.messages = messages
            self.transport = None
            self.handshake = asyncio.get_running_loop().create_future()
            self.stage = "open"
            self.alive = False
            self.outstanding = 0
            self.on_ack = None  # closed loop hook: called with (conn, received_ns)
            self.on_event = None  # fanout hook: called with (conn, name, args, received_ns)

        def on_ws_connected(self, transport):
            self.transport = transport

        def on_ws_frame(self, transport, frame):
            now = mono()
            if frame.msg_type != WSMsgType.TEXT:
                if frame.msg_type == WSMsgType.CLOSE:
                    transport.disconnect()
                return
            packet = frame.get_payload_as_utf8_text()
            if packet.startswith("43"):
                k = protocol.parse_ack_id(packet)
                m = self.messages
                if k is not None and 0 <= k < m.used and m.outcome[k] == UNSENT:
                    m.received[k] = now
                    m.outcome[k] = OK
                    self.outstanding -= 1
                    if self.on_ack is not None:
                        self.on_ack(self, now)
            elif packet == "2":
                transport.send(WSMsgType.TEXT, b"3")
            elif packet.startswith("42"):
                if self.on_event is not None:
                    self.on_event(self, packet, now)
            elif self.stage == "open":
                try:
                    self.handshake_info = protocol.parse_open(packet)
                    self.stage = "connect"
                    transport.send(WSMsgType.TEXT, protocol.CONNECT.encode())
                except ValueError as exc:
                    self._fail(exc)
            elif self.stage == "connect":
                try:
                    self.sid = protocol.parse_connect_reply(packet)
                    self.stage = "ready"
                    self.alive = True
                    if not self.handshake.done():
                        self.handshake.set_result(self.sid)
                except ValueError as exc:
                    self._fail(exc)
            elif packet.startswith("41") or packet.startswith("1"):
                transport.disconnect()

        def _fail(self, exc):
            if not self.handshake.done():
                self.handshake.set_exception(exc)
            self.transport.disconnect()

        def on_ws_disconnected(self, transport):
            self.alive = False
            if not self.handshake.done():
                self.handshake.set_exception(ConnectionError("disconnected during handshake"))

        def send_text(self, text):
            self.transport.send(WSMsgType.TEXT, text.encode())

        def close(self):
            if self.transport is not None and self.alive:
                try:
                    self.send_text(protocol.DISCONNECT)
                finally:
                    self.transport.disconnect()

    return Connection


async def connect(url, index, messages, timeout):
    """Open one WebSocket and complete the Engine.IO and Socket.IO handshakes."""
    from picows import ws_connect

    cls = _listener_class()
    holder = {}

    def factory():
        holder["c"] = cls(index, messages)
        return holder["c"]

    await asyncio.wait_for(ws_connect(factory, url, websocket_handshake_timeout=timeout), timeout)
    conn = holder["c"]
    await asyncio.wait_for(conn.handshake, timeout)
    return conn


def _send(conn, m, k, body, now):
    m.sent[k] = now
    conn.outstanding += 1
    conn.send_text(protocol.event_packet(k, body))


def _bounded_capacity(job):
    if job.get("rate"):
        return len(job["conns"]) and int(job["rate"] * (job["warmup"] + job["duration"]) + 2)
    return int(job["max_messages"])


async def closed_loop(conns, m, body, t0, end_ns, capacity):
    """One message in flight per connection: each ack triggers the next send at once."""
    finished = asyncio.get_running_loop().create_future()
    n_conns = len(conns)
    live = [n_conns]

    def next_message(conn, now):
        if now >= end_ns or m.used >= capacity:
            live[0] -= 1
            if live[0] == 0 and not finished.done():
                finished.set_result(None)
            return
        k = m.used
        m.used += 1
        m.conn[k] = conn.index
        m.intended[k] = now
        _send(conn, m, k, body, now)

    for conn in conns:
        conn.on_ack = next_message
    delay = (t0 - mono()) / 1e9
    if delay > 0:
        await asyncio.sleep(delay)
    now = mono()
    for conn in conns:
        next_message(conn, now)
    return finished


async def open_loop(conns, m, body, schedule):
    """Send each message at its intended time (catching up at once when late, as wrk2 does)."""
    ks_conn, ks_time = schedule
    n = len(ks_time)
    by_index = {c.index: c for c in conns}
    i = 0
    while i < n:
        now = mono()
        while i < n and ks_time[i] <= now:
            k = m.used
            m.used += 1
            c = by_index[int(ks_conn[i])]
            m.conn[k] = c.index
            m.intended[k] = ks_time[i]
            if c.alive:
                _send(c, m, k, body, now)
                now = mono()
            else:
                m.outcome[k] = ERROR
            i += 1
        if i < n:
            delay = (int(ks_time[i]) - mono()) / 1e9
            if delay > 0:
                await asyncio.sleep(delay)


def open_schedule(job, t0):
    """This worker's slice of the global schedule: message j goes to connection j % C at
    ``t0 + j / R``, so connections are staggered evenly and the total rate is exactly R."""
    total_conns = job["total_conns"]
    rate = job["rate"]
    n_total = int(rate * (job["warmup"] + job["duration"]))
    j = np.arange(n_total, dtype=np.int64)
    mine = np.isin(j % total_conns, np.asarray(job["conns"], dtype=np.int64))
    j = j[mine]
    times = t0 + np.round(j * (1e9 / rate)).astype(np.int64)
    return (j % total_conns).astype(np.int32), times


async def run_job(job, t0_source):
    """Connect, wait for t0, run the scenario's loop, settle outstanding acks, close."""
    m = Messages(_bounded_capacity(job) or 1)
    url = protocol.ws_url(job["host"], job["port"])
    conns = await asyncio.gather(*(connect(url, i, m, job["timeout"]) for i in job["conns"]))
    body = protocol.event_body(job.get("event", "echo"), payload(job["payload"]))
    t0 = await t0_source()
    end_ns = t0 + int((job["warmup"] + job["duration"]) * 1e9)
    if job.get("rate"):
        await open_loop(conns, m, body, open_schedule(job, t0))
    else:
        finished = await closed_loop(conns, m, body, t0, end_ns, m.conn.shape[0])
        await asyncio.wait_for(finished, job["warmup"] + job["duration"] + job["timeout"] + 1)
    deadline = mono() + int(job["timeout"] * 1e9)
    while any(c.outstanding > 0 and c.alive for c in conns) and mono() < deadline:
        await asyncio.sleep(0.005)
    settle(m, conns)
    for c in conns:
        c.close()
    await asyncio.sleep(0)
    return m


def settle(m, conns):
    """Every sent message without an ack becomes a timeout (connection alive) or a
    disconnect (connection lost): counted, never dropped."""
    alive = {c.index: c.alive for c in conns}
    n = m.used
    pending = np.nonzero((m.outcome[:n] == UNSENT) & (m.sent[:n] > 0))[0]
    for k in pending:
        m.outcome[k] = TIMEOUT if alive.get(int(m.conn[k]), False) else DISCONNECT
    unsent = (m.outcome[:n] == UNSENT) & (m.sent[:n] == 0)
    m.outcome[:n][unsent] = ERROR


def payload(nbytes):
    """An echo argument whose JSON encoding is ``nbytes`` long (minimum 8): ``{"p":"xx…"}``."""
    return {"p": "x" * max(0, int(nbytes) - 8)}


def _stdin_t0():
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


def run_loop(coro, kind):
    if kind == "uvloop":
        import uvloop
        return uvloop.run(coro)
    import selectors
    loop = asyncio.SelectorEventLoop(selectors.SelectSelector())
    try:
        return loop.run_until_complete(coro)
    finally:
        loop.close()


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    job = json.loads(open(argv[0]).read())
    if job.get("cpus"):
        os.sched_setaffinity(0, job["cpus"])
    tighten_timer_slack()
    async def go():
        t0_source = _stdin_t0()

        async def announce_then_read():
            print("ready", flush=True)
            return await t0_source()
        return await run_job(job, announce_then_read)

    m = run_loop(go(), job.get("loop", "select"))
    tmp = job["out"] + ".tmp.npz"
    np.savez(tmp, **m.trimmed())
    os.replace(tmp, job["out"])
    print("done", flush=True)


if __name__ == "__main__":
    main()
