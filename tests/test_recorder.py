"""Recording (bench/analysis/recorder.py), its statistics (bench/analysis/stats.py) and
aggregation (bench/analysis/aggregate.py), on synthetic per-message arrays with known content.

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

from bench.analysis import aggregate, columns, recorder, stats
from bench.driver.loops import open_schedule
from bench.driver.store import DISCONNECT, ERROR, OK, TIMEOUT, UNSENT, Messages
from bench.driver.store import record_reply as record_ack  # the one reply rule, lean and polling
from bench.execute.load import Load
from bench.plan import steps as plan
from bench.plan.job import Job

T0 = 5_000_000_000_000
DESIGN_SUMMARY = ["variant", "scenario", "load_point", "repeat", "transport", "target_rate",
                  "achieved_rate", "attempted", "ok", "errors", "timeouts", "p50_us", "p90_us",
                  "p99_us", "p999_us", "p9999_us", "max_us", "mean_us", "server_cpu_pct",
                  "server_rss_mb", "driver_cpu_pct", "driver_bound", "valid", "note", "hdr"]
ISSUE_COLUMNS = ["sent_rate", "censored", "send_lag_p50_us", "send_lag_p99_us",
                 "recv_wait_p50_us", "recv_wait_p99_us", "driver_share"]
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


def nan(x):
    return isinstance(x, float) and math.isnan(x)


def same(a, b):
    """Two summary dicts equal, NaN (an empty cell) equal to NaN."""
    return a.keys() == b.keys() and all(a[k] == b[k] or (nan(a[k]) and nan(b[k])) for k in a)


# --------------------------------------------------------------------------- histograms

def distributions():
    rng = np.random.default_rng(20240611)
    yield "lognormal", rng.lognormal(np.log(2000), 0.6, 200_000)
    yield "uniform-wide", rng.uniform(50, 500_000, 100_000)
    yield "bimodal", np.concatenate([rng.normal(300, 20, 85_000), rng.normal(40_000, 3000, 15_000)])
    yield "heavy-tail", 100 + rng.pareto(1.5, 150_000) * 400


@pytest.mark.parametrize("name,values", list(distributions()))
def test_histogram_percentiles_match_numpy_within_hdr_precision(name, values):
    values = np.clip(values, 1, None)
    s = stats.summary(stats.histogram_of(values))
    exact = np.rint(values)  # the histogram records whole microseconds
    for column, p in stats.PERCENTILES.items():
        assert close(s[column], nearest_rank(exact, p)), (name, column, s[column],
                                                          nearest_rank(exact, p))
        if p <= 99:  # dense enough that any percentile definition agrees within 0.1 %
            assert close(s[column], np.percentile(exact, p))
    assert close(s["max_us"], exact.max())
    assert close(s["mean_us"], values.mean())
    assert s["censored"] == ""


def test_summary_of_an_empty_histogram_is_empty():
    s = stats.summary(stats.histogram_of(np.array([])))
    assert s.pop("censored") == ""
    assert all(math.isnan(v) for v in s.values())
    assert stats.encode(stats.histogram_of([])) == ""
    assert math.isnan(stats.value_at(stats.histogram_of([]), 50))


def test_merge_of_encoded_parts_is_lossless():
    rng = np.random.default_rng(7)
    parts = [rng.lognormal(np.log(m), 0.4, n) for m, n in ((500, 30_000), (900, 10_000),
                                                           (3000, 5_000))]
    encoded = [stats.encode(stats.histogram_of(p)) for p in parts]
    merged = stats.merge(encoded + ["", float("nan")])  # failed rows carry no histogram
    whole = stats.histogram_of(np.concatenate(parts))
    assert merged.get_total_count() == sum(len(p) for p in parts)
    assert same(stats.summary(merged), stats.summary(whole))
    exact = np.rint(np.concatenate(parts))
    for column, p in stats.PERCENTILES.items():
        if column == "p9999_us":  # 45,000 samples: too few for a p99.99
            assert math.isnan(stats.summary(merged)[column])
            continue
        assert close(stats.summary(merged)[column], nearest_rank(exact, p))


def test_every_column_has_one_declaration_with_a_known_type_and_rule():
    names = [c.name for c in columns.SUMMARY + columns.EXTRAS]
    assert len(names) == len(set(names))  # one home per column
    assert set(aggregate.MEANS) | set(aggregate.MAXES) | set(aggregate.SUMMED) | \
        set(aggregate.STATIC) <= set(columns.COLUMNS)
    assert columns.undeclared(["p50_us", "made_up_column", "aggregate"]) == ["made_up_column"]


def test_summary_and_sample_columns_keep_the_design_names():
    assert DESIGN_SUMMARY == columns.ORDER[:len(DESIGN_SUMMARY)]
    assert set(ISSUE_COLUMNS) <= set(columns.ORDER)
    assert DESIGN_SAMPLES == recorder.SAMPLE_COLUMNS


# ------------------------------------------------------------ min-count rule, censoring

@pytest.mark.parametrize("n,p99_present", [(800, False), (999, False), (1000, True),
                                           (5000, True)])
def test_a_percentile_needs_ten_samples_at_or_beyond_it(n, p99_present):
    values = np.random.default_rng(n).lognormal(np.log(500), 0.5, n)
    s = stats.summary(stats.histogram_of(values))
    assert math.isfinite(s["p50_us"]) and math.isfinite(s["p90_us"])  # 800 · 0.1 = 80 ≥ 10
    assert math.isfinite(s["p99_us"]) is p99_present  # 800 · 0.01 = 8 < 10: empty
    assert math.isnan(s["p999_us"]) and math.isnan(s["p9999_us"])  # need 10k and 100k
    assert math.isfinite(s["max_us"])  # max and mean are not percentiles: always written


def test_min_count_rule_counts_censored_messages_too():
    """n counts every attempted message: 990 answered + 10 timed out = 1000 → a p99."""
    h = stats.histogram_of(np.full(990, 300.0), censored=10, deadline_us=5e6)
    s = stats.summary(h, 10, 5e6)
    assert h.get_total_count() == 1000
    assert s["p99_us"] == pytest.approx(300, abs=1)  # 10 censored = exactly 1 %: not beyond it
    assert s["censored"] == ""


@pytest.mark.parametrize("n,timed_out,censored,finite", [
    (1000, 11, "p99", ["p50_us", "p90_us", "p99_us"]),     # 1.1 % > 1 %: p99 is the deadline
    (1000, 5, "", ["p50_us", "p90_us", "p99_us"]),         # 0.5 %: p99 from the answered
    (10_000, 50, "p999", ["p50_us", "p90_us", "p99_us", "p999_us"]),  # 0.5 %: p99.9 censored
    (1000, 150, "p90,p99", ["p50_us", "p90_us", "p99_us"]),
    (1000, 600, "p50,p90,p99", ["p50_us", "p90_us", "p99_us"]),
])
def test_summary_censors_percentiles_whose_rank_falls_among_timeouts(n, timed_out, censored,
                                                                     finite):
    deadline_us = 5e6
    answered = np.random.default_rng(3).lognormal(np.log(800), 0.3, n - timed_out)
    h = stats.histogram_of(answered, censored=timed_out, deadline_us=deadline_us)
    s = stats.summary(h, timed_out, deadline_us)
    assert h.get_total_count() == n  # timeouts are in the distribution, not dropped
    assert s["censored"] == censored
    for key in stats.PERCENTILES:
        assert math.isfinite(s[key]) is (key in finite), key
        if key.removesuffix("_us") in censored.split(","):
            assert s[key] == deadline_us
        elif key in finite:
            assert s[key] < 10_000  # from the answered messages (~800 µs)
    assert close(s["max_us"], deadline_us if timed_out else answered.max())


# --------------------------------------------------------------------------- one step

def rate_step(rate=1000.0, conns=4, warmup=0.5, duration=1.0, deadline_ms=5000.0, repeats=1,
              repeat=1):
    steps, _ = plan.build(["v"], ["rate"], dict(rate=rate, connections=conns, warmup=warmup,
                                                duration=duration, repeats=repeats,
                                                deadline_ms=deadline_ms))
    return [s for s in steps if s.repeat == repeat][0]


def schedule(step):
    job = Job(targets=(), connections=step.connections, warmup=step.warmup,
              duration=step.duration, rate=step.rate, conns=tuple(range(step.connections)))
    return open_schedule(job, T0)


def synthetic(step, seed=1, timeouts=20, disconnects=5, unsent=3, warmup_latency_us=1e6,
              latency_us=800.0):
    """Arrays shaped like a driver's, with known outcomes planted in the measure window."""
    rng = np.random.default_rng(seed)
    conn, intended = schedule(step)
    n = len(intended)
    lag = rng.integers(5_000, 20_000, n)  # 5-20 µs late sends
    latency = rng.lognormal(np.log(latency_us * 1000), 0.3, n).astype(np.int64)
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
                  received=received, outcome=outcome,
                  recv_wait=rng.integers(1_000, 5_000, n).astype(np.int64))
    return arrays, dict(warm=warm, timeouts=t_idx, disconnects=d_idx, unsent=u_idx)


