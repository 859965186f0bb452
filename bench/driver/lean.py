"""Driver worker: a lean Socket.IO client (picows) firing echo round trips.

Runs as its own process (``python -m bench.driver.lean JOB.json``), pinned to the driver core, so
it never shares an interpreter with the harness. Every message has an index ``k`` that is
also its Socket.IO ack id, so an ack is matched by array index, without a dict. Arrays are
preallocated and bounded: a load loop can never run past its count or its deadline.

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
import selectors
import signal
import sys
import time

import numpy as np

from bench.driver import protocol, store
# The store's names, also read through this module by the drivers built on it:
from bench.driver.store import (DISCONNECT, ERROR, OK, TIMEOUT, UNSENT,  # noqa: F401
                                Messages, record_reply)
from bench.machine import raise_nofile
from bench.plan.job import Job

mono = time.monotonic_ns
SELECT_LIMIT = 900  # select() cannot watch descriptors above 1024: epoll beyond this


class TimedSelector:
    """The loop's selector, instrumented: when did the loop last wake with work, and how much
    of the time was it busy (not inside select(), not spinning over an empty poll)."""

    def __init__(self, inner):
        self.inner = inner
        self.woke_ns = self.started_ns = mono()
        self.idle_ns = 0
        self.last_empty = False

    def select(self, timeout=None):
        entered = mono()
        if self.last_empty and timeout == 0:
            self.idle_ns += entered - self.woke_ns  # a spin turn that found nothing
        events = self.inner.select(timeout)
        self.woke_ns = mono()
        self.idle_ns += self.woke_ns - entered
        self.last_empty = not events
        return events

    def loop_stats(self):
        total = mono() - self.started_ns
        return {"busy_ns": max(0, total - self.idle_ns), "total_ns": total}

    def __getattr__(self, name):
        return getattr(self.inner, name)


SELECTOR = None  # the running loop's TimedSelector (one loop per driver process)


def woke_ns():
    """When this process's loop last woke with work (None outside a lean driver loop): a
    reply's receive wait is measured from it."""
    return SELECTOR.woke_ns if SELECTOR else None


ACK_HEAD = 32  # "43" / "461-" plus an ack id of up to 20 digits fits


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
            self.last_ping_ns = 0  # when the server last pinged (capacity: ping timeouts)
            self.pings = 0
            self.connect_packet = protocol.CONNECT  # namespace and auth: protocol.connect_packet

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
                self.last_ping_ns, self.pings = now, self.pings + 1
            elif packet.startswith("42"):
                if self.on_event is not None:
                    self.on_event(self, packet, now)
            elif self.stage == "open":
                try:
                    self.open_ns = now
                    self.handshake_info = protocol.parse_open(packet)
                    self.stage = "connect"
                    transport.send(WSMsgType.TEXT, self.connect_packet.encode())
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
            if k is not None and record_reply(self.messages, k, now, woke_ns()):
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


async def connect(url, index, messages, timeout, stamps=None, source=None, ssl_context=None,
                  namespace="/", auth=None, query=None, headers=None, on_event=None):
    """Open one WebSocket and complete the Engine.IO and Socket.IO handshakes.

    With ``stamps`` (a dict), record when TCP connected, the upgrade completed and the
    Engine.IO OPEN and Socket.IO CONNECT replies arrived (monotonic ns), and which stage
    failed, for the connect scenario. ``source``: bind the client socket to this address
    first (spreads clients over 127.0.0.x for hash-balancing proxies and port ranges).
    ``ssl_context``: wss (a ``wss://`` url).
    ``namespace``/``auth`` go in the Socket.IO CONNECT packet, ``query`` in the URL,
    ``headers`` in the HTTP upgrade request (the user's traffic, bench/driver/custom.py);
    ``on_event`` sees the events that arrive during the handshake (a connect handler's emits).
    """
    from urllib.parse import urlencode
    import socket

    from picows import ws_connect

    cls = _listener_class()
    holder = {}
    stamps = {} if stamps is None else stamps

    def factory():
        holder["c"] = cls(index, messages)
        holder["c"].on_event = on_event
        if auth is not None or namespace not in (None, "/"):
            holder["c"].connect_packet = protocol.connect_packet(namespace, auth)
        return holder["c"]

    if query:
        url += ("&" if "?" in url else "?") + urlencode(query)

    async def tcp(parsed):
        loop = asyncio.get_running_loop()
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setblocking(False)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            if source:
                sock.bind((source, 0))
            await loop.sock_connect(sock, (parsed.host, parsed.port))
        except BaseException:
            sock.close()
            raise
        stamps["tcp"], stamps["failed"] = mono(), "upgrade"
        return sock

    stamps["failed"] = "tcp"
    await asyncio.wait_for(ws_connect(factory, url, websocket_handshake_timeout=timeout,
                                      socket_factory=tcp, ssl_context=ssl_context,
                                      extra_headers=headers or None), timeout)
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


def send_recorded(conn, m, k, body, now):
    """Send message ``k`` on ``conn`` now, its send time recorded and it counted as waiting."""
    m.sent[k] = now
    conn.outstanding += 1
    conn.send_message(k, body)


def url_for(job, i):
    host, port = job.targets[i % len(job.targets)]
    return protocol.ws_url(host, port, secure=bool(job.ca_file))


