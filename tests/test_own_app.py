"""Your own app: ``--app``, ``--scenario-file`` and the server knobs, end to end.

Real servers (the example chat app, which has no ``echo``) under a threading, a gevent and an
eventlet variant; the driver speaks the app's own events. Bad input is one line and exit 2."""
import json
import os
import textwrap

import pytest

from tests.test_bad_input import assert_one_line_usage_error

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CHAT_APP = os.path.join(ROOT, "examples", "chat_app.py") + ":app"
CHAT_TOML = os.path.join(ROOT, "examples", "chat.toml")
SMALL = ["--quick", "--duration", "0.6", "--warmup", "0.2", "--rate", "60", "--connections",
         "2", "--deadline-ms", "2000", "--no-report"]


def logs(run_dir):
    text = ""
    for name in sorted(os.listdir(os.path.join(run_dir, "logs"))):
        with open(os.path.join(run_dir, "logs", name)) as f:
            text += f.read()
    return text


# --------------------------------------------------------------------------- end to end

@pytest.mark.slow
def test_chat_app_with_its_own_events_under_three_async_modes(bench, tmp_path):
    variants = ["flask-run-threading", "socketio-run-gevent", "socketio-run-eventlet"]
    r = bench.run("run", "--app", CHAT_APP, "--scenario-file", CHAT_TOML, "--variants",
                  ",".join(variants), "--scenario", "rate", "--out", tmp_path, *SMALL,
                  timeout=180)
    assert r.returncode == 0, r.stderr[-3000:]
    run_dir, = bench.run_dirs(str(tmp_path))
    rows = bench.summary(run_dir)
    rows = rows[rows["repeat"] != "all"]
    assert sorted(rows["variant"]) == sorted(variants)
    for _, row in rows.iterrows():
        assert row["transport"] == "websocket", row["note"]
        assert row["ok"] > 0 and row["ok"] == row["attempted"], (row["variant"], row["note"])
        assert row["timeouts"] == 0
    meta = bench.meta(run_dir)
    override = meta["app_override"]
    assert override["app"] == CHAT_APP
    assert {v: p["async_mode"] for v, p in override["per_variant"].items()} == {
        "flask-run-threading": "threading", "socketio-run-gevent": "gevent",
        "socketio-run-eventlet": "eventlet"}
    assert "re-initialised" in override["text"]
    assert meta["scenario_file"] == CHAT_TOML
    # each server really ran the app's own SocketIO in the variant's mode
    said = [json.loads(line.split("app_override ", 1)[1])
            for line in logs(run_dir).splitlines() if "launch: app_override" in line]
    assert sorted(s["async_mode"] for s in said) == ["eventlet", "gevent", "threading"]


@pytest.mark.slow
def test_closed_loop_mixes_ack_and_event_replies(bench, tmp_path):
    """echo (closed loop) over the chat traffic: both of its message kinds come back, so the
    ack and the event:NAME reply paths are both exercised (1 connection: no relays)."""
    r = bench.run("run", "--app", CHAT_APP, "--scenario-file", CHAT_TOML, "--variants",
                  "socketio-run-threading", "--scenario", "echo", "--out", tmp_path,
                  "--quick", "--duration", "0.5", "--warmup", "0.1", timeout=180)
    assert r.returncode == 0, r.stderr[-3000:]
    run_dir, = bench.run_dirs(str(tmp_path))
    row = bench.summary(run_dir).iloc[0]
    assert row["ok"] >= 20 and row["ok"] == row["attempted"], row["note"]
    with open(os.path.join(run_dir, "report.md")) as f:
        report = f.read()
    assert "| app override |" in report and "| scenario file |" in report


@pytest.mark.slow
def test_target_with_scenario_file_measures_any_socketio_server(bench, tmp_path):
    """--target URL --scenario-file: the chat app started by hand, measured from outside."""
    from bench import processes
    from bench.plan import registry

    variant = registry.load().variants["socketio-run-threading"]
    log = str(tmp_path / "server.log")
    with processes.serving(lambda port: variant.argv(port, app=CHAT_APP), log) as server:
        r = bench.run("run", "--target", f"http://127.0.0.1:{server.port}", "--scenario-file",
                      CHAT_TOML, "--scenario", "rate", "--out", tmp_path / "out", *SMALL,
                      timeout=120)
    assert r.returncode == 0, r.stderr[-3000:]
    run_dir, = bench.run_dirs(str(tmp_path / "out"))
    row = bench.summary(run_dir).iloc[0]
    assert row["ok"] > 0 and row["ok"] == row["attempted"], row["note"]


