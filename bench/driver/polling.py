"""Driver worker on the stock python-socketio client, over polling or WebSocket.

It steps in where the WebSocket upgrade is refused, and it is the control for the client's
own cost (``--client lean,python-socketio --transport websocket,polling``): the same server
measured by both clients over the same transport separates client cost from transport cost.
It adds ~0.3 ms per round trip (a thread per incoming message). Same job file and
ready/t0/done protocol as ``bench.driver.lean``, the same store and settle rule.
"""
import json
import os
import sys
import threading
import time

import numpy as np
import socketio

from bench.driver import protocol, store
from bench.driver.loops import open_schedule, payload
from bench.driver.store import TIMEOUT, UNSENT, Messages, record_reply
from bench.plan.job import Job

mono = time.monotonic_ns


def _client(job, i):
    host, port = job.targets[i % len(job.targets)]
    c = socketio.Client(reconnection=False)
    c.connect(f"http://{protocol.netloc(host, port)}", transports=[job.transport], wait_timeout=job.deadline)
    return c


def run_job(job, read_t0):
    """Connect, announce ``ready``, run the open or closed loop from t0, settle: the arrays."""
    m = Messages(job.max_messages)
    m.deadline_ns = int(job.deadline * 1e9)
    clients = {i: _client(job, i) for i in job.conns}
    data = payload(job.payload)
    blocker = _client(job, 0) if job.blockers and 0 in job.conns else None
    print("ready", flush=True)
    t0 = read_t0()
    end_ns = t0 + job.window_ns
    if blocker:
        threading.Thread(target=block_calls, args=(blocker, job.blockers, t0, end_ns),
                         daemon=True).start()
    lock = threading.Lock()

    def acked(k, *args):
        record_reply(m, k, mono())

    if job.rate:
        conn_of, times = open_schedule(job, t0)
        for i in range(len(times)):
            delay = (int(times[i]) - mono()) / 1e9
            if delay > 0:
                time.sleep(delay)
            k = m.used
            m.used += 1
            m.conn[k], m.intended[k] = conn_of[i], times[i]
            c = clients[int(conn_of[i])]
            if not c.connected:
                store.lost(m, k)
                continue
            m.sent[k] = mono()
            c.emit("echo", data, callback=lambda *a, k=k: acked(k, *a))
    else:
        def loop(i, c):
            while mono() < end_ns and c.connected:
                with lock:
                    if m.used >= m.conn.shape[0]:
                        return
                    k = m.used
                    m.used += 1
                now = mono()
                m.conn[k], m.intended[k], m.sent[k] = i, now, now
                try:
                    c.call("echo", data, timeout=job.deadline)
                    acked(k)
                except socketio.exceptions.TimeoutError:
                    m.outcome[k] = TIMEOUT
        wait = (t0 - mono()) / 1e9
        if wait > 0:
            time.sleep(wait)
        threads = [threading.Thread(target=loop, args=(i, c), daemon=True) for i, c in clients.items()]
        for t in threads:
            t.start()
        for t in threads:
            t.join(job.warmup + job.duration + job.deadline + 1)
    deadline = mono() + m.deadline_ns
    n = m.used
    while mono() < deadline and np.any((m.outcome[:n] == UNSENT) & (m.sent[:n] > 0)):
        time.sleep(0.01)
    store.settle(m, {i: c.connected for i, c in clients.items()})
    for c in [*clients.values(), *([blocker] if blocker else [])]:
        try:
            c.disconnect()
        except Exception:  # noqa: BLE001 - closing a broken client must not lose the data
            pass
    return m


def block_calls(client, spec, t0, end_ns):
    """The blocking scenario's slow handlers, fire-and-forget, as in bench.driver."""
    interval = int(1e9 / spec["rate"])
    at = t0 + interval // 2
    while at < end_ns and client.connected:
        delay = (at - mono()) / 1e9
        if delay > 0:
            time.sleep(delay)
        client.emit("block", {"ms": spec["ms"], "kind": spec["kind"]})
        at += interval


def main(argv=None):
    """The polling driver process: job file in, arrays saved, ``done`` printed."""
    argv = sys.argv[1:] if argv is None else argv
    job = Job.load(argv[0])
    if job.cpus:
        os.sched_setaffinity(0, job.cpus)

    def read_t0():
        line = sys.stdin.readline()
        if not line.strip():
            raise SystemExit("polling driver: parent closed stdin before t0")
        return int(line)

    m = run_job(job, read_t0)
    tmp = job.out + ".tmp.npz"
    np.savez(tmp, **m.trimmed())
    os.replace(tmp, job.out)
    print("done " + json.dumps({"busy_ns": None, "total_ns": None}), flush=True)
    os._exit(0)  # client threads may linger on a dead server; the data is already saved


if __name__ == "__main__":
    main()
