"""From one step's per-message arrays to HDR histograms, a summary row and sample rows.

Latency is taken from each message's intended send time (corrected, as wrk2 does) and service
time from its actual send (uncorrected); both are kept. Warm-up rows are kept and tagged but
never counted. Histograms are HdrHistogram at 1 µs resolution, 3 significant digits; the
encoded histogram travels with the row so repeats merge losslessly.
"""
import numpy as np
import pandas as pd
from hdrh.histogram import HdrHistogram

from bench.driver.lean import OUTCOMES, OK, TIMEOUT, DISCONNECT

LOWEST_US, HIGHEST_US, DIGITS = 1, 120_000_000, 3
PERCENTILES = {"p50_us": 50, "p90_us": 90, "p99_us": 99, "p999_us": 99.9, "p9999_us": 99.99}
SUMMARY_COLUMNS = [
    "variant", "scenario", "load_point", "repeat", "transport", "target_rate", "achieved_rate",
    "attempted", "ok", "errors", "timeouts", "p50_us", "p90_us", "p99_us", "p999_us",
    "p9999_us", "max_us", "mean_us", "server_cpu_pct", "server_rss_mb", "driver_cpu_pct",
    "driver_bound", "valid", "note", "hdr",
    # additions (the schema allows new columns): uncorrected service time and schedule lag
    "service_p50_us", "service_p99_us", "lag_p50_us", "lag_p99_us", "connections",
    "duration_s", "client", "hdr_service",
]
SAMPLE_COLUMNS = ["variant", "scenario", "load_point", "repeat", "conn", "seq", "phase",
                  "intended_ns", "sent_ns", "received_ns", "latency_us", "service_us",
                  "outcome", "transport"]
LAG_LIMIT_US = 1000.0
LAG_SHARE = 0.1
DRIVER_CPU_LIMIT = 90.0


def new_histogram():
    return HdrHistogram(LOWEST_US, HIGHEST_US, DIGITS)


def histogram_of(values_us):
    """HDR histogram of µs values (clamped into the trackable range)."""
    h = new_histogram()
    if len(values_us):
        v = np.clip(np.rint(values_us).astype(np.int64), LOWEST_US, HIGHEST_US)
        for value, count in zip(*np.unique(v, return_counts=True)):
            h.record_value(int(value), int(count))
    return h


def decode(encoded):
    return HdrHistogram.decode(encoded)


def merge(encoded_list):
    """One histogram from several encoded ones: the only honest way to aggregate percentiles."""
    total = new_histogram()
    for e in encoded_list:
        if isinstance(e, str) and e:
            total.add(decode(e.encode()))
    return total


def stats(h):
    """Percentile columns of a histogram (empty when nothing was recorded)."""
    if h.get_total_count() == 0:
        return {k: float("nan") for k in [*PERCENTILES, "max_us", "mean_us"]}
    out = {k: float(h.get_value_at_percentile(p)) for k, p in PERCENTILES.items()}
    out["max_us"] = float(h.get_max_value())
    out["mean_us"] = round(float(h.get_mean_value()), 1)
    return out


def measure_mask(arrays, t0, warmup, duration):
    start = t0 + int(warmup * 1e9)
    end = start + int(duration * 1e9)
    return (arrays["intended"] >= start) & (arrays["intended"] < end)


def summarize(step, arrays, t0, transport, resources, client, open_loop, note=""):
    """Summary rows for a step's measured messages: one, or four for fanout."""
    if step.kind == "fanout":
        return fanout_rows(step, arrays, t0, transport, resources, client, note)
    row = summarize_messages(step, arrays, t0, transport, resources, client, open_loop, note)
    if step.kind == "connect":
        row.update(connect_columns(step, arrays, t0))
    return [dict(row, **step.extra)]


