"""The sweep search (bench/execute/sweep.py) as a pure function of what each step measured.

``measure`` is a fake server of known capacity C: below C it answers everything and its p99
grows like a queue's (2 ms / (1 − ρ)); above C it answers only C per second and its tail sits
at the deadline. The real-server overload test lives with the runner's tests.
"""
import math

import pytest

from bench.execute import sweep
from bench.plan import steps as plan

DEADLINE_US = 5_000_000.0


def sweep_step(**options):
    steps, o = plan.build(["v"], ["sweep"], dict(dict(repeats=1, sweep_max=25600.0), **options))
    return steps[0], o


class FakeServer:
    """``measure(sub_step, attempt)`` as the runner's: rows for one rate, recorded in calls."""

    def __init__(self, capacity, fail_first=False, driver_limit=None, driver_flaky=(),
                 server_flaky=()):
        self.capacity, self.fail_first = capacity, fail_first
        self.driver_limit, self.driver_flaky = driver_limit, set(driver_flaky)
        self.server_flaky = set(server_flaky)  # rates whose first step meets a stall
        self.calls = []

    def row(self, rate, duration, attempt):
        attempted = int(rate * duration)
        rho = rate / self.capacity
        if rho < 1:
            ok, achieved, p99 = attempted, rate, min(2000.0 / (1 - rho), DEADLINE_US)
        else:  # overloaded: C replies per second, the rest time out at the deadline
            ok, achieved, p99 = int(attempted / rho), self.capacity, DEADLINE_US
        driver_bound = bool(self.driver_limit and rate >= self.driver_limit) or \
            (rate in self.driver_flaky and not any(c[0] == rate for c in self.calls[:-1]))
        if driver_bound:  # the driver fell behind: it sent and received less than asked
            achieved = 0.8 * rate
        if rate in self.server_flaky and not any(c[0] == rate for c in self.calls[:-1]):
            p99 = 200_000.0  # a 200 ms stall once: p99 over the SLO, everything answered
        return dict(variant="v", scenario="sweep", load_point=f"{rate:g} msg/s", repeat=1,
                    transport="websocket", target_rate=rate, attempted=attempted, ok=ok,
                    achieved_rate=achieved, p99_us=p99, driver_bound=driver_bound,
                    attempt=attempt)

    def __call__(self, sub, attempt):
        self.calls.append((sub.rate, attempt, sub.duration))
        if self.fail_first:
            return [dict(variant="v", scenario="sweep", load_point=sub.load_point, repeat=1,
                         transport="", target_rate=sub.rate, attempted=0, ok=0,
                         achieved_rate=float("nan"), p99_us=float("nan"),
                         driver_bound=False, attempt=attempt)]
        return [self.row(sub.rate, sub.duration, attempt)]


def rates_of(rows):
    return [r["target_rate"] for r in rows]


@pytest.mark.parametrize("capacity", [300.0, 1000.0, 2500.0, 7000.0])
def test_the_knee_of_a_server_of_known_capacity_is_exact_and_below_it(capacity):
    step, o = sweep_step()
    server = FakeServer(capacity)
    rows, knee = sweep.search(step, o, server)
    assert knee["bound"] == "exact", knee
    assert 0.6 * capacity <= knee["knee_msg_s"] <= capacity, knee
    assert knee["next_msg_s"] > knee["knee_msg_s"]
    assert knee["reason"] and "msg/s" in knee["reason"]
    assert knee["variant"] == "v" and knee["repeat"] == 1 and knee["slo"] == sweep.slo_text(o)
    # one row per rate, in rate order; the knee's row held, next_msg_s's row broke
    assert rates_of(rows) == sorted(set(rates_of(rows)))
    by_rate = {r["target_rate"]: r for r in rows}
    assert by_rate[knee["knee_msg_s"]]["slo_pass"] is True
    assert by_rate[knee["next_msg_s"]]["slo_pass"] is False
    assert all(r["slo_pass"] is (r["target_rate"] <= knee["knee_msg_s"]) for r in rows)
    # it stopped walking up at the first break (plus the refinement between)
    assert max(rates_of(rows)) <= 2 * o["sweep_factor"] * capacity