def summarize(step, arrays, busy_share=0.2, resources=None, transport="websocket"):
    [row] = recorder.summarize(step, Load(arrays, T0, busy_share), transport,
                               resources or {}, "lean")
    return row


def test_measure_mask_is_the_window_by_intended_time():
    step = rate_step()
    arrays, planted = synthetic(step)
    mask = recorder.measure_mask(arrays, step, T0)
    assert np.array_equal(mask, ~planted["warm"])
    start, end = recorder.window(step, T0)
    assert (start, end) == (T0 + 500_000_000, T0 + 1_500_000_000)


def test_summary_counts_timeouts_and_ignores_warmup():
    step = rate_step()
    arrays, planted = synthetic(step)  # 20 timeouts + 5 disconnects + 3 unsent of 1000
    row = summarize(step, arrays)
    measured = ~planted["warm"]
    assert row["attempted"] == int(measured.sum()) == int(step.rate * step.duration)
    assert row["timeouts"] == len(planted["timeouts"])  # counted, not dropped
    assert row["errors"] == len(planted["disconnects"]) + len(planted["unsent"])
    assert row["ok"] + row["errors"] + row["timeouts"] == row["attempted"]
    # every unanswered message is in the distribution at the deadline
    deadline_us = step.deadline * 1e6
    unanswered = row["attempted"] - row["ok"]
    assert stats.decode(row["hdr"]).get_total_count() == row["attempted"]
    ok = measured & (arrays["outcome"] == OK)
    lat = np.rint((arrays["received"][ok] - arrays["intended"][ok]) / 1000.0)
    with_deadline = np.concatenate([lat, np.full(unanswered, deadline_us)])
    for column in ("p50_us", "p90_us"):
        assert close(row[column], nearest_rank(with_deadline, stats.PERCENTILES[column]))
    assert row["p99_us"] == deadline_us and row["censored"] == "p99"  # 2.8 % > 1 %
    assert math.isnan(row["p999_us"]) and math.isnan(row["p9999_us"])  # 1000 samples
    assert row["valid"] is False
    for word in ("acked", "disconnect", "timed out"):
        assert word in row["note"], row["note"]


