"""Who may join a distributed run and what a worker agrees to load, on loopback with real
processes: a worker holding the wrong cluster token, a process that speaks Locust's wire to
the master and re-sends, alters or spoofs messages, a worker whose --allow-target excludes
the step's target, and a master asked to bind beyond loopback without a token."""
import hashlib
import importlib.metadata
import os
import secrets
import socket
import time

import msgpack
import pytest
import zmq

from bench import __version__
from bench.distributed.seal import Channel
from bench import processes
from test_distributed import (DURATION, RATE, finish, measured_row, refserver,  # noqa: F401
                              run_args)

ENV_VAR = "BENCH_CLUSTER_TOKEN"


def clean_env(**extra):
    env = {k: v for k, v in os.environ.items() if k != ENV_VAR}
    env.update(extra)
    return env


def token_file(tmp_path, name="token"):
    token = secrets.token_hex(32)
    path = tmp_path / name
    path.write_text(token + "\n")
    return token, str(path)


def fingerprint(token):
    return hashlib.sha256(token.encode()).hexdigest()[:12]


def master(bench, url, out, port, *extra, expect=1):
    return bench.popen(*run_args(url, out, "--duration", DURATION, "--expect-workers", expect,
                                 "--master-bind", f"127.0.0.1:{port}", "--worker-wait", 60,
                                 *extra), env=clean_env())


def worker(bench, port, *extra, env=None):
    return bench.popen("worker", "--master", f"127.0.0.1:{port}", "--connect-timeout", 30,
                       *extra, env=env or clean_env())


class WirePeer:
    """A process on the network that speaks Locust's wire (ZeroMQ DEALER, msgpack frames of
    ``(type, data, node_id)``) to the master, the way a worker's engine does."""

    def __init__(self, port, node):
        self.node = node
        self.ctx = zmq.Context()
        self.sock = self.ctx.socket(zmq.DEALER)
        self.sock.setsockopt(zmq.IDENTITY, node.encode())
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.connect(f"tcp://127.0.0.1:{port}")

    def frame(self, kind, data, node=None):
        return msgpack.dumps((kind, data, node or self.node))

    def send(self, frame):
        self.sock.send(frame)

    def recv(self, kind, timeout):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.sock.poll(200):
                got, data, _ = msgpack.loads(self.sock.recv(), raw=False)
                if got == kind:
                    return data
        raise AssertionError(f"no {kind} from the master within {timeout} s")

    def close(self):
        self.sock.close(0)
        self.ctx.term()


class WireMaster:
    """A process that speaks Locust's wire as a master does (ZeroMQ ROUTER) to a real worker."""

    def __init__(self, port):
        self.ctx = zmq.Context()
        self.sock = self.ctx.socket(zmq.ROUTER)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.bind(f"tcp://127.0.0.1:{port}")

    def send(self, node, frame):
        self.sock.send_multipart([node.encode(), frame])

    def recv(self, kind, timeout):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.sock.poll(200):
                _, raw = self.sock.recv_multipart()
                got, data, node = msgpack.loads(raw, raw=False)
                if got == kind:
                    return data, node
        raise AssertionError(f"no {kind} from the worker within {timeout} s")

    def close(self):
        self.sock.close(0)
        self.ctx.term()


def bindable(port):
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def join(peer, token, version=__version__):
    """Locust's join, then the bench handshake: the challenge, a hello sealed with ``token``."""
    peer.send(peer.frame("client_ready", importlib.metadata.version("locust")))
    peer.recv("ack", timeout=60)
    peer.send(peer.frame("bench_join", None))
    link = Channel(token, None, peer.node, "master")
    payload, why = link.open("bench_challenge", peer.recv("bench_challenge", timeout=10))
    assert payload == {} and why is None, why  # the master proved it holds the token
    hello = peer.frame("bench_hello", link.seal("bench_hello", dict(
        host="wire-peer", pid=os.getpid(), drivers=1, nonce="n0nce", harness_version=version)))
    peer.send(hello)
    link.bind("n0nce")
    return link, hello


