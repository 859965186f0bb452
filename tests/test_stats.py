"""Intervals over repeats (bench/analysis/stats.py): coverage proven by simulation.

Every simulation is seeded and has a known truth: the median of the distribution that the
per-repeat values are drawn from (what ``stats.interval`` is an interval for). Each runs
2000 synthetic experiments, so a coverage estimate near 95 % has a standard error of about
0.5 %; the bounds below leave about three standard errors for simulation noise.
"""
import math

import numpy as np
import pytest
from scipy import optimize
from scipy import stats as sst

from bench.analysis import stats

RUNS = 2000
CHECKED = 200


def intervals(samples):
    """stats.interval of every run (row of ``samples``), vectorised for speed; the first
    ``CHECKED`` runs are compared with stats.interval itself, so what is simulated is the
    harness's interval and not a copy of it."""
    runs, n = samples.shape
    if n >= stats.ORDER_STAT_MIN:
        k = stats.order_statistic_rank(n)
        ordered = np.sort(samples, axis=1)
        low, high = ordered[:, k - 1], ordered[:, n - k]
    else:
        logs = np.log(samples)
        half = sst.t.ppf(0.5 + stats.CONFIDENCE / 2, n - 1) * logs.std(axis=1, ddof=1) \
            / math.sqrt(n)
        low, high = np.exp(logs.mean(axis=1) - half), np.exp(logs.mean(axis=1) + half)
    for row, lo, hi in zip(samples[:CHECKED], low, high):
        real = stats.interval(list(row))
        assert real[:2] == pytest.approx((lo, hi), rel=1e-9), (row, real, lo, hi)
    return low, high


def coverage(samples, truth):
    """Share of runs whose interval contains ``truth``."""
    low, high = intervals(samples)
    assert np.isfinite(low).all() and np.isfinite(high).all()
    return float(np.mean((low <= truth) & (truth <= high)))


# ------------------------------------------------------------------ order statistics

def mixture_median():
    """Median of 0.7 · Gamma(2, 300) + 0.3 · LogNormal(log 3000, 0.8): skewed, bimodal."""
    def cdf(x):
        return 0.7 * sst.gamma.cdf(x, 2, scale=300) + \
            0.3 * sst.lognorm.cdf(x, 0.8, scale=3000)
    return optimize.brentq(lambda x: cdf(x) - 0.5, 1, 1e6, xtol=1e-9)


def draw_mixture(rng, size):
    slow = rng.random(size) < 0.3
    return np.where(slow, rng.lognormal(np.log(3000), 0.8, size),
                    rng.gamma(2, 300, size))


@pytest.mark.parametrize("n", [6, 10])
@pytest.mark.parametrize("dist", ["gamma", "mixture"])
def test_order_statistic_interval_covers_the_median_of_a_skewed_distribution(n, dist):
    rng = np.random.default_rng(1000 + n)
    if dist == "gamma":
        samples, truth = rng.gamma(1.5, 400, (RUNS, n)), sst.gamma.median(1.5, scale=400)
    else:
        samples, truth = draw_mixture(rng, (RUNS, n)), mixture_median()
    assert stats.interval(samples[0])[2] == "order statistics"
    c = coverage(samples, truth)
    assert c >= 0.94, c               # the method promises ≥ 95 %
    assert c <= 0.995, c              # ... and is not absurdly conservative (exact: 96.9 / 97.9 %)


@pytest.mark.parametrize("n", range(6, 61))
def test_order_statistic_rank_is_the_widest_pair_with_95_percent(n):
    k = stats.order_statistic_rank(n)
    exact = 1 - 2 * sst.binom.cdf(k - 1, n, 0.5)
    assert exact >= 0.95
    if k < n // 2:  # one step narrower would fall short
        assert 1 - 2 * sst.binom.cdf(k, n, 0.5) < 0.95


def test_order_statistic_interval_is_the_kth_pair():
    values = [9.0, 1.0, 5.0, 3.0, 7.0, 2.0, 8.0, 4.0, 6.0, 10.0]
    assert stats.interval(values[:6])[:2] == (1.0, 9.0)   # n = 6: k = 1, min and max
    assert stats.interval(values)[:2] == (2.0, 9.0)       # n = 10: k = 2


