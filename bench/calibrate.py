"""How good is the driver? Its own floor and capacity against the reference echo server.

floor: closed-loop round trip, one connection (what no server can beat on this machine).
capacity: highest open-loop rate one driver process sustains with ≥ 99 % of the target rate
achieved and schedule lag p99 ≤ 1 ms, rising geometrically until a step fails.
Server and driver sit on separate cores when there are two.
"""
import os
import sys
import tempfile

import numpy as np

from bench.execute import lifecycle
from bench.analysis import recorder
from bench.execute.load import run_load
from bench.execute.resources import Sampler
from bench.execute.runner import cpu_layout

START_RATE, FACTOR, MAX_RATE, MIN_RATE = 8000.0, 1.3, 400_000.0, 100.0


def _measure(port, work, cpus, rate, connections, warmup, duration):
    job = dict(host=lifecycle.HOST, port=port, connections=connections, rate=rate,
               warmup=warmup, duration=duration, timeout=5.0, payload=64,
               max_messages=int((warmup + duration) * 60_000) * connections, event="echo")
    sampler = Sampler("refserver", 0)

    def on_start(pids, t0):
        sampler.watch("driver", pids)
        sampler.mark("measure_start", t0 + int(warmup * 1e9))
        sampler.mark("measure_end", t0 + int((warmup + duration) * 1e9))

    sampler.start()
    try:
        arrays, t0 = run_load(job, work, cpus=cpus, on_start=on_start)
    finally:
        sampler.stop()
    mask = recorder.measure_mask(arrays, t0, warmup, duration)
    ok = mask & (arrays["outcome"] == 1)
    latency = (arrays["received"][ok] - arrays["intended"][ok]) / 1000.0
    sent = mask & (arrays["sent"] > 0)
    lag = (arrays["sent"][sent] - arrays["intended"][sent]) / 1000.0
    return dict(
        achieved=ok.sum() / duration, attempted=int(mask.sum()),
        p50=float(np.percentile(latency, 50)) if len(latency) else float("nan"),
        p99=float(np.percentile(latency, 99)) if len(latency) else float("nan"),
        lag_p99=float(np.percentile(lag, 99)) if len(lag) else float("nan"),
        driver_cpu=sampler.window().get("driver_cpu_pct", float("nan")))


def calibrate(pin=True, quick=False, floor_only=False, log=print):
    """Return the calibration dict (floor, capacity, the steps that found it)."""
    server_cpus, driver_cpus = cpu_layout(pin)
    duration = 1.0 if quick else 2.0
    with tempfile.TemporaryDirectory(prefix="bench-calibrate-") as work:
        log_path = os.path.join(work, "refserver.log")
        argv = lambda port: [sys.executable, "-m", "bench.driver.refserver", str(port)]  # noqa: E731
        with lifecycle.serving(argv, log_path, cpus=server_cpus) as server:
            floor = _measure(server.port, work, driver_cpus, None, 1, 0.5, duration)
            out = dict(floor_p50_us=round(floor["p50"], 1), floor_p99_us=round(floor["p99"], 1),
                       floor_round_trips_s=round(floor["achieved"], 1),
                       pinned=server_cpus is not None, server_cpus=server_cpus,
                       driver_cpus=driver_cpus, driver_processes=1)
            log(f"floor: p50 {out['floor_p50_us']} us, p99 {out['floor_p99_us']} us "
                f"(closed loop, 1 connection)")
            if floor_only:
                return out
            steps, best, rate, falling = [], None, START_RATE, False
            while MIN_RATE <= rate <= MAX_RATE:
                r = _measure(server.port, work, driver_cpus, rate, 50, 0.5, duration)
                passed = r["achieved"] >= 0.99 * rate and r["lag_p99"] <= 1000.0
                steps.append(dict(rate=rate, achieved=round(r["achieved"], 1),
                                  p50_us=round(r["p50"], 1), p99_us=round(r["p99"], 1),
                                  lag_p99_us=round(r["lag_p99"], 1),
                                  driver_cpu_pct=r["driver_cpu"], passed=passed))
                log(f"rate {rate:9.0f}/s: achieved {r['achieved']:9.0f}/s, lag p99 "
                    f"{r['lag_p99']:7.1f} us, p99 {r['p99']:8.1f} us, driver CPU "
                    f"{r['driver_cpu']:.0f} % -> {'ok' if passed else 'FAIL'}")
                if passed:
                    best = steps[-1]
                    if falling:
                        break
                    rate = round(rate * FACTOR, -2)
                elif best is None:  # even the first rate failed: walk down to a floor
                    falling, rate = True, round(rate / 2, -1)
                else:
                    break
            out.update(capacity_msg_s=best["achieved"] if best else 0.0,
                       lag_p99_us=best["lag_p99_us"] if best else None,
                       capacity_p99_us=best["p99_us"] if best else None,
                       capacity_driver_cpu_pct=best["driver_cpu_pct"] if best else None,
                       capacity_steps=steps)
            return out
