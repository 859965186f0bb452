"""A step's checks of its own samples (bench/analysis/selfcheck.py), proven by simulation.

Every simulation is seeded and has a known truth (a distribution's percentile, a drift
computed from the model, a schedule built to be kept or broken). Coverage runs are many
enough that simulation noise is a fraction of a percent; where a bound allows for that noise
the test says so and checks the method's exact promise separately.
"""
import math
import time

import numpy as np
import pytest
from scipy import integrate, optimize, signal
from scipy import stats as sst

from bench.analysis import selfcheck

MU, SIGMA = math.log(1000.0), 0.6        # latencies (µs): log-normal, median 1 ms
N = 3000                                 # samples per simulated step
RUNS = 2000                              # simulated steps for each iid coverage
RUNS_AR = 1000                           # ... and for each correlated one
WINDOW_NS = 2_500_000_000                # a 2.5 s measured window
RATE = 1000.0                            # msg/s for the arrival simulations


def true_quantile(q):
    return float(sst.lognorm.ppf(q / 100, SIGMA, scale=math.exp(MU)))


def ar1_lognormal(rng, runs, n, rho):
    """Rows of AR(1)-correlated log-normal latencies (a Gaussian copula): stationary from the
    first sample, marginal LogNormal(MU, SIGMA) exactly."""
    e = rng.standard_normal((runs, n)) * math.sqrt(1 - rho * rho)
    e[:, 0] = rng.standard_normal(runs)  # start in the stationary law
    z = signal.lfilter([1.0], [1.0, -rho], e, axis=1)
    return np.exp(MU + SIGMA * z)


def coverage(rows, truths, widen):
    """Per percentile q in ``truths``, the share of rows whose interval holds the true q-th
    percentile; n_eff from each row's own lag-1 correlation when ``widen``."""
    hits = dict.fromkeys(truths, 0)
    for row in rows:
        n_eff = selfcheck.effective_n(len(row), selfcheck.lag1_rank_autocorrelation(row)) \
            if widen else None
        for q, truth in truths.items():
            low, high = selfcheck.quantile_interval(row, q, n_eff=n_eff)
            assert np.isfinite(low) and np.isfinite(high) and low <= high
            hits[q] += low <= truth <= high
    return {q: h / len(rows) for q, h in hits.items()}


def exact_coverage(row, q):
    """The binomial coverage of the ranks the interval picked (its iid promise, exactly)."""
    low, high = selfcheck.quantile_interval(row, q)
    s = np.sort(row)
    lo_rank, hi_rank = np.searchsorted(s, low) + 1, np.searchsorted(s, high) + 1
    return sst.binom.cdf(hi_rank - 1, len(row), q / 100) - \
        sst.binom.cdf(lo_rank - 1, len(row), q / 100)


# ---------------------------------------------------------------------------- intervals

def test_step_interval_covers_the_true_percentile_of_iid_latencies():
    rng = np.random.default_rng(100)
    rows = rng.lognormal(MU, SIGMA, (RUNS, N))
    found = coverage(rows, {50.0: true_quantile(50), 99.0: true_quantile(99)}, widen=False)
    # simulation noise: 3 standard errors (about 1.5 %); the exact coverage of the chosen
    # ranks at n = 3000 is 95.3 % for p50 and 95.7 % for p99
    noise = 3 * math.sqrt(0.95 * 0.05 / RUNS)
    for q, c in found.items():
        exact = exact_coverage(rows[0], q)
        assert exact >= 0.95, f"p{q:g}: the chosen ranks cover with probability {exact:.4f}"
        assert 0.95 - noise <= c <= 0.99, f"p{q:g}: covered in {c:.3f} of {RUNS} runs"


def test_correlated_samples_need_the_widened_interval():
    rng = np.random.default_rng(200)
    rows = ar1_lognormal(rng, RUNS_AR, N, 0.5)
    truths = {50.0: true_quantile(50), 99.0: true_quantile(99)}
    widened, plain = coverage(rows, truths, widen=True), coverage(rows, truths, widen=False)
    # a p99's tail indicators are less correlated than the median's, so it loses less
    for q, plain_max, gain in ((50.0, 0.90, 0.05), (99.0, 0.94, 0.04)):
        message = f"p{q:g}, AR(1) rho 0.5: widened {widened[q]:.3f}, unwidened {plain[q]:.3f}"
        assert widened[q] >= 0.93, message
        assert plain[q] <= plain_max and widened[q] - plain[q] >= gain, message