def test_a_wrong_token_worker_is_refused_and_the_numbers_are_the_good_workers(
        bench, refserver, tmp_path):  # noqa: F811
    token, path = token_file(tmp_path)
    port = processes.free_port()
    m = master(bench, refserver, tmp_path / "dist", port, "--cluster-token-file", path)
    procs = [m]
    try:
        bad = worker(bench, port, env=clean_env(**{ENV_VAR: secrets.token_hex(32)}))
        procs.append(bad)
        (_, bad_err), = finish(bench, [bad], timeout=60)
        assert bad.returncode == 1, bad_err
        assert len(bad_err.strip().splitlines()) == 1, bad_err
        assert "refused this worker" in bad_err and "token" in bad_err, bad_err
        good = worker(bench, port, env=clean_env(**{ENV_VAR: token}))  # the variable works too
        procs.append(good)
        (_, m_err), = finish(bench, [m], timeout=120)
        assert m.returncode == 0, m_err[-3000:]
        finish(bench, [good], timeout=30)
        assert good.returncode == 0
    finally:
        for p in procs:
            bench.kill(p)
    refused_lines = [ln for ln in m_err.splitlines() if "refused worker" in ln]
    assert len(refused_lines) == 1 and str(bad.pid) in refused_lines[0], m_err
    (run_dir,) = bench.run_dirs(str(tmp_path / "dist"))
    dist = bench.meta(run_dir)["distributed"]
    assert dist["authenticated"] and dist["token_fingerprint"] == fingerprint(token)
    (refused,) = dist["refused"]
    assert refused["claimed_pid"] == bad.pid and "token" in refused["why"]
    assert refused["dropped"] == {"bad-mac": 1}  # its hello; nothing of it reached the run
    (w,) = dist["workers"]
    assert w["pid"] == good.pid and w["token_fingerprint"] == fingerprint(token)
    assert w["allowed_targets"] == ["loopback"] and w["dropped"] == {}
    (step,) = dist["steps"]
    assert [s["pid"] for s in step["workers"]] == [good.pid]
    row = measured_row(bench, run_dir)
    assert row["attempted"] == step["workers"][0]["attempted"] == int(RATE * DURATION)
    assert row["ok"] == step["workers"][0]["ok"] == row["attempted"]
    assert "worker" not in str(row["note"]), row["note"]  # no share failed or went missing
    for root, _, files in os.walk(run_dir):  # the fingerprint is recorded, the token nowhere
        for name in files:
            with open(os.path.join(root, name), "rb") as f:
                assert token.encode() not in f.read(), name


def test_replayed_altered_and_spoofed_messages_are_dropped_and_counted(
        bench, refserver, tmp_path):  # noqa: F811
    token, path = token_file(tmp_path)
    port = processes.free_port()
    first = master(bench, refserver, tmp_path / "first", port, "--cluster-token-file", path)
    peer, procs = WirePeer(port, "wire-peer-1"), [first]
    try:
        old, _ = join(peer, token)  # an earlier run, on the same port, with the same token
        earlier = peer.frame("bench_ready", old.seal("bench_ready", {"step": 1}))
        peer.send(earlier)
        time.sleep(0.3)
        bench.kill(first)  # its engine leaves when its harness's pipe closes: it says quit
        peer.recv("quit", timeout=30)
        bench.wait_for(lambda: bindable(port), timeout=30, what="the first master's port")
        m = master(bench, refserver, tmp_path / "dist", port, "--cluster-token-file", path)
        procs.append(m)
        link, hello = join(peer, token)  # ZeroMQ reconnects the peer to the new master
        peer.send(earlier)                        # recorded in the earlier run
        ready = peer.frame("bench_ready", link.seal("bench_ready", {"step": 99}))
        peer.send(ready)                          # passes: sealed under the bound session
        peer.send(ready)                          # the same frame again
        kind, data, node = msgpack.loads(ready, raw=False)
        data = dict(data, body=data["body"].replace("99", "98"))
        peer.send(msgpack.dumps((kind, data, node)))                   # altered in transit
        peer.send(hello)                          # the handshake's frame, from a session gone
        forged = Channel("not-" + token, link.session, peer.node, "master")
        peer.send(peer.frame("bench_result", forged.seal("bench_result", {"step": 1})))
        peer.send(peer.frame("bench_result", link.seal("bench_result", {"step": 1}),
                             node="someone-else"))  # speaking for another node
        sealed = link.seal("bench_result", {"step": 1})
        peer.send(peer.frame("bench_result", dict(sealed, mac="\u00e9" * 64)))  # non-ASCII mac
        peer.send(peer.frame("bench_result", dict(sealed, s=sealed["s"].encode())))  # bin session
        time.sleep(0.5)
        good, m_err = end_with_a_good_worker(bench, port, path, m, procs)
    finally:
        peer.close()
        for p in procs:
            bench.kill(p)
    (run_dir,) = bench.run_dirs(str(tmp_path / "dist"))
    dist = bench.meta(run_dir)["distributed"]
    assert dist["dropped"]["wire-peer-1"] == {"replayed": 1, "bad-mac": 2, "other-session": 2,
                                              "spoofed-node": 1, "unsigned": 2}, dist["dropped"]
    assert dist["dropped_total"] == 8 and not dist["refused"]  # it passed its hello
    assert [w["pid"] for w in dist["workers"]] == [good.pid]   # never clocked: never admitted
    row = measured_row(bench, run_dir)
    assert row["attempted"] == row["ok"] == int(RATE * DURATION)


