"""The reference Socket.IO server (Node ``socket.io`` 4) as a ``--target``: every packet the lean
client writes must be accepted by the implementation the protocol is defined by.

The server is tests/reference_server/server.js (socket.io pinned in its package-lock.json,
installed with ``npm ci``); it serves the handlers of servers/app.py, a ``/chat`` namespace that
checks auth, query and headers, and the events of Flask-SocketIO's example app. Without node
these tests are skipped with the reason."""
import contextlib
import os
import shutil
import signal
import subprocess

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SERVER_DIR = os.path.join(ROOT, "tests", "reference_server")
UPSTREAM = os.path.join(ROOT, "tests", "upstream")
PING_INTERVAL_MS = 2000  # short, so the capacity walk's hold (past one ping) stays short
SMALL = ["--quick", "--duration", "0.8", "--warmup", "0.3", "--rate", "100", "--connections",
         "3", "--deadline-ms", "2000", "--no-report"]
CHAT = """
namespace = "/chat"
[connect]
auth = { token = "bench-secret" }
query = { client = "bench" }
headers = { "X-Client" = "bench" }
[[setup]]
event = "join"
args = [{ room = "lobby" }]
[[messages]]
event = "send_message"
args = [{ room = "lobby", text = "{pad:64}" }]
reply = "ack"
weight = 2
[[messages]]
event = "fetch_history"
args = [{ room = "lobby", ref = "{seq}" }]
reply = "event:history"
"""


def _install():
    """node_modules from the committed lock (``npm ci``), once; the reason to skip, or ""."""
    if not shutil.which("node"):
        return "node is not installed (the reference Socket.IO server runs on node)"
    if os.path.isdir(os.path.join(SERVER_DIR, "node_modules", "socket.io")):
        return ""
    if not shutil.which("npm"):
        return "npm is not installed (needed once: npm ci --prefix tests/reference_server)"
    done = subprocess.run(["npm", "ci", "--no-audit", "--no-fund", "--prefix", SERVER_DIR],
                          capture_output=True, text=True, timeout=300)
    if done.returncode != 0:
        pytest.fail(f"npm ci failed: {done.stderr.strip()[-500:]}", pytrace=False)
    return ""


