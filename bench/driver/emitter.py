"""External emitter: emits to a room through the message queue, as a Celery worker would.

``python bench/driver/emitter.py JOB.json`` (by path: it imports nothing from the harness,
so any environment with flask-socketio and redis runs it), spawned through the lifecycle with the scale-out
variant's own interpreter. It uses Flask-SocketIO's documented path for emitting from another
process: ``SocketIO(message_queue=URL)`` with no app (a write-only queue manager). Emit ``i``
is due at ``t0 + i / rate`` (t0: the driver's shared start time, monotonic ns, read from
stdin) and carries ``{"id": i}``; the driver's members time each receipt against that same
intended time. Protocol with the parent: ``ready`` once the queue answers, then ``t0`` on
stdin, then ``done`` after writing a JSON file of per-emit send times and outcomes. A failed
publish never stops the loop (it is counted); the loop is bounded by its count.
"""
import json
import logging
import os
import sys
import time

mono = time.monotonic_ns
OK, FAILED = 1, 4


class _PublishFailures(logging.Handler):
    """python-socketio logs a publish it gave up on instead of raising: count those."""

    def __init__(self):
        super().__init__(logging.ERROR)
        self.count = 0

    def emit(self, record):
        if "giving up" in record.getMessage():
            self.count += 1


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    with open(argv[0]) as f:
        job = json.load(f)
    if job.get("cpus"):
        os.sched_setaffinity(0, job["cpus"])
    try:  # timer slack 1 ns (as the driver): emits leave on time, not up to 50 µs late
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(29, 1, 0, 0, 0)
    except (OSError, AttributeError):
        pass
    from flask_socketio import SocketIO

    failures = _PublishFailures()
    logging.getLogger("socketio").addHandler(failures)
    logging.getLogger("socketio.server").addHandler(failures)
    io = SocketIO(message_queue=job["queue"], async_mode="threading")
    manager = io.server.manager
    try:  # connect before t0, so the first emit is not also the connection's setup
        manager._redis_connect()
        manager.redis.ping()
    except Exception as exc:  # noqa: BLE001 - one line for the parent
        sys.exit(f"emitter: cannot reach the message queue at {job['queue']}: "
                 f"{type(exc).__name__}: {exc}")
    print("ready", flush=True)
    line = sys.stdin.readline()
    if not line.strip():
        sys.exit("emitter: parent closed stdin before t0")
    t0 = int(line)
    rate, room = float(job["rate"]), job["room"]
    n = int(rate * (job["warmup"] + job["duration"]))
    pad = "x" * max(0, int(job.get("payload", 64)) - 40)
    sent, outcome = [0] * n, [0] * n
    for i in range(n):
        due = t0 + int(round(i * 1e9 / rate))
        delay = (due - mono()) / 1e9
        if delay > 0:
            time.sleep(delay)
        before = failures.count
        sent[i] = mono()
        try:
            io.emit("broadcast", {"id": i, "p": pad}, to=room)
            outcome[i] = OK if failures.count == before else FAILED
        except Exception as exc:  # noqa: BLE001 - a failed emit is counted, the loop goes on
            outcome[i] = FAILED
            print(f"emitter: emit {i} failed: {type(exc).__name__}: {exc}", file=sys.stderr,
                  flush=True)
    tmp = job["out"] + ".tmp"
    with open(tmp, "w") as f:
        json.dump(dict(sent=sent, outcome=outcome), f)
    os.replace(tmp, job["out"])
    print(f"emitter: {outcome.count(OK)}/{n} emits published", file=sys.stderr, flush=True)
    print("done", flush=True)


if __name__ == "__main__":
    main()