def test_warmup_is_excluded_from_a_clean_step():
    step = rate_step()
    arrays, planted = synthetic(step, timeouts=0, disconnects=0, unsent=0,
                                warmup_latency_us=1e6)  # 1 s latencies, all in warm-up
    row = summarize(step, arrays)
    assert row["valid"] is True, row["note"]
    assert row["timeouts"] == row["errors"] == 0 and row["censored"] == ""
    assert row["attempted"] == row["ok"] == int((~planted["warm"]).sum())
    assert row["max_us"] < 10_000  # the 1 s warm-up latencies are not in it
    assert row["send_lag_p99_us"] == pytest.approx(20.0, abs=1.0)
    assert row["lag_p99_us"] == row["send_lag_p99_us"]
    assert row["recv_wait_p99_us"] == pytest.approx(5.0, abs=0.2)
    assert row["driver_bound"] is False
    # driver share: (send lag p50 + receive wait p50) / latency p50 ≈ (12.5 + 3) / 800
    assert row["driver_share"] == pytest.approx((row["send_lag_p50_us"] + row["recv_wait_p50_us"])
                                                / row["p50_us"], abs=1e-3)
    assert 0.01 < row["driver_share"] < 0.03


def test_a_step_with_more_than_one_percent_timeouts_has_p99_at_the_deadline():
    step = rate_step(deadline_ms=200.0)
    arrays, _ = synthetic(step, timeouts=15, disconnects=0, unsent=0)
    row = summarize(step, arrays)
    assert row["timeouts"] == 15 and row["attempted"] == 1000
    assert row["p99_us"] == 200_000.0
    assert row["censored"] == "p99"
    assert row["deadline_ms"] == 200.0
    h = stats.decode(row["hdr"])
    assert h.get_total_count() == 1000
    assert close(h.get_max_value(), 200_000.0)  # timeouts enter the histogram at the deadline
    assert h.get_count_at_value(200_000) == 15
    assert row["p90_us"] < 2000  # below the censored ranks: the real latency


