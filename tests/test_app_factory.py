"""A real app's shape: factories, configuration from the environment, its own dependencies,
and the scenario file ``bench init`` writes from its handlers.

Apps are written to tmp_path (or examples/factory_app) and imported by real child
interpreters; runs start real variant servers. Bad input is one line and exit 2."""
import contextlib
import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from bench.errors import UsageError
from bench.plan import traffic
from tests.test_bad_input import assert_one_line_usage_error

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FACTORY = "examples.factory_app:create_app('production')"
FACTORY_TOML = os.path.join(ROOT, "examples", "factory_app", "traffic.toml")
SECRET = "s3cr3t-value-never-written"
QUICK = ["--quick", "--scenario", "rate", "--rate", "40", "--connections", "2",
         "--duration", "0.5", "--warmup", "0.2", "--deadline-ms", "3000", "--no-report"]

ENV_APP = '''
import os
import sys

from flask import Flask
from flask_socketio import SocketIO


def create_app(config="dev", *, shout=False):
    app = Flask(__name__)
    socketio = SocketIO(app)
    value = os.environ["APP_ECHO"]          # KeyError unless --app-env sets it
    print(f"factory-app: config={config} shout={shout} APP_ECHO={value}", file=sys.stderr,
          flush=True)

    @socketio.on("echo")
    def echo(data):
        return {"env": os.environ.get("APP_ECHO"), "data": data}

    return app
'''

HANDLERS_APP = '''
from flask import Flask
from flask_socketio import Namespace, SocketIO, emit

socketio = SocketIO()


@socketio.on("connect")
def connect(auth):
    return auth.get("key") == "k"


@socketio.on("ask")
def ask(data):
    return {"answer": data["question"], "who": data.get("name")}


@socketio.on("shout")
def shout(text, times):
    emit("echoed", text * times)


@socketio.on("relay")
def relay(data):
    emit("relayed", data, to=data["room"])


@socketio.on("ping_me")
def ping_me():
    pass


class Admin(Namespace):
    def on_stats(self, data):
        return {"n": 1}


socketio.on_namespace(Admin("/admin"))


def create_app():
    app = Flask(__name__)
    socketio.init_app(app)
    return app
'''


def write_app(tmp_path, text, name="app.py"):
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return str(path)


def logs(run_dir):
    folder = os.path.join(run_dir, "logs")
    return "".join(open(os.path.join(folder, n)).read() for n in sorted(os.listdir(folder))
                   if n.endswith(".log"))


def userapp(command, spec, env=None, cwd=ROOT):
    return subprocess.run([sys.executable, os.path.join(ROOT, "servers", "userapp.py"), command,
                           spec], capture_output=True, text=True, timeout=60, cwd=cwd,
                          env=dict(os.environ, **(env or {})))


# --------------------------------------------------------------------------- factories

@pytest.mark.parametrize("call,config,shout", [
    ("create_app()", "dev", False),
    ("create_app('prod')", "prod", False),
    ("create_app('prod', shout=True)", "prod", True),
    ("create_app", "dev", False),                  # a bare function is called, as by Flask
])
def test_factory_with_and_without_arguments(tmp_path, call, config, shout):
    spec = write_app(tmp_path, ENV_APP) + ":" + call
    r = userapp("check", spec, env={"APP_ECHO": "x"})
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["events"] == {"/": ["echo"]}
    assert f"factory-app: config={config} shout={shout} APP_ECHO=x" in r.stderr


def test_the_factory_socketio_is_the_one_init_app_registered(tmp_path):
    """``socketio = SocketIO()`` + ``init_app`` in the factory: the handlers declared on the
    module's SocketIO are found, also those of a class-based namespace."""
    r = userapp("check", write_app(tmp_path, HANDLERS_APP) + ":create_app()")
    assert r.returncode == 0, r.stderr
    info = json.loads(r.stdout)
    assert set(info["events"]["/"]) == {"connect", "ask", "shout", "relay", "ping_me"}
    assert "/admin" in info["namespaces"]


