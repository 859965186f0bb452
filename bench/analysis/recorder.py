"""One step's per-message arrays → summary rows and sample rows (numbers from stats).

Latency is taken from each message's intended send time (corrected, as wrk2 does) and service
time from its actual send (uncorrected); both are kept. Warm-up rows are kept and tagged but
never counted. A message belongs to the measured window by its intended send time; the
achieved rate counts ok replies *received* inside the window. Every unanswered message enters
the latency histogram at the deadline (see bench/analysis/stats.py).

The driver's share is measured on every row: ``send_lag`` (actual − intended send) and
``recv_wait`` (how long a reply waited inside the driver process after its loop woke with it);
``driver_share`` = (send lag p50 + recv wait p50) ÷ latency p50. A step is driver-bound when a
lag's p99 exceeds max(50 µs, 25 % of the step's p99 latency) or the driver loop was busy more
than 90 % of its time.
"""
import io

import numpy as np
import pandas as pd
from hdrh.log import HistogramLogWriter

from bench import kinds
from bench.analysis import columns, nagle, selfcheck, stats
from bench.plan.job import Outcome

OK, TIMEOUT, DISCONNECT = int(Outcome.OK), int(Outcome.TIMEOUT), int(Outcome.DISCONNECT)
SAMPLE_COLUMNS = ["variant", "scenario", "load_point", "repeat", "conn", "seq", "phase",
                  "intended_ns", "sent_ns", "received_ns", "latency_us", "service_us",
                  "outcome", "transport"]
LAG_FLOOR_US, LAG_SHARE, BUSY_LIMIT = 50.0, 0.25, 90.0
OUTCOME_LABELS = {int(o): o.label for o in Outcome}


def window(step, t0):
    start = t0 + int(step.warmup * 1e9)
    return start, start + int(step.duration * 1e9)


def measure_mask(arrays, step, t0):
    start, end = window(step, t0)
    return (arrays["intended"] >= start) & (arrays["intended"] < end)


def latency_histogram(arrays, mask, deadline_us):
    """Histogram of every message in ``mask``: answered at their latency, the rest censored."""
    ok = mask & (arrays["outcome"] == OK)
    latency = (arrays["received"][ok] - arrays["intended"][ok]) / 1000.0
    return stats.histogram_of(latency, censored=int(mask.sum() - ok.sum()),
                              deadline_us=deadline_us)


def summarize(step, load, transport, resources, client, note=""):
    """Summary rows for a step's measured messages, built by its kind (bench/kinds): one
    row, or one per recipient for a fan-out."""
    return kinds.get(step.kind).rows(step, load, transport, resources, client, note)


def pushed_text(counts):
    """Per-name event counts as the ``pushed`` cell: ``name=count;name=count`` by name."""
    return ";".join(f"{name}={int(n)}" for name, n in sorted(counts.items()) if n)


def reply_columns(row, replies):
    """The user's traffic's reply accounting on ``row``: ``reply_match`` (ack|seq|fifo),
    ``unsolicited``, ``pushed``; in-order matching that met unsolicited reply events is
    ambiguous, so the row is invalid, with the fix in its note."""
    unsolicited = replies.get("unsolicited") or {}
    row.update(reply_match=replies["reply_match"], unsolicited=int(sum(unsolicited.values())),
               pushed=pushed_text(replies.get("pushed") or {}))
    ambiguous = int(replies.get("ambiguous") or 0)
    if replies["reply_match"] == "fifo" and ambiguous:
        names = ", ".join(repr(n) for n in sorted(unsolicited))
        mark_invalid(row, "reply_ambiguous")
        row["note"] = "; ".join(filter(None, [row["note"], (
            f"reply matching ambiguous: {ambiguous} {names} event(s) answered no message, so "
            "replies matched in order may belong to other messages (latencies too short); "
            "put \"{seq}\" in the message's args to match replies by id")]))


