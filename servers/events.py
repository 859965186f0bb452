"""What the server process itself did while it served: GC collections and a late event loop.

Switched on by the harness through the environment, after the app is built (call
:func:`apply` where :func:`servers.nodelay.apply` is called):

* ``BENCH_SERVER_EVENTS=DIR``: every collection of Python's cyclic GC (``gc.callbacks``:
  generation, objects collected, pause) and, under eventlet, gevent or asyncio, every time the
  event loop woke later than ``LATE_NS`` after a timer asked it to (a blocked loop: a handler
  that did not yield, a long pause). Each process writes ``DIR/<pid>.csv`` with rows
  ``t_ns,kind,duration_ns,detail``; ``t_ns`` is ``time.monotonic_ns()``, the clock the
  driver stamps its messages with (CLOCK_MONOTONIC, shared by every process on Linux).
  Events are buffered in memory and appended to the file every ``FLUSH_S`` by a real OS
  thread (not a green one), so a server stopped by a signal loses at most that last slice.
* ``BENCH_SERVER_GC=freeze|off``: ``gc.freeze()`` (the app's objects leave the collected
  generations, as long-running servers do after start-up) or ``gc.disable()`` (no cyclic
  collection at all: a diagnostic, memory grows).

A loop is measured by a heartbeat of the loop's own kind sleeping ``BEAT_S``: its lateness is
the time the loop could not run anything, whatever held it (GC included). gevent's monitor
thread only says "blocked for at least max_blocking_time" and traces every greenlet switch;
eventlet's ``hub_blocking_detection`` raises inside the blocked code. A threading server has
no loop to block. Without the variables :func:`apply` does nothing.
"""
import collections
import gc
import os
import sys
import time

EVENTS_ENV, GC_ENV = "BENCH_SERVER_EVENTS", "BENCH_SERVER_GC"
FLUSH_S = 0.1
BEAT_S = 0.005
LATE_NS = 2_000_000     # a heartbeat later than this is a blocked loop
_state = {}


def gc_setting():
    """The ``--server-gc`` setting this process was started with (default, freeze or off)."""
    return os.environ.get(GC_ENV, "") or "default"


def patched_by():
    """Which library monkey-patched this process ("eventlet", "gevent" or None); merely
    imported does not count (Flask-SocketIO imports eventlet to probe the async modes)."""
    if "gevent.monkey" in sys.modules and sys.modules["gevent.monkey"].is_module_patched(
            "socket"):
        return "gevent"
    if "eventlet.patcher" in sys.modules and sys.modules["eventlet.patcher"].is_monkey_patched(
            "socket"):
        return "eventlet"
    return None


def _original(module, name):
    """``module.name`` as it was before eventlet's or gevent's monkey patching."""
    if patched_by() == "eventlet":
        from eventlet import patcher
        return getattr(patcher.original(module), name)
    if patched_by() == "gevent":
        from gevent import monkey
        return monkey.get_original(module, name)
    return getattr(__import__(module), name)


class Recorder:
    """Buffers events in memory and appends them to one file from a real thread."""

    def __init__(self, path):
        self.path, self.buffer, self.started = path, collections.deque(), {}
        self.sleep = _original("time", "sleep")

    def add(self, t_ns, kind, duration_ns, detail):
        """Queue one event row (cheap: the flushing thread writes it)."""
        self.buffer.append(f"{t_ns},{kind},{duration_ns},{detail}\n")  # deque: thread-safe

    def on_gc(self, phase, info):
        """``gc.callbacks`` hook: a collection's start time, then its row at its end."""
        now = time.monotonic_ns()
        if phase == "start":
            self.started[info["generation"]] = now
            return
        start = self.started.pop(info["generation"], now)
        self.add(start, "gc", now - start,
                 f"generation={info['generation']} collected={info['collected']} "
                 f"pid={os.getpid()}")

    def flush(self):
        """Append every queued row to the file (also at exit)."""
        lines = [self.buffer.popleft() for _ in range(len(self.buffer))]
        if lines:
            with open(self.path, "a") as f:
                f.write("".join(lines))

    def start(self):
        """Flush from a real OS thread, whatever the process's monkey patching."""
        _original("_thread", "start_new_thread")(self.run, ())

    def forked(self):
        """In a forked worker: its own file, its own flushing thread (threads do not fork)."""
        self.buffer.clear()
        self.path = os.path.join(os.path.dirname(self.path), f"{os.getpid()}.csv")
        self.start()

    def run(self):
        """The flushing thread's loop, for the life of the process."""
        while True:
            self.sleep(FLUSH_S)
            try:
                self.flush()
            except OSError:
                return  # the folder went away with the step: nothing left to keep


def _late(recorder, loop):
    """A check that records a heartbeat waking more than ``LATE_NS`` after it was due."""
    def check(due_ns):
        now = time.monotonic_ns()
        if now - due_ns > LATE_NS:
            recorder.add(due_ns, "blocked", now - due_ns, f"loop={loop} pid={os.getpid()}")
    return check


def _start_heartbeat(recorder):
    """A heartbeat on the process's event loop, if it has one; returns the loop's name."""
    loop = patched_by()
    if loop:
        green = __import__(loop)
        check = _late(recorder, loop)

        def beat():
            while True:
                due = time.monotonic_ns() + int(BEAT_S * 1e9)
                green.sleep(BEAT_S)
                check(due)
        green.spawn(beat)
        return loop
    if "asyncio" in sys.modules:
        import asyncio
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            return "none"
        check = _late(recorder, "asyncio")

        async def abeat():
            while True:
                due = time.monotonic_ns() + int(BEAT_S * 1e9)
                await asyncio.sleep(BEAT_S)
                check(due)
        _state["task"] = running.create_task(abeat())
        return "asyncio"
    return "none"


def apply():
    """Apply ``BENCH_SERVER_GC`` and start recording when ``BENCH_SERVER_EVENTS`` names a
    folder; once per process. Returns what was done (for the log and tests)."""
    if _state.get("applied"):
        return _state["applied"]
    done = []
    setting = gc_setting()
    if setting == "freeze":
        gc.collect()
        gc.freeze()
        done.append(f"gc frozen ({gc.get_freeze_count()} objects)")
    elif setting == "off":
        gc.disable()
        done.append("gc disabled")
    folder = os.environ.get(EVENTS_ENV)
    if folder:
        recorder = Recorder(os.path.join(folder, f"{os.getpid()}.csv"))
        gc.callbacks.append(recorder.on_gc)
        recorder.start()
        os.register_at_fork(after_in_child=recorder.forked)  # uWSGI/gunicorn --preload
        import atexit
        atexit.register(recorder.flush)
        done.append(f"events to {recorder.path} (loop heartbeat: {_start_heartbeat(recorder)})")
    if done:
        print(f"events: {'; '.join(done)} pid={os.getpid()}", file=sys.stderr, flush=True)
    _state["applied"] = done
    return done
