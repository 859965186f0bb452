"""Recording (bench/recorder.py) and aggregation (bench/aggregate.py).

Percentiles are checked against numpy on the same values: the histogram records whole
microseconds at 3 significant digits, so agreement within 0.1 % (or 1 µs for small values)
is what HDR promises, and no more is asked. The reference is the nearest-rank percentile
(the order statistic HdrHistogram's percentile definition selects), computed with numpy; in
sparse tails numpy's interpolated percentile lies between two samples further apart than
0.1 %, which is sampling, not histogram error.
"""
import math

import numpy as np
import pandas as pd
import pytest

from bench.analysis import aggregate
from bench.analysis import recorder
from bench.plan import steps as plan
from bench.driver.lean import DISCONNECT, ERROR, OK, TIMEOUT, open_schedule

T0 = 5_000_000_000_000
DESIGN_SUMMARY = ["variant", "scenario", "load_point", "repeat", "transport", "target_rate",
                  "achieved_rate", "attempted", "ok", "errors", "timeouts", "p50_us", "p90_us",
                  "p99_us", "p999_us", "p9999_us", "max_us", "mean_us", "server_cpu_pct",
                  "server_rss_mb", "driver_cpu_pct", "driver_bound", "valid", "note", "hdr"]
DESIGN_SAMPLES = ["variant", "scenario", "load_point", "repeat", "conn", "seq", "phase",
                  "intended_ns", "sent_ns", "received_ns", "latency_us", "service_us",
                  "outcome", "transport"]


def close(hdr_value, exact):
    """Within HDR precision of ``exact`` (a value or a (low, high) interval)."""
    low, high = exact if isinstance(exact, tuple) else (exact, exact)
    return low - max(0.001 * abs(low), 1.0) <= hdr_value <= high + max(0.001 * abs(high), 1.0)


def nearest_rank(values, p):
    """The order statistic of rank round(p/100 · n) (at least 1), as HdrHistogram ranks.
    When p·n/100 is a half, float rounding may pick either neighbour: both are returned."""
    values = np.sort(np.asarray(values))
    x = p * len(values) / 100.0
    ranks = {max(1, math.ceil(x - 0.5)), max(1, math.floor(x + 0.5))}
    return float(values[min(ranks) - 1]), float(values[max(ranks) - 1])


def distributions():
    rng = np.random.default_rng(20240611)
    yield "lognormal", rng.lognormal(np.log(2000), 0.6, 200_000)
    yield "uniform-wide", rng.uniform(50, 500_000, 100_000)
    yield "bimodal", np.concatenate([rng.normal(300, 20, 85_000), rng.normal(40_000, 3000, 15_000)])
    yield "heavy-tail", 100 + rng.pareto(1.5, 150_000) * 400


@pytest.mark.parametrize("name,values", list(distributions()))
def test_histogram_percentiles_match_numpy_within_hdr_precision(name, values):
    values = np.clip(values, 1, None)
    s = recorder.stats(recorder.histogram_of(values))
    exact = np.rint(values)  # the histogram records whole microseconds
    for column, p in recorder.PERCENTILES.items():
        assert close(s[column], nearest_rank(exact, p)), (name, column, s[column],
                                                          nearest_rank(exact, p))
        if p <= 99:  # dense enough that any percentile definition agrees within 0.1 %
            assert close(s[column], np.percentile(exact, p))
    assert close(s["max_us"], exact.max())
    assert close(s["mean_us"], values.mean())


def test_stats_of_an_empty_histogram_are_nan():
    s = recorder.stats(recorder.histogram_of(np.array([])))
    assert all(math.isnan(v) for v in s.values())


def test_merge_of_encoded_parts_is_lossless():
    rng = np.random.default_rng(7)
    parts = [rng.lognormal(np.log(m), 0.4, n) for m, n in ((500, 30_000), (900, 10_000),
                                                           (3000, 5_000))]
    encoded = [recorder.histogram_of(p).encode().decode() for p in parts]
    merged = recorder.merge(encoded + ["", float("nan")])  # failed rows carry no histogram
    whole = recorder.histogram_of(np.concatenate(parts))
    assert merged.get_total_count() == sum(len(p) for p in parts)
    assert recorder.stats(merged) == recorder.stats(whole)
    exact = np.rint(np.concatenate(parts))
    for column, p in recorder.PERCENTILES.items():
        assert close(recorder.stats(merged)[column], nearest_rank(exact, p))


def test_summary_and_sample_columns_keep_the_design_names():
    assert DESIGN_SUMMARY == recorder.SUMMARY_COLUMNS[:len(DESIGN_SUMMARY)]
    assert DESIGN_SAMPLES == recorder.SAMPLE_COLUMNS