def summarize_messages(step, load, transport, resources, client, note=""):
    """One summary row for a step's measured messages."""
    arrays, t0 = load.arrays, load.t0
    start, end = window(step, t0)
    deadline_us = step.deadline * 1e6
    measure = measure_mask(arrays, step, t0)
    outcome = arrays["outcome"][measure]
    ok = outcome == OK
    intended = arrays["intended"][measure]
    sent = arrays["sent"][measure]
    received = arrays["received"][measure]
    h = latency_histogram(arrays, measure, deadline_us)
    hs = stats.histogram_of((received[ok] - sent[ok]) / 1000.0)
    attempted, n_ok = int(measure.sum()), int(ok.sum())
    censored_n = attempted - n_ok
    timeouts = int((outcome == TIMEOUT).sum())
    errors = attempted - n_ok - timeouts
    all_ok = arrays["outcome"] == OK
    in_window = all_ok & (arrays["received"] >= start) & (arrays["received"] < end)
    achieved = int(in_window.sum()) / step.duration
    sent_in_window = (arrays["sent"] >= start) & (arrays["sent"] < end) & (arrays["sent"] > 0)
    sent_rate = int(sent_in_window.sum()) / step.duration
    lag_p50, lag_p99 = stats.quantiles((sent[sent > 0] - intended[sent > 0]) / 1000.0, [50, 99]) \
        if step.open_loop else (0.0, 0.0)
    wait = arrays["recv_wait"][measure][ok] / 1000.0 if "recv_wait" in arrays else []
    wait_p50, wait_p99 = stats.quantiles(wait, [50, 99])
    latency = stats.summary(h, censored_n, deadline_us)
    service = stats.summary(hs)
    busy = 100.0 * load.busy_share if load.busy_share is not None else \
        resources.get("driver_cpu_pct", float("nan"))
    reasons, codes, driver_bound = [], [], False
    p99 = latency["p99_us"] if np.isfinite(latency["p99_us"]) else stats.value_at(h, 99)
    limit = max(LAG_FLOOR_US, LAG_SHARE * p99) if np.isfinite(p99) else LAG_FLOOR_US
    lags = (sent[sent > 0] - intended[sent > 0]) / 1000.0 if step.open_loop else []
    for code, name, values in (("send_lag", "send lag", lags), ("recv_wait", "receive wait", wait)):
        bound, statistic = selfcheck.driver_lag_evidence(np.asarray(values, float), limit)
        if bound:
            driver_bound = True
            codes.append(f"driver_bound:{code}")
            reasons.append(f"driver {name} p99 {statistic:.0f} us > {limit:.0f} us"
                           if stats.enough_for(len(values), 99) else
                           f"driver {name}: {statistic:.0f} of {len(values)} over {limit:.0f} "
                           "us, more than 1 % (binomial p < 0.01)")
    if busy > BUSY_LIMIT:
        driver_bound = True
        codes.append("driver_bound:busy")
        reasons.append(f"driver loop busy {busy:.0f} % > {BUSY_LIMIT:.0f} %")
    if not transport:
        codes.append("no_transport")
        reasons.append("no working transport")
    if attempted == 0:
        codes.append("nothing_measured")
        reasons.append("nothing measured")
    elif n_ok < 0.999 * attempted:
        codes.append("acked_below")
        reasons.append(f"only {100.0 * n_ok / attempted:.2f} % acked")
    if step.open_loop and step.rate and achieved < 0.95 * step.rate:
        codes.append("achieved_below")
        reasons.append(f"achieved {achieved:.0f}/s < 95 % of {step.rate:g}/s")
    if timeouts:
        codes.append("timeouts")
        reasons.append(f"{timeouts} timed out (no reply within {step.deadline * 1000:g} ms)")
    lost = int((outcome == DISCONNECT).sum())
    if lost:
        codes.append("disconnects")
        reasons.append(f"{lost} lost to disconnects")
    held_code, held = nagle.finding_for_step(step, (received[ok] - intended[ok]) / 1e6)
    # a fan-out's deliveries of one broadcast share its send time: their checks and
    # intervals would describe deliveries, not broadcasts, so those rows are not checked
    checks = selfcheck.step_checks(
        np.where(ok, (received - intended) / 1000.0, deadline_us), intended, sent,
        window_start_ns=start, window_end_ns=end, open_loop=step.open_loop,
        arrivals=step.arrivals, rate=step.rate) if not kinds.get(step.kind).members \
        else dict(reasons=[])
    for name in ("p50", "p99"):  # on the histogram's buckets, where the row's percentiles are
        for end, to_bucket in (("low", h.get_lowest_equivalent_value),
                               ("high", h.get_highest_equivalent_value)):
            value = checks.get(f"{name}_step_ci_{end}", np.nan)
            if np.isfinite(value):
                checks[f"{name}_step_ci_{end}"] = float(to_bucket(int(round(value))))
    marks = selfcheck.sentences(checks)  # a failed check marks the row; it stays valid
    codes += [held_code, *checks.pop("reasons")]
    if resources.get("noisy"):
        codes.append("noisy")
    p50 = latency["p50_us"]
    share = (lag_p50 + wait_p50) / p50 if np.isfinite(p50) and p50 > 0 and \
        np.isfinite(wait_p50) else float("nan")
    return dict(
        variant=step.variant, scenario=step.scenario, load_point=step.load_point,
        repeat=step.repeat, aggregate=False, transport=transport,
        target_rate=step.rate if step.open_loop else float("nan"),
        achieved_rate=round(achieved, 1), sent_rate=round(sent_rate, 1),
        attempted=attempted, ok=n_ok, errors=errors, timeouts=timeouts, **latency,
        server_cpu_pct=resources.get("server_cpu_pct", float("nan")),
        server_rss_mb=resources.get("server_rss_mb", float("nan")),
        driver_cpu_pct=round(busy, 1), driver_bound=driver_bound,
        valid=not reasons, note="; ".join(filter(None, [note, *reasons, held, *marks])),
        reasons=";".join(filter(None, codes)), **checks,
        hdr=stats.encode(h), hdr_service=stats.encode(hs),
        service_p50_us=service["p50_us"], service_p99_us=service["p99_us"],
        send_lag_p50_us=round(lag_p50, 1), send_lag_p99_us=round(lag_p99, 1),
        lag_p50_us=round(lag_p50, 1), lag_p99_us=round(lag_p99, 1),
        recv_wait_p50_us=round(wait_p50, 1), recv_wait_p99_us=round(wait_p99, 1),
        driver_share=round(share, 3), connections=step.connections, duration_s=step.duration,
        deadline_ms=step.deadline * 1000, client=client, arrivals=step.arrivals,
        requested=f"{step.client}/{step.transport or 'auto'}",
        steal_pct=resources.get("steal_pct", float("nan")),
        load_avg=resources.get("load_avg", float("nan")),
        foreign_cpu_pct=resources.get("foreign_cpu_pct", float("nan")),
        noisy=bool(resources.get("noisy", False)),
    )


