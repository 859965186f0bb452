"""The one owner of every process the harness spawns.

free port → spawn in its own process group → ready (deadline + still-alive check) → caller
verifies and measures → ``finally`` SIGTERM the group, SIGKILL after a grace period, confirm
the port is free. Every live group is also tracked here so a signal handler can kill them all.
"""
import contextlib
import os
import signal
import socket
import subprocess
import time

HOST = "127.0.0.1"
LIVE_GROUPS = set()


class NotReady(Exception):
    """The server did not start serving; the message says why, with its stderr tail."""


def free_port(host=HOST):
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def port_is_free(port, host=HOST):
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind((host, port))
        except OSError:
            return False
        return True


def tail(path, lines=8, limit=2000):
    """Last lines of a log file, for failure notes."""
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - 16384))
            text = f.read().decode("utf-8", "replace")
    except OSError:
        return ""
    return "\n".join(text.strip().splitlines()[-lines:])[-limit:]


def spawn(argv, log_path, cpus=None, env=None, stdin=subprocess.DEVNULL, stdout=None):
    """Start ``argv`` as the leader of a new process group; stderr (and stdout unless given)
    go to ``log_path`` so they never mix with the harness's own output."""
    log = open(log_path, "ab")
    try:
        proc = subprocess.Popen(argv, stdin=stdin, stdout=stdout or log, stderr=log,
                                start_new_session=True, env=env, close_fds=True)
    finally:
        log.close()
    LIVE_GROUPS.add(proc.pid)
    if cpus:
        with contextlib.suppress(OSError):
            os.sched_setaffinity(proc.pid, cpus)
    return proc


def kill_group(proc, grace=3.0):
    """SIGTERM the process group, SIGKILL it after ``grace`` seconds, reap the leader."""
    pgid = proc.pid
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGTERM)
        os.killpg(pgid, signal.SIGCONT)  # a stopped group cannot act on SIGTERM
    try:
        proc.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        pass
    # The leader may be gone while children of the group live on: kill the group regardless.
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=grace)
    LIVE_GROUPS.discard(pgid)


def kill_all_groups():
    """Last resort for signal handlers and atexit: no process outlives the harness."""
    for pgid in list(LIVE_GROUPS):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pgid, signal.SIGKILL)
        LIVE_GROUPS.discard(pgid)


class Server:
    """A spawned server: its process, port and log."""

    host = HOST

    def __init__(self, proc, port, log_path):
        self.proc, self.port, self.log_path = proc, port, log_path

    @property
    def pid(self):
        return self.proc.pid

    def wait_ready(self, timeout):
        """Ready = accepts TCP on its port before the deadline while still alive."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            code = self.proc.poll()
            if code is not None:
                raise NotReady(f"exited with code {code} before ready: {tail(self.log_path, 3)}")
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
                s.settimeout(0.2)
                if s.connect_ex((HOST, self.port)) == 0:
                    return
            time.sleep(0.02)
        raise NotReady(f"not ready in {timeout:g} s: {tail(self.log_path, 3)}")

    def stop(self, grace=3.0):
        """Kill the group and confirm the port is released; returns a note if it is not."""
        kill_group(self.proc, grace)
        deadline = time.monotonic() + grace
        while not port_is_free(self.port) and time.monotonic() < deadline:
            time.sleep(0.05)
        return "" if port_is_free(self.port) else f"port {self.port} still bound after stop"


@contextlib.contextmanager
def serving(make_argv, log_path, cpus=None, ready_timeout=20.0, attempts=3, env=None):
    """Spawn a server on a free port and yield it once ready; always stop it.

    ``make_argv(port)`` builds the command. When the port is taken between choice and bind
    (the server dies with EADDRINUSE), retry on another port.
    """
    last = None
    for _ in range(attempts):
        port = free_port()
        proc = spawn(make_argv(port), log_path, cpus=cpus, env=env)
        server = Server(proc, port, log_path)
        try:
            server.wait_ready(ready_timeout)
        except NotReady as exc:
            server.stop()
            last = exc
            if "Address already in use" in tail(log_path, 20) or "EADDRINUSE" in str(exc):
                continue
            raise
        try:
            yield server
        finally:
            server.stop()
        return
    raise last