def end_with_a_good_worker(bench, port, token_path, m, procs):
    """A worker holding the right token joins; the run ends. (that worker, master's stderr)"""
    good = worker(bench, port, "--cluster-token-file", token_path)
    procs.append(good)
    (_, m_err), = finish(bench, [m], timeout=120)
    assert m.returncode == 0, m_err[-3000:]
    finish(bench, [good], timeout=30)
    return good, m_err


def test_a_worker_of_another_harness_version_is_refused_in_one_line(
        bench, refserver, tmp_path):  # noqa: F811
    token, path = token_file(tmp_path)
    port = processes.free_port()
    m = master(bench, refserver, tmp_path / "dist", port, "--cluster-token-file", path)
    peer, procs = WirePeer(port, "wire-peer-old"), [m]
    try:
        join(peer, token, version="0.0.0-older")  # holds the token: only its version is wrong
        why = peer.recv("bench_refused", timeout=30)["why"]
        assert "0.0.0-older" in why and __version__ in why, why
        good, m_err = end_with_a_good_worker(bench, port, path, m, procs)
    finally:
        peer.close()
        for p in procs:
            bench.kill(p)
    lines = [ln for ln in m_err.splitlines() if "refused worker" in ln]
    assert len(lines) == 1 and "wire-peer-old" in lines[0] and "0.0.0-older" in lines[0], m_err
    (run_dir,) = bench.run_dirs(str(tmp_path / "dist"))
    dist = bench.meta(run_dir)["distributed"]
    (refused,) = dist["refused"]
    assert refused["node"] == "wire-peer-old" and "harness version" in refused["why"]
    assert [w["pid"] for w in dist["workers"]] == [good.pid]  # never given a share
    row = measured_row(bench, run_dir)
    assert row["attempted"] == row["ok"] == int(RATE * DURATION)


def test_the_worker_drops_and_counts_what_fails_the_check(bench, tmp_path):
    token, path = token_file(tmp_path)
    port = processes.free_port()
    wire, procs = WireMaster(port), []
    try:
        w = worker(bench, port, "--cluster-token-file", path)
        procs.append(w)
        _, node = wire.recv("client_ready", timeout=60)
        wire.send(node, msgpack.dumps(("ack", {"index": 0}, node)))
        wire.recv("bench_join", timeout=30)
        link = Channel(token, "run-1", "master", node)
        challenge = msgpack.dumps(("bench_challenge", link.seal("bench_challenge", {}), node))
        wire.send(node, challenge)
        hello, _ = wire.recv("bench_hello", timeout=30)
        said, why = link.open("bench_hello", hello)
        assert why is None and said["token_fingerprint"] == fingerprint(token), why
        assert said["allowed_targets"] == ["loopback"] and said["pid"] == w.pid
        link.bind(said["nonce"])
        abort = msgpack.dumps(("bench_abort", link.seal("bench_abort", {"step": 7}), node))
        wire.send(node, abort)                      # passes (no step 7 runs: ignored)
        wire.send(node, abort)                      # replayed
        wire.send(node, challenge)                  # the handshake's frame, session gone
        step = link.seal("bench_step", {"step": 1, "job": {"targets": [["127.0.0.1", 1]]}})
        step["body"] = step["body"].replace('"127.0.0.1"', '"127.0.0.2"')
        wire.send(node, msgpack.dumps(("bench_step", step, node)))  # altered in transit
        newer = link.seal("bench_step", {"step": 2, "job": dict(
            targets=[], source_addresses=[], cpus=[], conns=[], from_a_newer_harness=1)})
        wire.send(node, msgpack.dumps(("bench_step", newer, node)))  # a Job it cannot build
        result, why = link.open("bench_result", wire.recv("bench_result", timeout=30)[0])
        assert why is None and result["step"] == 2 and not result["ok"], (why, result)
        assert "cannot read the step" in result["error"], result
        time.sleep(1.0)
        wire.send(node, msgpack.dumps(("quit", None, node)))
        (_, err), = finish(bench, [w], timeout=30)
    finally:
        wire.close()
        for p in procs:
            bench.kill(p)
    assert w.returncode == 0, err
    assert "served 1 steps; dropped 3 messages from the master that failed the check " \
        "(bad-mac: 1, other-session: 1, replayed: 1)" in err, err
    assert "Traceback" not in err