def test_a_late_reply_after_the_deadline_is_a_timeout_in_the_histogram():
    """Whatever a driver stored as received, a TIMEOUT is recorded at the deadline only."""
    step = rate_step(deadline_ms=100.0)
    arrays, _ = synthetic(step, timeouts=0, disconnects=0, unsent=0)
    late = np.nonzero(arrays["intended"] >= T0 + int(step.warmup * 1e9))[0][:12]
    arrays["received"][late] = arrays["intended"][late] + 400_000_000  # 400 ms, past 100 ms
    arrays["outcome"][late] = TIMEOUT
    row = summarize(step, arrays)
    assert row["timeouts"] == 12
    assert row["censored"] == "p99" and row["p99_us"] == 100_000.0
    assert close(row["max_us"], 100_000.0)  # not 400 ms


def test_too_few_samples_leave_p99_empty():
    step = rate_step(rate=800.0, duration=1.0)
    arrays, _ = synthetic(step, timeouts=0, disconnects=0, unsent=0)
    row = summarize(step, arrays)
    assert row["attempted"] == 800
    assert math.isnan(row["p99_us"]) and math.isfinite(row["p90_us"])  # 800 · 1 % = 8 < 10
    step = rate_step(rate=1000.0, duration=1.0)
    arrays, _ = synthetic(step, timeouts=0, disconnects=0, unsent=0)
    assert math.isfinite(summarize(step, arrays)["p99_us"])


def test_achieved_counts_replies_received_inside_the_window_only():
    """An overloaded server (FIFO, one at a time, capacity C) driven at 2C: every message is
    eventually answered, but only about C·window replies arrive inside the window."""
    capacity, rate = 500.0, 1000.0
    step = rate_step(rate=rate, warmup=0.5, duration=2.0, deadline_ms=60_000)
    conn, intended = schedule(step)
    service = int(1e9 / capacity)
    received = np.empty_like(intended)
    free = T0
    for k, t in enumerate(intended):
        free = max(free, int(t)) + service
        received[k] = free
    arrays = dict(conn=conn.astype(np.int32), intended=intended, sent=intended + 10_000,
                  received=received, outcome=np.full(len(intended), OK, dtype=np.int8))
    row = summarize(step, arrays)
    start, end = recorder.window(step, T0)
    inside = ((received >= start) & (received < end)).sum()
    assert row["achieved_rate"] == pytest.approx(inside / step.duration, abs=0.1)
    assert row["achieved_rate"] <= 1.1 * capacity  # not the target
    assert row["ok"] == row["attempted"] == rate * step.duration  # late replies still ok
    assert row["sent_rate"] == pytest.approx(rate, abs=1)
    assert row["valid"] is False and "achieved" in row["note"]
    assert row["p50_us"] > 100_000  # latency grew over the step (queueing)


def test_replies_after_the_window_do_not_count_and_sent_rate_counts_sends_in_it():
    step = rate_step(rate=1000.0, warmup=0.5, duration=1.0)
    arrays, _ = synthetic(step, timeouts=0, disconnects=0, unsent=0, warmup_latency_us=300)
    start, end = recorder.window(step, T0)
    measured = np.nonzero(arrays["intended"] >= start)[0]
    last = measured[-100:]
    arrays["received"][last] = end + 50_000_000  # answered, but after the window
    unsent = measured[:30]
    arrays["sent"][unsent] = 0  # never sent (dead connection)
    arrays["received"][unsent] = 0
    arrays["outcome"][unsent] = ERROR
    lagging = measured[-200:-150]
    arrays["sent"][lagging] = end + 1_000_000  # sent after the window ends
    arrays["received"][lagging] = end + 2_000_000
    row = summarize(step, arrays)
    ok = arrays["outcome"] == OK
    inside = ok & (arrays["received"] >= start) & (arrays["received"] < end)
    assert row["achieved_rate"] == pytest.approx(inside.sum() / step.duration, abs=0.1)
    assert row["achieved_rate"] <= (1000 - 100 - 30 - 50) / step.duration + 1  # + warm-up tail
    assert row["ok"] == 1000 - 30  # replies after the window still count as ok ...
    sent_inside = (arrays["sent"] > 0) & (arrays["sent"] >= start) & (arrays["sent"] < end)
    assert row["sent_rate"] == pytest.approx(sent_inside.sum() / step.duration, abs=0.1)
    assert row["sent_rate"] <= 1000 - 30 - 50 + 1


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
    assert counts["error"] == len(planted["unsent"])
    assert frame.loc[frame["outcome"] != "ok", "latency_us"].isna().all()
    assert frame.loc[frame["outcome"] == "ok", "latency_us"].notna().all()
    for c, group in frame.groupby("conn"):
        ordered = group.sort_values("intended_ns")
        assert list(ordered["seq"]) == list(range(len(group))), c


