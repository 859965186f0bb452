"""Checks each step makes of its own samples: per-step intervals, arrivals, stationarity, independence.

A step's percentiles come from one run of the server, so before they are trusted the step
looks at its own messages:

* **Intervals** (``p50_step_ci_*``, ``p99_step_ci_*``): distribution-free intervals for the
  step's own p50 / p99 from order statistics, widened when consecutive latencies are
  correlated (fewer effective samples). They say how precisely this one step measured its
  percentiles; the intervals over repeats in ``stats.py`` say how much repeats disagree.
* **Arrivals**: the open-loop schedule was kept (uniform: messages went out on time;
  Poisson: the send times really are a Poisson stream at the step's rate).
* **Stationarity**: latency did not drift across the measured window (both a significant
  trend and a drift of at least ``DRIFT_MIN_PCT`` between its first and last fifth).
* **Independence**: consecutive latencies are not materially correlated.

Each verdict is given only on evidence (a test at 1 %), so a steady server is not flagged for
the wobble every run has. Pure functions of numpy arrays; times in ns, latencies in µs.
"""
import math

import numpy as np
from scipy import stats as scipy_stats

from bench.analysis import stats

# stationarity: both statistical and practical significance (a steady server's slices wobble)
TREND_ALPHA = 0.01          # a trend test must reject "no trend" at 1 %
DRIFT_MIN_PCT = 20.0        # ... and the last fifth's median must differ from the first's by 20 %
TREND_SLICES = 40           # a change confined to the last fifth must be testable: 8 slices a
#                             fifth let its rank test reach 1 % (2 of 10 slices: best p 1/3)
MIN_PER_SLICE = 20          # a slice's median and p90 need this many samples to mean something
MIN_SLICES = 6              # Kendall's test on 5 points cannot reach 1 % (best p 2/5! = 0.017)
# independence
RHO_MAX = 0.75              # the interval already widens by effective_n (an AR(1) reading of
#                             the series); the flag marks correlation beyond what that corrects
#                             for: effective_n under 1/7 of n, where one lag-1 coefficient no
#                             longer describes the series (regimes, stalls). A steady server on
#                             this machine shows rho 0.35-0.66 (timer and CPU-state noise that
#                             persists over milliseconds), so a lower bar flags every row
DEPENDENCE_ALPHA = 0.01     # ... and only when the lag-1 correlation is significant at 1 %
# arrivals
LATE_MIN_NS = 50_000        # a send within 50 µs of its slot is on time whatever the rate
LATE_GAP_SHARE = 0.25       # ... or within a quarter of the mean gap between sends
LATE_SHARE_MAX = 0.01       # a schedule may lose 1 % of its slots to the OS before it is not kept
ARRIVALS_ALPHA = 0.01       # the evidence needed that more than that many were late
AD_CRITICAL = 3.857         # Anderson-Darling, fully specified distribution, 1 % (5 %: 2.492)
AD_MAX_GAPS = 20_000        # at millions of gaps AD rejects sub-µs timer quantisation that
#                             changes no latency; 20,000 still sees any stall or wrong rate
AD_CLIP = 1e-12             # keeps log(u) and log(1 - u) finite for gaps of 0 or huge
# driver lag
DRIVER_ALPHA = 0.01         # too few lags for a percentile: the excess must be significant at 1 %

# the codes ``reasons`` may hold (machine-readable; a row's note stays the human sentence)
REASONS = ("arrivals:late", "arrivals:not_poisson", "nonstationary:drift", "dependent:lag1")
NAN = float("nan")


# ------------------------------------------------------------------------- independence

def lag1_rank_autocorrelation(x):
    """Spearman correlation of each latency with the next: dependence that shrinks information."""
    x = np.asarray(x, dtype=float)
    if len(x) < 3 or np.ptp(x[:-1]) == 0 or np.ptp(x[1:]) == 0:
        return NAN
    return float(scipy_stats.spearmanr(x[:-1], x[1:])[0])


def effective_n(n, rho):
    """How many independent samples n correlated ones are worth (AR(1): n·(1 − ρ)/(1 + ρ))."""
    if n < 1 or rho is None or not np.isfinite(rho) or rho <= 0:
        return float(n)
    return float(min(n, max(1.0, n * (1.0 - rho) / (1.0 + rho))))