# ------------------------------------------------------------------------------ log-t

@pytest.mark.parametrize("n", [3, 4, 5])
def test_log_t_interval_covers_the_median_of_lognormal_repeats(n):
    rng = np.random.default_rng(2000 + n)
    mu, sigma = np.log(1500), 0.3
    samples = rng.lognormal(mu, sigma, (RUNS, n))
    assert stats.interval(samples[0])[2].startswith("log-t")
    c = coverage(samples, math.exp(mu))  # the median of a log-normal is exp(mu)
    assert 0.93 <= c <= 0.97, c


def test_log_t_interval_is_exact_on_known_values():
    x = [1000.0, 1100.0, 1210.0]
    low, high, method = stats.interval(x)
    logs = np.log(x)
    half = sst.t.ppf(0.975, 2) * logs.std(ddof=1) / math.sqrt(3)
    assert low == pytest.approx(math.exp(logs.mean() - half))
    assert high == pytest.approx(math.exp(logs.mean() + half))
    assert low < 1000 and high > 1210  # wider than the range with 3 repeats
    assert "log-normal" in method


# ---------------------------------------------------------- realistic: per-repeat p50s

SAMPLES_PER_REPEAT = 800
MU, SIGMA, SHIFT_SIGMA = math.log(400), 0.5, 0.15


def latencies(rng, repeats):
    """``repeats`` synthetic repeats of 800 latencies (µs): each repeat has its own shift
    (machine state, placement: log-normal, σ = 0.15) around a log-normal message latency."""
    shift = rng.lognormal(0.0, SHIFT_SIGMA, (repeats, 1))
    return rng.lognormal(MU, SIGMA, (repeats, SAMPLES_PER_REPEAT)) * shift


def hdr_p50(values):
    """Per-row p50 exactly as stats.histogram_of + stats.value_at compute it, vectorised:
    HdrHistogram at 3 digits records whole µs below 2048 exactly, and its p50 is the value
    of rank int(0.5 · n + 0.5). Checked against the real functions below."""
    v = np.clip(np.rint(values), stats.LOWEST_US, None)
    rank = int(0.5 * v.shape[1] + 0.5)
    p50 = np.partition(v, rank - 1, axis=1)[:, rank - 1]
    assert p50.max() < 2048  # where the emulation is exact
    return p50


def true_median_of_repeat_p50(rng, draws=400_000):
    """The truth, from a large simulation of the per-repeat p50: the rank-400 value of 800
    iid draws is F⁻¹(U) with U ~ Beta(400, 401) (exact in distribution), then the shift and
    the histogram's whole-µs rounding (monotone maps keep order statistics)."""
    rank = int(0.5 * SAMPLES_PER_REPEAT + 0.5)
    u = rng.beta(rank, SAMPLES_PER_REPEAT + 1 - rank, draws)
    shift = rng.lognormal(0.0, SHIFT_SIGMA, draws)
    return float(np.median(np.rint(np.exp(MU + SIGMA * sst.norm.ppf(u)) * shift)))


def test_vectorised_p50_is_the_histograms_p50():
    values = latencies(np.random.default_rng(7), 300)
    real = [stats.value_at(stats.histogram_of(row), 50) for row in values]
    assert np.array_equal(hdr_p50(values), np.asarray(real))


@pytest.mark.parametrize("n,low,high", [
    (6, 0.94, 0.995),   # order statistics: distribution-free
    (3, 0.93, 0.97),    # log-t: per-repeat p50s here are close to log-normal
])
def test_interval_of_per_repeat_p50s_covers_the_true_median(n, low, high):
    rng = np.random.default_rng(3000 + n)
    truth = true_median_of_repeat_p50(rng)
    p50s = hdr_p50(latencies(rng, RUNS * n))
    # the brute-force repeats agree with the truth's distribution
    assert abs(np.median(p50s) / truth - 1) < 0.01
    check = latencies(rng, n)  # one run end to end through the real histogram functions
    assert list(hdr_p50(check)) == [stats.value_at(stats.histogram_of(r), 50) for r in check]
    c = coverage(p50s.reshape(RUNS, n), truth)
    assert low <= c <= high, c