def connect_columns(step, arrays, t0):
    """Per-stage times from the attempt's start (TCP, upgrade, Engine.IO open, Socket.IO
    connect) and failures counted by the stage that failed."""
    measure = measure_mask(arrays, t0, step.warmup, step.duration)
    ok = measure & (arrays["outcome"] == OK)
    sent = arrays["sent"][ok]
    out = {}
    for stage, stamp in (("tcp", arrays["tcp_ns"][ok]), ("upgrade", arrays["upgrade_ns"][ok]),
                         ("open", arrays["open_ns"][ok]), ("connect", arrays["received"][ok])):
        st = stats(histogram_of((stamp - sent) / 1000.0))
        out[f"{stage}_p50_us"], out[f"{stage}_p99_us"] = st["p50_us"], st["p99_us"]
    failed = arrays["failed_stage"][measure]
    for code, stage in ((1, "tcp"), (2, "upgrade"), (3, "open"), (4, "connect")):
        out[f"failed_{stage}"] = int((failed == code).sum())
    return out


def fanout_rows(step, arrays, t0, transport, resources, client, note):
    """first / median / last recipient per broadcast, and all deliveries, plus ``reach``."""
    members = step.connections
    measure = measure_mask(arrays, t0, step.warmup, step.duration)
    n_triggers = len(arrays["intended"]) // members
    shape = (n_triggers, members)
    latency = ((arrays["received"] - arrays["intended"]) / 1000.0).reshape(shape)
    delivered = (arrays["outcome"] == OK).reshape(shape)
    in_window = measure.reshape(shape)[:, 0]
    lat = np.where(delivered, latency, np.nan)[in_window]
    full = delivered[in_window].all(axis=1)
    reach = float(delivered[in_window].mean()) if lat.size else float("nan")
    base = summarize_messages(step, arrays, t0, transport, resources, client, True, note)
    triggers = int(in_window.sum())
    rows = []
    for recipient, values in (("first", np.nanmin(lat, axis=1) if lat.size else lat),
                              ("median", np.nanmedian(lat[full], axis=1) if full.any() else []),
                              ("last", np.nanmax(lat[full], axis=1) if full.any() else []),
                              ("all", lat[~np.isnan(lat)])):
        values = np.asarray(values, dtype=float)
        values = values[~np.isnan(values)]
        h = histogram_of(values)
        row = dict(base, **stats(h), hdr=h.encode().decode(), recipient=recipient,
                   reach=round(reach, 6), broadcasts=triggers)
        if recipient != "all":
            # one value per broadcast: counts are broadcasts, not deliveries
            row.update(attempted=triggers, ok=len(values), errors=0,
                       timeouts=triggers - len(values),
                       achieved_rate=round(len(values) / step.duration, 1))
        rows.append(row)
    if reach < 0.999:
        for row in rows:
            row["valid"] = False
            row["note"] = "; ".join(filter(None, [row["note"], f"reach {100 * reach:.2f} %"]))
    return rows