@pytest.mark.slow
def test_server_knobs_reach_the_server_and_meta(bench, tmp_path):
    r = bench.run("run", "--variants", "socketio-run-threading", "--scenario", "echo",
                  "--ping-interval", "2", "--ping-timeout", "3", "--async-handlers", "off",
                  "--max-http-buffer-size", "200000", "--ws-compression", "off",
                  "--out", tmp_path, "--quick", "--duration", "0.3", "--warmup", "0.1",
                  "--no-report", timeout=120)
    assert r.returncode == 0, r.stderr[-3000:]
    run_dir, = bench.run_dirs(str(tmp_path))
    meta = bench.meta(run_dir)
    assert meta["server_knobs"]["ping_interval"] == 2.0
    assert meta["server_knobs"]["ws_compression"].startswith("off")
    held = [json.loads(line.split("knobs ", 1)[1]) for line in logs(run_dir).splitlines()
            if "launch: knobs" in line]
    assert held and held[0]["ping_interval"] == 2.0 and held[0]["ping_timeout"] == 3.0
    assert held[0]["async_handlers"] is False and held[0]["max_http_buffer_size"] == 200000


# --------------------------------------------------------------------------- verification

BROKEN_APP = '''
from flask import Flask
from flask_socketio import ConnectionRefusedError, SocketIO, emit

app = Flask(__name__)
socketio = SocketIO(app)


@socketio.on("connect")
def connect(auth):
    if not auth or auth.get("token") != "t":
        raise ConnectionRefusedError("who are you")


@socketio.on("crash")
def crash(data):
    return 1 / 0


@socketio.on("quiet")
def quiet(data):
    emit("something_else", data)
'''


