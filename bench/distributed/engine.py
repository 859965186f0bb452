"""The Locust process: Locust's master or worker runner, bridged to JSON lines.

``python -m bench.distributed.engine master HOST PORT``
``python -m bench.distributed.engine worker HOST PORT [--connect-timeout S] [--master-timeout S]``

Locust monkey-patches the standard library with gevent on import, so it lives here, in a
process of its own, and never in the harness or in a driver process. This process uses only
Locust's runners and their custom messages (``runner.register_message`` /
``runner.send_message``); no Locust users are ever spawned.

Lines in (stdin, from the harness on this machine), one JSON object each:
  ``{"op": "send", "type": T, "data": D, "to": NODE}``  (``to``: master side only)
  ``{"op": "clock", "to": NODE}``  (master: measure that worker's clock offset now)
  ``{"op": "quit"}``  (end: the master tells every worker to quit)
Stdin closing means the harness is gone: the engine quits the same way.

Lines out (stdout):
  ``{"event": "listening"}`` (master bound) · ``{"event": "connected", "node": ID}`` (worker)
  ``{"event": "joined", "node": ID}`` · ``{"event": "lost", "node": ID, "why": ..}`` (master)
  ``{"event": "clock", "node": ID, "offset_ns": .., "uncertainty_ns": .., "rtt_ns": ..}``
  ``{"event": "message", "type": T, "node": ID, "data": D}``
  ``{"event": "quit", "why": ..}`` (worker: the master ended the run, or went silent)

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

CLOCK_EXCHANGES = 8
CLOCK_TIMEOUT_S = 2.0
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

class Master:
    def __init__(self, host, port):
        self.env = Environment(user_classes=[])
        self.runner = self.env.create_master_runner(master_bind_host=host,
                                                    master_bind_port=port)
        self.known = set()
        self.pings = {}
        for kind in TO_MASTER:
            self.runner.register_message(kind, self.on_message)
        emit(event="listening")

    def on_message(self, environment, msg, **kwargs):
        if msg.type == "bench_clock_reply":
            waiter = self.pings.get((msg.node_id, msg.data["seq"]))
            if waiter is not None:
                waiter.set((msg.data, time.time_ns()))
            return
        emit(event="message", type=msg.type, node=msg.node_id, data=msg.data)

    def alive(self):
        return {c.id for c in self.runner.clients.all if c.state != runners.STATE_MISSING}

    def watch(self):
        """Joined and lost workers, as Locust's own heartbeats see them."""
        while True:
            now = self.alive()
            for node in sorted(now - self.known):
                emit(event="joined", node=node)
                gevent.spawn(self.clock, node)
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
                self.runner.send_message("bench_clock", {"seq": seq, "t1": t1}, client_id=node)
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
                if op["op"] == "send":
                    self.runner.send_message(op["type"], op.get("data"), client_id=op.get("to"))
                elif op["op"] == "clock":
                    gevent.spawn(self.clock, op["to"])
                elif op["op"] == "quit":
                    break
        finally:
            self.runner.quit()  # tells every worker to quit


# ------------------------------------------------------------------------------------ worker

class Worker:
    def __init__(self, host, port):
        self.env = Environment(user_classes=[])
        self.quit_why = None
        self.runner = self.env.create_worker_runner(host, port)  # blocks until acked (bounded)
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
        emit(event="connected", node=self.runner.client_id)

    def on_message(self, environment, msg, **kwargs):
        if msg.type == "bench_clock":
            t2 = time.time_ns()
            self.runner.send_message("bench_clock_reply", {"seq": msg.data["seq"],
                                                           "t1": msg.data["t1"], "t2": t2,
                                                           "t3": time.time_ns()})
            return
        emit(event="message", type=msg.type, node="master", data=msg.data)

    def watch(self):
        """The runner's greenlets all end when the master says quit or goes silent."""
        while len(self.runner.greenlet):
            gevent.sleep(POLL_S)
        emit(event="quit", why=self.quit_why or "the master ended the run")
        os._exit(0)

    def serve(self):
        gevent.spawn(self.watch)
        for op in lines_in():
            if op["op"] == "send":
                self.runner.send_message(op["type"], op.get("data"))
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
    try:
        if args.mode == "master":
            Master(args.host, args.port).serve()
        else:
            Worker(args.host, args.port).serve()
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