def test_a_worker_refuses_a_target_outside_its_list(bench, refserver, tmp_path):  # noqa: F811
    port = processes.free_port()
    m = master(bench, refserver, tmp_path / "dist", port, expect=2)  # loopback: no token
    procs = [m]
    try:
        picky = worker(bench, port, "--allow-target", "127.0.0.1:1,10.9.9.9")
        procs.append(picky)
        procs.append(worker(bench, port))
        (_, m_err), = finish(bench, [m], timeout=120)
        assert m.returncode == 0, m_err[-3000:]
        (_, picky_err), _ = finish(bench, procs[1:], timeout=30)
        assert picky.returncode == 0, picky_err
    finally:
        for p in procs:
            bench.kill(p)
    target = refserver.split("//")[1]
    lines = [ln for ln in picky_err.splitlines() if "refused step" in ln]
    assert len(lines) == 1 and target in lines[0] and "127.0.0.1:1,10.9.9.9" in lines[0], \
        picky_err
    (run_dir,) = bench.run_dirs(str(tmp_path / "dist"))
    dist = bench.meta(run_dir)["distributed"]
    assert not dist["authenticated"] and dist["token_fingerprint"] is None
    allowed = {w["pid"]: w["allowed_targets"] for w in dist["workers"]}
    assert allowed[picky.pid] == ["127.0.0.1:1", "10.9.9.9"]
    (step,) = dist["steps"]
    status = {w["pid"]: w["status"] for w in step["workers"]}
    assert status[picky.pid] == "refused" and sorted(status.values()) == ["done", "refused"]
    row = measured_row(bench, run_dir)
    assert str(row["valid"]) == "False" and "outside --allow-target" in row["note"]
    assert row["attempted"] == int(RATE * DURATION)  # the refused share counted, not dropped
    assert row["ok"] == row["attempted"] // 2  # the other worker's half, all answered


@pytest.mark.parametrize("args, says", [
    (("run", "--expect-workers", "1", "--master-bind", "0.0.0.0:5557", "--allow-remote",
      "--target", "http://127.0.0.1:9"), "--cluster-token-file"),
    (("run", "--expect-workers", "1", "--master-bind", "0.0.0.0:5557", "--allow-remote",
      "--cluster-token-file", "TOKEN"), "--target"),
    (("run", "--cluster-token-file", "TOKEN"), "needs --expect-workers"),
    (("run", "--expect-workers", "1", "--cluster-token-file", "SHORT"), "at least 16"),
    (("worker", "--master", "10.9.9.9:5557"), "--cluster-token-file"),
    (("worker", "--master", "127.0.0.1:5557", "--cluster-token-file", "MISSING"), "cannot read"),
    (("worker", "--master", "127.0.0.1:5557", "--allow-target", "127.0.0.1:0"), "1..65535"),
    (("worker", "--master", "127.0.0.1:5557", "--allow-target", "a,,b"), "empty entry"),
])
def test_bad_cluster_input_is_one_line_and_exit_2_before_anything_binds(bench, args, says,
                                                                          tmp_path):
    files = {"TOKEN": token_file(tmp_path)[1], "MISSING": str(tmp_path / "absent")}
    (tmp_path / "short").write_text("too-short\n")
    files["SHORT"] = str(tmp_path / "short")
    argv = [files.get(a, a) for a in args]
    t = time.monotonic()
    r = bench.run(*argv, *(("--out", str(tmp_path / "out")) if args[0] == "run" else ()),
                  env=clean_env(), timeout=60)
    assert r.returncode == 2, r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and says in r.stderr, r.stderr
    assert not os.path.exists(tmp_path / "out") and time.monotonic() - t < 30
    assert "Traceback" not in r.stderr


