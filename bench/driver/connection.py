"""One lean Socket.IO connection (picows) and the instrumented loop it runs on.

The connection speaks Engine.IO 4 / Socket.IO 5 itself: handshake, ping answers, acks matched
by array index (an ack id is the message's index ``k``, so no dict), binary attachments. The
loop's selector is instrumented (:class:`TimedSelector`): when the loop last woke with work
(a reply's receive wait is measured from it) and how much of the time it was busy. Every
wait is bounded by a deadline.
"""
import asyncio
import select
import selectors
import time

from bench.driver import protocol
from bench.driver.store import record_reply

mono = time.monotonic_ns
SELECT_LIMIT = 900  # select() cannot watch descriptors above 1024: epoll beyond this


class TimedSelector:
    """The loop's selector, instrumented: when did the loop last wake with work, and how much
    of the time was it busy (not inside select(), not spinning over an empty poll)."""

    def __init__(self, inner):
        self.inner = inner
        self.epoll_fd = inner.fileno() if isinstance(inner, selectors.EpollSelector) else -1
        self.fine_timer = 0 <= self.epoll_fd < SELECT_LIMIT  # select() watches fds < 1024
        self.woke_ns = self.started_ns = mono()
        self.idle_ns = 0
        self.last_empty = False

    def select(self, timeout=None):
        """The inner selector's select, with wake-up time and idle time recorded."""
        entered = mono()
        if self.last_empty and timeout == 0:
            self.idle_ns += entered - self.woke_ns  # a spin turn that found nothing
        if self.fine_timer and timeout is not None and timeout > 0:
            # epoll_wait's timeout is whole milliseconds (a timer up to 1 ms late); the epoll
            # descriptor itself is readable when an event is ready, and select() sleeps on it
            # with a µs timer
            select.select([self.epoll_fd], [], [], timeout)
            timeout = 0
        events = self.inner.select(timeout)
        self.woke_ns = mono()
        self.idle_ns += self.woke_ns - entered
        self.last_empty = not events
        return events

    def loop_stats(self):
        """The loop's busy and total time: its CPU share net of empty polls."""
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
                    self.acked(k, now)  # a binary ack is complete with its attachment
                elif frame.msg_type == WSMsgType.CLOSE:
                    transport.disconnect()
                return
            # Acks are the hot path: their id sits in the first bytes, so only those are
            # decoded; a 64 KiB echo is never turned into a str just to read its id.
            head = bytes(frame.get_payload_as_memoryview()[:ACK_HEAD]).decode("ascii", "replace")
            if head.startswith("43"):
                self.acked(protocol.parse_ack_id(head), now)
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

        def acked(self, k, now):
            """Message k of this connection got its reply at ``now``: counted once, by the
            one reply rule (store.record_reply), and passed to the ``on_ack`` hook."""
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
        family = socket.AF_INET6 if ":" in parsed.host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
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
    """The WebSocket URL of connection ``i`` (spread over the job's targets)."""
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
    """The source address connection ``i`` binds to, or None (the kernel picks)."""
    return job.source_addresses[i % len(job.source_addresses)] if job.source_addresses else None


CONNECTS_IN_FLIGHT = 200  # handshakes at once per process: a burst beyond overflows backlogs


async def connect_all(job, indices, m):
    """Open the job's connections ``CONNECTS_IN_FLIGHT`` at a time; one clear error if any fails."""
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


def run_loop(coro, connections=1, spin=False):
    """Run ``coro`` on an instrumented asyncio loop. select() keeps µs timer precision but
    cannot watch more than 1024 descriptors; epoll watches any number but its timeouts round
    to 1 ms, so beyond that an epoll loop sleeps in select() on the epoll descriptor
    (:class:`TimedSelector`). A spinning loop never sleeps on a timer and takes epoll."""
    global SELECTOR
    inner = selectors.EpollSelector() if spin or connections > SELECT_LIMIT \
        else selectors.SelectSelector()
    SELECTOR = TimedSelector(inner)
    loop = asyncio.SelectorEventLoop(SELECTOR)
    try:
        return loop.run_until_complete(coro)
    finally:
        loop.close()
