"""Every number computed from latencies: HDR histograms, percentiles, intervals, spread.

Nothing else in the harness computes a percentile. The rules, in one place:

* Histograms are HdrHistogram at 1 µs resolution, 3 significant digits; they travel encoded
  (base64 text) so repeats and driver processes merge losslessly.
* A latency distribution counts every attempted message. A message with no reply by its
  deadline (timed out, lost to a disconnect, never sent on a dead connection) is recorded at
  the deadline: censored. A percentile whose rank falls among the censored messages is the
  deadline itself and is listed in ``censored`` (e.g. ``"p99,p999"``).
* A percentile q is written only when at least ``MIN_TAIL`` samples lie at or beyond it:
  n ≥ 10 / (1 − q), n counting every attempted message. Otherwise it is empty (NaN).
* An interval is for the typical (median) per-repeat value of a statistic — the merged
  percentile of a variant at one load varies between repeats, and the repeat is the unit of
  replication. With ≥ 6 repeats it is distribution-free (order statistics: coverage ≥ 95 %
  for any continuous distribution of the per-repeat values); with 3–5 repeats it is a
  Student-t interval on the logarithms, which assumes per-repeat values are log-normal; with
  fewer it is empty. ``tests/test_stats.py`` checks both coverages by simulation.
"""
import math

import numpy as np
from hdrh.histogram import HdrHistogram
from scipy import stats as scipy_stats

LOWEST_US, HIGHEST_US, DIGITS = 1, 3_600_000_000, 3
PERCENTILES = {"p50_us": 50.0, "p90_us": 90.0, "p99_us": 99.0, "p999_us": 99.9,
               "p9999_us": 99.99}
MIN_TAIL = 10
CONFIDENCE = 0.95
ORDER_STAT_MIN = 6        # below this, no distribution-free 95 % interval for a median exists
LOG_T_MIN = 3
UNSTABLE_P50_CV, UNSTABLE_P99_CV = 0.10, 0.25


# ----------------------------------------------------------------------------- histograms

def new_histogram():
    return HdrHistogram(LOWEST_US, HIGHEST_US, DIGITS)


def histogram_of(values_us, censored=0, deadline_us=None):
    """HDR histogram of µs values (clamped into range), plus ``censored`` at the deadline."""
    h = new_histogram()
    values_us = np.asarray(values_us, dtype=float)
    if len(values_us):
        v = np.clip(np.rint(values_us).astype(np.int64), LOWEST_US, HIGHEST_US)
        for value, count in zip(*np.unique(v, return_counts=True)):
            h.record_value(int(value), int(count))
    if censored:
        h.record_value(int(min(max(deadline_us, LOWEST_US), HIGHEST_US)), int(censored))
    return h


def encode(h):
    return h.encode().decode() if h.get_total_count() else ""


def decode(text):
    """A histogram from its encoded text ("" or NaN: an empty histogram)."""
    if not isinstance(text, str) or not text:
        return new_histogram()
    return HdrHistogram.decode(text.encode())


def merge(encoded):
    """One histogram from several encoded ones: the only honest way to combine percentiles."""
    total = new_histogram()
    for e in encoded:
        if isinstance(e, str) and e:
            total.add(decode(e))
    return total


def buckets(h):
    """(lowest value, width, count) of every bucket holding a count, ascending: the counts
    array read at once with NumPy (hdrh walks it in Python, 0.1–0.2 s a histogram), with
    hdrh's own index → value rule."""
    counts = np.ctypeslib.as_array(h.counts)[:h.counts_len].astype(np.int64)
    index = np.flatnonzero(counts)
    bucket = (index >> h.sub_bucket_half_count_magnitude) - 1
    sub = (index & (h.sub_bucket_half_count - 1)) + h.sub_bucket_half_count
    sub = np.where(bucket < 0, sub - h.sub_bucket_half_count, sub)
    shift = np.maximum(bucket, 0) + h.unit_magnitude
    return sub << shift, np.ones_like(shift) << shift, counts[index]


def counts_of(h):
    """(values_us, counts) of every recorded bucket, ascending: what charts draw from (a
    bucket's value is its highest equivalent, as hdrh's recorded iterator gives it)."""
    low, width, counts = buckets(h)
    return (low + width - 1).astype(float), counts


def value_at(h, q):
    """The q-th percentile (0–100) of a histogram, NaN when it is empty: hdrh's rule (the
    highest equivalent value of the bucket where the count reaches round(q·n/100), at least
    1), vectorised."""
    n = h.get_total_count()
    if not n:
        return float("nan")
    low, width, counts = buckets(h)
    target = max(int(min(q, 100.0) * n / 100 + 0.5), 1)
    at = min(int(np.searchsorted(np.cumsum(counts), target)), len(counts) - 1)
    return float(low[at] + width[at] - 1) if q else float(low[at])