def test_interval_is_empty_when_the_samples_cannot_reach_the_percentile():
    x = np.random.default_rng(1).lognormal(MU, SIGMA, 100)
    assert all(math.isnan(v) for v in selfcheck.quantile_interval(x, 99))
    assert all(np.isfinite(selfcheck.quantile_interval(x, 50)))
    assert all(math.isnan(v) for v in selfcheck.quantile_interval([], 50))
    # 3000 samples worth only 100 independent ones: no p99 either
    big = np.random.default_rng(2).lognormal(MU, SIGMA, 3000)
    assert all(math.isnan(v) for v in selfcheck.quantile_interval(big, 99, n_eff=100))


def test_interval_ranks_are_the_binomial_tails_and_widen_with_fewer_effective_samples():
    x = np.arange(1.0, 1001.0)[::-1]  # value = rank, in any order
    low, high = selfcheck.quantile_interval(x, 50)
    assert (low, high) == (sst.binom.ppf(0.025, 1000, 0.5), sst.binom.ppf(0.975, 1000, 0.5) + 1)
    w_low, w_high = selfcheck.quantile_interval(x, 50, n_eff=250)
    assert w_low < low and w_high > high
    assert (w_high - w_low) / (high - low) == pytest.approx(2.0, rel=0.1)  # sqrt(1000 / 250)
    assert selfcheck.quantile_interval(x, 50, n_eff=5000) == (low, high)  # never narrower


def test_interval_of_a_million_values_is_fast():
    x = np.random.default_rng(3).lognormal(MU, SIGMA, 1_000_000)
    start = time.process_time()  # CPU time: the machine may be busy with other work
    low, high = selfcheck.quantile_interval(x, 99, n_eff=600_000)
    assert time.process_time() - start < 0.2
    assert low < true_quantile(99) < high


# -------------------------------------------------------------------------- independence

def test_effective_n_of_iid_and_ar1_series():
    rng = np.random.default_rng(4)
    n = 5000
    iid = rng.lognormal(MU, SIGMA, n)
    n_iid = selfcheck.effective_n(n, selfcheck.lag1_rank_autocorrelation(iid))
    assert n_iid == pytest.approx(n, rel=0.10)
    ar = ar1_lognormal(rng, 1, n, 0.5)[0]
    n_ar = selfcheck.effective_n(n, selfcheck.lag1_rank_autocorrelation(ar))
    assert n_ar == pytest.approx(n / 3, rel=0.20)


def test_effective_n_and_lag1_edges():
    assert selfcheck.effective_n(100, float("nan")) == 100
    assert selfcheck.effective_n(100, -0.4) == 100
    assert selfcheck.effective_n(100, 0.999) == 1.0
    assert selfcheck.effective_n(100, 0.5) == pytest.approx(100 / 3)
    assert math.isnan(selfcheck.lag1_rank_autocorrelation([1.0, 2.0]))
    assert math.isnan(selfcheck.lag1_rank_autocorrelation([5.0] * 50))
    assert selfcheck.lag1_rank_autocorrelation(np.arange(50.0)) == pytest.approx(1.0)


# -------------------------------------------------------------------------- stationarity

def schedule(rng, n):
    return np.sort(rng.integers(0, WINDOW_NS, n))


def test_steady_steps_are_stationary():
    rng = np.random.default_rng(5)
    steps = 400
    passed = sum(selfcheck.trend(t, rng.lognormal(MU, SIGMA, len(t)), 0, WINDOW_NS)["stationary"]
                 for t in (schedule(rng, 1000) for _ in range(steps)))
    assert passed / steps >= 0.95, f"stationary in {passed} of {steps} steady steps"


def fifth_median(delay, lo, hi, sigma):
    """Median of delay(U)·LogNormal(0, sigma) with U uniform on [lo, hi]: the model's truth."""
    def cdf(x):
        f = lambda u: sst.norm.cdf((math.log(x) - math.log(delay(u))) / sigma)
        return integrate.quad(f, lo, hi)[0] / (hi - lo)
    return optimize.brentq(lambda x: cdf(x) - 0.5, 1.0, 1e6, xtol=1e-6)


