"""Verify a server with one real ``echo`` round trip and find the transport it really serves.

WebSocket first, with the lean client. Where the upgrade is refused, long-polling with the
stock client. The result names the transport and, when WebSocket was refused, why.
"""
import asyncio
import json
import re
import time
from dataclasses import dataclass

from bench.driver import protocol
from bench.driver.connection import connect, run_loop
from bench.driver.store import Messages

PROBE = {"verify": "round trip", "n": 42}


@dataclass(frozen=True)
class Verdict:
    transport: str  # "websocket", "polling" or "" (nothing works)
    note: str  # why websocket was refused / why nothing works


async def _websocket(host, port, timeout, ca_file=None, source=None):
    import ssl

    from picows import WSMsgType

    m = Messages(1)
    context = ssl.create_default_context(cafile=ca_file) if ca_file else None
    conn = await connect(protocol.ws_url(host, port, secure=context is not None), 0, m,
                         timeout, source=source, ssl_context=context)
    reply = asyncio.get_running_loop().create_future()
    conn.on_event = None
    original = conn.on_ws_frame

    def capture(transport, frame):
        if frame.msg_type == WSMsgType.TEXT:
            text = frame.get_payload_as_utf8_text()
            if text.startswith("430") and not reply.done():
                reply.set_result(text)
                return
        original(transport, frame)

    conn.on_ws_frame = capture
    conn.send_text(protocol.event_packet(0, protocol.event_body("echo", PROBE)))
    text = await asyncio.wait_for(reply, timeout)
    conn.close()
    if json.loads(text[3:]) != [PROBE]:
        raise ValueError(f"echo returned {text[:80]!r}")


def _websocket_refusal(exc):
    response = getattr(exc, "response", None)
    if response is not None:
        body = (getattr(exc, "raw_body", None) or b"").decode("utf-8", "replace")
        title = re.search(r"<title>(.*?)</title>", body, re.S)
        text = title.group(1) if title else re.sub(r"<[^>]+>|\s+", " ", body).strip()
        return f"websocket refused: HTTP {int(response.status)} {text[:120]}".strip()
    return f"websocket failed: {type(exc).__name__}: {str(exc)[:160]}"


def _polling(host, port, timeout):
    import socketio

    client = socketio.Client(reconnection=False)
    try:
        client.connect(f"http://{protocol.netloc(host, port)}", transports=["polling"],
                       wait_timeout=timeout)
        reply = client.call("echo", PROBE, timeout=timeout)
        if reply != PROBE:
            raise ValueError(f"echo returned {str(reply)[:80]!r}")
    finally:
        try:
            client.disconnect()
        except Exception:  # noqa: BLE001 - a broken client must not mask the verdict
            pass


def _bounded(fn, args, limit):
    """``fn(*args)`` in a daemon thread, given up after ``limit`` s: the stock client's
    disconnect can hang for tens of seconds on a server that stopped answering."""
    import threading

    box = {}

    def call():
        try:
            box["value"] = fn(*args)
        except Exception as exc:  # noqa: BLE001 - handed to the caller below
            box["error"] = exc

    worker = threading.Thread(target=call, name="verify-polling", daemon=True)
    worker.start()
    worker.join(limit)
    if "error" in box:
        raise box["error"]
    if "value" not in box:
        raise TimeoutError(f"no reply within {limit:g} s")
    return box["value"]


def verify(host, port, timeout=5.0, transport=None, ca_file=None, source=None, traffic=None):
    """One echo over WebSocket, else over polling (or only over ``transport`` when one is
    forced); never raises for a server's failure. ``ca_file``: wss trusting that certificate
    (nginx under ``--tls``); ``source``: the client address to connect from. With ``traffic``
    (a scenario file), the file's first setup and first message instead (see
    :func:`verify_traffic`)."""
    if traffic:
        return verify_traffic(host, port, traffic, timeout, transport)
    ws_note = ""
    if transport in (None, "websocket"):
        try:
            run_loop(_websocket(host, port, timeout, ca_file, source))
            return Verdict("websocket", "")
        except Exception as exc:  # noqa: BLE001 - every failure mode becomes a recorded note
            ws_note = _websocket_refusal(exc)
        if transport == "websocket":
            return Verdict("", ws_note)
    try:
        _bounded(_polling, (host, port, timeout), timeout + 1)
        return Verdict("polling", ws_note)
    except Exception as exc:  # noqa: BLE001
        why = str(exc).strip() or ("no reply within " f"{timeout:g} s"
                                   if isinstance(exc, TimeoutError) else "")
        return Verdict("", "; ".join(filter(None, [
            ws_note, f"polling failed: {type(exc).__name__}: {why[:160]}"])))