def test_factory_arguments_are_literals_never_evaluated(tmp_path):
    marker = tmp_path / "evaluated"
    spec = write_app(tmp_path, ENV_APP) + f":create_app(open({str(marker)!r}, 'w'))"
    r = userapp("check", spec, env={"APP_ECHO": "x"})
    assert r.returncode == 2 and "must be literals" in r.stderr, r.stderr
    assert not marker.exists()


SPAWNING_APP = '''
import subprocess
import sys

from flask import Flask
from flask_socketio import SocketIO

child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"],
                         stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                         stderr=subprocess.DEVNULL)
with open(PID_FILE, "w") as f:
    f.write(str(child.pid))
app = Flask(__name__)
socketio = SocketIO(app)


@socketio.on("echo")
def echo(data):
    return data
'''


def test_what_the_app_import_starts_is_stopped_with_the_check(tmp_path):
    """The check's child is the leader of its own process group, killed once it answered."""
    import psutil

    from bench.plan.ownapp import check_app

    pid_file = tmp_path / "child.pid"
    app = write_app(tmp_path, SPAWNING_APP.replace("PID_FILE", repr(str(pid_file))))
    info = check_app(app + ":app")
    pid = int(pid_file.read_text())
    try:
        assert info["events"] == {"/": ["echo"]}
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and psutil.pid_exists(pid) and \
                psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
            time.sleep(0.1)
        gone = not psutil.pid_exists(pid) or psutil.Process(pid).status() == \
            psutil.STATUS_ZOMBIE
        assert gone, "the app's own child outlived the check"
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


# --------------------------------------------------------------------------- bench init

