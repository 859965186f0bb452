"""The one owner of every process the harness spawns.

free port → spawn in its own process group → ready (deadline + still-alive check + the
listener is ours) → caller verifies and measures → ``finally`` SIGTERM the group, SIGKILL
after a grace period, confirm the port is free. Every live group is also tracked here so a
signal handler can kill them all.

``BENCH_READY_TIMEOUT`` (seconds, default 20) sets how long a server may take to serve.
"""
import contextlib
import errno
import os
import re
import signal
import socket
import subprocess
import threading
import time

import psutil

HOST = "127.0.0.1"
LIVE_GROUPS = set()
DEFAULT_READY_TIMEOUT = 20.0
ADDRESS_IN_USE = re.compile(r"address already in use|EADDRINUSE|\[Errno %d\]" % errno.EADDRINUSE,
                            re.I)
ERROR_LINE = re.compile(r"^\s*([A-Za-z_][\w.]*(Error|Exception|Exit)\b.*)$", re.M)


class NotReady(Exception):
    """The server did not start serving; the message says why, with its stderr tail."""


def ready_timeout_default():
    """``BENCH_READY_TIMEOUT`` if set to a positive number, else 20 s."""
    try:
        value = float(os.environ.get("BENCH_READY_TIMEOUT", DEFAULT_READY_TIMEOUT))
    except ValueError:
        return DEFAULT_READY_TIMEOUT
    return value if 0 < value < 3600 else DEFAULT_READY_TIMEOUT


def free_port(host=HOST):
    """A port nobody listens on now (the caller retries if it is taken before its bind)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def port_is_free(port, host=HOST):
    """Can ``port`` be bound now: has a stopped server really released it? A listener still
    holds it; its closed connections in TIME_WAIT (a server that closed them first, as
    long-polling servers do) do not, so the probe binds as servers do, with SO_REUSEADDR."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
        return True


def _read_from(path, offset=0, limit=16384):
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(offset, f.tell() - limit))
            return f.read().decode("utf-8", "replace")
    except OSError:
        return ""


def stderr_note(path, offset=0, lines=3, limit=400):
    """One line for a failure note: the last error line the process wrote (a Python
    exception's ``TypeError: ...``), else its last few lines, joined with `` | ``."""
    text = _read_from(path, offset)
    errors = ERROR_LINE.findall(text)
    if errors:
        return errors[-1][0].strip()[:limit]
    last = [line.strip() for line in text.strip().splitlines()[-lines:] if line.strip()]
    return " | ".join(last)[-limit:] or "(no output)"


@contextlib.contextmanager
def _signals_deferred():
    """Hold SIGINT/SIGTERM while a child is started and registered, so an interrupt can never
    land between ``Popen`` returning and the group being tracked (an orphan). The held signal
    is re-delivered to the original handler right after."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    held = []
    originals = {}
    for sig in (signal.SIGINT, signal.SIGTERM):
        originals[sig] = signal.getsignal(sig)
        signal.signal(sig, lambda signum, frame: held.append(signum))
    try:
        yield
    finally:
        for sig, handler in originals.items():
            signal.signal(sig, handler)
        for signum in held:
            os.kill(os.getpid(), signum)


def spawn(argv, log_path, cpus=None, env=None, stdin=subprocess.DEVNULL, stdout=None):
    """Start ``argv`` as the leader of a new process group; stderr (and stdout unless given)
    go to ``log_path`` so they never mix with the harness's own output."""
    log = open(log_path, "ab")
    try:
        with _signals_deferred():
            proc = subprocess.Popen(argv, stdin=stdin, stdout=stdout or log, stderr=log,
                                    start_new_session=True, env=env, close_fds=True)
            LIVE_GROUPS.add(proc.pid)
    finally:
        log.close()
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
            os.killpg(pgid, signal.SIGCONT)
            os.killpg(pgid, signal.SIGKILL)
        LIVE_GROUPS.discard(pgid)


def exit_description(code):
    """``exited with code 1`` / ``killed by SIGKILL`` for a Popen return code."""
    if code is None:
        return "running"
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exited with code {code}"