def summarize_messages(step, arrays, t0, transport, resources, client, open_loop, note=""):
    """One summary row for a step's measured messages."""
    measure = measure_mask(arrays, t0, step.warmup, step.duration)
    outcome = arrays["outcome"][measure]
    ok = outcome == OK
    received = arrays["received"][measure][ok]
    latency = (received - arrays["intended"][measure][ok]) / 1000.0
    service = (received - arrays["sent"][measure][ok]) / 1000.0
    sent = arrays["sent"][measure]
    lag = (sent[sent > 0] - arrays["intended"][measure][sent > 0]) / 1000.0
    h, hs = histogram_of(latency), histogram_of(service)
    attempted = int(measure.sum())
    n_ok = int(ok.sum())
    timeouts = int((outcome == TIMEOUT).sum())
    errors = attempted - n_ok - timeouts
    achieved = n_ok / step.duration if step.duration else float("nan")
    lag_p50 = float(np.percentile(lag, 50)) if open_loop and len(lag) else float("nan")
    lag_p99 = float(np.percentile(lag, 99)) if open_loop and len(lag) else float("nan")
    driver_cpu = resources.get("driver_cpu_pct", float("nan"))
    reasons = []
    driver_bound = False
    latency_stats, service_stats = stats(h), stats(hs)
    latency_p99 = latency_stats["p99_us"] if len(latency) else float("inf")
    if open_loop and lag_p99 > LAG_LIMIT_US and lag_p99 > LAG_SHARE * latency_p99:
        # The driver sent late by enough to matter: the latency is partly the driver's.
        # (A saturated server that flushes its backlog in bursts also delays the driver's
        # sends a little; lag under a tenth of the p99 latency cannot explain that p99.)
        driver_bound = True
        reasons.append(f"driver schedule lag p99 {lag_p99:.0f} us > {LAG_LIMIT_US:.0f} us")
    if driver_cpu > DRIVER_CPU_LIMIT:
        driver_bound = True
        reasons.append(f"driver CPU {driver_cpu:.0f} % > {DRIVER_CPU_LIMIT:.0f} %")
    if not transport:
        reasons.append("no working transport")
    if attempted == 0:
        reasons.append("nothing measured")
    elif n_ok < 0.999 * attempted:
        reasons.append(f"only {100.0 * n_ok / attempted:.2f} % acked")
    if open_loop and step.rate and achieved < 0.95 * step.rate:
        reasons.append(f"achieved {achieved:.0f}/s < 95 % of {step.rate:g}/s")
    if timeouts:
        reasons.append(f"{timeouts} timed out (no ack in {step.timeout:g} s)")
    if int((outcome == DISCONNECT).sum()):
        reasons.append(f"{int((outcome == DISCONNECT).sum())} lost to disconnects")
    row = dict(
        variant=step.variant, scenario=step.scenario, load_point=step.load_point,
        repeat=str(step.repeat), transport=transport,
        target_rate=step.rate if open_loop else float("nan"),
        achieved_rate=round(achieved, 1), attempted=attempted, ok=n_ok, errors=errors,
        timeouts=timeouts, **latency_stats,
        server_cpu_pct=resources.get("server_cpu_pct", float("nan")),
        server_rss_mb=resources.get("server_rss_mb", float("nan")),
        driver_cpu_pct=driver_cpu, driver_bound=driver_bound,
        valid=not reasons, note="; ".join(filter(None, [note, *reasons])),
        hdr=h.encode().decode(),
        service_p50_us=service_stats["p50_us"], service_p99_us=service_stats["p99_us"],
        lag_p50_us=round(lag_p50, 1), lag_p99_us=round(lag_p99, 1),
        connections=step.connections, duration_s=step.duration, client=client,
        hdr_service=hs.encode().decode(),
    )
    return row


def failed_row(step, transport, note, client=""):
    """A recorded failure: the variant did not serve; the run goes on."""
    row = {c: float("nan") for c in SUMMARY_COLUMNS}
    row.update(step.extra)
    row.update(variant=step.variant, scenario=step.scenario, load_point=step.load_point,
               repeat=str(step.repeat), transport=transport,
               target_rate=step.rate if step.rate else float("nan"),
               attempted=0, ok=0, errors=0, timeouts=0, driver_bound=False, valid=False,
               note=note, hdr="", hdr_service="", connections=step.connections,
               duration_s=step.duration, client=client)
    return row


def sample_rows(step, arrays, t0, transport):
    """One row per message, warm-up included and tagged, in the design's schema."""
    n = len(arrays["intended"])
    measure = measure_mask(arrays, t0, step.warmup, step.duration)
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
        "outcome": pd.Series(arrays["outcome"]).map(OUTCOMES).to_numpy(),
        "transport": transport,
    })
    if step.kind == "connect":
        for stage in ("tcp", "upgrade", "open"):
            stamp = arrays[f"{stage}_ns"]
            frame[f"{stage}_us"] = np.where(stamp > 0, (stamp - arrays["sent"]) / 1000.0, np.nan)
        frame["failed_stage"] = arrays["failed_stage"]
    for key, value in step.extra.items():
        frame[key] = value
    return frame