def test_init_writes_a_scenario_file_that_loads_and_lists_every_handler(bench, tmp_path):
    spec = write_app(tmp_path, HANDLERS_APP) + ":create_app()"
    out = tmp_path / "traffic.toml"
    r = bench.run("init", "--app", spec, "--out", out, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    loaded = traffic.load(str(out))
    assert loaded["namespace"] == "/"
    messages = {m["event"]: m for m in loaded["messages"]}
    assert set(messages) == {"ask", "shout", "relay", "ping_me"}
    assert messages["ask"]["reply"] == "ack"
    assert messages["ask"]["args"] == [{"name": "TODO", "question": "TODO"}]
    assert messages["shout"]["args"] == ["TODO", "TODO"]         # two parameters
    assert messages["shout"]["reply"] == "event:echoed"          # emits to the sender
    assert messages["relay"]["reply"] == "ack"                    # emits to others only
    assert messages["ping_me"]["args"] == []
    text = out.read_text()
    for line in ("# TODO: it emits 'echoed' instead of returning",
                 "# TODO: it returns nothing and emits relayed to others",
                 "# auth = { key = \"TODO\" }", "# ---- namespace '/admin'",
                 "# event = \"stats\""):
        assert line in text, line
    # never overwritten
    before = out.read_bytes()
    again = bench.run("init", "--app", spec, "--out", out, timeout=120)
    assert_one_line_usage_error(again, "never overwritten")
    assert out.read_bytes() == before


def test_init_reads_the_example_app_with_its_requirement_and_env(bench, tmp_path):
    out = tmp_path / "t.toml"
    r = bench.run("init", "--app", FACTORY, "--app-env", f"SECRET_KEY={SECRET}", "--out", out,
                  timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "examples/factory_app/requirements.txt (found beside the app" in r.stderr
    events = {m["event"]: m["reply"] for m in traffic.load(str(out))["messages"]}
    assert events == {"join": "ack", "render": "ack", "post": "ack", "hello": "ack",
                      "preview": "event:preview"}


# --------------------------------------------------------------------------- bad input

@pytest.mark.parametrize("case,args,needle", [
    ("factory-raises", ["--app", FACTORY],
     "the factory raised RuntimeError: SECRET_KEY is not set"),
    ("factory-raises-its-own-error", ["--app", "examples.factory_app:create_app('nope')"],
     "the factory raised ValueError: unknown config 'nope'"),
    ("app-env-without-equals", ["--app", FACTORY, "--app-env", "SECRET_KEY"],
     "--app-env takes KEY=VALUE, got 'SECRET_KEY'"),
    ("app-env-without-app", ["--app-env", "A=1"], "--app-env is for your app's servers"),
    ("requirements-missing", ["--app", FACTORY, "--app-requirements", "/nonexistent/req.txt"],
     "--app-requirements: no such file '/nonexistent/req.txt'"),
    ("factory-call-not-python", ["--app", "examples.factory_app:create_app('x'"],
     "--app must look like"),
    ("factory-argument-unhashable", ["--app", "examples.factory_app:create_app({[1]: 2})"],
     "the factory's arguments must be literals"),
    ("factory-keyword-twice", ["--app", "examples.factory_app:create_app(x=1, x=2)"],
     "the keyword 'x' is given twice"),
])
def test_bad_app_input_is_one_line(bench, tmp_path, case, args, needle):
    r = bench.run("run", "--out", tmp_path, "--no-report", *args, timeout=300)
    assert_one_line_usage_error(r, needle)
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("connect", ['auth = { token = "{seq}" }', 'query = { id = "x{seq}" }',
                                     'headers = { "X-{seq}" = "1" }'])
def test_seq_in_the_connect_table_is_refused_in_one_line(tmp_path, connect):
    """The connection is not a measured message: "{seq}" there would go out as literal text."""
    path = tmp_path / "t.toml"
    path.write_text(f'[connect]\n{connect}\n\n[[messages]]\nevent = "echo"\nargs = ["{{seq}}"]\n')
    with pytest.raises(UsageError) as caught:
        traffic.load(str(path))
    assert "\"{seq}\" belongs in [[messages]] only" in str(caught.value)
    assert "line 2" in str(caught.value) and "\n" not in str(caught.value)


def test_a_requirement_that_cannot_be_installed_is_named_before_any_server(bench, tmp_path):
    req = tmp_path / "requirements.txt"
    req.write_text("markdown\nno-such-dist-for-bench-tests==0.0.1\n")
    r = bench.run("run", "--app", FACTORY, "--app-env", "SECRET_KEY=x", "--app-requirements",
                  req, "--out", tmp_path / "out", "--no-report", "--variants",
                  "socketio-run-threading", timeout=300)
    lines = [ln for ln in r.stderr.splitlines() if ln.startswith("bench: error")]
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr[-2000:]
    assert len(lines) == 1 and "cannot install 'no-such-dist-for-bench-tests'" in lines[0], \
        r.stderr[-2000:]
    assert not (tmp_path / "out").exists() or os.listdir(tmp_path / "out") == []


def test_a_dry_run_says_what_it_would_layer_and_installs_nothing(bench, tmp_path):
    req = tmp_path / "requirements.txt"
    req.write_text("no-such-dist-for-bench-tests==0.0.1\n")
    r = bench.run("run", "--dry-run", "--app", FACTORY, "--app-env", "SECRET_KEY=x",
                  "--app-requirements", req, "--variants", "socketio-run-threading",
                  "--out", tmp_path / "out", timeout=120)
    assert r.returncode == 0 and "Traceback" not in r.stderr, r.stderr[-2000:]
    (line,) = [ln for ln in r.stderr.splitlines() if "would layer" in ln]
    assert str(req) in line and "no-such-dist-for-bench-tests" in line, line
    assert "socketio-run-threading" in line and "cannot install" not in r.stderr
    assert not (tmp_path / "out").exists()


def test_without_its_requirements_the_app_is_refused_in_one_line(bench, tmp_path):
    """The layer is what lets the app import markdown: an empty requirements file instead of
    the one beside the app leaves it out."""
    empty = tmp_path / "empty.txt"
    empty.write_text("# nothing\n")
    r = bench.run("run", "--app", FACTORY, "--app-env", "SECRET_KEY=x", "--app-requirements",
                  empty, "--out", tmp_path / "out", "--no-report", timeout=300)
    assert r.returncode == 2 and "No module named 'markdown'" in r.stderr, r.stderr[-2000:]
    assert "Traceback" not in r.stderr


# --------------------------------------------------------------------------- end to end

@pytest.mark.slow
def test_app_env_reaches_the_servers_and_secrets_are_masked(bench, tmp_path):
    spec = write_app(tmp_path, ENV_APP) + ":create_app('prod', shout=True)"
    scenario = tmp_path / "echo.toml"
    scenario.write_text('[[messages]]\nevent = "echo"\nargs = [{ n = 1 }]\nreply = "ack"\n')
    variants = ["socketio-run-threading", "flask-run-gevent"]
    r = bench.run("run", "--app", spec, "--scenario-file", scenario, "--variants",
                  ",".join(variants), "--app-env", "APP_ECHO=visible",
                  "--app-env", f"API_TOKEN={SECRET}", "--app-env", f"DB_PASSWORD={SECRET}",
                  "--out", tmp_path / "out", *QUICK, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    run_dir, = bench.run_dirs(str(tmp_path / "out"))
    rows = bench.summary(run_dir)
    rows = rows[rows["repeat"] != "all"]
    assert sorted(rows["variant"]) == sorted(variants)
    assert (rows["ok"] > 0).all() and (rows["ok"] == rows["attempted"]).all(), rows["note"]
    text = logs(run_dir)
    assert text.count("factory-app: config=prod shout=True APP_ECHO=visible") >= len(variants)
    meta_text = open(os.path.join(run_dir, "meta.json")).read()
    assert SECRET not in meta_text
    meta = json.loads(meta_text)
    want = {"APP_ECHO": "visible", "API_TOKEN": "***", "DB_PASSWORD": "***"}
    assert meta["app_override"]["env"] == want
    assert meta["plan"]["options"]["app_env"] == want
    assert "server environment APP_ECHO=visible, API_TOKEN=***, DB_PASSWORD=***" in \
        meta["app_override"]["text"]   # what the report's Run table shows


def flask_variants(bench):
    """Every variant that serves a Flask app and is ready or buildable here (bench list)."""
    from bench.plan import ownapp, registry

    reg = registry.load()
    listed = bench.run("list", timeout=60).stdout
    available = [line.split()[0] for line in listed.splitlines()
                 if line.startswith("  ") and line.split()[1:2] in (["ready"], ["buildable"])]
    return [n for n in available if n in reg.variants and not ownapp.fixed_code_reason(
        reg.variants[n])]


@pytest.mark.slow
def test_factory_app_with_a_requirement_runs_under_every_flask_variant(bench, tmp_path):
    variants = flask_variants(bench)
    assert "socketio-run-gevent" in variants and "flask-run-threading" in variants
    r = bench.run("run", "--app", FACTORY, "--app-env", f"SECRET_KEY={SECRET}",
                  "--app-env", "FACTORY_APP_GREETING=hi", "--scenario-file", FACTORY_TOML,
                  "--variants", ",".join(variants), "--out", tmp_path, *QUICK, timeout=1500)
    assert r.returncode == 0, r.stderr[-3000:]
    run_dir, = bench.run_dirs(str(tmp_path))
    rows = bench.summary(run_dir)
    rows = rows[rows["repeat"] != "all"].set_index("variant")
    assert sorted(rows.index) == sorted(variants)
    for name, row in rows.iterrows():
        if name == "flask-run-eventlet":   # app.run() under eventlet serves no WebSocket
            assert "websocket refused" in row["note"], row["note"]
            continue
        assert row["transport"] == "websocket", (name, row["note"])
        assert row["ok"] > 0 and row["ok"] == row["attempted"], (name, row["note"])
    said = [json.loads(line.split("app_override ", 1)[1]) for line in logs(run_dir).splitlines()
            if "app_override {" in line]
    assert len(said) >= len(variants)   # the factory ran in every server
    meta = bench.meta(run_dir)
    used = {v["environment"] for v in meta["variants"].values()}
    for env in used:
        record = meta["environments"][env]
        assert record["app_requirements_versions"]["markdown"], (env, record)
        assert "-app-" in record["path"], record["path"]
        assert meta["packages"][env]["markdown"] == record["app_requirements_versions"][
            "markdown"]
    assert meta["app_override"]["requirements"]["names"] == ["markdown"]