_SSL = {}


def ssl_for(job):
    """wss: a context trusting exactly the job's certificate (nginx's self-signed one under
    ``--tls``), hostname checked against it; None for ws."""
    if not job.ca_file:
        return None
    if job.ca_file not in _SSL:
        import ssl

        _SSL[job.ca_file] = ssl.create_default_context(cafile=job.ca_file)
    return _SSL[job.ca_file]


def source_for(job, i):
    return job.source_addresses[i % len(job.source_addresses)] if job.source_addresses else None


CONNECTS_IN_FLIGHT = 200  # handshakes at once per process: a burst beyond overflows backlogs


async def connect_all(job, indices, m):
    gate = asyncio.Semaphore(CONNECTS_IN_FLIGHT)

    async def one(i):
        async with gate:
            return await connect(url_for(job, i), i, m, job.deadline,
                                 source=source_for(job, i), ssl_context=ssl_for(job))
    conns = await asyncio.gather(*(one(i) for i in indices), return_exceptions=True)
    failed = [c for c in conns if isinstance(c, BaseException)]
    if failed:  # one clear line, every handshake finished or failed (none left running)
        for c in conns:
            if not isinstance(c, BaseException):
                c.close()
        first = failed[0]
        raise ConnectionError(f"{len(failed)} of {len(conns)} connections failed "
                              f"({type(first).__name__}: {str(first)[:80]})")
    return conns


async def wait_until(t_ns, spin):
    """Sleep until ``t_ns``; spinning, keep polling the sockets (select(0)) instead of
    sleeping in the kernel, so replies are stamped and sends leave without a wake-up."""
    if spin:
        while mono() < t_ns:
            await asyncio.sleep(0)
    else:
        delay = (t_ns - mono()) / 1e9
        if delay > 0:
            await asyncio.sleep(delay)


async def wait_for_replies(pending, until_ns, spin):
    """Wait while ``pending()`` holds, at most until ``until_ns``."""
    while pending() and mono() < until_ns:
        if spin:
            await asyncio.sleep(0)
        else:
            await asyncio.sleep(min(0.005, max(0.0, (until_ns - mono()) / 1e9)))


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


def open_schedule(job, t0):
    """This process's slice of the global schedule: message j goes to connection j % C at
    its intended time, so the total rate is exactly R. Uniform: t0 + j / R (connections
    staggered evenly). Poisson: exponential gaps of mean 1 / R from ``job.seed``, the same
    in every driver process, so their slices interleave into one Poisson stream."""
    total_conns, rate = job.total_conns, job.rate
    n_total = int(rate * (job.warmup + job.duration))
    j = np.arange(n_total, dtype=np.int64)
    if job.arrivals == "poisson":
        gaps = np.random.default_rng(job.seed).exponential(1e9 / rate, n_total)
        offsets = np.cumsum(gaps) - gaps[0] if n_total else gaps
    else:
        offsets = j * (1e9 / rate)
    mine = np.isin(j % total_conns, np.asarray(job.conns, dtype=np.int64))
    keep = mine & (offsets < job.window_ns)
    times = t0 + np.round(offsets[keep]).astype(np.int64)
    return (j[keep] % total_conns).astype(np.int32), times


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


async def settle_and_close(m, conns, job):
    """Wait for outstanding replies until the last message's deadline, then end the rest by
    the one settle rule (bench/driver/store.py) and close every connection."""
    last_intended = int(m.intended[:m.used].max()) if m.used else mono()
    until = max(mono(), last_intended + m.deadline_ns)
    await wait_for_replies(lambda: any(c.outstanding > 0 and c.alive for c in conns), until,
                           job.spin)
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
    times = t0 + np.round(np.arange(n_triggers) * (1e9 / rate)).astype(np.int64)
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
    times = t0 + np.round(np.arange(n) * (1e9 / rate)).astype(np.int64)
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


def run_loop(coro, connections=1, spin=False):
    """Run ``coro`` on an instrumented asyncio loop. select() keeps µs timer precision
    (epoll's timeouts round to 1 ms) but cannot watch more than 1024 descriptors; a
    spinning loop never sleeps on a timer, so it takes epoll, as do many connections."""
    global SELECTOR
    inner = selectors.EpollSelector() if spin or connections > SELECT_LIMIT \
        else selectors.SelectSelector()
    SELECTOR = TimedSelector(inner)
    loop = asyncio.SelectorEventLoop(SELECTOR)
    try:
        return loop.run_until_complete(coro)
    finally:
        loop.close()


def process_job(argv):
    """A driver process's start: its job, the open-file limit raised, pinned, tight timers."""
    job = Job.load(argv[0])
    raise_nofile()
    if job.cpus:
        os.sched_setaffinity(0, job.cpus)
    tighten_timer_slack()
    return job


def main(argv=None):
    job = process_job(sys.argv[1:] if argv is None else argv)
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
    print("done " + json.dumps(dict(SELECTOR.loop_stats(), **m.counters)), flush=True)


def save(m, path):
    tmp = path + ".tmp.npz"
    np.savez(tmp, **m.trimmed())
    os.replace(tmp, path)


if __name__ == "__main__":
    main()