def dependent(rho, n):
    """Whether the lag-1 correlation is both material (> RHO_MAX) and significant."""
    if n < 3 or not np.isfinite(rho) or rho <= RHO_MAX:
        return False
    # under independence the lag-1 rank correlation is about N(0, 1/n); positive is the harm
    return bool(scipy_stats.norm.sf(rho * math.sqrt(n)) < DEPENDENCE_ALPHA)


# ---------------------------------------------------------------------------- intervals

def quantile_interval(values, q, n_eff=None, confidence=stats.CONFIDENCE):
    """(low, high) that holds the q-th percentile with ``confidence``, from order statistics.

    Ranks are the binomial's tails: x_(l) with l = Bin(m, q).ppf(α/2) and x_(u) with
    u = Bin(m, q).ppf(1 − α/2) + 1 cover with probability ≥ ``confidence`` for any continuous
    distribution. m = n, or round(n_eff) when correlated samples are worth fewer; the rank
    fractions l/m and u/m are then mapped outwards onto the n sorted values, which widens the
    interval. (nan, nan) when no such ranks exist (too few samples for q: p99 needs ~370).
    """
    x = np.asarray(values, dtype=float)
    x = x[np.isfinite(x)]
    n = len(x)
    m = n if n_eff is None or not np.isfinite(n_eff) else int(round(min(n, max(1.0, n_eff))))
    if n == 0 or m == 0:
        return NAN, NAN
    p, alpha = q / 100.0, 1.0 - confidence
    low = int(scipy_stats.binom.ppf(alpha / 2, m, p))
    high = int(scipy_stats.binom.ppf(1 - alpha / 2, m, p)) + 1
    if low < 1 or high > m:
        return NAN, NAN
    if m < n:
        low, high = max(1, math.floor(low * n / m)), min(n, math.ceil(high * n / m))
    part = np.partition(x, [low - 1, high - 1])
    return float(part[low - 1]), float(part[high - 1])


# -------------------------------------------------------------------------- stationarity

def _kendall_p(y):
    """Two-sided p of Kendall's test of y against its slice order (Mann-Kendall)."""
    if np.ptp(y) == 0:  # nothing to rank: no trend
        return 1.0
    p = scipy_stats.kendalltau(np.arange(len(y)), y).pvalue
    return float(p) if np.isfinite(p) else 1.0


def _shift_p(a, b):
    """Two-sided p of Mann-Whitney's test that b's slice medians sit apart from a's."""
    if not len(a) or not len(b) or np.ptp(np.concatenate([a, b])) == 0:
        return 1.0
    return float(scipy_stats.mannwhitneyu(a, b, alternative="two-sided").pvalue)


def _slice_quantiles(index, y, k, qs):
    """(filled slice indexes, one array per q of their quantiles) in one sort, as np.percentile."""
    ys = y[np.lexsort((y, index))]
    counts = np.bincount(index, minlength=k)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    filled = np.flatnonzero(counts)
    counts, starts = counts[filled], starts[filled]
    values = []
    for q in qs:
        pos = (counts - 1) * q
        low = np.floor(pos).astype(np.int64)
        up = np.minimum(low + 1, counts - 1)
        values.append(ys[starts + low] + (pos - low) * (ys[starts + up] - ys[starts + low]))
    return filled, values


