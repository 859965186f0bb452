"""Where a step's latency changes regime, and what coincided with it (a server GC pause...).

The test: Pettitt's rank statistic on the step's per-message latencies in order of intended
send time (warm-up included: a regime can start there). With ranks ``r`` of ``n`` values,
``U_t = 2 Σ_{i≤t} r_i − t(n+1)`` and ``K = max |U_t|``; under "no change" the approximate
p-value is ``2 exp(−6K² / (n³ + n²))`` (Pettitt 1979). Ranks make it indifferent to the tail's
scale (a 25 ms regime against 1 ms weighs what a 2 ms one would) and catch a shift of the
level or of the upper tail alike. Latencies of neighbouring messages are correlated (one slow
moment delays several), which makes that p-value optimistic; so it must be below ``ALPHA``
= 10⁻⁶ (a real regime change of a second or more scores below 10⁻⁵⁰) and the change must be
large: the median or the upper quartile at least ``MIN_RATIO`` times apart on either side,
each side at least ``MIN_SIDE`` of the messages. A steady step then gives no onset. The
change point is then placed where the two regimes part (:func:`refined`).

The cause is the event that overlaps the window from ``BEFORE_NS`` before the onset to
``AFTER_NS`` after it (a blocked loop: ``AFTER_NS + BEAT_NS``, since the server stamps it
when its heartbeat was due, up to one beat after the block began) and lasted at least as long as a typical round trip before the change
(no shorter than ``MIN_PAUSE_NS``): a server GC pause, else a blocked server loop, else a
driver stall (a message's send lag above that bound), else a harness sampler tick; else
``none found``. Pure functions over arrays and the events table.
"""
from dataclasses import dataclass

import numpy as np
from scipy.stats import rankdata

ALPHA = 1e-6         # strict: neighbouring latencies are correlated
MIN_RATIO = 2.0
TAIL_Q = 75          # the upper quartile: a regime of some connections, not a burst
MIN_SIDE = 0.05
MIN_COUNT = 50          # fewer messages than this: no test
BEFORE_NS, AFTER_NS = 50_000_000, 5_000_000
BEAT_NS = 5_000_000     # the server's heartbeat period (servers/events.py BEAT_S)
MIN_PAUSE_NS = 500_000
NONE = "none found"


@dataclass(frozen=True)
class Onset:
    """A regime change: when (monotonic ns and seconds from the first intended send), the
    medians before and after (µs), and the change point's p-value."""
    at_ns: int
    onset_s: float
    before_us: float
    after_us: float
    p_value: float


def pettitt(values, min_side):
    """(index of the first value after the change, p-value) of the most likely single
    change point, searched with at least ``min_side`` values on each side."""
    x = np.asarray(values, dtype=float)
    n = x.size
    ranks = rankdata(x)
    t = np.arange(1, n + 1)
    u = np.abs(2.0 * np.cumsum(ranks) - t * (n + 1.0))
    u[:min_side - 1] = 0.0
    u[n - min_side:] = 0.0
    k = int(np.argmax(u))
    p = min(1.0, 2.0 * np.exp(-6.0 * u[k] ** 2 / (float(n) ** 3 + float(n) ** 2)))
    return k + 1, p


def refined(latency, medians):
    """The change point placed where the two regimes part: the split that leaves the most
    values on their own regime's side of the geometric mean of the two medians (Pettitt's
    maximum drifts off it when the old regime creeps towards the new one before the change)."""
    threshold = float(np.sqrt(medians[0] * medians[1]))
    old_side = latency < threshold if medians[1] > medians[0] else latency > threshold
    before = np.concatenate([[0], np.cumsum(old_side)])              # old-side values before j
    after = (~old_side).sum() - np.concatenate([[0], np.cumsum(~old_side)])   # new-side from j
    side = max(int(MIN_SIDE * latency.size), 10)
    score = (before + after)[side:latency.size - side + 1]
    return side + int(np.argmax(score))