def test_linear_drift_is_not_stationary_and_its_size_is_measured():
    sigma = 0.3
    delay = lambda t: 1000.0 + 1000.0 * t / WINDOW_NS  # 1 ms growing to 2 ms
    truth = 100 * (fifth_median(delay, 0.8 * WINDOW_NS, WINDOW_NS, sigma)
                   / fifth_median(delay, 0, 0.2 * WINDOW_NS, sigma) - 1)
    rng = np.random.default_rng(6)
    for _ in range(20):
        t = schedule(rng, 1000)
        r = selfcheck.trend(t, delay(t) * rng.lognormal(0, sigma, len(t)), 0, WINDOW_NS)
        assert not r["stationary"] and r["trend_p"] < selfcheck.TREND_ALPHA, r
        assert abs(r["drift_pct"] - truth) <= 15, (r, truth)


def test_a_step_change_late_in_the_window_is_not_stationary():
    rng = np.random.default_rng(7)
    for _ in range(20):
        t = schedule(rng, 1000)
        level = np.where(t < 0.8 * WINDOW_NS, 1000.0, 25_000.0)
        r = selfcheck.trend(t, level * rng.lognormal(0, 0.3, len(t)), 0, WINDOW_NS)
        assert not r["stationary"] and r["drift_pct"] > 1000, r


def test_too_few_samples_to_judge_a_trend():
    rng = np.random.default_rng(8)
    t = schedule(rng, 100)
    r = selfcheck.trend(t, 1000.0 + 1000.0 * t / WINDOW_NS, 0, WINDOW_NS)
    assert r["stationary"] is True and math.isnan(r["trend_p"]) and r["drift_pct"] > 50


# ------------------------------------------------------------------------------ arrivals

def poisson_schedule(rng):
    gaps = rng.exponential(1e9 / RATE, int(RATE * WINDOW_NS / 1e9))
    return np.cumsum(gaps).astype(np.int64)


def stalled(intended, jitter, at_ns=1_000_000_000, stall_ns=100_000_000):
    """Send times when the sender stalls: every message due in the stall goes at its end."""
    due = (intended >= at_ns) & (intended < at_ns + stall_ns)
    return np.where(due, at_ns + stall_ns, intended) + jitter


def test_a_jittered_poisson_schedule_passes():
    rng = np.random.default_rng(9)
    sims, passed = 200, 0
    for _ in range(sims):
        intended = poisson_schedule(rng)
        sent = intended + rng.integers(0, 20_000, len(intended))
        passed += selfcheck.arrivals_check(intended, sent, "poisson", RATE)["arrivals_ok"]
    assert passed / sims >= 0.95, f"{passed} of {sims} Poisson schedules passed"


def test_anderson_darling_is_the_statistic_scipy_computes():
    x = np.random.default_rng(15).exponential(2.0, 500)
    fit = sst.goodness_of_fit(sst.expon, x, known_params={"loc": 0, "scale": 2.0},
                              statistic="ad", n_mc_samples=99, rng=1)
    assert selfcheck.anderson_darling_exponential(x, 2.0) == pytest.approx(fit.statistic)
    assert selfcheck.anderson_darling_exponential(x, 4.0) > selfcheck.AD_CRITICAL  # wrong rate


def test_a_stalled_poisson_schedule_fails():
    rng = np.random.default_rng(10)
    intended = poisson_schedule(rng)
    sent = stalled(intended, rng.integers(0, 20_000, len(intended)))
    r = selfcheck.arrivals_check(intended, sent, "poisson", RATE)
    assert not r["arrivals_ok"] and r["arrivals_reason"] == "arrivals:not_poisson", r
    assert r["arrivals_stat"] > selfcheck.AD_CRITICAL


def test_a_poisson_check_of_millions_of_gaps_uses_a_subset():
    rng = np.random.default_rng(11)
    intended = np.cumsum(rng.exponential(1e9 / 1e6, 2_000_000)).astype(np.int64)
    r = selfcheck.arrivals_check(intended, intended + 1, "poisson", 1e6)
    assert r["arrivals_ok"], r  # whole-ns rounding of 1 µs gaps is not a broken schedule


