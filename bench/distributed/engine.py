"""The Locust process: Locust's master or worker runner, bridged to JSON lines.

``python -m bench.distributed.engine master HOST PORT``
``python -m bench.distributed.engine worker HOST PORT [--connect-timeout S] [--master-timeout S]``

Locust monkey-patches the standard library with gevent on import, so it lives here, in a
process of its own, and never in the harness or in a driver process. This process uses only
Locust's runners and their custom messages (``runner.register_message`` /
``runner.send_message``); no Locust users are ever spawned.

Every bench message travels sealed (:mod:`bench.distributed.seal`, the token from
``BENCH_CLUSTER_TOKEN`` in this process's environment, put there by the harness): a worker asks
to join (``bench_join``), the master answers with a challenge under its run nonce, the worker
says hello under it with a nonce of its own, and from then on both directions are bound to
both nonces. A message that fails the check is dropped and reported; a worker whose hello
fails is refused (``bench_refused``, the one message read unsealed, since the refused side
cannot check it) and none of its messages reach the harness. Locust's own messages
(heartbeats, quit) stay unsealed: each must come from its own node's connection, so one node
cannot speak for another, but a process on the network can still make a worker look lost.

Lines in (stdin, from the harness on this machine), one JSON object each:
  ``{"op": "send", "type": T, "data": D, "to": NODE}``  (``to``: master side only)
  ``{"op": "clock", "to": NODE}``  (master: measure that worker's clock offset now)
  ``{"op": "refuse", "to": NODE, "why": ..}``  (master: refuse a worker that passed the check)
  ``{"op": "quit"}``  (end: the master tells every worker to quit)
Stdin closing means the harness is gone: the engine quits the same way.

Lines out (stdout):
  ``{"event": "listening"}`` (master bound) · ``{"event": "connected", "node": ID,
  "verified": BOOL}`` (worker: the master's challenge passed, or not)
  ``{"event": "joined", "node": ID}`` · ``{"event": "lost", "node": ID, "why": ..}`` (master)
  ``{"event": "clock", "node": ID, "offset_ns": .., "uncertainty_ns": .., "rtt_ns": ..}``
  ``{"event": "message", "type": T, "node": ID, "data": D}``
  ``{"event": "quit", "why": ..}`` (worker: the master ended the run, or went silent)
  ``{"event": "dropped", "node": ID, "type": T, "why": ..}`` (a message failed the check)
  ``{"event": "refused", "node": ID, "why": .., "claims": {..}}`` (master: a worker refused;
  worker: this worker was refused, or refused the master; the engine then exits)

Clock offset, NTP-style, between this machine's wall clock and a worker's: the master stamps
t1 and sends; the worker's engine stamps t2 on receipt and t3 on reply; the master stamps t4.
offset = ((t2 − t1) + (t3 − t4)) / 2 (worker clock − master clock), round trip
δ = (t4 − t1) − (t3 − t2); of several exchanges the one with the smallest δ is kept and its
uncertainty is δ / 2 (the true offset lies within ± δ/2 of the estimate whatever the path's
asymmetry).
"""
import argparse
import json
import logging
import math
import os
import secrets
import sys
import time

# gevent's monkey-patching happens here, on purpose: this process is only the engine.
import gevent  # noqa: E402
import locust  # noqa: F401,E402  (patches)
from gevent.event import AsyncResult  # noqa: E402
from gevent.fileobject import FileObjectPosix  # noqa: E402
from locust import runners  # noqa: E402
from locust.env import Environment  # noqa: E402

from bench.distributed import TO_MASTER, TO_WORKER  # noqa: E402
from bench.distributed.seal import ENV, Channel, claims  # noqa: E402
from bench.driver.protocol import netloc  # noqa: E402

CLOCK_EXCHANGES = 8
CLOCK_TIMEOUT_S = 2.0
CHALLENGE_TIMEOUT_S = 10.0
REFUSAL_WAIT_S = 3.0
POLL_S = 0.2