def mean_of(h):
    """The histogram's mean, each bucket at its middle (hdrh's rule), vectorised."""
    low, width, counts = buckets(h)
    return float(((low + (width >> 1)) * counts).sum() / counts.sum()) if counts.size \
        else float("nan")


def enough_for(n, q):
    """Whether n samples leave ≥ MIN_TAIL of them at or beyond the q-th percentile."""
    return n > 0 and n * (1.0 - q / 100.0) >= MIN_TAIL - 1e-9


def summary(h, censored=0, deadline_us=None):
    """Percentile columns of a latency histogram whose ``censored`` entries sit at the deadline.

    n is the histogram's count (every attempted message). A percentile below the min-count
    rule is NaN; one whose rank falls among the censored is the deadline and named in
    ``censored``. ``max_us`` and ``mean_us`` include the censored at the deadline (so the mean
    is then a lower bound; ``censored`` says so).
    """
    n = h.get_total_count()
    out = {k: float("nan") for k in PERCENTILES}
    out.update(max_us=float("nan"), mean_us=float("nan"), censored="")
    if n == 0:
        return out
    hit = []
    for key, q in PERCENTILES.items():
        if not enough_for(n, q):
            continue
        if censored and censored > n * (1.0 - q / 100.0):
            out[key] = float(deadline_us)
            hit.append(key.removesuffix("_us"))
        else:
            out[key] = value_at(h, q)
    out["max_us"] = float(h.get_max_value())
    out["mean_us"] = round(mean_of(h), 1)
    out["censored"] = ",".join(hit)
    return out


def quantiles(values, qs):
    """Plain percentiles (0–100) of raw values, for quantities that are not latencies
    (schedule lag, receive wait, stage times) and never merged; NaN for each when empty."""
    values = np.asarray(values, dtype=float)
    if not len(values):
        return [float("nan")] * len(qs)
    return [float(x) for x in np.percentile(values, qs)]


# ------------------------------------------------------------------------ across repeats

def interval(values, confidence=CONFIDENCE):
    """(low, high, method) for the median per-repeat value of a statistic.

    ≥ 6 values: the widest pair of order statistics (x_(k), x_(n+1-k)) whose binomial
    coverage is still ≥ ``confidence`` — distribution-free. 3–5 positive values: exp of a
    Student-t interval of the mean log (exact under log-normal repeats). Otherwise empty.
    """
    x = np.sort(np.asarray([v for v in values if v is not None and np.isfinite(v)], float))
    n = len(x)
    if n >= ORDER_STAT_MIN:
        k = order_statistic_rank(n, confidence)
        return float(x[k - 1]), float(x[n - k]), "order statistics"
    if n >= LOG_T_MIN and np.all(x > 0):
        if x[0] == x[-1]:  # all equal (e.g. every repeat censored at the deadline)
            return float(x[0]), float(x[0]), "log-t (assumes log-normal repeats)"
        logs = np.log(x)
        half = scipy_stats.t.ppf(0.5 + confidence / 2, n - 1) * logs.std(ddof=1) / math.sqrt(n)
        return float(np.exp(logs.mean() - half)), float(np.exp(logs.mean() + half)), \
            "log-t (assumes log-normal repeats)"
    return float("nan"), float("nan"), f"none (needs >= {LOG_T_MIN} repeats)"


def order_statistic_rank(n, confidence=CONFIDENCE):
    """Largest k with P(x_(k) ≤ median ≤ x_(n+1-k)) = 1 − 2·P(Bin(n, ½) < k) ≥ confidence."""
    best = 1
    for k in range(1, n // 2 + 1):
        if 1 - 2 * scipy_stats.binom.cdf(k - 1, n, 0.5) >= confidence:
            best = k
    return best


def cv(values):
    """Coefficient of variation (sample sd / mean) of per-repeat values; NaN below 2."""
    x = np.asarray([v for v in values if v is not None and np.isfinite(v)], float)
    if len(x) < 2 or x.mean() == 0:
        return float("nan")
    return float(x.std(ddof=1) / x.mean())


def unstable(p50s, p99s):
    """Repeats disagree: per-repeat p50 CV > 10 % or per-repeat p99 CV > 25 % (tails
    vary more between runs than medians, so their bar is higher)."""
    a, b = cv(p50s), cv(p99s)
    return bool((np.isfinite(a) and a > UNSTABLE_P50_CV) or (np.isfinite(b) and b > UNSTABLE_P99_CV))


def differ(base, new):
    """"higher" / "lower" when two intervals do not overlap, "no difference" when they do,
    "cannot tell" when either is empty."""
    (b_lo, b_hi), (n_lo, n_hi) = base, new
    if not all(np.isfinite([b_lo, b_hi, n_lo, n_hi])):
        return "cannot tell"
    if n_lo > b_hi:
        return "higher"
    if n_hi < b_lo:
        return "lower"
    return "no difference"