# -------------------------------------------------------------- too few, differ, unstable

@pytest.mark.parametrize("values", [[], [800.0], [800.0, 900.0],
                                    [800.0, float("nan"), None, 900.0]])
def test_interval_is_empty_with_fewer_than_three_repeats(values):
    low, high, method = stats.interval(values)
    assert math.isnan(low) and math.isnan(high)
    assert method.startswith("none")
    assert stats.differ((low, high), (100.0, 200.0)) == "cannot tell"
    assert stats.differ((100.0, 200.0), (low, high)) == "cannot tell"


def test_nan_repeats_are_left_out_not_counted():
    with_gaps = [800.0, float("nan"), 820.0, 790.0, None, 810.0]
    assert stats.interval(with_gaps) == stats.interval([800.0, 820.0, 790.0, 810.0])


@pytest.mark.parametrize("base,new,verdict", [
    ((100.0, 200.0), (250.0, 300.0), "higher"),
    ((100.0, 200.0), (40.0, 90.0), "lower"),
    ((100.0, 200.0), (150.0, 300.0), "no difference"),
    ((100.0, 200.0), (200.0, 300.0), "no difference"),  # touching intervals overlap
])
def test_differ_says_higher_or_lower_only_without_overlap(base, new, verdict):
    assert stats.differ(base, new) == verdict


def test_cv_needs_two_values():
    assert math.isnan(stats.cv([]))
    assert math.isnan(stats.cv([5.0]))
    assert math.isnan(stats.cv([5.0, float("nan")]))
    assert stats.cv([90.0, 110.0]) == pytest.approx(np.std([90, 110], ddof=1) / 100)


def scaled(center, cv):
    """Three values with mean ``center`` and sample CV ``cv``."""
    return [center * (1 - cv), center, center * (1 + cv)]


@pytest.mark.parametrize("p50_cv,p99_cv,expected", [
    (0.05, 0.10, False),
    (0.09, 0.24, False),
    (0.11, 0.05, True),    # medians disagree by more than 10 %
    (0.05, 0.26, True),    # tails disagree by more than 25 %
    (0.05, 0.20, False),
])
def test_unstable_rule_on_p50_and_p99(p50_cv, p99_cv, expected):
    p50s, p99s = scaled(800.0, p50_cv), scaled(5000.0, p99_cv)
    assert stats.cv(p50s) == pytest.approx(p50_cv)
    assert stats.cv(p99s) == pytest.approx(p99_cv)
    assert stats.unstable(p50s, p99s) is expected


def test_unstable_ignores_missing_p99s():
    """Repeats too short for a p99 (NaN) judge on p50 alone."""
    nan = float("nan")
    assert stats.unstable(scaled(800.0, 0.05), [nan, nan, nan]) is False
    assert stats.unstable(scaled(800.0, 0.15), [nan, nan, nan]) is True
    assert stats.unstable([800.0], [5000.0]) is False  # one repeat: nothing to disagree


def test_vectorised_percentiles_mean_and_buckets_agree_with_hdrh():
    """stats reads the counts array with NumPy; every figure must be hdrh's own, on fresh
    and decoded histograms, censored values included."""
    rng = np.random.default_rng(11)
    for trial in range(12):
        h = stats.new_histogram()
        values = rng.lognormal(rng.uniform(2, 12), rng.uniform(0.1, 3),
                               int(rng.integers(1, 5000))).astype(int).clip(1, 3_600_000_000)
        for v in values:
            h.record_value(int(v))
        if trial % 3 == 0:
            h.record_value(5_000_000, 7)
        for x in (h, stats.decode(stats.encode(h))):
            for q in (0, 0.1, 50, 90, 99, 99.9, 99.99, 100):
                assert stats.value_at(x, q) == x.get_value_at_percentile(q), q
            assert stats.mean_of(x) == pytest.approx(x.get_mean_value(), rel=1e-9)
            values_us, counts = stats.counts_of(x)
            walked = [(i.value_iterated_to, i.count_at_value_iterated_to)
                      for i in x.get_recorded_iterator()]
            assert list(zip(values_us, counts)) == walked
