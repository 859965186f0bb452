"""Engine.IO 4 / Socket.IO 5 framing (bench/protocol.py).

Pure framing checks first, then the same helpers against real Flask-SocketIO servers over a
real WebSocket spoken by an independent client (websocket-client), so the framing is checked
against what python-socketio actually sends and accepts, not against our own assumptions.
"""
import json
import os
import textwrap

import pytest

from bench import processes
from bench.driver import protocol
from bench.plan import registry
# --------------------------------------------------------------------------- pure framing

def test_ws_url_is_engineio4_websocket_on_the_given_host_and_port():
    assert protocol.ws_url("127.0.0.1", 5123) == \
        "ws://127.0.0.1:5123/socket.io/?EIO=4&transport=websocket"


@pytest.mark.parametrize("ack_id", [0, 7, 10, 99, 12345, 4_999_999])
def test_event_packet_is_42_id_then_json_array(ack_id):
    body = protocol.event_body("echo", {"p": "xy", "n": 1})
    packet = protocol.event_packet(ack_id, body)
    assert packet.startswith(f"42{ack_id}[")
    assert json.loads(packet[2 + len(str(ack_id)):]) == ["echo", {"p": "xy", "n": 1}]


def test_event_body_is_compact_json():
    assert protocol.event_body("echo", {"a": [1, 2]}) == '["echo",{"a":[1,2]}]'


@pytest.mark.parametrize("ack_id", [0, 5, 10, 123, 987654321])
def test_parse_ack_id_reads_every_digit(ack_id):
    assert protocol.parse_ack_id(f'43{ack_id}[{{"p":"x"}}]') == ack_id


def test_parse_ack_id_stops_at_the_payload_even_when_it_starts_with_digits():
    assert protocol.parse_ack_id("4312[3,4]") == 12
    assert protocol.parse_ack_id('437["42"]') == 7


@pytest.mark.parametrize("packet", [
    '42["echo",{}]',          # an event, not an ack
    '4212["echo",{}]',        # an event with an ack id
    '43["no id"]',            # an ack without an id
    "40",                      # namespace connect
    '40{"sid":"abc"}',
    "41",
    "2", "3", "6",             # ping, pong, noop
    '0{"sid":"x"}',
    '461-12[{"_placeholder":true,"num":0}]',  # binary ack is not a plain ack
    "",
])
def test_parse_ack_id_is_none_for_non_ack_packets(packet):
    assert protocol.parse_ack_id(packet) is None


def test_roundtrip_event_to_ack_id():
    """What a server does with our event (strip 42, echo the id with 43) parses back."""
    for k in (0, 1, 9, 10, 11, 100, 65535, 1_000_000):
        packet = protocol.event_packet(k, protocol.event_body("echo", {"k": k}))
        reply = "43" + packet[2:].split("[", 1)[0] + json.dumps([{"k": k}])
        assert protocol.parse_ack_id(reply) == k


def test_parse_open_returns_the_handshake():
    info = protocol.parse_open('0{"sid":"s1","upgrades":[],"pingInterval":25000,'
                               '"pingTimeout":20000,"maxPayload":1000000}')
    assert info["sid"] == "s1" and info["pingInterval"] == 25000


@pytest.mark.parametrize("packet", ["40", '40{"sid":"x"}', "2", '42["x"]', "0{not json", ""])
def test_parse_open_rejects_anything_else(packet):
    with pytest.raises(ValueError):
        protocol.parse_open(packet)


def test_parse_connect_reply_returns_the_sid():
    assert protocol.parse_connect_reply('40{"sid":"Abc123"}') == "Abc123"


def test_parse_connect_reply_without_body_is_none():
    assert protocol.parse_connect_reply("40") is None


def test_parse_connect_reply_refusal_44_raises_with_the_servers_message():
    with pytest.raises(ValueError, match="refused") as info:
        protocol.parse_connect_reply('44{"message":"Connection rejected by server"}')
    assert "Connection rejected by server" in str(info.value)


@pytest.mark.parametrize("packet", ['0{"sid":"x"}', '42["echo"]', "41", "2", ""])
def test_parse_connect_reply_rejects_other_packets(packet):
    with pytest.raises(ValueError):
        protocol.parse_connect_reply(packet)


# --------------------------------------------------------------------------- real servers

def _recv_skipping_pings(ws):
    """Next packet that is not an Engine.IO ping (answered with a pong, as a client must)."""
    for _ in range(50):
        packet = ws.recv()
        if packet == "2":
            ws.send("3")
            continue
        return packet
    raise AssertionError("only pings received")


@pytest.fixture
def serve(tmp_path):
    """Start a real variant server (optionally with a custom app) via the real launcher."""
    import contextlib

    stack = contextlib.ExitStack()

    def start(variant_name, app=None, pythonpath=None):
        variant = registry.load().variants[variant_name]
        env = dict(os.environ)
        if pythonpath:
            env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(pythonpath),
                                                              env.get("PYTHONPATH")]))
        return stack.enter_context(processes.serving(
            lambda port: variant.argv(port, app=app), str(tmp_path / "server.log"),
            ready_timeout=30, env=env))

    with stack:
        yield start


@pytest.mark.slow
def test_framing_against_a_real_flask_socketio_server(serve):
    import websocket

    server = serve("socketio-run-eventlet")
    ws = websocket.create_connection(protocol.ws_url(processes.HOST, server.port), timeout=10)
    try:
        info = protocol.parse_open(ws.recv())
        assert info["sid"] and info["pingInterval"] > 0
        ws.send(protocol.CONNECT)
        sid = protocol.parse_connect_reply(_recv_skipping_pings(ws))
        assert isinstance(sid, str) and sid
        for k in (0, 9, 10, 123456):
            data = {"p": "x" * 20, "k": k}
            ws.send(protocol.event_packet(k, protocol.event_body("echo", data)))
            reply = _recv_skipping_pings(ws)
            assert protocol.parse_ack_id(reply) == k, reply
            assert json.loads(reply[2 + len(str(k)):]) == [data]
        ws.send(protocol.DISCONNECT)
    finally:
        ws.close()


@pytest.mark.slow
def test_parse_connect_reply_raises_on_a_real_servers_refusal(serve, tmp_path):
    """A real app whose connect handler refuses: the server's 44 packet is a ValueError."""
    (tmp_path / "refusing_app.py").write_text(textwrap.dedent("""
        from servers.app import create_app

        app, socketio = create_app(async_mode="threading")


        @socketio.on("connect")
        def refuse(auth=None):
            return False
    """))
    import websocket

    server = serve("socketio-run-threading", app="refusing_app:app", pythonpath=tmp_path)
    ws = websocket.create_connection(protocol.ws_url(processes.HOST, server.port), timeout=10)
    try:
        protocol.parse_open(ws.recv())
        ws.send(protocol.CONNECT)
        reply = _recv_skipping_pings(ws)
        assert reply.startswith("44"), reply
        with pytest.raises(ValueError, match="refused"):
            protocol.parse_connect_reply(reply)
    finally:
        ws.close()