_out = FileObjectPosix(sys.stdout.fileno(), "wb", close=False)


def emit(**event):
    _out.write((json.dumps(event) + "\n").encode())
    _out.flush()


def lines_in():
    """Stdin lines, read cooperatively (the runner's greenlets keep running meanwhile)."""
    stdin = FileObjectPosix(sys.stdin.fileno(), "rb", close=False)
    while True:
        line = stdin.readline()
        if not line:
            return
        line = line.strip()
        if line:
            yield json.loads(line)


# ------------------------------------------------------------------------------------ master

REFUSED_WHY = ("the worker's messages fail the master's token check (it holds a different "
               "cluster token, or none)")


class Master:
    def __init__(self, host, port, token):
        self.env = Environment(user_classes=[])
        self.runner = self.env.create_master_runner(master_bind_host=host,
                                                    master_bind_port=port)
        self.token, self.run = token, secrets.token_hex(16)
        self.links, self.trusted, self.refused = {}, set(), set()
        self.known = set()
        self.pings = {}
        server = self.runner.server
        server.recv_from_client = self.same_node(server.recv_from_client)
        for kind in TO_MASTER:
            self.runner.register_message(kind, self.on_message)
        emit(event="listening")

    @staticmethod
    def same_node(recv):
        """Locust trusts the node id a message names; only its own connection's passes here."""
        def checked():
            while True:
                addr, msg = recv()
                if msg.node_id == addr:
                    return addr, msg
                emit(event="dropped", node=addr, type=msg.type, why="spoofed-node")
        return checked

    def send(self, node, kind, payload):
        self.runner.send_message(kind, self.links[node].seal(kind, payload), client_id=node)

    def on_message(self, environment, msg, **kwargs):
        t4 = time.time_ns()
        node, link = msg.node_id, self.links.get(msg.node_id)
        if msg.type == "bench_join" and link is None:
            self.links[node] = Channel(self.token, self.run, "master", node)
            self.send(node, "bench_challenge", {})
            return
        if link is None or node in self.refused or msg.type == "bench_join":
            emit(event="dropped", node=node, type=msg.type,
                 why="refused" if node in self.refused else "unexpected")
            return
        payload, why = link.open(msg.type, msg.data)
        if payload is None:
            emit(event="dropped", node=node, type=msg.type, why=why)
            if node not in self.trusted:  # its hello failed: refuse it, on both sides
                self.refused.add(node)
                emit(event="refused", node=node, why=REFUSED_WHY, claims=claims(msg.data))
                self.runner.send_message("bench_refused", {"why": REFUSED_WHY}, client_id=node)
            return
        if msg.type == "bench_hello" and node not in self.trusted:
            link.bind(payload.pop("nonce", ""))
            self.trusted.add(node)
            gevent.spawn(self.clock, node)
        elif node not in self.trusted or msg.type == "bench_hello":
            emit(event="dropped", node=node, type=msg.type, why="unexpected")
            return
        elif msg.type == "bench_clock_reply":
            waiter = self.pings.get((node, payload["seq"]))
            if waiter is not None:
                waiter.set((payload, t4))
            return
        emit(event="message", type=msg.type, node=node, data=payload)

    def alive(self):
        return {c.id for c in self.runner.clients.all if c.state != runners.STATE_MISSING}

    def watch(self):
        """Joined and lost workers, as Locust's own heartbeats see them."""
        while True:
            now = self.alive()
            for node in sorted(now - self.known):
                emit(event="joined", node=node)
            for node in sorted(self.known - now):
                gone = node not in self.runner.clients
                emit(event="lost", node=node, why="worker quit" if gone else
                     "no heartbeat from the worker for "
                     f"{runners.HEARTBEAT_LIVENESS * runners.HEARTBEAT_INTERVAL} s")
            self.known = now
            gevent.sleep(POLL_S)

    def clock(self, node):
        best = None
        for seq in range(CLOCK_EXCHANGES):
            waiter = self.pings[(node, seq)] = AsyncResult()
            t1 = time.time_ns()
            try:
                self.send(node, "bench_clock", {"seq": seq, "t1": t1})
                data, t4 = waiter.get(timeout=CLOCK_TIMEOUT_S)
            except (gevent.Timeout, Exception):  # noqa: BLE001 - a lost ping is just lost
                continue
            finally:
                self.pings.pop((node, seq), None)
            t2, t3 = data["t2"], data["t3"]
            rtt = (t4 - t1) - (t3 - t2)
            if best is None or rtt < best[1]:
                best = (((t2 - t1) + (t3 - t4)) // 2, rtt)
        if best is None:
            emit(event="clock", node=node, offset_ns=None, uncertainty_ns=None, rtt_ns=None,
                 exchanges=0)
        else:
            emit(event="clock", node=node, offset_ns=int(best[0]),
                 uncertainty_ns=int(max(best[1], 0) // 2), rtt_ns=int(best[1]),
                 exchanges=CLOCK_EXCHANGES)

    def serve(self):
        gevent.spawn(self.watch)
        try:
            for op in lines_in():
                if op["op"] == "send" and op.get("to") in self.trusted:
                    self.send(op["to"], op["type"], op.get("data"))
                elif op["op"] == "clock" and op.get("to") in self.trusted:
                    gevent.spawn(self.clock, op["to"])
                elif op["op"] == "refuse" and op.get("to") in self.trusted:
                    # the harness refused a worker that passed the token check (its version)
                    self.trusted.discard(op["to"])
                    self.refused.add(op["to"])
                    self.runner.send_message("bench_refused", {"why": op.get("why")},
                                             client_id=op["to"])
                elif op["op"] == "quit":
                    break
        finally:
            self.runner.quit()  # tells every worker to quit


# ------------------------------------------------------------------------------------ worker

class Worker:
    def __init__(self, host, port, token):
        self.env = Environment(user_classes=[])
        self.quit_why = None
        self.master = netloc(host, port)
        self.runner = self.env.create_worker_runner(host, port)  # blocks until acked (bounded)
        self.link = Channel(token, None, self.runner.client_id, "master")
        self.challenge = AsyncResult()  # True: the master's challenge passed; False: it failed
        for kind in TO_WORKER:
            self.runner.register_message(kind, self.on_message)
        original_quit = self.runner.quit

        def quit_():  # Locust's own quit: the master went silent (heartbeat timeout)
            self.quit_why = self.quit_why or (
                f"no heartbeat from the master for {runners.MASTER_HEARTBEAT_TIMEOUT:g} s")
            original_quit()
        self.runner.quit = quit_
        handle = self.runner.handle_message

        def handle_message(msg):  # the master's "quit": leave now, not at the next heartbeat
            if msg.type == "quit":
                emit(event="quit", why="the master ended the run")
                os._exit(0)
            handle(msg)
        self.runner.handle_message = handle_message
        self.runner.send_message("bench_join", None)
        try:
            self.challenge.get(timeout=CHALLENGE_TIMEOUT_S)
        except gevent.Timeout:
            self.refused(f"no challenge from the master at {self.master} within "
                         f"{CHALLENGE_TIMEOUT_S:g} s (a harness without cluster tokens?)")
        # verified False: the master's challenge failed here; the hello still goes out, so
        # the master refuses this worker in its own words, then this engine exits
        emit(event="connected", node=self.runner.client_id, verified=self.challenge.value)

    @staticmethod
    def refused(why):
        emit(event="refused", why=why)
        os._exit(4)

    def on_message(self, environment, msg, **kwargs):
        t2 = time.time_ns()
        data = msg.data if isinstance(msg.data, dict) else {}
        if msg.type == "bench_refused":  # unsigned on purpose: it is read with the wrong token
            self.refused(f"the master at {self.master} refused this worker: {data.get('why')}")
        if msg.type == "bench_challenge" and not self.challenge.ready():
            payload, why = self.link.open(msg.type, msg.data)
            if payload is None:  # still say hello (under its session) so the master refuses
                self.link.session = data.get("s")
            self.challenge.set(payload is not None)
            return
        payload, why = self.link.open(msg.type, msg.data)
        if payload is None or msg.type == "bench_challenge" or not self.challenge.ready() \
                or not self.challenge.value:
            emit(event="dropped", node="master", type=msg.type, why=why or "unexpected")
            return
        if msg.type == "bench_clock":
            reply = {"seq": payload["seq"], "t1": payload["t1"], "t2": t2, "t3": time.time_ns()}
            self.runner.send_message("bench_clock_reply", self.link.seal("bench_clock_reply",
                                                                         reply))
            return
        emit(event="message", type=msg.type, node="master", data=payload)

    def hello(self, data):
        """Seal the hello under a fresh nonce of this worker's; bind the link to it."""
        nonce = secrets.token_hex(16)
        self.runner.send_message("bench_hello", self.link.seal("bench_hello",
                                                               dict(data, nonce=nonce)))
        self.link.bind(nonce)
        if not self.challenge.get():  # the master answers with its refusal: wait for it
            gevent.sleep(REFUSAL_WAIT_S)
            self.refused(f"the master at {self.master} failed this worker's token check "
                         "(it holds a different cluster token, or none)")

    def watch(self):
        """The runner's greenlets all end when the master says quit or goes silent."""
        while len(self.runner.greenlet):
            gevent.sleep(POLL_S)
        emit(event="quit", why=self.quit_why or "the master ended the run")
        os._exit(0)

    def serve(self):
        gevent.spawn(self.watch)
        for op in lines_in():
            if op["op"] == "send" and op["type"] == "bench_hello":
                self.hello(op.get("data") or {})
            elif op["op"] == "send":
                self.runner.send_message(op["type"], self.link.seal(op["type"], op.get("data")))
            elif op["op"] == "quit":
                break
        # the harness on this machine is gone or done: tell the master, then leave
        self.quit_why = "the worker's harness ended"
        self.runner.quit()
        os._exit(0)


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m bench.distributed.engine")
    p.add_argument("mode", choices=["master", "worker"])
    p.add_argument("host")
    p.add_argument("port", type=int)
    p.add_argument("--connect-timeout", type=float, default=60.0)
    p.add_argument("--master-timeout", type=float, default=10.0)
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s engine-" + args.mode + " %(levelname)s %(message)s")
    # Bounded waits: Locust's defaults are 60 × 5 s to connect and 60 s of master silence.
    runners.CONNECT_TIMEOUT = min(5.0, max(0.5, args.connect_timeout / 4))
    runners.CONNECT_RETRY_COUNT = max(1, math.ceil(args.connect_timeout
                                                   / runners.CONNECT_TIMEOUT) - 1)
    runners.MASTER_HEARTBEAT_TIMEOUT = args.master_timeout
    token = os.environ.pop(ENV, None) or None  # set (or removed) by the harness that spawned us
    try:
        if args.mode == "master":
            Master(args.host, args.port, token).serve()
        else:
            Worker(args.host, args.port, token).serve()
    except ConnectionError:
        print(f"engine: no master answered at {args.host}:{args.port} within "
              f"{args.connect_timeout:g} s", file=sys.stderr, flush=True)
        os._exit(3)
    except SystemExit as exc:  # Locust exits 1 when the master port is busy
        print(f"engine: cannot bind {args.host}:{args.port} (in use?)", file=sys.stderr,
              flush=True)
        os._exit(exc.code if isinstance(exc.code, int) else 1)
    os._exit(0)


if __name__ == "__main__":
    main()