# --------------------------------------------------------------------------- one step

def rate_step(rate=1000.0, conns=4, warmup=0.5, duration=1.0):
    steps, _ = plan.build(["v"], ["rate"], dict(rate=rate, connections=conns, warmup=warmup,
                                                duration=duration, repeats=1))
    return steps[0]


def synthetic(step, seed=1, timeouts=20, disconnects=5, unsent=3, warmup_latency_us=1e6):
    """Arrays shaped like a driver's, with known outcomes planted in the measure window."""
    rng = np.random.default_rng(seed)
    job = dict(rate=step.rate, warmup=step.warmup, duration=step.duration,
               conns=list(range(step.connections)), total_conns=step.connections)
    conn, intended = open_schedule(job, T0)
    n = len(intended)
    lag = rng.integers(5_000, 20_000, n)  # 5-20 µs late sends
    latency = rng.lognormal(np.log(800_000), 0.3, n).astype(np.int64)  # ~800 µs
    sent = intended + lag
    received = sent + latency
    outcome = np.full(n, OK, dtype=np.int8)
    warm = intended < T0 + int(step.warmup * 1e9)
    received[warm] = intended[warm] + int(warmup_latency_us * 1000)  # awful, but warm-up
    measured = np.nonzero(~warm)[0]
    picks = rng.choice(measured, timeouts + disconnects + unsent, replace=False)
    t_idx, d_idx, u_idx = np.split(picks, [timeouts, timeouts + disconnects])
    outcome[t_idx], outcome[d_idx], outcome[u_idx] = TIMEOUT, DISCONNECT, ERROR
    received[picks] = 0
    sent[u_idx] = 0
    arrays = dict(conn=conn.astype(np.int32), intended=intended, sent=sent,
                  received=received, outcome=outcome)
    return arrays, dict(warm=warm, timeouts=t_idx, disconnects=d_idx, unsent=u_idx)


def test_summary_counts_timeouts_and_ignores_warmup():
    step = rate_step()
    arrays, planted = synthetic(step)
    [row] = recorder.summarize(step, arrays, T0, "websocket", {}, "lean", step.open_loop)
    measured = ~planted["warm"]
    assert row["attempted"] == int(measured.sum()) == int(step.rate * step.duration)
    assert row["timeouts"] == len(planted["timeouts"])  # counted, not dropped
    assert row["errors"] == len(planted["disconnects"]) + len(planted["unsent"])
    assert row["ok"] + row["errors"] + row["timeouts"] == row["attempted"]
    ok = measured & (arrays["outcome"] == OK)
    lat = np.rint((arrays["received"][ok] - arrays["intended"][ok]) / 1000.0)
    for column, p in recorder.PERCENTILES.items():
        assert close(row[column], nearest_rank(lat, p))
    assert row["max_us"] < 1e6 / 2  # the 1 s warm-up latencies are not in it
    assert row["valid"] is False and "acked" in row["note"] and "disconnect" in row["note"]
    assert row["achieved_rate"] == pytest.approx(row["ok"] / step.duration, abs=0.1)


def test_summary_of_a_clean_step_is_valid():
    step = rate_step()
    arrays, _ = synthetic(step, timeouts=0, disconnects=0, unsent=0)
    [row] = recorder.summarize(step, arrays, T0, "websocket", {}, "lean", step.open_loop)
    assert row["valid"] is True, row["note"]
    assert row["timeouts"] == row["errors"] == 0
    assert row["lag_p99_us"] == pytest.approx(20.0, abs=1.0)


def test_sample_rows_tag_warmup_keep_timeouts_and_number_per_connection():
    step = rate_step()
    arrays, planted = synthetic(step)
    frame = recorder.sample_rows(step, arrays, T0, "websocket")
    assert list(frame.columns[:len(DESIGN_SAMPLES)]) == DESIGN_SAMPLES
    assert len(frame) == len(arrays["intended"])  # warm-up rows are kept ...
    assert (frame["phase"] == "warmup").sum() == int(planted["warm"].sum())  # ... and tagged
    assert (frame["phase"] == "measure").sum() == int((~planted["warm"]).sum())
    counts = frame["outcome"].value_counts()
    assert counts["timeout"] == len(planted["timeouts"])
    assert counts["disconnect"] == len(planted["disconnects"])
    assert frame.loc[frame["outcome"] != "ok", "latency_us"].isna().all()
    assert frame.loc[frame["outcome"] == "ok", "latency_us"].notna().all()
    for c, group in frame.groupby("conn"):
        ordered = group.sort_values("intended_ns")
        assert list(ordered["seq"]) == list(range(len(group))), c


