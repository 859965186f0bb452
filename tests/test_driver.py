"""The driver's own machinery against the real reference server: several driver processes on
one start time (the path #9 and #11 build on), and busy-polling that is measured honestly."""
import sys

import numpy as np
import pytest

from bench.execute import lifecycle
from bench.execute.load import run_load
from bench.execute.step import cpu_layout
from bench.plan.job import Job, Outcome

pytestmark = pytest.mark.slow


@pytest.fixture
def refserver(tmp_path):
    argv = lambda port: [sys.executable, "-m", "bench.driver.refserver", str(port)]  # noqa: E731
    with lifecycle.serving(argv, str(tmp_path / "ref.log")) as server:
        yield server


def job(server, **kw):
    base = dict(targets=((server.host, server.port),), connections=6, rate=600.0, warmup=0.2,
                duration=0.8)
    return Job(**{**base, **kw})


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
