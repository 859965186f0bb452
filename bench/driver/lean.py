"""Driver worker: a lean Socket.IO client (picows + uvloop) firing echo round trips.

Runs as its own process (``python -m bench.driver.lean JOB.json``), pinned to the driver core, so
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
import signal
import sys
import time

import numpy as np

from bench.driver import protocol
OK, TIMEOUT, DISCONNECT, ERROR, UNSENT = 1, 2, 3, 4, 0
OUTCOMES = {OK: "ok", TIMEOUT: "timeout", DISCONNECT: "disconnect", ERROR: "error", UNSENT: "error"}

mono = time.monotonic_ns
ACK_HEAD = 32  # "43" / "461-" plus an ack id of up to 20 digits fits


class Messages:
    """Per-message arrays for one worker, indexed by message number (= ack id)."""

    def __init__(self, capacity, extras=()):
        self.extras = {name: np.zeros(capacity, dtype=np.int64) for name in extras}
        self.conn = np.full(capacity, -1, dtype=np.int32)
        self.intended = np.zeros(capacity, dtype=np.int64)
        self.sent = np.zeros(capacity, dtype=np.int64)
        self.received = np.zeros(capacity, dtype=np.int64)
        self.outcome = np.zeros(capacity, dtype=np.int8)
        self.used = 0

    def trimmed(self):
        n = self.used
        return dict(conn=self.conn[:n], intended=self.intended[:n], sent=self.sent[:n],
                    received=self.received[:n], outcome=self.outcome[:n],
                    **{name: a[:n] for name, a in self.extras.items()})


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
            self.on_disconnect = None  # closed loop hook: called with (conn,)
            self.on_event = None  # fanout hook: called with (conn, packet, received_ns)
            self.binary_ack = None  # ack id whose binary attachment is still to come
            self.binary = None  # attachment sent after each binary event
            self.open_ns = 0

        def on_ws_connected(self, transport):
            self.transport = transport

        def on_ws_frame(self, transport, frame):
            now = mono()
            if frame.msg_type != WSMsgType.TEXT:
                if frame.msg_type == WSMsgType.BINARY and self.binary_ack is not None:
                    k, self.binary_ack = self.binary_ack, None
                    self._acked(k, now)  # a binary ack is complete with its attachment
                elif frame.msg_type == WSMsgType.CLOSE:
                    transport.disconnect()
                return
            # Acks are the hot path: their id sits in the first bytes, so only those are
            # decoded; a 64 KiB echo is never turned into a str just to read its id.
            head = bytes(frame.get_payload_as_memoryview()[:ACK_HEAD]).decode("ascii", "replace")
            if head.startswith("43"):
                self._acked(protocol.parse_ack_id(head), now)
                return
            if head.startswith("46"):
                self.binary_ack = protocol.parse_binary_ack_id(head)
                return
            packet = frame.get_payload_as_utf8_text()
            if packet == "2":
                transport.send(WSMsgType.TEXT, b"3")
            elif packet.startswith("42"):
                if self.on_event is not None:
                    self.on_event(self, packet, now)
            elif self.stage == "open":
                try:
                    self.open_ns = now
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

        def _acked(self, k, now):
            m = self.messages
            if k is not None and 0 <= k < m.used and m.outcome[k] == UNSENT:
                m.received[k] = now
                m.outcome[k] = OK
                self.outstanding -= 1
                if self.on_ack is not None:
                    self.on_ack(self, now)

        def _fail(self, exc):
            if not self.handshake.done():
                self.handshake.set_exception(exc)
            self.transport.disconnect()

        def on_ws_disconnected(self, transport):
            self.alive = False
            if self.on_disconnect is not None:
                self.on_disconnect(self)
            if not self.handshake.done():
                self.handshake.set_exception(ConnectionError("disconnected during handshake"))

        def send_text(self, text):
            self.transport.send(WSMsgType.TEXT, text.encode())

        def send_message(self, k, body):
            if self.binary is None:
                self.transport.send(WSMsgType.TEXT, protocol.event_packet(k, body).encode())
            else:
                self.transport.send(WSMsgType.TEXT, protocol.binary_event_packet(k, body).encode())
                self.transport.send(WSMsgType.BINARY, self.binary)

        def close(self):
            if self.transport is not None and self.alive:
                try:
                    self.send_text(protocol.DISCONNECT)
                finally:
                    self.transport.disconnect()

    return Connection


async def connect(url, index, messages, timeout, stamps=None):
    """Open one WebSocket and complete the Engine.IO and Socket.IO handshakes.

    With ``stamps`` (a dict), record when TCP connected, the upgrade completed and the
    Engine.IO OPEN and Socket.IO CONNECT replies arrived (monotonic ns), and which stage
    failed, for the connect scenario.
    """
    import socket

    from picows import ws_connect

    cls = _listener_class()
    holder = {}
    stamps = {} if stamps is None else stamps

    def factory():
        holder["c"] = cls(index, messages)
        return holder["c"]

    async def tcp(parsed):
        loop = asyncio.get_running_loop()
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setblocking(False)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            await loop.sock_connect(sock, (parsed.host, parsed.port))
        except BaseException:
            sock.close()
            raise
        stamps["tcp"], stamps["failed"] = mono(), "upgrade"
        return sock

    stamps["failed"] = "tcp"
    await asyncio.wait_for(ws_connect(factory, url, websocket_handshake_timeout=timeout,
                                      socket_factory=tcp), timeout)
    stamps["upgrade"] = mono()
    stamps["failed"] = "open"
    conn = holder["c"]
    try:
        await asyncio.wait_for(conn.handshake, timeout)
    except BaseException:
        if conn.open_ns:
            stamps["failed"] = "connect"
        raise
    stamps["open"], stamps["connect"] = conn.open_ns, mono()
    stamps["failed"] = ""
    return conn


def _send(conn, m, k, body, now):
    m.sent[k] = now
    conn.outstanding += 1
    conn.send_message(k, body)


def _bounded_capacity(job):
    """Open loop: the whole schedule (an upper bound on this worker's slice); closed loop:
    the job's message cap. Either way the arrays bound the loop."""
    if job.get("rate"):
        return int(job["rate"] * (job["warmup"] + job["duration"]) + 2)
    return int(job["max_messages"])


async def closed_loop(conns, m, body, t0, end_ns, capacity):
    """One message in flight per connection: each ack triggers the next send at once."""
    finished = asyncio.get_running_loop().create_future()
    n_conns = len(conns)
    live = [n_conns]

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
        _send(conn, m, k, body, now)

    for conn in conns:
        conn.on_ack, conn.on_disconnect = next_message, retire
    delay = (t0 - mono()) / 1e9
    if delay > 0:
        await asyncio.sleep(delay)
    now = mono()
    for conn in conns:
        next_message(conn, now)
    return finished


async def open_loop(conns, m, body, schedule):
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
                _send(c, m, k, body, now)
                now = mono()
            else:
                m.outcome[k] = ERROR
            i += 1
        if i < n:
            delay = (ks_time[i] - mono()) / 1e9
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


async def run_job(job, t0_source, sink):
    """Connect, wait for t0, run the scenario's loop, settle outstanding acks, close.
    ``sink["m"]`` holds the arrays as soon as they exist, so an early exit can save them."""
    kind = job.get("kind") or ("open" if job.get("rate") else "closed")
    if kind == "fanout":
        return await run_fanout(job, t0_source, sink)
    if kind == "connect":
        return await run_connect(job, t0_source, sink)
    m = sink["m"] = Messages(_bounded_capacity(job))
    url = protocol.ws_url(job["host"], job["port"])
    conns = await asyncio.gather(*(connect(url, i, m, job["timeout"]) for i in job["conns"]))
    if job.get("binary"):
        body = protocol.event_body("echo", protocol.PLACEHOLDER)
        for c in conns:
            c.binary = b"\xa5" * max(1, int(job["payload"]))
    else:
        body = protocol.event_body(job.get("event", "echo"), payload(job["payload"]))
    blocker = None
    if job.get("blockers") and 0 in job["conns"]:
        blocker = await connect(url, -1, Messages(1), job["timeout"])
    t0 = await t0_source()
    end_ns = t0 + int((job["warmup"] + job["duration"]) * 1e9)
    background = asyncio.ensure_future(block_calls(blocker, job["blockers"], t0, end_ns)) \
        if blocker else None
    if kind == "open":
        await open_loop(conns, m, body, open_schedule(job, t0))
    else:
        finished = await closed_loop(conns, m, body, t0, end_ns, m.conn.shape[0])
        # A frozen server never acks: stop waiting at the window's end; settle() below then
        # turns the message in flight into a timeout.
        await asyncio.wait([finished], timeout=(end_ns - mono()) / 1e9 + 0.001)
    await _settle_and_close(m, conns + ([blocker] if blocker else []), job["timeout"])
    if background:
        background.cancel()
    return m


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


async def _settle_and_close(m, conns, timeout):
    deadline = mono() + int(timeout * 1e9)
    while any(c.outstanding > 0 and c.alive for c in conns) and mono() < deadline:
        await asyncio.sleep(0.005)
    settle(m, conns)
    for c in conns:
        c.close()
    await asyncio.sleep(0)


async def run_fanout(job, t0_source, sink):
    """N members join one room; a sender triggers ``broadcast`` at ``rate``. Each delivery is
    a message: index = trigger × members + member, intended = the trigger's intended time."""
    members, rate = job["members"], job["rate"]
    n_triggers = int(rate * (job["warmup"] + job["duration"]))
    m = sink["m"] = Messages(n_triggers * members)
    url = protocol.ws_url(job["host"], job["port"])
    room = f"fan-{job['port']}"
    sender_msgs = Messages(n_triggers + members + 1)
    conns = await asyncio.gather(*(connect(url, i, sender_msgs, job["timeout"])
                                   for i in range(members)))
    sender = await connect(url, members, sender_msgs, job["timeout"])
    for i, c in enumerate(conns):  # join, each acked, before the clock starts
        k = sender_msgs.used
        sender_msgs.used += 1
        _send(c, sender_msgs, k, protocol.event_body("join", {"room": room}), mono())
    deadline = mono() + int(job["timeout"] * 1e9)
    while any(c.outstanding for c in conns) and mono() < deadline:
        await asyncio.sleep(0.005)
    if any(c.outstanding for c in conns):
        raise ConnectionError("members did not all join the room in time")
    m.used = n_triggers * members
    m.conn[:] = np.tile(np.arange(members, dtype=np.int32), n_triggers)

    def delivered(conn, packet, now):
        trigger = protocol.parse_trigger_id(packet)
        if trigger is not None and 0 <= trigger < n_triggers:
            k = trigger * members + conn.index
            if m.outcome[k] == UNSENT:
                m.received[k], m.outcome[k] = now, OK

    for c in conns:
        c.on_event = delivered
    pad = "x" * max(0, int(job["payload"]) - 40)
    t0 = await t0_source()
    times = t0 + np.round(np.arange(n_triggers) * (1e9 / rate)).astype(np.int64)
    for trigger in range(n_triggers):
        delay = (int(times[trigger]) - mono()) / 1e9
        if delay > 0:
            await asyncio.sleep(delay)
        now = mono()
        span = slice(trigger * members, (trigger + 1) * members)
        m.intended[span], m.sent[span] = times[trigger], now
        if sender.alive:
            sender.send_text("42" + protocol.event_body(
                "broadcast", {"room": room, "id": trigger, "p": pad}))
    deadline = mono() + int(job["timeout"] * 1e9)
    while mono() < deadline and np.any(m.outcome[:m.used] == UNSENT):
        await asyncio.sleep(0.005)
    alive = np.array([c.alive for c in conns])
    missing = m.outcome[:m.used] == UNSENT
    m.outcome[:m.used][missing] = np.where(alive[m.conn[:m.used][missing]], TIMEOUT, DISCONNECT)
    for c in [*conns, sender]:
        c.close()
    await asyncio.sleep(0)
    return m


async def run_connect(job, t0_source, sink):
    """New connections arriving at ``rate``: each attempt is a message whose stages (TCP,
    upgrade, Engine.IO open, Socket.IO connect) are stamped; it is closed once connected."""
    rate = job["rate"]
    n = int(rate * (job["warmup"] + job["duration"]))
    m = sink["m"] = Messages(n, extras=("tcp_ns", "upgrade_ns", "open_ns", "failed_stage"))
    url = protocol.ws_url(job["host"], job["port"])
    t0 = await t0_source()
    times = t0 + np.round(np.arange(n) * (1e9 / rate)).astype(np.int64)
    stages = {"": 0, "tcp": 1, "upgrade": 2, "open": 3, "connect": 4}
    tasks = []

    async def attempt(k):
        stamps = {}
        m.sent[k] = mono()
        try:
            conn = await connect(url, k, Messages(1), job["timeout"], stamps)
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
        delay = (int(times[k]) - mono()) / 1e9
        if delay > 0:
            await asyncio.sleep(delay)
        m.used, m.conn[k], m.intended[k] = k + 1, k, times[k]
        tasks.append(asyncio.ensure_future(attempt(k)))
    if tasks:
        await asyncio.wait(tasks, timeout=job["timeout"] * 2 + 1)
    for t in tasks:
        t.cancel()
    m.outcome[:m.used][m.outcome[:m.used] == UNSENT] = TIMEOUT
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
    sink = {}

    async def go():
        t0_source = _stdin_t0()
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
        m = run_loop(go(), job.get("loop", "select"))
    except BaseException:
        # Stopped early (SIGTERM, a crash): keep what was measured for the parent.
        if "m" in sink:
            save(sink["m"], job["out"] + ".partial.npz")
        if "signal" in sink:  # die of the signal, so the parent sees what happened
            signal.signal(sink["signal"], signal.SIG_DFL)
            os.kill(os.getpid(), sink["signal"])
        raise
    save(m, job["out"])
    print("done", flush=True)


def save(m, path):
    tmp = path + ".tmp.npz"
    np.savez(tmp, **m.trimmed())
    os.replace(tmp, path)


if __name__ == "__main__":
    main()