def test_sample_rows_drop_nothing_and_match_the_summary():
    """Recomputing the summary from the sample rows gives the same counts."""
    step = rate_step(rate=600.0, conns=3, duration=2.0)
    arrays, _ = synthetic(step, seed=9, timeouts=3, disconnects=1, unsent=1)
    row = summarize(step, arrays)
    frame = recorder.sample_rows(step, arrays, T0, "websocket")
    m = frame[frame["phase"] == "measure"]
    assert len(m) == row["attempted"]
    assert (m["outcome"] == "ok").sum() == row["ok"]
    assert (m["outcome"] == "timeout").sum() == row["timeouts"]
    censored = np.full(row["attempted"] - row["ok"], step.deadline * 1e6)
    values = np.concatenate([np.rint(m["latency_us"].dropna()), censored])
    assert close(row["p50_us"], nearest_rank(values, 50))


def test_failed_row_has_the_summary_columns_and_no_histogram():
    step = rate_step()
    row = recorder.failed_row(step, "", "not ready: exited with code 1")
    assert set(DESIGN_SUMMARY) <= set(row) and set(ISSUE_COLUMNS) <= set(row)
    assert row["valid"] is False and row["hdr"] == "" and row["attempted"] == 0
    assert row["note"] == "not ready: exited with code 1"
    assert row["censored"] == "" and row["deadline_ms"] == 5000.0


def test_an_empty_step_is_invalid_and_has_no_percentiles():
    step = rate_step()
    arrays, planted = synthetic(step, timeouts=0, disconnects=0, unsent=0)
    keep = planted["warm"]  # the driver died at the end of the warm-up
    arrays = {k: v[keep] for k, v in arrays.items()}
    row = summarize(step, arrays)
    assert row["attempted"] == 0 and row["hdr"] == "" and row["valid"] is False
    assert "nothing measured" in row["note"]
    assert all(math.isnan(row[k]) for k in stats.PERCENTILES)


# ------------------------------------------------------------------------ driver-bound

def _lagged(step, lag_ns, latency_ns, wait_ns=1_000):
    """Clean arrays where every send is ``lag_ns`` late and takes ``latency_ns``."""
    conn, intended = schedule(step)
    sent = intended + lag_ns
    n = len(intended)
    return dict(conn=conn.astype(np.int32), intended=intended, sent=sent,
                received=sent + latency_ns, outcome=np.full(n, OK, dtype=np.int8),
                recv_wait=np.full(n, wait_ns, dtype=np.int64))


@pytest.mark.parametrize("lag_us,latency_us,wait_us,bound,why", [
    (20, 500, 1, False, None),            # on time
    (40, 100, 1, False, None),            # under the 50 µs floor
    (60, 100, 1, True, "send lag"),       # over the floor, p99 160 µs: 25 % is 40 µs
    (200, 300, 1, True, "send lag"),      # over 25 % of p99 (500 µs → 125 µs)
    (2000, 100_000, 1, False, None),      # a saturated server: 2 ms cannot explain 100 ms
    (20, 300, 150, True, "receive wait"),  # the reply waited inside the driver
])
def test_driver_bound_when_the_drivers_lag_matters(lag_us, latency_us, wait_us, bound, why):
    step = rate_step()
    arrays = _lagged(step, lag_us * 1000, latency_us * 1000, wait_us * 1000)
    row = summarize(step, arrays)
    assert row["driver_bound"] is bound, row["note"]
    if why:
        assert why in row["note"] and row["valid"] is False
    else:
        assert "driver" not in row["note"]