def write(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return str(path)


@pytest.mark.slow
@pytest.mark.parametrize("event,reply,auth,needles", [
    ("crash", "ack", "t", ["event 'crash' on namespace /", "handler raised: ZeroDivisionError"]),
    ("quiet", "event:answer", "t", ["event 'quiet' on namespace /", "'answer' did not come",
                                    "came back: other packets: 42[\"something_else\""]),
    ("quiet", "ack", "wrong", ["connect to namespace /", "connect refused", "who are you"]),
], ids=["handler-raises", "reply-event-never-comes", "connect-refused"])
def test_failed_verification_is_one_line_in_the_users_terms(bench, tmp_path, event, reply,
                                                            auth, needles):
    app = write(tmp_path, "broken_app.py", BROKEN_APP) + ":app"
    toml = write(tmp_path, "t.toml", f'''
        [connect]
        auth = {{ token = "{auth}" }}
        [[messages]]
        event = "{event}"
        args = [{{ n = 1 }}]
        reply = "{reply}"
        ''')
    out = tmp_path / "out"
    r = bench.run("run", "--app", app, "--scenario-file", toml, "--variants",
                  "flask-run-threading", "--scenario", "echo", "--out", out, "--quick",
                  "--deadline-ms", "1000", "--no-report", timeout=120)
    assert r.returncode == 2, r.stderr[-3000:]
    assert "Traceback" not in r.stderr.splitlines()[-1]
    last = r.stderr.strip().splitlines()[-1]
    assert last.startswith("bench: error: scenario file:"), last
    for needle in needles:
        assert needle in last, (needle, last)
    assert "TimeoutError: " not in last


# --------------------------------------------------------------------------- bad input

NOT_APP = '''
from flask import Flask
number = 3
plain = Flask(__name__)
'''


def bad_cases(tmp_path):
    write(tmp_path, "notapp.py", NOT_APP)
    unknown_reply = write(tmp_path, "reply.toml", '''
        [[messages]]
        event = "send_message"
        args = [{ text = "hi" }]
        reply = "answer"
        ''')
    unknown_key = write(tmp_path, "key.toml", '''
        namespace = "/chat"

        [[messages]]
        event = "send_message"
        wieght = 3
        ''')
    syntax = write(tmp_path, "syntax.toml", '''
        [[messages]]
        event = "send_message
        ''')
    no_ns = write(tmp_path, "ns.toml", '''
        namespace = "/lobby"
        [[messages]]
        event = "send_message"
        ''')
    missing_handler = write(tmp_path, "handler.toml", '''
        namespace = "/chat"
        [[messages]]
        event = "shout"
        ''')
    return [
        ("missing-module", ["--app", "no_such_module_here:app"], "no module named"),
        ("missing-file", ["--app", "nowhere/app.py:app"], "no such file"),
        ("missing-attribute", ["--app", "notapp:application"], "has no attribute 'application'"),
        ("not-a-flask-app", ["--app", "notapp:number"], "not a Flask app"),
        ("flask-app-without-socketio", ["--app", "notapp:plain"], "has no SocketIO"),
        ("app-without-echo", ["--app", CHAT_APP], "has no 'echo' handler"),
        ("seed-variant", ["--app", CHAT_APP, "--scenario-file", CHAT_TOML, "--variants",
                          "seed-socketio-run"], "cannot run under seed-socketio-run"),
        ("unknown-reply-kind", ["--scenario-file", unknown_reply],
         "line 5: messages[1].reply: unknown reply kind 'answer'"),
        ("unknown-key", ["--scenario-file", unknown_key], "line 6: messages[1].wieght"),
        ("toml-syntax", ["--scenario-file", syntax], "line 3"),
        ("missing-scenario-file", ["--scenario-file", str(tmp_path / "none.toml")],
         "cannot read"),
        ("namespace-not-served", ["--app", CHAT_APP, "--scenario-file", no_ns],
         "does not serve namespace '/lobby'"),
        ("handler-missing", ["--app", CHAT_APP, "--scenario-file", missing_handler],
         "no handler for event 'shout' on namespace '/chat'"),
        ("fanout-with-file", ["--scenario-file", CHAT_TOML, "--scenario", "fanout"],
         "'fanout' sends the harness's own events"),
        ("file-over-polling", ["--scenario-file", CHAT_TOML, "--client", "python-socketio"],
         "lean client over WebSocket only"),
        ("ws-compression-on", ["--ws-compression", "on"], "no WebSocket compression switch"),
        ("async-handlers-bad", ["--async-handlers", "yes"], "--async-handlers takes on or off"),
        ("knobs-with-target", ["--target", "http://127.0.0.1:9", "--ping-interval", "5"],
         "cannot reach it"),
    ]


CASE_IDS = ["missing-module", "missing-file", "missing-attribute", "not-a-flask-app",
            "flask-app-without-socketio", "app-without-echo", "seed-variant",
            "unknown-reply-kind", "unknown-key", "toml-syntax", "missing-scenario-file",
            "namespace-not-served", "handler-missing", "fanout-with-file", "file-over-polling",
            "ws-compression-on", "async-handlers-bad", "knobs-with-target"]


@pytest.mark.parametrize("case", CASE_IDS)
def test_own_app_bad_input_is_one_line(bench, tmp_path, case):
    cases = {c[0]: c for c in bad_cases(tmp_path)}
    _, args, needle = cases[case]
    out = tmp_path / "out"
    out.mkdir()
    if "--variants" not in args and "--target" not in args:
        args = ["--variants", "flask-run-threading", *args]
    r = bench.run("run", "--out", out, "--no-report", *args, cwd=str(tmp_path), timeout=60)
    assert_one_line_usage_error(r, needle, out)


# --------------------------------------------------------------------------- units

def test_pad_expands_to_bytes_and_payload_overrides_it():
    from bench.plan.traffic import expand

    assert expand([{"t": "{pad:5}"}, "a{pad:2}b", 3]) == [{"t": "xxxxx"}, "axxb", 3]
    assert expand(["{pad:5}"], pad=8) == ["x" * 8]


def test_namespaced_packets_round_trip():
    from bench.driver import protocol

    assert protocol.connect_packet("/chat", {"token": "t"}) == '40/chat,{"token":"t"}'
    assert protocol.connect_packet("/", None) == "40"
    assert protocol.parse_packet('43/chat,17[{"id":1}]') == ("3", "/chat", 17, 0, '[{"id":1}]')
    assert protocol.parse_packet('42["history",[]]') == ("2", "/", None, 0, '["history",[]]')
    assert protocol.parse_packet('461-/chat,5[{"_placeholder":true,"num":0}]')[:4] == (
        "6", "/chat", 5, 1)
    assert protocol.parse_connect_reply('40/chat,{"sid":"abc"}') == "abc"
    with pytest.raises(ValueError, match="who are you"):
        protocol.parse_connect_reply('44/chat,{"message":"who are you"}')


def test_user_app_keeps_handlers_declared_after_socketio_and_takes_the_mode():
    """servers/userapp.take_over: the re-initialised SocketIO keeps every handler (also those
    decorated after SocketIO(app), which went straight onto the first server)."""
    from flask import Flask
    from flask_socketio import SocketIO

    from servers.userapp import take_over

    app = Flask("t")
    sio = SocketIO(app, async_mode="eventlet")

    @sio.on("hello", namespace="/x")
    def hello(data):
        return data

    change = take_over(app, sio, {"async_mode": "threading", "ping_interval": 7})
    assert sio.async_mode == "threading" and sio.server.eio.ping_interval == 7
    assert "hello" in sio.server.handlers["/x"]
    assert change["app_async_mode"] == "eventlet"
    assert change["changed"]["async_mode"] == ["eventlet", "threading"]
    assert app.wsgi_app.engineio_app is sio.server  # one middleware, the new server's
    assert not hasattr(app.wsgi_app.wsgi_app, "engineio_app")