def test_uniform_schedule_on_time_passes_and_a_stall_fails_as_late():
    rng = np.random.default_rng(12)
    intended = (np.arange(int(RATE * WINDOW_NS / 1e9)) * (1e9 / RATE)).astype(np.int64)
    jitter = rng.integers(0, 10_000, len(intended))
    sent = intended + jitter
    sent[::97] = 0  # never sent: not a late send
    r = selfcheck.arrivals_check(intended, sent, "uniform", RATE)
    assert r["arrivals_ok"] and r["arrivals_reason"] == "" and r["arrivals_stat"] == 0.0, r
    r = selfcheck.arrivals_check(intended, stalled(intended, jitter), "uniform", RATE)
    assert not r["arrivals_ok"] and r["arrivals_reason"] == "arrivals:late", r
    assert r["arrivals_stat"] == pytest.approx(0.04, abs=0.005)


# ---------------------------------------------------------------------------- driver lag

def test_driver_lag_is_judged_on_evidence():
    one = np.full(40, 20.0)
    one[7] = 4300.0
    assert selfcheck.driver_lag_evidence(one, 1000.0) == (False, 1.0)
    ten = np.full(40, 20.0)
    ten[:10] = 4300.0
    assert selfcheck.driver_lag_evidence(ten, 1000.0) == (True, 10.0)
    many = np.full(5000, 20.0)
    many[::50] = 4300.0  # 2 % over the limit: the p99 is itself over it
    bound, p99 = selfcheck.driver_lag_evidence(many, 1000.0)
    assert bound and p99 == pytest.approx(4300.0)
    assert selfcheck.driver_lag_evidence(np.full(5000, 20.0), 1000.0) == (False, 20.0)


# ------------------------------------------------------------------------------ one step

KEYS = {"p50_step_ci_low", "p50_step_ci_high", "p99_step_ci_low", "p99_step_ci_high",
        "arrivals_ok", "arrivals_stat", "stationary", "drift_pct", "trend_p", "independent",
        "lag1_rho", "effective_n", "reasons"}


def checks(latency, intended, sent, **kw):
    kw = dict(window_start_ns=0, window_end_ns=WINDOW_NS, open_loop=True, arrivals="uniform",
              rate=RATE) | kw
    return selfcheck.step_checks(latency, intended, sent, **kw)


def test_a_clean_step_has_no_reasons_in_any_order():
    rng = np.random.default_rng(13)
    intended = (np.arange(2500) * 1e6).astype(np.int64)
    sent = intended + rng.integers(0, 10_000, 2500)
    latency = rng.lognormal(MU, SIGMA, 2500)
    r = checks(latency, intended, sent)
    assert set(r) == KEYS and r["reasons"] == [], r
    assert r["arrivals_ok"] is True and r["stationary"] is True and r["independent"] is True
    assert r["p50_step_ci_low"] < true_quantile(50) < r["p50_step_ci_high"]
    assert r["p99_step_ci_low"] < r["p99_step_ci_high"]
    assert r["effective_n"] == pytest.approx(2500, rel=0.1)
    shuffle = rng.permutation(2500)
    assert checks(latency[shuffle], intended[shuffle], sent[shuffle]) == r
    closed = checks(latency, intended, sent, open_loop=False)
    assert closed["arrivals_ok"] is True and math.isnan(closed["arrivals_stat"])


def test_a_troubled_step_names_each_reason():
    rng = np.random.default_rng(14)
    intended = (np.arange(2500) * 1e6).astype(np.int64)
    sent = stalled(intended, rng.integers(0, 10_000, 2500))
    latency = ar1_lognormal(rng, 1, 2500, 0.95)[0] * (1 + intended / WINDOW_NS)
    r = checks(latency, intended, sent)
    assert r["reasons"] == ["arrivals:late", "nonstationary:drift", "dependent:lag1"], r
    assert r["independent"] is False and r["lag1_rho"] > selfcheck.RHO_MAX
    assert r["effective_n"] < 2500 / 7
    r = checks(latency, intended, intended + 5, arrivals="poisson")
    assert "arrivals:not_poisson" in r["reasons"]  # evenly spaced sends are not Poisson


def test_a_row_over_several_repeats_is_never_judged_on_one_repeat_s_own_interval():
    """A row planned over repeats is judged over them; its per-step interval (a single good
    repeat's) stands in only for a row measured as one repeat."""
    from bench.analysis import compare
    row = {"repeats": 4, "p99_us": 900.0, "p99_step_ci_low": 850.0, "p99_step_ci_high": 950.0}
    low, high, _ = compare.interval_of(row, "p99", [900.0, 910.0])
    assert math.isnan(low) and math.isnan(high)
    row["repeats"] = 1
    assert compare.interval_of(row, "p99", [900.0])[:2] == (850.0, 950.0)