def test_driver_bound_when_its_loop_is_saturated():
    step = rate_step()
    arrays = _lagged(step, 10_000, 500_000)
    assert summarize(step, arrays, busy_share=0.5)["driver_bound"] is False
    row = summarize(step, arrays, busy_share=0.95)
    assert row["driver_bound"] is True and "busy" in row["note"]
    assert row["driver_cpu_pct"] == 95.0
    # without the loop's own figure, the sampled CPU stands in
    assert summarize(step, arrays, busy_share=None,
                     resources={"driver_cpu_pct": 97.0})["driver_bound"] is True
    assert summarize(step, arrays, busy_share=None,
                     resources={"driver_cpu_pct": 40.0})["driver_bound"] is False


# --------------------------------------------------------------------------- aggregate

def repeats(n, seed=0, timeouts=0, scale=None, **kw):
    rows = []
    for r in range(1, n + 1):
        step = rate_step(repeats=n, repeat=r, **kw)
        s = (scale or (lambda i: 1.0))(r)
        arrays, _ = synthetic(step, seed=seed + r, timeouts=timeouts, disconnects=0, unsent=0,
                              latency_us=800.0 * s)
        rows.append(summarize(step, arrays))
    return rows, step


def test_aggregate_merges_repeats_and_sums_counts():
    rows, step = repeats(3, timeouts=2)
    rows.append(recorder.failed_row(step, "websocket", "driver failed: a failed repeat"))
    [agg] = aggregate.aggregate(rows)
    assert agg["aggregate"] is True
    assert agg["attempted"] == sum(r["attempted"] for r in rows) == 3000
    assert agg["timeouts"] == 2 * 3
    merged = stats.merge([r["hdr"] for r in rows])
    assert merged.get_total_count() == 3000
    s = stats.summary(merged, 6, step.deadline * 1e6)
    for key in (*stats.PERCENTILES, "max_us", "censored"):
        assert agg[key] == s[key] or (nan(agg[key]) and nan(s[key])), key
    assert agg["repeats"] == 4 and agg["repeats_failed"] == 1
    assert agg["valid"] is False  # one repeat failed
    assert math.isfinite(agg["p50_ci_low"]) and agg["p50_ci_low"] <= agg["p50_ci_high"]
    frame = pd.DataFrame(rows + [agg])
    assert frame["aggregate"].sum() == 1


def test_aggregate_carries_censoring_over():
    rows, step = repeats(3, timeouts=15)  # 1.5 % of each repeat timed out
    [agg] = aggregate.aggregate(rows)
    assert agg["timeouts"] == 45
    assert agg["p99_us"] == step.deadline * 1e6 and "p99" in agg["censored"].split(",")


def test_a_censored_p99_lies_inside_its_interval():
    rows, step = repeats(3, timeouts=15)
    [agg] = aggregate.aggregate(rows)
    assert agg["p99_us"] == step.deadline * 1e6
    assert agg["p99_ci_low"] <= agg["p99_us"] <= agg["p99_ci_high"]


def test_an_empty_or_failed_repeat_does_not_poison_the_interval():
    good, step = repeats(3, scale=lambda r: (1.0, 1.05, 0.97)[r - 1])
    arrays, planted = synthetic(step, timeouts=0, disconnects=0, unsent=0)
    empty = summarize(step, {k: v[planted["warm"]] for k, v in arrays.items()})
    failed = recorder.failed_row(step, "websocket", "driver failed: gone")
    assert empty["attempted"] == 0
    [clean] = aggregate.aggregate(good)
    [agg] = aggregate.aggregate(good + [empty, failed])
    assert agg["repeats_failed"] == 2 and agg["repeats"] == 5
    for key in ("p50_ci_low", "p50_ci_high", "p99_ci_low", "p99_ci_high", "p50_us", "p99_us"):
        assert agg[key] == clean[key], key
    assert agg["p50_ci_low"] > 0.8 * agg["p50_us"]  # not 0–400 µs
    assert agg["ci_method"].startswith("log-t")
    assert agg["unstable"] == clean["unstable"]