def verify_deployment(deployment, timeout=5.0, transport=None):
    """Verify a deployment: a single server as ``verify`` does; a scale-out's servers each
    directly (when clients reach them through a proxy), then every entry point from each
    client source address the driver will use (up to 8), all over WebSocket, so a bad
    server is named instead of measured."""
    backends, targets = deployment.backends, deployment.targets
    sources = (deployment.source_addresses or [None])[:8]
    checks = []
    if targets != backends:
        checks += [(f"server {i + 1}/{len(backends)} at {h}:{p}", h, p, None, None)
                   for i, (h, p) in enumerate(backends)]
    for i, (h, p) in enumerate(targets):
        what = "nginx" if targets != backends else f"server {i + 1}/{len(targets)}"
        checks += [(f"{what} at {h}:{p}" + (f" from {src}" if src else ""), h, p,
                    deployment.ca_file, src) for src in sources]
    if len(checks) == 1:
        _, h, p, ca_file, src = checks[0]
        return verify(h, p, timeout, transport, ca_file, src)
    first = None
    for what, h, p, ca_file, src in checks:
        v = verify(h, p, timeout, "websocket", ca_file, src)
        if v.transport != "websocket":
            return Verdict("", f"{what} failed verification: {v.note or 'no WebSocket'}")
        first = first or v
    return first


# ---------------------------------------------------------------- the user's own traffic

TRAFFIC_NOTE = "scenario file:"  # every failure line of the user's traffic starts so


class TrafficFailed(Exception):
    """The user's traffic got no proper reply; the message is the one line to show."""


def _came_back(conn, seen):
    """What the server sent after our packet: nothing, an error packet, a disconnect, …"""
    errors = [t for t in seen if t.startswith("44")]
    if errors:
        return f"an error packet {errors[0][:160]}"
    if not conn.alive:
        closes = [t for t in seen if t.startswith("41") or t == "1"]
        return "a disconnect" + (f" ({closes[0][:40]})" if closes else "")
    others = [t for t in seen if t != "2"]
    if others:
        return "other packets: " + " | ".join(t[:80] for t in others[:3])
    return "nothing"


async def _traffic_probe(host, port, traffic, timeout):
    from bench.driver import custom

    plan = custom.Plan(traffic)
    ns = plan.namespace
    m = Messages(2, extras=("message",))
    m.deadline_ns = int(timeout * 1e9)
    try:
        conn = await connect(protocol.ws_url(host, port), 0, m, timeout, **plan.connect)
    except ValueError as exc:  # a 44 connect refusal, with its payload
        raise TrafficFailed(f"connect to namespace {ns}: {exc}") from None
    except (asyncio.TimeoutError, TimeoutError):
        raise TrafficFailed(f"connect to namespace {ns}: no answer within {timeout:g} s") \
            from None
    except ConnectionError as exc:
        raise TrafficFailed(f"connect to namespace {ns}: {exc}") from None
    seen = []
    custom.attach(conn, plan, 1, observer=seen.append)
    try:
        if plan.setup:
            event = plan.setup[0][0]
            try:
                await custom.setup_one(conn, plan, 0, timeout)
            except (asyncio.TimeoutError, TimeoutError):
                raise TrafficFailed(f"setup event {event!r} on namespace {ns}: no ack within "
                                    f"{timeout:g} s; came back: {_came_back(conn, seen)}") \
                    from None
        seen.clear()
        event, reply, _ = plan.messages[0]
        m.used, m.conn[0] = 1, 0
        m.intended[0] = m.sent[0] = time.monotonic_ns()
        conn.outstanding += 1
        conn.force_choice = 0
        conn.send_message(0)
        deadline = asyncio.get_running_loop().time() + timeout
        while m.outcome[0] == 0 and conn.alive and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.002)
        if m.outcome[0] == 0:
            wanted = "an ack" if reply is None else f"the event {reply!r}"
            raise TrafficFailed(f"event {event!r} on namespace {ns}: {wanted} did not come "
                                f"within {timeout:g} s; came back: {_came_back(conn, seen)}")
        return (m.received[0] - m.sent[0]) / 1e3
    finally:
        conn.close()


def verify_traffic(host, port, traffic, timeout=5.0, transport=None):
    """The scenario file's first setup (ack awaited) and first message (its reply awaited)
    over WebSocket; the verdict's note is one line naming the event, the namespace and what
    came back. The user's traffic is driven by the lean client, so WebSocket only."""
    if transport == "polling":
        return Verdict("", f"{TRAFFIC_NOTE} the user's traffic is driven over WebSocket only "
                           "(the lean client); polling is not available for it")
    try:
        run_loop(_traffic_probe(host, port, traffic, timeout))
        return Verdict("websocket", "")
    except TrafficFailed as exc:
        return Verdict("", f"{TRAFFIC_NOTE} {exc}")
    except Exception as exc:  # noqa: BLE001 - e.g. the upgrade refused (HTTP 500)
        return Verdict("", f"{TRAFFIC_NOTE} {_websocket_refusal(exc)} (the user's traffic "
                           "needs WebSocket)")


def handler_exception(log_path, offset=0):
    """The last line of the last traceback in the server's log since ``offset`` (an exception
    inside the user's handler), or ""."""
    try:
        with open(log_path, "rb") as f:
            f.seek(offset)
            text = f.read(1 << 20).decode("utf-8", "replace")
    except OSError:
        return ""
    if "Traceback (most recent call last)" not in text:
        return ""
    tail = text[text.rindex("Traceback (most recent call last)"):].splitlines()
    for line in tail[1:]:
        if line and not line.startswith((" ", "\t", "Traceback")):
            return line.strip()[:200]
    return ""


def all_failed_line(rows):
    """The one line that ends a run whose every step failed on the user's traffic, or ""."""
    notes = [str(r.get("note") or "") for r in rows]
    if rows and all(n.startswith(TRAFFIC_NOTE) for n in notes):
        return notes[0]
    return ""
