"""A server whose regime change is built in: at ``CAUSES_AT_S`` seconds after its first echo
it runs one full collection over a large heap of cycles (a long generation-2 GC pause, the
cause) and from then on every echo waits ``CAUSES_SLOW_MS`` more (the new regime).
With ``CAUSES_BLOCK_MS`` the cause is instead a CPU burn of that long inside the handler
(a blocked loop under gevent/eventlet). Served through ``--app tests/causes_app.py:app``.
"""
import gc
import os
import time

from flask import Flask
from flask_socketio import SocketIO

AT_S = float(os.environ.get("CAUSES_AT_S", "1e9"))
SLOW_S = float(os.environ.get("CAUSES_SLOW_MS", "10")) / 1000.0
BLOCK_S = float(os.environ.get("CAUSES_BLOCK_MS", "0")) / 1000.0
HEAP = [[] for _ in range(int(os.environ.get("CAUSES_HEAP", "400000")))]
for _cell in HEAP:
    _cell.append(_cell)  # a cycle each: only the cyclic collector looks at them
state = {"first": None, "fired": False}

app = Flask(__name__)
socketio = SocketIO(app)


@socketio.on("echo")
def echo(data):
    now = time.monotonic()
    if state["first"] is None:
        state["first"] = now
    if not state["fired"] and now - state["first"] >= AT_S:
        state["fired"] = True
        print(f"causes_app: cause at {time.monotonic_ns()} ns", flush=True)
        if BLOCK_S:
            end = time.perf_counter() + BLOCK_S
            while time.perf_counter() < end:
                pass
        else:
            gc.collect()
    if state["fired"]:
        time.sleep(SLOW_S)
    return data