def test_a_repeat_that_never_served_counts_as_failed_in_its_aggregate():
    good, step = repeats(3)
    not_ready = recorder.failed_row(step, "", "not ready: exited with code 1")  # as step.py
    aggs = aggregate.aggregate(good + [not_ready])
    assert len(aggs) == 1
    assert aggs[0]["repeats_failed"] == 1


def test_aggregate_interval_methods_by_number_of_repeats():
    rows, _ = repeats(2)
    [agg] = aggregate.aggregate(rows)
    assert math.isnan(agg["p50_ci_low"]) and math.isnan(agg["p50_ci_high"])
    assert agg["ci_method"].startswith("none")
    rows, _ = repeats(6, scale=lambda r: 1 + 0.02 * r)
    [agg] = aggregate.aggregate(rows)
    assert agg["ci_method"] == "order statistics"
    p50s = sorted(stats.value_at(stats.decode(r["hdr"]), 50) for r in rows)
    assert (agg["p50_ci_low"], agg["p50_ci_high"]) == (p50s[0], p50s[-1])  # k = 1 at n = 6


def test_aggregate_is_unstable_when_tails_disagree():
    """Same median in every repeat, a tail that moves a lot: unstable on p99 alone."""
    rows = []
    for r, tail_us in zip((1, 2, 3), (3_000, 10_000, 40_000)):
        step = rate_step(repeats=3, repeat=r)
        arrays, _ = synthetic(step, seed=r, timeouts=0, disconnects=0, unsent=0)
        measured = np.nonzero(arrays["intended"] >= T0 + int(step.warmup * 1e9))[0]
        slow = measured[::40]  # 2.5 % of the messages hit the slow path
        arrays["received"][slow] = arrays["sent"][slow] + tail_us * 1000
        rows.append(summarize(step, arrays))
    [agg] = aggregate.aggregate(rows)
    assert agg["p50_cv"] < 0.05
    assert agg["p99_cv"] > 0.25
    assert agg["unstable"] is True
    rows_same, _ = repeats(3)
    assert aggregate.aggregate(rows_same)[0]["unstable"] is False


# ----------------------------------------------------------------- polling ack guard

def waiting_messages(n=5, deadline_ms=100):
    m = Messages(10)
    m.deadline_ns = int(deadline_ms * 1e6)
    m.used = n
    m.intended[:n] = T0 + np.arange(n) * 1_000_000
    m.sent[:n] = m.intended[:n] + 5_000
    m.sent[n - 1] = 0  # the last one was never sent (its connection was gone)
    return m


def snapshot(m):
    return m.received.copy(), m.outcome.copy()


def test_record_ack_counts_a_sent_waiting_message():
    m = waiting_messages()
    now = int(m.intended[1]) + 300_000
    record_ack(m, 1, now)
    assert m.outcome[1] == OK and m.received[1] == now
    assert (m.outcome[[0, 2, 3, 4]] == UNSENT).all()


@pytest.mark.parametrize("k", [4, 5, 9, 10, -1, 1_000_000])
def test_record_ack_ignores_an_ack_for_an_unsent_or_unknown_index(k):
    m = waiting_messages()
    before = snapshot(m)
    record_ack(m, k, T0 + 1_000_000)
    assert all(np.array_equal(a, b) for a, b in zip(before, snapshot(m)))


def test_record_ack_ignores_a_repeated_ack():
    m = waiting_messages()
    first = int(m.intended[2]) + 200_000
    record_ack(m, 2, first)
    before = snapshot(m)
    record_ack(m, 2, first + 50_000_000)
    assert all(np.array_equal(a, b) for a, b in zip(before, snapshot(m)))
    assert m.received[2] == first and m.outcome[2] == OK


def test_record_ack_past_the_deadline_is_a_timeout():
    m = waiting_messages(deadline_ms=100)
    record_ack(m, 0, int(m.intended[0]) + 100_000_000)  # exactly at the deadline: in time
    record_ack(m, 3, int(m.intended[3]) + 100_000_001)  # 1 ns late
    assert m.outcome[0] == OK and m.outcome[3] == TIMEOUT
    before = snapshot(m)
    record_ack(m, 3, int(m.intended[3]) + 1_000)  # nothing resurrects a timed-out message
    assert all(np.array_equal(a, b) for a, b in zip(before, snapshot(m)))