def test_steps_are_long_enough_for_their_p99():
    step, o = sweep_step()
    server = FakeServer(1000.0)
    sweep.search(step, o, server)
    for rate, _, duration in server.calls:
        assert rate * duration >= 1000 or duration == o["sweep_step_max"], (rate, duration)


def test_a_sweep_that_never_breaks_gives_a_lower_bound():
    step, o = sweep_step(sweep_max=3200.0)
    rows, knee = sweep.search(step, o, FakeServer(1e9))
    assert knee["bound"] == "lower"
    assert knee["knee_msg_s"] == 3200.0 == max(step.sweep_rates)
    assert math.isnan(knee["next_msg_s"])
    assert "no break" in knee["reason"]
    assert rates_of(rows) == list(step.sweep_rates)
    assert all(r["slo_pass"] for r in rows)


def test_a_failed_first_step_gives_no_bound():
    step, o = sweep_step()
    server = FakeServer(1000.0, fail_first=True)
    rows, knee = sweep.search(step, o, server)
    assert knee["bound"] == "none"
    assert knee["knee_msg_s"] == 0
    assert knee["next_msg_s"] == step.sweep_rates[0]
    assert "first rate failed" in knee["reason"] and "server failed" in knee["reason"]
    assert len(server.calls) == 2 and len(rows) == 1  # the failure is measured twice
    assert knee["attempts"] == "100:fail 100:fail"


def test_a_first_rate_over_capacity_gives_no_bound():
    step, o = sweep_step()
    rows, knee = sweep.search(step, o, FakeServer(50.0))
    assert knee["bound"] == "none" and knee["knee_msg_s"] == 0
    assert knee["next_msg_s"] == 100.0
    assert len(rows) == 1


def test_a_driver_bound_break_is_retried_once_then_a_lower_bound():
    step, o = sweep_step()
    server = FakeServer(1e9, driver_limit=800.0)
    rows, knee = sweep.search(step, o, server)
    assert [c[0] for c in server.calls] == [100.0, 200.0, 400.0, 800.0, 800.0]
    assert knee["bound"] == "lower", knee
    assert knee["knee_msg_s"] == 400.0 and knee["next_msg_s"] == 800.0
    assert "driver" in knee["reason"]
    assert rates_of(rows) == [100.0, 200.0, 400.0, 800.0]  # the retried rate appears once
    assert rows[-1]["attempt"] == 4  # ... with its last measurement


def test_a_driver_hiccup_that_clears_on_retry_does_not_end_the_sweep():
    step, o = sweep_step()
    server = FakeServer(1000.0, driver_flaky={400.0})
    rows, knee = sweep.search(step, o, server)
    calls = [c[0] for c in server.calls]
    assert calls[:4] == [100.0, 200.0, 400.0, 400.0]
    assert knee["bound"] == "exact" and 600.0 <= knee["knee_msg_s"] <= 1000.0
    assert rates_of(rows).count(400.0) == 1
    kept = [r for r in rows if r["target_rate"] == 400.0][0]
    assert kept["driver_bound"] is False and kept["slo_pass"] is True
    assert len(rows) == len(set(calls))


def test_quick_sweeps_do_not_refine():
    step, o = sweep_step(quick=True)
    rows, knee = sweep.search(step, o, FakeServer(300.0))
    assert rates_of(rows) == [100.0, 200.0, 400.0]
    assert knee["bound"] == "exact"
    assert (knee["knee_msg_s"], knee["next_msg_s"]) == (200.0, 400.0)


