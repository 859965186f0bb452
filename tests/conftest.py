"""Shared test machinery: the no-orphans guard and a few helpers for driving the real CLI.

The guard (autouse, every test): no process spawned during a test may outlive it. It looks
at two things:

* the test process's own descendants (``psutil.Process().children(recursive=True)``);
* every process on the machine whose command line names a harness part
  (``servers/launch.py``, ``bench.driver.lean``, ``bench.driver.polling``, ``bench.driver.refserver``) and that
  was created after the test began. Processes whose parent died are re-parented to init and
  are no longer our descendants, so this scan is what catches a server orphaned by a killed
  harness. Other people's benchmarks may run on the same machine, so the scan only counts
  processes that carry this test session's token in their environment (children inherit it).

Leftovers get up to 5 s to vanish; then they are SIGKILLed and the test FAILS.
"""
import contextlib
import glob
import json
import os
import signal
import subprocess
import sys
import time
import uuid

import psutil
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HARNESS_PARTS = ("servers/launch.py", "servers/userapp.py", "bench.driver.lean", "bench.driver.polling", "bench.driver.refserver",
                 "bench.distributed.engine", "bench worker", "py-spy",
                 "gunicorn", "uvicorn", "uwsgi", "servers.wsgi", "servers.asgi_app",
                 "bench/driver/emitter.py", "redis-server", "valkey-server", "nginx",
                 "bench.driver.capacity", "bench.churn", "reference_server/server.js", "chromium",
                 "bench.driver.browser", "playwright/driver")
TOKEN_VAR = "BENCH_TEST_SESSION"
TOKEN = os.environ.setdefault(TOKEN_VAR, uuid.uuid4().hex)
GRACE_S = 5.0


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: runs real variant servers for several seconds")


# --------------------------------------------------------------------------- process guard

def _identity(proc):
    try:
        return proc.pid, proc.create_time()
    except psutil.Error:
        return None


def _alive(proc):
    try:
        return proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


SESSION_TEMP = []  # this session's pytest base temp folder (run folders live under it)


def pytest_sessionstart(session):
    factory = getattr(session.config, "_tmp_path_factory", None)
    if factory is not None:
        # with the separator: pytest-1 must not match another session's pytest-17
        SESSION_TEMP.append(os.path.join(str(factory.getbasetemp()), ""))


def _ours(proc, depth=0):
    """Started under this test session: its environment carries our token; or (nginx, which
    rewrites its environment area with its process title) its command line names a folder
    of this session's temp folder; or (nginx's workers) its parent is ours."""
    try:
        if proc.environ().get(TOKEN_VAR) == TOKEN:
            return True
        cmd = " ".join(proc.cmdline())
        if SESSION_TEMP and SESSION_TEMP[0] in cmd:
            return True
        parent = proc.parent()
        return depth < 1 and parent is not None and parent.pid > 1 and _ours(parent, depth + 1)
    except psutil.Error:
        return False


def harness_processes():
    """Live processes of this test session whose command line names a harness part."""
    found = []
    for proc in psutil.process_iter(["cmdline"]):
        cmd = " ".join(proc.info["cmdline"] or [])
        if any(part in cmd for part in HARNESS_PARTS) and _alive(proc) and _ours(proc):
            found.append(proc)
    return found


def snapshot():
    """Identities of what exists now: our descendants and harness processes."""
    me = psutil.Process()
    procs = me.children(recursive=True) + harness_processes()
    return {i for i in map(_identity, procs) if i}, time.time()


def leftovers(before, since):
    """Processes started since ``since`` (not in ``before``) that are still alive."""
    me = psutil.Process()
    out = {}
    for proc in me.children(recursive=True) + harness_processes():
        ident = _identity(proc)
        if ident is None or ident in before or not _alive(proc):
            continue
        if ident[1] < since - 1.0:  # existed before the test (psutil's clock-tick rounding)
            continue
        out[ident] = proc
    return list(out.values())


def describe(procs):
    text = []
    for p in procs:
        with contextlib.suppress(psutil.Error):
            text.append(f"pid {p.pid}: {' '.join(p.cmdline())[:160]}")
    return "; ".join(text)


def reap_or_fail(before, since, what="the test"):
    """Give leftovers up to GRACE_S to vanish; then kill them and return a failure text."""
    deadline = time.monotonic() + GRACE_S
    left = leftovers(before, since)
    while left and time.monotonic() < deadline:
        time.sleep(0.1)
        left = leftovers(before, since)
    if not left:
        return ""
    text = describe(left)
    for p in left:
        with contextlib.suppress(psutil.Error):
            p.kill()
    psutil.wait_procs(left, timeout=5)
    return f"{len(left)} process(es) outlived {what} by {GRACE_S:g} s and were killed: {text}"


@pytest.fixture(autouse=True)
def no_orphans(request):
    before, since = snapshot()
    yield
    failure = reap_or_fail(before, since, request.node.nodeid)
    if failure:
        pytest.fail(failure, pytrace=False)


# --------------------------------------------------------------------------- CLI helpers

class Bench:
    """Runs ``python -m bench`` as a real subprocess from the repository root."""

    root = ROOT
    python = sys.executable

    def argv(self, *args):
        return [self.python, "-m", "bench", *map(str, args)]

    def run(self, *args, timeout=120, env=None, cwd=None):
        return subprocess.run(self.argv(*args), cwd=cwd or ROOT, capture_output=True,
                              text=True, timeout=timeout, env=env)

    def popen(self, *args, env=None, cwd=None):
        """Own process group, so a test can kill everything in ``finally``."""
        return subprocess.Popen(self.argv(*args), cwd=cwd or ROOT, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True, env=env,
                                start_new_session=True)

    @staticmethod
    def kill(proc):
        """Kill a popen'd harness and its whole group (used in ``finally``)."""
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.communicate(timeout=10)

    @staticmethod
    def run_dirs(out):
        return sorted(d for d in glob.glob(os.path.join(out, "*")) if os.path.isdir(d))

    @staticmethod
    def meta(run_dir):
        with open(os.path.join(run_dir, "meta.json")) as f:
            return json.load(f)

    @staticmethod
    def wait_for(predicate, timeout, interval=0.05, what="condition"):
        """Poll ``predicate`` until truthy (returned) or fail after ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            value = predicate()
            if value:
                return value
            time.sleep(interval)
        pytest.fail(f"timed out after {timeout:g} s waiting for {what}")

    @staticmethod
    def harness_processes(part):
        """Live processes of this session whose command line contains ``part``."""
        out = []
        for p in harness_processes():
            with contextlib.suppress(psutil.Error):
                if part in " ".join(p.cmdline()):
                    out.append(p)
        return out

    # the guard, for module-scoped fixtures that run the harness outside any one test
    snapshot = staticmethod(snapshot)
    reap_or_fail = staticmethod(reap_or_fail)

    @staticmethod
    def summary(run_dir):
        import pandas as pd

        from bench.analysis import columns

        frame = pd.read_csv(os.path.join(run_dir, "summary.csv"), keep_default_na=True)
        frame["repeat"] = frame["repeat"].astype(str)
        undeclared = columns.undeclared(frame.columns)  # every run a test reads is checked
        assert not undeclared, f"summary.csv columns not in bench/analysis/columns.py: {undeclared}"
        return frame

    @staticmethod
    def samples(run_dir):
        import pandas as pd

        return pd.read_csv(os.path.join(run_dir, "samples.csv.gz"))

    @staticmethod
    def env(**extra):
        env = dict(os.environ)
        env.update({k: str(v) for k, v in extra.items()})
        return env


@pytest.fixture(scope="session")
def bench():
    return Bench()