@contextlib.contextmanager
def serving(bench, host="127.0.0.1"):
    """The Node server on a free port of ``host``, in its own process group, killed at the
    end; yields its URL as ``--target`` takes it."""
    reason = _install()
    if reason:
        pytest.skip(reason)
    from bench.driver.protocol import netloc
    from bench.processes import free_port

    before, since = bench.snapshot()
    port = free_port()
    proc = subprocess.Popen(["node", os.path.join(SERVER_DIR, "server.js"), str(port),
                             str(PING_INTERVAL_MS)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True,
                            env=dict(os.environ, HOST=host))
    try:
        line = proc.stdout.readline().strip()  # "ready PORT" once listening (or EOF: it died)
        if line != f"ready {port}":
            pytest.fail(f"node server said {line!r}: {proc.stderr.read()[-500:]}",
                        pytrace=False)
        yield f"http://{netloc(host, port)}"
    finally:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
        failure = bench.reap_or_fail(before, since, "the node server fixture")
        if failure:
            pytest.fail(failure, pytrace=False)


@pytest.fixture(scope="module")
def node_server(bench):
    """The Node server on 127.0.0.1 for the whole module."""
    with serving(bench) as url:
        yield url


def measured_rows(bench, out):
    run_dir, = bench.run_dirs(str(out))
    rows = bench.summary(run_dir)
    return run_dir, rows[rows["repeat"] != "all"]


def assert_clean(row):
    what = (row["scenario"], row["load_point"], row.get("recipient"), row["note"])
    assert row["ok"] > 0, what
    assert row["errors"] == 0 and row["timeouts"] == 0, what
    assert row["ok"] == row["attempted"], what
    assert row["transport"] == "websocket", what
    # a row may be invalid only for how this shared machine measured it, never for the server
    assert bool(row["valid"]) or bool(row["driver_bound"]) or bool(row["noisy"]), what


def test_every_target_scenario_against_node_socketio(bench, node_server, tmp_path):
    """echo, rate, sweep, payload (binary too), fan-out, connect and capacity, one run."""
    scenarios = ["echo", "rate", "sweep", "payload", "fanout", "connect", "capacity"]
    r = bench.run("run", "--target", node_server, *[a for s in scenarios
                                                    for a in ("--scenario", s)],
                  "--out", tmp_path, *SMALL, "--members", "4", "--fanout-rate", "20",
                  "--connect-rate", "20", "--max-connections", "30", "--sweep-start", "100",
                  "--sweep-max", "200", "--sweep-step-max", "1", timeout=170)
    assert r.returncode == 0, r.stderr[-3000:]
    run_dir, rows = measured_rows(bench, tmp_path)
    assert set(rows["scenario"]) == set(scenarios), r.stderr[-2000:]
    for _, row in rows.iterrows():
        assert_clean(row)
    payloads = rows[rows["scenario"] == "payload"]
    assert payloads["binary"].astype(str).str.lower().eq("true").sum() == 1  # binary acks
    capacity = __import__("pandas").read_csv(os.path.join(run_dir, "capacity.csv"))
    assert (capacity["held"] == capacity["connections"]).all(), capacity.to_dict("records")


def test_ipv6_loopback_target(bench, tmp_path):
    """``--target http://[::1]:PORT``: the driver connects over IPv6 and the run says where."""
    with serving(bench, "::1") as url:
        r = bench.run("run", "--target", url, "--scenario", "echo", "--scenario", "rate",
                      "--out", tmp_path, *SMALL, timeout=120)
    assert r.returncode == 0, r.stderr[-3000:]
    _, rows = measured_rows(bench, tmp_path)
    assert set(rows["scenario"]) == {"echo", "rate"}
    for _, row in rows.iterrows():
        assert_clean(row)


def test_user_traffic_with_namespace_auth_query_headers_setup_and_replies(bench, node_server,
                                                                          tmp_path):
    """The /chat namespace refuses a CONNECT without the token, query or header; acks and a
    reply event matched by {seq} come back; the room relays are counted as ``pushed``."""
    toml = tmp_path / "chat.toml"
    toml.write_text(CHAT)
    r = bench.run("run", "--target", node_server, "--scenario-file", toml, "--scenario", "rate",
                  "--scenario", "echo", "--out", tmp_path / "out", *SMALL, timeout=120)
    assert r.returncode == 0, r.stderr[-3000:]
    _, rows = measured_rows(bench, tmp_path / "out")
    assert set(rows["scenario"]) == {"rate", "echo"}
    for _, row in rows.iterrows():
        assert_clean(row)
        assert row["reply_match"] == "seq" and row["unsolicited"] == 0, row["note"]
    rate = rows[rows["scenario"] == "rate"].iloc[0]
    assert str(rate["pushed"]).startswith("message="), rate["pushed"]  # relays to 2 others
    # the server really checks the token: a wrong one is refused in one line
    bad = tmp_path / "bad.toml"
    bad.write_text(CHAT.replace("bench-secret", "wrong"))
    r = bench.run("run", "--target", node_server, "--scenario-file", bad, "--scenario", "echo",
                  "--out", tmp_path / "bad", *SMALL, timeout=60)
    _, rows = measured_rows(bench, tmp_path / "bad")
    assert not rows.iloc[0]["valid"] and "bad token" in rows.iloc[0]["note"]


def test_file_without_connect_table_sends_no_auth_payload(bench, node_server, tmp_path):
    """No [connect] auth: the CONNECT is a bare ``40`` (socket.io 4 disconnects a CONNECT whose
    auth is not an object, such as the string "None")."""
    toml = tmp_path / "plain.toml"
    toml.write_text('[[messages]]\nevent = "echo"\nargs = [{ x = 1 }]\n')
    r = bench.run("run", "--target", node_server, "--scenario-file", toml, "--scenario", "echo",
                  "--out", tmp_path, *SMALL, timeout=60)
    assert r.returncode == 0, r.stderr[-3000:]
    _, rows = measured_rows(bench, tmp_path)
    assert_clean(rows.iloc[0])
    assert rows.iloc[0]["reply_match"] == "ack"
    assert rows.iloc[0]["pushed"] == "my_response=3"  # the greeting of each connection


def test_example_app_scenario_files_against_node(bench, node_server, tmp_path):
    """The scenario files of Flask-SocketIO's example app: with {seq} every my_response is
    matched by id (the greetings are counted, the row is valid); in order, the greetings make
    the matching ambiguous and the row invalid, with the fix in its note."""
    out = {}
    for name in ("my_event", "my_event_fifo"):
        r = bench.run("run", "--target", node_server, "--scenario-file",
                      os.path.join(UPSTREAM, f"{name}.toml"), "--scenario", "rate",
                      "--out", tmp_path / name, *SMALL, timeout=60)
        assert r.returncode == 0, r.stderr[-3000:]
        out[name] = measured_rows(bench, tmp_path / name)[1].iloc[0]
    seq, fifo = out["my_event"], out["my_event_fifo"]
    assert_clean(seq)
    assert seq["reply_match"] == "seq" and seq["unsolicited"] >= 3, seq["note"]
    assert fifo["reply_match"] == "fifo" and fifo["unsolicited"] >= 3
    assert not fifo["valid"] and "ambiguous" in fifo["note"] and "{seq}" in fifo["note"]



def by_id_and_in_order(bench, url, tmp_path, event, reply):
    """``event`` with reply ``event:REPLY``, closed loop on one connection, once with "{seq}"
    and once without: {"seq"|"fifo": (the measured row, its ok latencies)}."""
    rows = {}
    for name, data in (("seq", "{seq}"), ("fifo", "x")):
        toml = tmp_path / f"{name}.toml"
        toml.write_text(f'[[messages]]\nevent = "{event}"\nargs = [{{ data = "{data}" }}]'
                        f'\nreply = "event:{reply}"\n')
        r = bench.run("run", "--target", url, "--scenario-file", toml, "--scenario",
                      "echo", "--connections", "1", "--out", tmp_path / name, "--quick",
                      "--duration", "1", "--warmup", "0.2", "--no-report", timeout=60)
        assert r.returncode == 0, r.stderr[-3000:]
        run_dir, summary = measured_rows(bench, tmp_path / name)
        samples = bench.samples(run_dir)
        rows[name] = (summary.iloc[0], samples[samples["outcome"] == "ok"]["latency_us"])
    return rows


def test_seq_gives_true_latency_where_in_order_matching_is_fooled(bench, node_server, tmp_path):
    """my_late_event: an unprompted my_response at once, the real one 50 ms later. Matched in
    order, the unprompted one is taken as the reply (latency far below 50 ms) and the row is
    flagged; matched by {seq}, every latency is at least the 50 ms the server waited."""
    rows = by_id_and_in_order(bench, node_server, tmp_path, "my_late_event", "my_response")
    seq, seq_latency = rows["seq"]
    fifo, fifo_latency = rows["fifo"]
    assert seq["valid"] and seq["ok"] >= 5, seq["note"]
    assert seq_latency.min() >= 49_000, seq_latency.describe()  # libuv timers: ±1 ms
    assert seq["unsolicited"] >= seq["ok"]  # each unprompted one, counted
    assert not fifo["valid"] and "ambiguous" in fifo["note"]
    assert fifo_latency.median() < 50_000  # what in-order matching would have reported


def test_one_unprompted_reply_shifting_in_order_matching_is_caught(bench, node_server,
                                                                   tmp_path):
    """my_once_event: a single unprompted my_once_reply before the first real one (20 ms).
    Closed loop, in order: every message is completed by its predecessor's reply and the one
    in surplus arrives after the last message; the driver stays connected for it, so the row
    says its matching is ambiguous. By {seq}: every latency is at least 20 ms."""
    rows = by_id_and_in_order(bench, node_server, tmp_path, "my_once_event", "my_once_reply")
    seq, seq_latency = rows["seq"]
    fifo, _ = rows["fifo"]
    # libuv stamps timers with its loop time, up to 1 ms stale: a 20 ms timer may fire at 19
    assert seq["valid"] and seq_latency.min() >= 19_000, (seq["note"], seq_latency.min())
    assert seq["unsolicited"] == 1, seq["note"]
    assert fifo["unsolicited"] == 1, (fifo["note"], fifo["ok"], fifo["attempted"])
    assert not fifo["valid"] and "ambiguous" in fifo["note"]
    (fifo_dir,) = bench.run_dirs(str(tmp_path / "fifo"))
    report = bench.run("report", fifo_dir, timeout=120)
    assert report.returncode == 0, report.stderr[-2000:]
    with open(os.path.join(fifo_dir, "report.md")) as f:
        assert "fifo · 1 unsolicited" in f.read()   # the report says how replies matched