def test_sample_rows_drop_nothing_and_match_the_summary():
    """Recomputing the summary from the sample rows gives the same counts."""
    step = rate_step(rate=600.0, conns=3)
    arrays, _ = synthetic(step, seed=9)
    [row] = recorder.summarize(step, arrays, T0, "websocket", {}, "lean", step.open_loop)
    frame = recorder.sample_rows(step, arrays, T0, "websocket")
    m = frame[frame["phase"] == "measure"]
    assert len(m) == row["attempted"]
    assert (m["outcome"] == "ok").sum() == row["ok"]
    assert (m["outcome"] == "timeout").sum() == row["timeouts"]
    assert close(row["p50_us"], nearest_rank(np.rint(m["latency_us"].dropna()), 50))


def test_failed_row_has_the_summary_columns_and_no_histogram():
    step = rate_step()
    row = recorder.failed_row(step, "", "not ready: exited with code 1")
    assert set(DESIGN_SUMMARY) <= set(row)
    assert row["valid"] is False and row["hdr"] == "" and row["attempted"] == 0
    assert row["note"] == "not ready: exited with code 1"


# --------------------------------------------------------------------------- aggregate

@pytest.mark.parametrize("seed", [1, 2, 3])
def test_bootstrap_ci_contains_the_merged_percentile(seed):
    rng = np.random.default_rng(seed)
    reps = [rng.lognormal(np.log(1000 * (1 + 0.05 * i)), 0.5, 5_000) for i in range(4)]
    hists = [recorder.histogram_of(r) for r in reps]
    merged = recorder.merge([h.encode().decode() for h in hists])
    for p in (50, 99):
        lo, hi = aggregate.bootstrap_ci(hists, p)
        value = merged.get_value_at_percentile(p)
        assert lo <= value <= hi, (p, lo, value, hi)
        assert lo < hi
        assert (lo, hi) == aggregate.bootstrap_ci(hists, p)  # deterministic


def test_bootstrap_ci_of_one_repeat_is_undefined():
    lo, hi = aggregate.bootstrap_ci([recorder.histogram_of(np.arange(1, 100))], 50)
    assert math.isnan(lo) and math.isnan(hi)


def test_aggregate_merges_repeats_and_sums_counts():
    rows = []
    for r in (1, 2, 3):
        steps, _ = plan.build(["v"], ["rate"], dict(rate=500.0, connections=2, warmup=0.2,
                                                    duration=1.0, repeats=3))
        step = [s for s in steps if s.repeat == r][0]
        arrays, _ = synthetic(step, seed=r, timeouts=r, disconnects=0, unsent=0)
        rows += recorder.summarize(step, arrays, T0, "websocket", {}, "lean", True)
    rows.append(recorder.failed_row(step, "", "a failed repeat"))
    [agg] = aggregate.aggregate(rows)
    assert agg["repeat"] == "all"
    assert agg["attempted"] == sum(r["attempted"] for r in rows)
    assert agg["timeouts"] == 1 + 2 + 3
    merged = recorder.merge([r["hdr"] for r in rows])
    assert agg["p50_us"] == recorder.stats(merged)["p50_us"]
    assert agg["p50_ci_low"] <= agg["p50_us"] <= agg["p50_ci_high"]
    assert agg["p99_ci_low"] <= agg["p99_us"] <= agg["p99_ci_high"]
    assert agg["valid"] is False  # one repeat failed
    frame = pd.DataFrame(rows + [agg])
    assert (frame["repeat"] == "all").sum() == 1


def _lagged(step, lag_ns, latency_ns):
    """Clean arrays where every send is ``lag_ns`` late and takes ``latency_ns``."""
    job = dict(rate=step.rate, warmup=step.warmup, duration=step.duration,
               conns=list(range(step.connections)), total_conns=step.connections)
    conn, intended = open_schedule(job, T0)
    sent = intended + lag_ns
    return dict(conn=conn.astype(np.int32), intended=intended, sent=sent,
                received=sent + latency_ns, outcome=np.full(len(intended), OK, dtype=np.int8))


@pytest.mark.parametrize("lag_ms,latency_ms,bound", [
    (0.05, 0.5, False),   # on time
    (2.0, 0.5, True),     # late sends make up most of the latency: the driver's fault
    (2.0, 100.0, False),  # a saturated server: 2 ms of lag cannot explain 100 ms
])
def test_driver_bound_when_schedule_lag_matters(lag_ms, latency_ms, bound):
    step = rate_step()
    arrays = _lagged(step, int(lag_ms * 1e6), int(latency_ms * 1e6))
    [row] = recorder.summarize(step, arrays, T0, "websocket", {}, "lean", True)
    assert row["driver_bound"] is bound
    assert ("schedule lag" in row["note"]) is bound