def _listeners(pid):
    """Ports the process tree of ``pid`` listens on (None when psutil cannot tell)."""
    try:
        root = psutil.Process(pid)
        procs = [root, *root.children(recursive=True)]
    except psutil.Error:
        return set()
    ports = set()
    for p in procs:
        try:
            conns = p.net_connections(kind="tcp") if hasattr(p, "net_connections") \
                else p.connections(kind="tcp")
        except psutil.AccessDenied:
            return None
        except psutil.Error:
            continue
        ports.update(c.laddr.port for c in conns if c.status == psutil.CONN_LISTEN and c.laddr)
    return ports


class Server:
    """A spawned server: its process, port and log, and how it was started (so that it can
    be started again on the same port)."""

    host = HOST

    def __init__(self, proc, port, log_path, log_offset=0, argv=None, cpus=None, env=None):
        self.proc, self.port, self.log_path = proc, port, log_path
        self.log_offset = log_offset
        self.argv, self.cpus, self.env = argv, cpus, env

    @property
    def pid(self):
        """The process group leader: what is sampled and killed."""
        return self.proc.pid

    def alive(self):
        """Is the server process still running?"""
        return self.proc.poll() is None

    def status(self):
        """"" while running, else how it ended (for notes on a server that died mid-step)."""
        code = self.proc.poll()
        return "" if code is None else \
            f"server {exit_description(code)}: {stderr_note(self.log_path, self.log_offset)}"

    def wait_ready(self, timeout):
        """Ready = accepts TCP on its port before the deadline, while still alive, and the
        listener is this server's (not another process that took the port meanwhile)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            code = self.proc.poll()
            if code is not None:
                raise NotReady(f"{exit_description(code)} before ready: "
                               f"{stderr_note(self.log_path, self.log_offset)}")
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
                s.settimeout(0.2)
                connected = s.connect_ex((HOST, self.port)) == 0
            if connected and self.proc.poll() is None:
                ports = _listeners(self.pid)
                if ports is None or self.port in ports:
                    return
            time.sleep(0.02)
        raise NotReady(f"not ready in {timeout:g} s: "
                       f"{stderr_note(self.log_path, self.log_offset)}")

    def address_in_use(self):
        """Did this attempt die because its port was taken?"""
        return bool(ADDRESS_IN_USE.search(_read_from(self.log_path, self.log_offset)))

    def stop(self, grace=3.0):
        """Kill the group and confirm the port is released; returns a note if it is not."""
        kill_group(self.proc, grace)
        deadline = time.monotonic() + grace
        while not port_is_free(self.port) and time.monotonic() < deadline:
            time.sleep(0.05)
        return "" if port_is_free(self.port) else f"port {self.port} still bound after stop"

    def respawn(self):
        """Start the same command again on the same port, after :meth:`stop` (a restart
        under its clients); the caller waits for it with :meth:`wait_ready`."""
        self.log_offset = os.path.getsize(self.log_path) if os.path.exists(self.log_path) else 0
        self.proc = spawn(self.argv, self.log_path, cpus=self.cpus, env=self.env)


@contextlib.contextmanager
def serving(make_argv, log_path, cpus=None, ready_timeout=None, attempts=3, env=None):
    """Spawn a server on a free port and yield it once ready; always stop it.

    ``make_argv(port)`` builds the command. When the port is taken between choice and bind
    (the server dies with EADDRINUSE, or another process answers on it), retry on another
    port, up to ``attempts`` times.
    """
    timeout = ready_timeout if ready_timeout is not None else ready_timeout_default()
    last = None
    for _ in range(attempts):
        port = free_port()
        argv = make_argv(port)
        offset = os.path.getsize(log_path) if os.path.exists(log_path) else 0
        server = Server(spawn(argv, log_path, cpus=cpus, env=env), port, log_path, offset,
                        argv, cpus, env)
        try:
            server.wait_ready(timeout)
        except NotReady as exc:
            server.stop()
            last = exc
            if server.address_in_use():
                continue
            raise
        except BaseException:
            server.stop()
            raise
        try:
            yield server
        finally:
            server.stop()
        return
    raise NotReady(f"port taken {attempts} times in a row; last attempt: {last}")