def trend(times_ns, latency_us, window_start_ns, window_end_ns, slices=TREND_SLICES):
    """Whether latency drifted across the window: dict(stationary, drift_pct, trend_p).

    The window is cut into equal time slices by intended send time; Kendall's test of each
    slice's median, and of each slice's p90, against the slice index (Mann-Kendall), and a
    Mann-Whitney test of the first fifth's slice medians against the last fifth's (a change
    late in the window, which a trend test over all slices dilutes). ``trend_p`` is the
    smallest p. ``drift_pct`` = 100 · (median of the last fifth − median of the first fifth)
    / median of the first fifth. Not stationary only when some p < TREND_ALPHA and
    |drift_pct| ≥ DRIFT_MIN_PCT. Slices shrink to keep MIN_PER_SLICE samples each; with too
    few samples for MIN_SLICES slices there is no judging, and the step counts as
    stationary with ``trend_p`` NaN (``drift_pct`` still when both fifths have samples).
    """
    t = (np.asarray(times_ns, dtype=np.int64) - int(window_start_ns)).astype(float)
    y = np.asarray(latency_us, dtype=float)
    span = float(window_end_ns - window_start_ns)
    out = dict(stationary=True, drift_pct=NAN, trend_p=NAN)
    if span <= 0:
        return out
    inside = (t >= 0) & (t <= span) & np.isfinite(y)
    t, y = t[inside], y[inside]
    first, last = y[t < span / 5], y[t >= span - span / 5]
    if len(first) and len(last) and np.median(first) > 0:
        out["drift_pct"] = float(100.0 * (np.median(last) / np.median(first) - 1.0))
    k = min(int(slices), len(y) // MIN_PER_SLICE)
    if k < MIN_SLICES:
        return out
    index = np.clip((t / span * k).astype(np.int64), 0, k - 1)
    filled, (medians, p90s) = _slice_quantiles(index, y, k, (0.5, 0.9))
    if len(filled) < MIN_SLICES:
        return out
    fifth = k // 5
    p = min(_kendall_p(medians), _kendall_p(p90s),
            _shift_p(medians[filled < fifth], medians[filled >= k - fifth]))
    out["trend_p"] = p
    out["stationary"] = not (p < TREND_ALPHA and abs(out["drift_pct"]) >= DRIFT_MIN_PCT)
    return out


# ------------------------------------------------------------------------------ arrivals

def anderson_darling_exponential(gaps, mean):
    """A² of gaps against the exponential with a known mean (fully specified: no fitting)."""
    x = np.sort(np.asarray(gaps, dtype=float))
    n = len(x)
    u = np.clip(-np.expm1(-x / mean), AD_CLIP, 1 - AD_CLIP)
    i = np.arange(1, n + 1)
    return float(-n - np.sum((2 * i - 1) * (np.log(u) + np.log1p(-u[::-1]))) / n)


def arrivals_check(intended_ns, sent_ns, arrivals, rate):
    """Whether an open-loop schedule was kept: dict(arrivals_ok, arrivals_stat, arrivals_reason).

    Messages never sent (``sent_ns`` ≤ 0) are left out. ``uniform``: a send is late more than
    max(LATE_MIN_NS, LATE_GAP_SHARE of the mean gap) after its slot; the stat is the late
    share, and the schedule fails ("arrivals:late") only when a binomial test says that share
    exceeds LATE_SHARE_MAX. ``poisson``: the gaps between all send times, merged, against the
    exponential with mean 1/rate; the stat is Anderson-Darling's A² (of at most AD_MAX_GAPS
    gaps, evenly spaced), failing ("arrivals:not_poisson") above AD_CRITICAL.
    """
    intended = np.asarray(intended_ns, dtype=np.int64)
    sent = np.asarray(sent_ns, dtype=np.int64)
    was_sent = sent > 0
    intended, sent = intended[was_sent], sent[was_sent]
    ok = dict(arrivals_ok=True, arrivals_stat=NAN, arrivals_reason="")
    if arrivals == "uniform":
        n = len(sent)
        if n == 0:
            return ok
        bound = max(LATE_MIN_NS, LATE_GAP_SHARE * 1e9 / rate)
        late = int(np.count_nonzero(sent - intended > bound))
        ok["arrivals_stat"] = late / n
        test = scipy_stats.binomtest(late, n, LATE_SHARE_MAX, alternative="greater")
        if test.pvalue < ARRIVALS_ALPHA:
            ok.update(arrivals_ok=False, arrivals_reason="arrivals:late")
        return ok
    if arrivals == "poisson":
        gaps = np.diff(np.sort(sent)).astype(float)
        if len(gaps) < 2:
            return ok
        if len(gaps) > AD_MAX_GAPS:  # evenly spaced: under a Poisson stream gaps are iid
            gaps = gaps[np.linspace(0, len(gaps) - 1, AD_MAX_GAPS).astype(np.int64)]
        a2 = anderson_darling_exponential(gaps, 1e9 / rate)
        ok["arrivals_stat"] = a2
        if a2 > AD_CRITICAL:
            ok.update(arrivals_ok=False, arrivals_reason="arrivals:not_poisson")
        return ok
    raise ValueError(f"unknown arrivals {arrivals!r} (uniform or poisson)")


# ---------------------------------------------------------------------------- driver lag

def driver_lag_evidence(lag_us, limit_us, q=99.0):
    """(bound, statistic): whether the lag's q-th percentile exceeds limit, judged on evidence.

    With enough samples for the percentile (``stats.enough_for``) it is compared directly
    (statistic: the percentile). With fewer, the count k of lags over the limit must be
    significantly more than a q-th percentile allows (binomial test at DRIVER_ALPHA;
    statistic: k), so one slow connect among 40 is not a driver that cannot keep up.
    """
    lag = np.asarray(lag_us, dtype=float)
    lag = lag[np.isfinite(lag)]
    n = len(lag)
    if n == 0:
        return False, NAN
    if stats.enough_for(n, q):
        value = float(np.percentile(lag, q))
        return bool(value > limit_us), value
    k = int(np.count_nonzero(lag > limit_us))
    test = scipy_stats.binomtest(k, n, 1.0 - q / 100.0, alternative="greater")
    return bool(test.pvalue < DRIVER_ALPHA), float(k)


# ------------------------------------------------------------------------------ one step

def _round(x, digits):
    return round(float(x), digits) if np.isfinite(x) else NAN


def step_checks(latency_us, intended_ns, sent_ns, *, window_start_ns, window_end_ns,
                open_loop, arrivals, rate):
    """Every self-check of one step's measured messages (any order), as summary columns."""
    intended = np.asarray(intended_ns, dtype=np.int64)
    order = np.argsort(intended, kind="stable")
    intended = intended[order]
    latency = np.asarray(latency_us, dtype=float)[order]
    sent = np.asarray(sent_ns, dtype=np.int64)[order]
    n = len(latency)
    rho = lag1_rank_autocorrelation(latency)
    n_eff = effective_n(n, rho)
    out = {}
    for name, q in (("p50", 50.0), ("p99", 99.0)):
        low, high = quantile_interval(latency, q, n_eff=n_eff)
        out[f"{name}_step_ci_low"], out[f"{name}_step_ci_high"] = _round(low, 1), _round(high, 1)
    reasons = []
    if open_loop and rate:  # capacity and reconnect steps hold clients without a schedule
        a = arrivals_check(intended, sent, arrivals, rate)
        if a["arrivals_reason"]:
            reasons.append(a["arrivals_reason"])
        out.update(arrivals_ok=bool(a["arrivals_ok"]), arrivals_stat=float(a["arrivals_stat"]))
    else:  # closed loop, or no rate: no schedule to keep
        out.update(arrivals_ok=True, arrivals_stat=NAN)
    tr = trend(intended, latency, window_start_ns, window_end_ns)
    if not tr["stationary"]:
        reasons.append("nonstationary:drift")
    independent = not dependent(rho, n)
    if not independent:
        reasons.append("dependent:lag1")
    out.update(stationary=bool(tr["stationary"]), drift_pct=_round(tr["drift_pct"], 1),
               trend_p=float(tr["trend_p"]), independent=independent,
               lag1_rho=_round(rho, 4), effective_n=_round(n_eff, 1), reasons=reasons)
    return out


def sentences(checks):
    """The human clauses of the checks a step failed, for its note (codes go to ``reasons``;
    no code reads these)."""
    out = []
    if "arrivals:late" in checks.get("reasons", ()):
        out.append(f"sends off schedule: {100 * checks['arrivals_stat']:.1f} % late, more "
                   f"than {100 * LATE_SHARE_MAX:g} % (binomial p < {ARRIVALS_ALPHA:g})")
    if "arrivals:not_poisson" in checks.get("reasons", ()):
        out.append(f"send times not a Poisson stream at the rate (Anderson-Darling A² "
                   f"{checks['arrivals_stat']:.2f} > {AD_CRITICAL})")
    if not checks.get("stationary", True):
        out.append(f"not stationary: latency drifted {checks['drift_pct']:+.0f} % from the "
                   f"window's first fifth to its last (trend p {checks['trend_p']:.1e})")
    if not checks.get("independent", True):
        out.append(f"consecutive latencies correlated (lag-1 rank rho {checks['lag1_rho']:.2f},"
                   f" effective n {checks['effective_n']:.0f})")
    return out