def _apart(a, b):
    """Are two positive figures at least MIN_RATIO apart (either way)?"""
    return a > 0 and b > 0 and max(a, b) / min(a, b) >= MIN_RATIO


def find(intended_ns, latency_us):
    """The step's regime change (an :class:`Onset`), or None when its latency is steady."""
    intended = np.asarray(intended_ns, dtype=np.int64)
    latency = np.asarray(latency_us, dtype=float)
    keep = np.isfinite(latency)
    intended, latency = intended[keep], latency[keep]
    if latency.size < MIN_COUNT:
        return None
    order = np.argsort(intended, kind="stable")
    intended, latency = intended[order], latency[order]
    k, p = pettitt(latency, max(int(MIN_SIDE * latency.size), 10))
    before, after = latency[:k], latency[k:]
    medians = float(np.median(before)), float(np.median(after))
    tails = float(np.percentile(before, TAIL_Q)), float(np.percentile(after, TAIL_Q))
    if p >= ALPHA or not (_apart(*medians) or _apart(*tails)):
        return None
    k = refined(latency, medians)
    medians = float(np.median(latency[:k])), float(np.median(latency[k:]))
    return Onset(int(intended[k]), round((intended[k] - intended[0]) / 1e9, 3),
                 round(medians[0], 1), round(medians[1], 1), p)


def _overlapping(events, kind, lo, hi, min_ns):
    """Events of ``kind`` overlapping [lo, hi] and lasting at least ``min_ns``, longest first."""
    if events is None or not len(events):
        return events.iloc[0:0] if events is not None else None
    e = events[(events["kind"] == kind) & (events["duration_ns"] >= min_ns)]
    e = e[(e["t_ns"] <= hi) & (e["t_ns"] + e["duration_ns"] >= lo)]
    return e.sort_values("duration_ns", ascending=False)


def _detail(row, key):
    """One ``key=value`` field of an event's detail."""
    for part in str(row["detail"]).split():
        name, _, value = part.partition("=")
        if name == key:
            return value
    return "?"


def cause(onset, events, intended_ns, sent_ns, server_events=True):
    """What coincided with ``onset``: one phrase naming the event, or ``none found``."""
    lo, hi = onset.at_ns - BEFORE_NS, onset.at_ns + AFTER_NS
    bound = max(MIN_PAUSE_NS, int(onset.before_us * 1000))

    def when(t_ns):
        ms = (onset.at_ns - t_ns) / 1e6
        return f"{ms:.0f} ms before the onset" if ms >= 0 else f"{-ms:.0f} ms after the onset"

    gc = _overlapping(events, "gc", lo, hi, bound)
    if gc is not None and len(gc):
        top = gc.iloc[0]
        return (f"server GC pause (generation {_detail(top, 'generation')}, "
                f"{top['duration_ns'] / 1e6:.1f} ms, {when(top['t_ns'])})")
    blocked = _overlapping(events, "blocked", lo, hi + BEAT_NS, bound)
    if blocked is not None and len(blocked):
        top = blocked.iloc[0]
        return (f"blocked server loop ({_detail(top, 'loop')}, "
                f"{top['duration_ns'] / 1e6:.1f} ms, {when(top['t_ns'])})")
    intended = np.asarray(intended_ns, dtype=np.int64)
    sent = np.asarray(sent_ns, dtype=np.int64)
    near = (intended >= lo) & (intended <= hi) & (sent > 0)
    lag = sent[near] - intended[near]
    if lag.size and lag.max() >= bound:
        return f"driver stall (send lag {lag.max() / 1e6:.1f} ms)"
    tick = _overlapping(events, "sampler", lo, hi, bound)
    if tick is not None and len(tick):
        top = tick.iloc[0]
        return f"harness sampler tick ({top['duration_ns'] / 1e6:.1f} ms, {when(top['t_ns'])})"
    return NONE if server_events else f"{NONE} (server events off: --server-events on)"