def mark_invalid(row, code):
    """Mark ``row`` invalid with a reason code (its note gets the sentence from the caller)."""
    row["valid"] = False
    row["reasons"] = ";".join(dict.fromkeys(filter(None, [*str(row.get("reasons") or "")
                                                           .split(";"), code])))


def failed_row(step, transport, note, client="", code="not_served"):
    """A recorded failure: the variant did not serve (or the step could not run: ``code``
    says which); the run goes on."""
    row = {c: float("nan") for c in columns.ORDER}
    row.update(step.extra)
    row.update(variant=step.variant, scenario=step.scenario, load_point=step.load_point,
               repeat=step.repeat, aggregate=False, transport=transport,
               target_rate=step.rate if step.rate else float("nan"),
               attempted=0, ok=0, errors=0, timeouts=0, driver_bound=False, valid=False,
               reasons=code,
               note=note, hdr="", hdr_service="", censored="", connections=step.connections,
               duration_s=step.duration, deadline_ms=step.deadline * 1000,
               client=client or step.client, arrivals=step.arrivals, noisy=False,
               requested=f"{step.client}/{step.transport or 'auto'}")
    return row


def interval_log(step, arrays, t0):
    """The step's latencies as an HdrHistogram interval log (.hlog), one histogram per
    second of intended send time, warm-up included (HdrHistogram's own tools read it)."""
    out = io.StringIO()
    writer = HistogramLogWriter(out)
    writer.output_comment(f"{step.variant} {step.scenario} {step.load_point} "
                          f"repeat {step.repeat}; values in us, timed-out at the deadline")
    writer.output_legend()
    deadline_us = step.deadline * 1e6
    seconds = int(np.ceil(step.warmup + step.duration))
    for s in range(seconds):
        lo, hi = t0 + s * 1_000_000_000, t0 + (s + 1) * 1_000_000_000
        mask = (arrays["intended"] >= lo) & (arrays["intended"] < hi)
        h = latency_histogram(arrays, mask, deadline_us)
        if h.get_total_count():
            writer.output_interval_histogram(h, s, s + 1, max_value_unit_ratio=1000.0)
    return out.getvalue()


def sample_rows(step, arrays, t0, transport):
    """One row per message, warm-up included and tagged, in the design's schema."""
    n = len(arrays["intended"])
    measure = measure_mask(arrays, step, t0)
    conn = arrays["conn"]
    order = np.lexsort((arrays["intended"], conn))
    seq = np.empty(n, dtype=np.int64)
    if n:
        sorted_conn = conn[order]
        starts = np.r_[0, np.nonzero(np.diff(sorted_conn))[0] + 1]
        ranks = np.arange(n) - np.repeat(starts, np.diff(np.r_[starts, n]))
        seq[order] = ranks
    ok = arrays["outcome"] == OK
    latency = np.where(ok, (arrays["received"] - arrays["intended"]) / 1000.0, np.nan)
    service = np.where(ok, (arrays["received"] - arrays["sent"]) / 1000.0, np.nan)
    frame = pd.DataFrame({
        "variant": step.variant, "scenario": step.scenario, "load_point": step.load_point,
        "repeat": step.repeat, "conn": conn, "seq": seq,
        "phase": np.where(measure, "measure", "warmup"),
        "intended_ns": arrays["intended"], "sent_ns": arrays["sent"],
        "received_ns": arrays["received"], "latency_us": np.round(latency, 1),
        "service_us": np.round(service, 1),
        "outcome": pd.Series(arrays["outcome"]).map(OUTCOME_LABELS).to_numpy(),
        "transport": transport, "client": step.client,
    })
    if "recv_wait" in arrays:
        frame["recv_wait_us"] = np.round(arrays["recv_wait"] / 1000.0, 1)
    add_columns = kinds.get(step.kind).sample_columns
    if add_columns:
        frame = add_columns(frame, arrays)
    for key, value in step.extra.items():
        frame[key] = value
    return frame
