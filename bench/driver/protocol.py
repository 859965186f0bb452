"""Engine.IO 4 / Socket.IO 5 framing over WebSocket: the few packets the driver needs.

Hand-rolled on purpose: the stock client costs ~0.3 ms per round trip on loopback, which
would be measured as server latency. Each WebSocket message carries one Engine.IO packet.
"""
import json

# Engine.IO packet types: 0 open, 1 close, 2 ping, 3 pong, 4 message. Inside a message,
# Socket.IO types: 0 connect, 1 disconnect, 2 event, 3 ack, 4 connect error, 5 binary event,
# 6 binary ack. So "42" is an event, "43" an ack, "40" a namespace connect.
EIO_OPEN = "0"

WS_PATH = "/socket.io/?EIO=4&transport=websocket"
CONNECT = "40"
DISCONNECT = "41"


def netloc(host, port):
    """``host:port`` as a URL carries it: an IPv6 address goes in brackets (``[::1]:80``)."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def ws_url(host, port, secure=False):
    """The Engine.IO WebSocket URL of a server at ``host:port``."""
    return f"{'wss' if secure else 'ws'}://{netloc(host, port)}{WS_PATH}"


def event_body(event, data):
    """The constant tail of an event packet: ``["event",data]`` serialised once."""
    return json.dumps([event, data], separators=(",", ":"))


def event_packet(ack_id, body):
    """``42<id>[...]``: a Socket.IO EVENT asking for an ack, inside an Engine.IO MESSAGE."""
    return f"42{ack_id}{body}"


def binary_event_packet(ack_id, body):
    """``451-<id>[...]``: a BINARY_EVENT with one attachment (sent as the next frame)."""
    return f"451-{ack_id}{body}"


PLACEHOLDER = {"_placeholder": True, "num": 0}


def parse_binary_ack_id(packet):
    """Ack id of a ``46<n>-<id>[...]`` BINARY_ACK packet, or None."""
    if not packet.startswith("46"):
        return None
    dash = packet.find("-", 2)
    if dash < 0:
        return None
    end = dash + 1
    while end < len(packet) and packet[end].isdigit():
        end += 1
    return int(packet[dash + 1:end]) if end > dash + 1 else None


def parse_ack_id(packet):
    """Ack id of a ``43<id>[...]`` packet, or None when the packet is not an ACK."""
    if not packet.startswith("43"):
        return None
    end = 2
    n = len(packet)
    while end < n and packet[end].isdigit():
        end += 1
    return int(packet[2:end]) if end > 2 else None


def parse_trigger_id(packet):
    """The ``"id"`` of a broadcast event ``42["broadcast",{..."id":N...}]`` without a full
    JSON parse (members see many of these), or None."""
    at = packet.find('"id":')
    if at < 0:
        return None
    end = at + 5
    while end < len(packet) and packet[end].isdigit():
        end += 1
    return int(packet[at + 5:end]) if end > at + 5 else None


def parse_open(packet):
    """Handshake dict of an Engine.IO OPEN packet ``0{...}``; ValueError otherwise."""
    if not packet.startswith(EIO_OPEN):
        raise ValueError(f"expected Engine.IO OPEN, got {packet[:40]!r}")
    return json.loads(packet[1:])


def parse_connect_reply(packet):
    """Socket.IO CONNECT reply ``40{"sid":..}`` → sid; ValueError on ``44`` (refused) or other."""
    if packet.startswith("40"):
        body = split_namespace(packet[2:])[1]
        return json.loads(body).get("sid") if body else None
    if packet.startswith("44"):
        namespace, body = split_namespace(packet[2:])
        where = f" on namespace {namespace}" if namespace != "/" else ""
        raise ValueError(f"connect refused by server{where}: {body[:200]}")
    raise ValueError(f"expected Socket.IO CONNECT reply, got {packet[:40]!r}")


# ---------------------------------------------------------------- namespaces, auth (user traffic)

def ns_prefix(namespace):
    """What follows the packet type in a namespaced packet: "" for "/", else "/chat,"."""
    return "" if namespace in (None, "", "/") else namespace + ","


def connect_packet(namespace="/", auth=None):
    """``40[/ns,][{auth}]``: a Socket.IO CONNECT to ``namespace`` with an auth payload."""
    tail = json.dumps(auth, separators=(",", ":")) if auth is not None else ""
    return "40" + ns_prefix(namespace) + tail


def split_namespace(body):
    """(namespace, rest) of a Socket.IO packet body after its type character."""
    if body.startswith("/"):
        comma = body.find(",")
        if comma < 0:
            return body, ""
        return body[:comma], body[comma + 1:]
    return "/", body


def parse_packet(text):
    """A Socket.IO packet inside an Engine.IO MESSAGE (``4…``) as
    ``(type, namespace, ack_id, attachments, data_text)``; type is "0".."6". None otherwise."""
    if len(text) < 2 or text[0] != "4" or not text[1].isdigit():
        return None
    kind, rest = text[1], text[2:]
    attachments = 0
    if kind in "56":
        dash = rest.find("-")
        if dash > 0 and rest[:dash].isdigit():
            attachments, rest = int(rest[:dash]), rest[dash + 1:]
    namespace, rest = split_namespace(rest)
    end = 0
    while end < len(rest) and rest[end].isdigit():
        end += 1
    ack_id = int(rest[:end]) if end else None
    return kind, namespace, ack_id, attachments, rest[end:]


def user_event_packet(namespace, ack_id, body):
    """``42[/ns,][id][...]``: an event of the user's traffic (``ack_id`` None: no ack asked)."""
    return "42" + ns_prefix(namespace) + ("" if ack_id is None else str(ack_id)) + body
