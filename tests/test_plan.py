"""Scheduling (bench/driver/lean.py open_schedule) and plans (bench/plan/)."""
import os
import re

import numpy as np
import pytest

from bench.plan import steps as plan
from bench.driver.loops import open_schedule
from bench.plan import scenarios
from bench.plan.job import Job
from bench.errors import UsageError

T0 = 1_000_000_000_000


def job(rate, conns, warmup=0.5, duration=1.0, total=None, **extra):
    conns = tuple(conns)
    return Job(targets=(("127.0.0.1", 1),), rate=rate, warmup=warmup, duration=duration,
               conns=conns, connections=total if total is not None else len(conns), **extra)


# --------------------------------------------------------------------------- open schedule

@pytest.mark.parametrize("rate,conns,warmup,duration", [
    (400.0, 10, 1.0, 3.0), (1000.0, 20, 0.5, 1.0), (333.0, 7, 0.0, 2.0), (25_000.0, 50, 0.5, 1.0),
    (1.0, 1, 0.0, 5.0)])
def test_total_rate_is_exact(rate, conns, warmup, duration):
    conn, times = open_schedule(job(rate, range(conns), warmup, duration), T0)
    n = int(rate * (warmup + duration))
    assert len(times) == len(conn) == n
    # message j is due at t0 + j/R, rounded to the nanosecond: no drift, no accumulation
    expected = T0 + np.round(np.arange(n) * (1e9 / rate)).astype(np.int64)
    np.testing.assert_array_equal(times, expected)
    assert np.all(np.diff(times) > 0)
    gaps = np.diff(times)
    assert gaps.min() >= int(1e9 / rate) and gaps.max() <= int(1e9 / rate) + 1


def test_connections_are_staggered_evenly():
    rate, conns = 1000.0, 10
    conn, times = open_schedule(job(rate, range(conns)), T0)
    np.testing.assert_array_equal(conn, np.arange(len(conn)) % conns)
    firsts = [int(times[conn == c][0]) for c in range(conns)]
    # each connection starts one global interval after the previous one ...
    assert np.allclose(np.diff(firsts), 1e9 / rate, atol=1)
    # ... and then sends every conns/rate seconds: per-connection rate is R/C
    for c in range(conns):
        own = times[conn == c]
        assert np.allclose(np.diff(own), conns * 1e9 / rate, atol=1)
        assert len(own) == pytest.approx(len(times) / conns, abs=1)


@pytest.mark.parametrize("workers", [1, 2, 3, 4, 7])
def test_worker_slices_partition_the_global_schedule(workers):
    total = 20
    full = job(2000.0, range(total))
    g_conn, g_times = open_schedule(full, T0)
    conns = list(range(total))
    parts = [open_schedule(job(2000.0, conns[w::workers], total=total), T0)
             for w in range(workers) if conns[w::workers]]
    cat_times = np.concatenate([t for _, t in parts])
    cat_conn = np.concatenate([c for c, _ in parts])
    assert len(cat_times) == len(g_times)  # nothing lost, nothing doubled
    assert len(np.unique(cat_times)) == len(cat_times)
    order = np.argsort(cat_times, kind="stable")
    np.testing.assert_array_equal(cat_times[order], g_times)
    np.testing.assert_array_equal(cat_conn[order], g_conn)
    for w, (c, _) in enumerate(parts):
        assert set(np.unique(c)) <= set(conns[w::workers])


def test_schedule_count_is_bounded_by_the_worker_arrays():
    """The schedule can never outrun the preallocated arrays: the loop is bounded."""
    for rate, conns, warmup, duration in [(400.0, 10, 1.0, 3.0), (99_999.0, 3, 0.5, 1.0),
                                          (7.3, 1, 0.1, 0.2)]:
        j = job(rate, range(conns), warmup, duration)
        _, times = open_schedule(j, T0)
        assert len(times) <= j.max_messages
        assert len(times) == int(rate * (warmup + duration))
        # every send is due before the end of the step
        assert times.max() < T0 + (warmup + duration) * 1e9


def test_schedule_of_a_worker_without_connections_is_empty():
    conn, times = open_schedule(job(500.0, [], total=4), T0)
    assert len(conn) == len(times) == 0


# --------------------------------------------------------------------------- plan

def build(variants=("a", "b"), scenarios=("echo", "rate"), **options):
    return plan.build(list(variants), list(scenarios), options)


def test_plan_covers_variants_scenarios_and_repeats():
    steps, o = build(("a", "b", "c"), ("echo", "rate"), repeats=3)
    assert len(steps) == 3 * 2 * 3
    keys = {(s.variant, s.scenario, s.repeat) for s in steps}
    assert keys == {(v, sc, r) for v in "abc" for sc in ("echo", "rate") for r in (1, 2, 3)}
    assert [s.index for s in steps] == list(range(len(steps)))