@pytest.mark.parametrize("row,why", [
    (dict(transport="", attempted=0, ok=0, achieved_rate=0, p99_us=1.0, driver_bound=False),
     "server failed"),
    (dict(transport="websocket", attempted=0, ok=0, achieved_rate=0, p99_us=1.0,
          driver_bound=False), "nothing measured"),
    (dict(transport="websocket", attempted=1000, ok=1000, achieved_rate=1000.0, p99_us=1.0,
          driver_bound=True), "driver-bound"),
    (dict(transport="websocket", attempted=1000, ok=990, achieved_rate=1000.0, p99_us=1.0,
          driver_bound=False), "acked"),
    (dict(transport="websocket", attempted=1000, ok=1000, achieved_rate=900.0, p99_us=1.0,
          driver_bound=False), "achieved"),
    (dict(transport="websocket", attempted=1000, ok=1000, achieved_rate=1000.0,
          p99_us=float("nan"), driver_bound=False), "too few samples"),
    (dict(transport="websocket", attempted=1000, ok=1000, achieved_rate=1000.0,
          p99_us=60_000.0, driver_bound=False), "p99 60.0 ms"),
    (dict(transport="websocket", attempted=1000, ok=1000, achieved_rate=1000.0,
          p99_us=50_000.0, driver_bound=False), ""),
])
def test_slo_breach_says_why(row, why):
    _, o = sweep_step()
    reason = sweep.slo_breach(row, 1000.0, o)
    assert (why in reason) if why else reason == "", reason


def test_a_driver_bound_refinement_step_does_not_hide_the_servers_break():
    step, o = sweep_step()

    class DriverStumblesAbove1000(FakeServer):
        def row(self, rate, duration, attempt):
            row = super().row(rate, duration, attempt)
            if 1000 < rate < 1500:  # the refinement step between 800 (held) and 1600 (broke)
                row["driver_bound"] = True
            return row

    server = DriverStumblesAbove1000(1000.0)
    rows, knee = sweep.search(step, o, server)
    assert [c[0] for c in server.calls][:5] == [100.0, 200.0, 400.0, 800.0, 1600.0]
    assert knee["knee_msg_s"] == 800.0
    assert knee["bound"] == "exact" and knee["next_msg_s"] == 1600.0, knee


def test_a_server_stall_that_clears_on_retry_does_not_set_the_knee():
    step, o = sweep_step()
    server = FakeServer(1000.0, server_flaky={400.0})
    rows, knee = sweep.search(step, o, server)
    assert [c[0] for c in server.calls][:4] == [100.0, 200.0, 400.0, 400.0]
    assert knee["bound"] == "exact" and 600.0 <= knee["knee_msg_s"] <= 1000.0, knee
    assert "400:fail 400:pass" in knee["attempts"]
    assert [r for r in rows if r["target_rate"] == 400.0][0]["slo_pass"] is True


def test_with_precision_a_rate_holds_only_when_its_p99_interval_is_within_the_slo():
    step, o = sweep_step(precision=["p99=5%"])
    row = dict(transport="websocket", attempted=1000, ok=1000, achieved_rate=400.0,
               driver_bound=False, p99_us=45_000.0)
    inside = dict(row, p99_step_ci_low=44_000.0, p99_step_ci_high=47_000.0)
    straddles = dict(row, p99_step_ci_low=43_000.0, p99_step_ci_high=52_000.0)
    above = dict(row, p99_us=60_000.0, p99_step_ci_low=55_000.0, p99_step_ci_high=66_000.0)
    assert sweep.slo_breach(inside, 400.0, o) == ""
    assert "straddles" in sweep.slo_breach(straddles, 400.0, o)
    assert "> 50 ms" in sweep.slo_breach(above, 400.0, o)
    assert "no p99 interval" in sweep.slo_breach(dict(row, p99_step_ci_low=float("nan"),
                                                      p99_step_ci_high=float("nan")), 400.0, o)
    assert sweep.slo_breach(straddles, 400.0, dict(o, precision={})) == ""  # the point holds