def test_the_seal_rules():
    """Pure rules: what passes, and why each kind of bad message is dropped."""
    token = secrets.token_hex(16)
    master_end = Channel(token, "run-a", "master", "w1")
    worker_end = Channel(token, None, "w1", "master")
    challenge = master_end.seal("bench_challenge", {})
    assert worker_end.open("bench_challenge", challenge) == ({}, None)
    assert worker_end.session == "run-a"  # named by the master's challenge
    assert worker_end.open("bench_challenge", challenge) == (None, "replayed")
    hello = worker_end.seal("bench_hello", {"nonce": "x"})
    assert master_end.open("bench_clock_reply", hello) == (None, "bad-mac")  # type is sealed
    assert master_end.open("bench_hello", hello) == ({"nonce": "x"}, None)
    master_end.bind("x")
    worker_end.bind("x")
    step = master_end.seal("bench_step", {"step": 1})
    assert Channel(token, "run-a.x", "w2", "master").open("bench_step", step)[1] == "bad-mac"
    assert Channel("another-token-123", None, "w1", "master").open("bench_step", step)[1] == \
        "bad-mac"
    assert worker_end.open("bench_step", dict(step, n=step["n"] + 1))[1] == "bad-mac"
    assert worker_end.open("bench_step", step) == ({"step": 1}, None)
    assert worker_end.open("bench_step", step) == (None, "replayed")
    assert worker_end.open("bench_challenge", challenge) == (None, "other-session")
    assert worker_end.open("bench_step", {"step": 1}) == (None, "unsigned")
    assert worker_end.open("bench_step", None) == (None, "unsigned")
    again = master_end.seal("bench_step", {"step": 2})
    for bad in (dict(again, mac="\u00e9" * 64), dict(again, mac=again["mac"].upper()),
                dict(again, s=again["s"].encode()), dict(again, s={"a": 1})):
        assert worker_end.open("bench_step", bad) == (None, "unsigned")  # dropped, not raised
    assert worker_end.open(b"bench_step", again) == (None, "unsigned")
    assert worker_end.open("bench_step", again) == ({"step": 2}, None)


def test_the_token_leaves_the_environment_once_read(monkeypatch, tmp_path):
    """What the harness spawns after reading the token (servers, drivers) cannot inherit it."""
    from bench.distributed.seal import load_token

    token = secrets.token_hex(32)
    monkeypatch.setenv(ENV_VAR, token)
    assert load_token(None) == token and ENV_VAR not in os.environ
    other, path = token_file(tmp_path)
    monkeypatch.setenv(ENV_VAR, token)
    assert load_token(path) == other and ENV_VAR not in os.environ  # the file wins


def test_allow_lists():
    from bench.distributed import allow_label, outside, parse_allow

    assert outside([("127.0.0.1", 5000), ("::1", 1), ("localhost", 2)], None) is None
    assert outside([("127.0.0.1", 5000), ("10.0.0.5", 5000)], None) == ("10.0.0.5", 5000)
    allow = parse_allow("10.0.0.5:5000, Server.LAN ,[::1]:7")
    assert allow_label(allow) == ["10.0.0.5:5000", "server.lan", "::1:7"]
    assert outside([("10.0.0.5", 5000), ("server.lan", 1), ("::1", 7)], allow) is None
    assert outside([("10.0.0.5", 5001)], allow) == ("10.0.0.5", 5001)
    assert outside([("127.0.0.1", 5000)], allow) == ("127.0.0.1", 5000)  # the list replaces


TELLING_APP = '''
import os
from flask import Flask
from flask_socketio import SocketIO

with open(os.environ["TOKEN_REPORT"], "a") as report:
    report.write(f"{'BENCH_CLUSTER_TOKEN' in os.environ}\\n")
app = Flask(__name__)
socketio = SocketIO(app)


@socketio.on("echo")
def echo(data):
    return data
'''


def test_servers_of_a_run_without_workers_never_see_the_token(bench, tmp_path):
    """BENCH_CLUSTER_TOKEN in the user's shell: a plain run's servers do not inherit it."""
    app, report = tmp_path / "telling_app.py", tmp_path / "report.txt"
    app.write_text(TELLING_APP)
    r = bench.run("run", "--app", f"{app}:app", "--variants", "socketio-run-threading",
                  "--scenario", "echo", "--app-env", f"TOKEN_REPORT={report}", "--quick",
                  "--duration", "0.3", "--warmup", "0.1", "--no-report", "--out",
                  tmp_path / "runs", env=clean_env(**{ENV_VAR: secrets.token_hex(32)}),
                  timeout=120)
    assert r.returncode == 0, r.stderr[-3000:]
    seen = report.read_text().split()
    assert seen and set(seen) == {"False"}, seen