def test_plan_order_is_shuffled_reproducibly_by_seed():
    a, _ = build(("a", "b", "c", "d"), ("echo", "rate"), repeats=3, seed=5)
    b, _ = build(("a", "b", "c", "d"), ("echo", "rate"), repeats=3, seed=5)
    c, _ = build(("a", "b", "c", "d"), ("echo", "rate"), repeats=3, seed=6)
    key = lambda steps: [(s.variant, s.scenario, s.repeat) for s in steps]  # noqa: E731
    assert key(a) == key(b)
    assert key(a) != key(c)
    natural = sorted(key(a), key=lambda k: (k[2], k[0], k[1]))
    assert key(a) != natural


def test_plan_echo_is_closed_loop_and_rate_open_loop():
    steps, _ = build(("a",), ("echo", "rate"), repeats=1, rate=750.0, connections=None)
    by = {s.scenario: s for s in steps}
    assert by["echo"].rate is None and not by["echo"].open_loop
    assert by["echo"].connections == scenarios.ECHO_CONNECTIONS
    assert by["rate"].rate == 750.0 and by["rate"].open_loop
    assert by["rate"].connections == scenarios.RATE_CONNECTIONS


def test_quick_shrinks_unless_the_option_is_given():
    steps, o = build(quick=True)
    assert (o["duration"], o["warmup"], o["repeats"]) == (plan.QUICK["duration"],
                                                         plan.QUICK["warmup"],
                                                         plan.QUICK["repeats"])
    assert all(s.duration == plan.QUICK["duration"] for s in steps)
    steps, o = build(quick=True, duration=2.5, repeats=2)
    assert o["duration"] == 2.5 and o["repeats"] == 2 and len(steps) == 2 * 2 * 2


def test_quick_sweep_has_at_most_four_rates():
    steps, _ = build(("a",), ("sweep",), quick=True)
    assert all(1 <= len(s.sweep_rates) <= 4 for s in steps)


@pytest.mark.parametrize("options,needle", [
    (dict(rate=0.0), "--rate"),
    (dict(rate=-5.0), "--rate"),
    (dict(duration=0.0), "--duration"),
    (dict(duration=4000.0), "--duration"),
    (dict(warmup=-1.0), "--warmup"),
    (dict(repeats=0), "--repeats"),
    (dict(repeats=101), "--repeats"),
    (dict(connections=0), "--connections"),
    (dict(connections=10_000_000), "--connections"),  # beyond what this machine allows
    (dict(payload=7), "--payload"),
    (dict(rate=150_000.0, duration=60.0), "messages"),
])
def test_plan_validation_names_the_option(options, needle):
    with pytest.raises(UsageError, match=needle):
        build(**options)


def test_unknown_scenario_is_a_usage_error():
    with pytest.raises(UsageError, match="unknown scenario 'nope'"):
        build(scenarios=("echo", "nope"))


def test_poisson_arrivals_have_exponential_gaps_and_split_exactly_over_workers():
    full = job(2000.0, range(4), warmup=0.5, duration=4.5, arrivals="poisson", seed=7)
    _, times = open_schedule(full, T0)
    gaps = np.diff(times) / 1e9
    assert abs(gaps.mean() - 1 / 2000.0) < 0.05 / 2000.0
    assert abs(gaps.std() / gaps.mean() - 1.0) < 0.05      # exponential: sd = mean
    parts = [open_schedule(job(2000.0, (w,), warmup=0.5, duration=4.5, total=4,
                               arrivals="poisson", seed=7), T0)[1] for w in range(4)]
    assert np.array_equal(np.sort(np.concatenate(parts)), times)
    uniform = open_schedule(job(2000.0, range(4), warmup=0.5, duration=4.5), T0)[1]
    assert np.ptp(np.diff(uniform)) <= 1


def test_dry_run_prints_the_plan_and_its_time_and_starts_nothing(bench, tmp_path):
    r = bench.run("run", "--variants", "socketio-run-gevent,flask-run-threading", "--scenario",
                  "echo", "--scenario", "sweep", "--repeats", "2", "--dry-run", "--out",
                  str(tmp_path), timeout=60)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.strip().splitlines()
    assert sum(1 for line in lines if re.match(r"\s*\d+\. ", line)) == 8  # 2 × 2 × 2 steps
    assert "environments: default" in r.stdout
    assert "estimated" in lines[-1] and "min" in lines[-1]
    assert os.listdir(tmp_path) == []  # no run folder, nothing started
