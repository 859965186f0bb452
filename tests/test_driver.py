"""The driver's own machinery against the real reference server: several driver processes on
one start time (what distributed and many-connection runs build on), busy-polling that is
measured honestly, and one outcome for each way a message can end, the same in every driver."""
import os
import signal
import sys
import threading
import time

import numpy as np
import pytest

from bench.driver import store
from bench import processes
from bench.execute.fleet import Workers, probe_arrays
from bench.execute.load import run_load
from bench.machine import cpu_layout
from bench.plan.job import Job, Outcome


@pytest.fixture
def refserver(tmp_path):
    argv = lambda port: [sys.executable, "-m", "bench.driver.refserver", str(port)]  # noqa: E731
    with processes.serving(argv, str(tmp_path / "ref.log")) as server:
        yield server


def job(server, **kw):
    base = dict(targets=((server.host, server.port),), connections=6, rate=600.0, warmup=0.2,
                duration=0.8)
    return Job(**{**base, **kw})


@pytest.mark.slow
def test_two_driver_processes_share_one_schedule_and_merge_exactly(refserver, tmp_path):
    j = job(refserver)
    load = run_load(j, str(tmp_path), workers=2)
    a = load.arrays
    assert len(a["intended"]) == int(j.rate * (j.warmup + j.duration))  # every message, once
    assert set(np.unique(a["conn"])) == set(range(j.connections))       # both shares
    assert np.all(np.diff(a["intended"]) >= 0)                          # merged in time order
    gaps = np.diff(a["intended"])
    assert np.ptp(gaps) <= 1 and abs(gaps.mean() - 1e9 / j.rate) <= 1   # one interleaved stream
    assert (a["outcome"] == int(Outcome.OK)).all()
    assert a["intended"][0] >= load.t0


@pytest.mark.slow
def test_a_spinning_driver_reports_its_busy_time_not_its_polling(refserver, tmp_path):
    _, driver_cpus = cpu_layout(True)
    if not driver_cpus:
        pytest.skip("needs two cores: spinning is only allowed on a core of its own")
    load = run_load(job(refserver, rate=200.0, spin=True, cpus=tuple(driver_cpus)),
                    str(tmp_path))
    assert load.busy_share is not None and load.busy_share < 0.5  # mostly empty polls
    ok = load.arrays["outcome"] == int(Outcome.OK)
    assert ok.all()
    assert (load.arrays["recv_wait"][ok] >= 0).all()
    lag = load.arrays["sent"] - load.arrays["intended"]
    assert (lag >= 0).all()


# ------------------------------------------------------------ how a message ends

def test_the_settle_rule_ends_each_message_by_how_it_went():
    """sent + connection up → timeout, sent + gone → disconnect, due on a gone connection →
    disconnect, never sent on a live one → error; a reply already recorded stays."""
    m = store.Messages(6)
    m.used = 6
    m.conn[:] = [0, 0, 1, 1, 0, 1]
    m.intended[:] = 1
    m.sent[:] = [5, 5, 5, 0, 0, 0]
    assert store.record_reply(m, 0, 10)
    store.lost(m, 5)
    store.settle(m, {0: True, 1: False})
    assert [Outcome(o).label for o in m.outcome] == [
        "ok", "timeout", "disconnect", "disconnect", "error", "disconnect"]


def kill_later(server, seconds, killed=None):
    """SIGKILL ``server``'s group after ``seconds``; ``killed`` (returned) gets the kill time
    and the timer."""
    killed = {} if killed is None else killed

    def kill():
        killed["ns"] = time.monotonic_ns()
        os.killpg(server.pid, signal.SIGKILL)
    timer = threading.Timer(seconds, kill)
    timer.daemon = True
    timer.start()
    killed["timer"] = timer
    return killed


def assert_ends_by_disconnect(intended, outcome, killed_ns):
    labels = {Outcome(o).label for o in outcome}
    after = intended > killed_ns
    assert after.sum() > 0 and (outcome[~after] == int(Outcome.OK)).sum() > 0
    assert (outcome[after] == int(Outcome.DISCONNECT)).all(), labels
    assert labels <= {"ok", "disconnect"}, labels


def socketio_server(tmp_path):
    """A real Flask-SocketIO server (socketio.run, gevent) that both clients speak to."""
    from bench.plan import registry

    variant = registry.load().variants["socketio-run-gevent"]
    return processes.serving(lambda port: variant.argv(port), str(tmp_path / "server.log"))


@pytest.mark.slow
@pytest.mark.parametrize("client", ["lean", "python-socketio"])
def test_a_message_due_on_a_dead_connection_is_a_disconnect(tmp_path, client):
    """The server dies mid-window: every message due after that ends as ``disconnect``, in
    the lean driver and in the stock-client driver alike."""
    with socketio_server(tmp_path) as server:
        killed = {}
        j = job(server, connections=2, rate=100.0, warmup=0.0, duration=1.5, deadline=1.0)

        def on_start(pids, t0):
            delay = (t0 - time.monotonic_ns()) / 1e9 + 0.5
            kill_later(server, max(0.0, delay), killed)
        load = run_load(j, str(tmp_path), client=client, on_start=on_start)
        killed["timer"].join(5)
    a = load.arrays
    assert len(a["intended"]) == int(j.rate * j.duration)  # every message counted
    assert_ends_by_disconnect(a["intended"], a["outcome"], killed["ns"])


@pytest.mark.slow
def test_a_probe_due_on_a_dead_connection_is_a_disconnect(tmp_path):
    """The idle-client (capacity) driver ends its probes by the same rule."""
    with socketio_server(tmp_path) as server:
        j = Job(targets=((server.host, server.port),), connections=4, warmup=0.0,
                duration=2.0, deadline=1.0, kind="capacity")
        workers = Workers(j, str(tmp_path), None)
        try:
            [grown] = workers.ask("grow 4", 30)
            assert grown["alive"] == 4
            killed = kill_later(server, 0.8)
            held = workers.ask("hold 2.0", 30)
            killed["timer"].join(5)
        finally:
            workers.close()
    arrays = probe_arrays(held)
    assert_ends_by_disconnect(arrays["intended"], arrays["outcome"], killed["ns"])
