"""How good is the driver? Its own floor, flatness and capacity against the reference server.

floor: closed-loop round trip, one connection (what no server can beat on this machine).
flatness: p50 at 100 and 800 msg/s (10 connections, as the default rate plan), with the
driver's own part (send lag + receive wait, p50) beside it, busy-polling and sleeping: what
of a p50 difference is the driver's wake-up and what the server's.
capacity: the highest open-loop rate whose replies, counted inside the window, reach ≥ 99 %
of the target, with send-lag p99 ≤ 1 ms and p50 at most twice its 800 msg/s value. The
reference server's CPU is sampled: when it is saturated, that is its limit, not the driver's.
A failing step is measured once more before the search moves (the second measurement stands;
``capacity_steps`` keeps it and says in ``attempts`` that the first failed); a failed first
step searches down, then up; nothing passing means the machine was too busy.
browser (where ``--client browser`` is available): the same server measured through a real
page (bench/driver/browser.py), so the browser's own cost stands beside its numbers: its floor
(closed loop, one connection) and what it adds over the lean client's, measured back to back;
the highest rate one page sustains at 10 connections and the most connections it holds at
:data:`BROWSER_CONNECTIONS_RATE` msg/s. A page step holds when replies inside the window reach
≥ 99 % of the rate, the page's send-lag p99 stays within twice its value at the lowest rate (2 ms
always passes) and Chromium's processes use under 90 % of the driver's core: past that the page,
not the server, is the limit. (The lag is judged against the page's own lowest-rate value, not
the lean client's 1 ms: a page's main thread also paints and handles input, so even at a few
messages a second its p99 lag is milliseconds, and browser rows are ``driver_bound`` at any rate.)
Server and driver sit on separate cores when there are two.
"""
import math
import os
import sys
import tempfile

from bench import machine
from bench.analysis import recorder
from bench.driver import browser
from bench import processes
from bench.execute.load import DriverError, run_load
from bench.execute.resources import Sampler
from bench.plan import limits
from bench.plan.job import for_step
from bench.plan.scenarios import RATE_CONNECTIONS
from bench.plan.steps import Step

START_RATE, FACTOR, MAX_RATE, MIN_RATE = 8000.0, 1.3, 400_000.0, 100.0
LAG_LIMIT_US, FLAT_FACTOR, SATURATED_PCT = 1000.0, 2.0, 90.0


def measure(server, work, cpus, rate, connections, duration, spin, workers=1, client="lean"):
    """One step against the reference server; its summary row (server CPU included; a browser
    row has its paint and DevTools columns and counts Chromium's processes as the driver)."""
    step = Step(index=0, variant="refserver", scenario="rate" if rate else "echo",
                load_point=f"{rate:g} msg/s" if rate else "floor", repeat=1, rate=rate,
                connections=connections, warmup=0.5, duration=duration, payload=64,
                deadline=5.0, client=client, transport="websocket")
    job = for_step(step, [(server.host, server.port)], spin=spin,
                   cpus=cpus or (), source_addresses=limits.source_addresses(connections))
    sampler = Sampler("refserver", 0)
    sampler.watch("server", [server.pid])

    def on_start(pids, t0):
        sampler.watch("driver", pids, tree=client == "browser")
        sampler.mark("measure_start", t0 + int(step.warmup * 1e9))
        sampler.mark("measure_end", t0 + int((step.warmup + step.duration) * 1e9))

    sampler.start()
    try:
        load = run_load(job, work, workers=workers, client=client, on_start=on_start,
                        on_done=sampler.load_ended)
    finally:
        sampler.stop()
    return recorder.summarize(step, load, "websocket", sampler.window(), client)[0]


def driver_part(row):
    """The driver's own share of a row's p50 (send lag + receive wait): not the server's."""
    return round(row["send_lag_p50_us"] + row["recv_wait_p50_us"], 1)


def calibrate(pin=True, quick=False, log=print):
    """Return the calibration dict (floor, flatness, capacity, the steps that found it)."""
    server_cpus, driver_cpus = machine.cpu_layout(pin)
    spin = driver_cpus is not None
    duration = 1.0 if quick else 2.0
    machine.raise_nofile()  # the reference server holds 10,000 connections too
    with tempfile.TemporaryDirectory(prefix="bench-calibrate-") as work:
        log_path = os.path.join(work, "refserver.log")
        argv = lambda port: [sys.executable, "-m", "bench.driver.refserver", str(port)]  # noqa: E731
        with processes.serving(argv, log_path, cpus=server_cpus) as server:
            floor = measure(server, work, driver_cpus, None, 1, duration, spin)
            out = dict(floor_p50_us=floor["p50_us"], floor_p99_us=floor["p99_us"],
                       pinned=server_cpus is not None, server_cpus=server_cpus,
                       driver_cpus=driver_cpus, driver_processes=1, busy_poll=spin)
            log(f"floor: p50 {out['floor_p50_us']} us, p99 {out['floor_p99_us']} us "
                f"(closed loop, 1 connection{', busy-polling' if spin else ''})")
            flat_duration = max(duration, 10.0 if not quick else 2.5)  # 1,000 samples at 100/s
            for rate in (100, 800):
                for poll in ([True, False] if spin else [False]):
                    r = measure(server, work, driver_cpus, float(rate), RATE_CONNECTIONS,
                                flat_duration, poll)
                    tag = "" if poll == spin else "_sleeping"
                    out[f"p50_{rate}{tag}_us"] = r["p50_us"]
                    out[f"driver_lag_{rate}{tag}_us"] = driver_part(r)
                    out[f"server_cpu_{rate}{tag}_pct"] = r["server_cpu_pct"]
                    log(f"rate {rate}/s {'busy-polling' if poll else 'sleeping'}: p50 "
                        f"{r['p50_us']} us, driver part (send lag + receive wait p50) "
                        f"{driver_part(r)} us")
            diff = out["p50_100_us"] - out["p50_800_us"]
            driver_diff = out["driver_lag_100_us"] - out["driver_lag_800_us"]
            out.update(p50_ratio_100_800=round(out["p50_100_us"] / out["p50_800_us"], 3),
                       p50_diff_us=round(diff, 1), p50_diff_driver_us=round(driver_diff, 1),
                       p50_diff_server_us=round(diff - driver_diff, 1))
            log(f"p50 100/s − 800/s = {diff:.1f} us: driver {driver_diff:.1f} us, server's own "
                f"wake-up and the loopback path {diff - driver_diff:.1f} us")
            out.update(search_capacity(server, work, driver_cpus, duration, spin,
                                       out["p50_800_us"], log))
            out.update(at_connections(server, work, driver_cpus, spin, quick, log))
            reason = browser.unavailable_reason()
            out["browser"] = f"unavailable: {reason}" if reason else "measured"
            if not reason:
                try:
                    out.update(browser_line(server, work, driver_cpus, quick, out, log))
                except DriverError as exc:  # what the lean client measured stands
                    out["browser"] = f"failed: {exc}"
                    log(f"browser: {exc}")
            return out


def measured_twice(run, judge):
    """(row, passed, attempts) of a step measured by ``run`` and judged by ``judge``; a step
    that fails is measured once more and the second verdict stands, so one bad step on a
    shared machine does not move a search (``attempts`` says "ok", or "FAIL" then its retry)."""
    r = run()
    if judge(r):
        return r, True, "ok"
    r = run()
    passed = judge(r)
    return r, passed, f"FAIL, retried: {'ok' if passed else 'FAIL'}"


def search_capacity(server, work, cpus, duration, spin, p50_low, log):
    """The highest rate the driver sustains at 10 connections (the search the module
    docstring describes), with every step it tried."""
    steps, best, rate, ceiling = [], None, START_RATE, math.inf
    limit_note = ""
    while MIN_RATE <= rate <= MAX_RATE:
        def judge(r, rate=rate):
            flat = math.isfinite(r["p50_us"]) and r["p50_us"] <= FLAT_FACTOR * p50_low
            return (r["achieved_rate"] >= 0.99 * rate and r["send_lag_p99_us"] <= LAG_LIMIT_US
                    and flat)
        r, passed, attempts = measured_twice(
            lambda: measure(server, work, cpus, rate, RATE_CONNECTIONS, duration, spin), judge)
        steps.append(dict(rate=rate, achieved=r["achieved_rate"], p50_us=r["p50_us"],
                          p99_us=r["p99_us"], lag_p99_us=r["send_lag_p99_us"],
                          driver_busy_pct=r["driver_cpu_pct"],
                          server_cpu_pct=r["server_cpu_pct"], passed=passed, attempts=attempts))
        log(f"rate {rate:9.0f}/s: achieved {r['achieved_rate']:9.0f}/s in window, lag p99 "
            f"{r['send_lag_p99_us']:7.1f} us, p50 {r['p50_us']:7.1f} us, driver busy "
            f"{r['driver_cpu_pct']:.0f} %, refserver CPU {r['server_cpu_pct']:.0f} % -> "
            f"{attempts}")
        if passed:
            best = steps[-1]
            rate = round(rate * FACTOR, -2)
            if rate >= ceiling:  # found on the way down: up again, short of the known failure
                break
            continue
        ceiling = min(ceiling, rate)
        if r["server_cpu_pct"] >= SATURATED_PCT:
            limit_note = (f"the reference server saturated at {rate:g}/s "
                          f"({r['server_cpu_pct']:.0f} % CPU): its limit, not the driver's")
        if best is None:  # even the first rate failed: walk down until one holds
            rate = round(rate / 2, -1)
        else:
            break
    if best is None:
        limit_note = "machine too busy to calibrate: no rate down to " \
                     f"{MIN_RATE:g}/s held (see capacity_steps)"
    elif not limit_note:
        limit_note = "driver limit (lag, achieved or p50 flatness)"
    return dict(capacity_msg_s=best["achieved"] if best else 0.0,
                lag_p99_us=best["lag_p99_us"] if best else None,
                capacity_p99_us=best["p99_us"] if best else None,
                capacity_driver_busy_pct=best["driver_busy_pct"] if best else None,
                capacity_limit=limit_note, capacity_steps=steps)


SCALE_CONNECTIONS, SCALE_RATES, SCALE_FLOOR_RATE = (10, 10_000), (2000, 5000, 10_000, 20_000), 400
QUICK_SCALE_CONNECTIONS = (10, 1000)


def at_connections(server, work, cpus, spin, quick, log):
    """Floor and capacity with 10 and with 10,000 connections open (driver processes of up to
    ``limits.PER_DRIVER_PROCESS`` connections, epoll beyond 900, sources over 127.0.0.x): ``floor_N_p50_us`` / ``floor_N_p99_us`` at a low open-loop
    rate spread over every connection (1,200 samples), ``capacity_N_msg_s`` the highest of a
    few rates that held (achieved ≥ 99 %, send-lag p99 ≤ 1 ms, p50 ≤ 2× that floor), and
    ``driver_lag_N_RATE_us`` the driver's part of the p50 at each rate tried.
    ``--quick`` measures 10 and 1,000 connections."""
    out = {}
    for n in QUICK_SCALE_CONNECTIONS if quick else SCALE_CONNECTIONS:
        workers = limits.driver_processes(n)
        poll = spin and workers <= len(cpus or ())
        floor = measure(server, work, cpus, float(SCALE_FLOOR_RATE), n, 3.0, poll, workers)
        out.update({f"floor_{n}_p50_us": floor["p50_us"], f"floor_{n}_p99_us": floor["p99_us"],
                    f"driver_processes_{n}": workers})
        log(f"{n} connections ({workers} driver processes): p50 {floor['p50_us']} us, p99 "
            f"{floor['p99_us']} us at {SCALE_FLOOR_RATE}/s")
        best = 0.0
        for rate in SCALE_RATES[:2] if quick else SCALE_RATES:
            def judge(r, rate=rate):
                return (r["achieved_rate"] >= 0.99 * rate and
                        r["send_lag_p99_us"] <= LAG_LIMIT_US and math.isfinite(r["p50_us"])
                        and r["p50_us"] <= FLAT_FACTOR * max(floor["p50_us"], 1.0))
            r, passed, attempts = measured_twice(
                lambda: measure(server, work, cpus, float(rate), n, 1.5, poll, workers), judge)
            out[f"driver_lag_{n}_{rate}_us"] = driver_part(r)
            log(f"{n} connections, {rate}/s: achieved {r['achieved_rate']:.0f}/s, p50 "
                f"{r['p50_us']} us, lag p99 {r['send_lag_p99_us']} us, driver part "
                f"{driver_part(r)} us, refserver CPU {r['server_cpu_pct']:.0f} % -> {attempts}")
            if not passed:
                break
            best = r["achieved_rate"]
        out[f"capacity_{n}_msg_s"] = best
    return out


BROWSER_RATES, QUICK_BROWSER_RATES = (50, 100, 200, 400, 800, 1600), (50, 200, 800)
BROWSER_CONNECTIONS, QUICK_BROWSER_CONNECTIONS = (50, 100, 250), (50,)
BROWSER_CONNECTIONS_RATE = 100.0


def browser_line(server, work, cpus, quick, lean, log):
    """The browser client's own cost on the reference server (the module docstring's
    ``browser``): ``browser_floor_*``, ``browser_floor_added_us`` over ``lean``'s floor,
    ``browser_capacity_msg_s`` and ``browser_connections`` with the steps that found them."""
    duration = 1.0 if quick else 2.0
    floor = measure(server, work, cpus, None, 1, duration, False, client="browser")
    out = dict(browser_floor_p50_us=floor["p50_us"], browser_floor_p99_us=floor["p99_us"],
               browser_floor_devtools_p50_us=floor["devtools_p50_us"],
               browser_floor_paint_p50_us=floor["paint_p50_us"],
               browser_floor_added_us=round(floor["p50_us"] - lean["floor_p50_us"], 1))
    log(f"browser floor: p50 {floor['p50_us']} us to the ack callback "
        f"({out['browser_floor_added_us']} us over the lean client's), DevTools frames "
        f"{floor['devtools_p50_us']} us, painted {floor['paint_p50_us']} us (closed loop, "
        "1 connection)")

    lag_floor = []  # the page's send-lag p99 at the lowest rate, once measured

    def held(r, rate):
        lag_floor[:] = lag_floor or [r["send_lag_p99_us"]]
        return (r["achieved_rate"] >= 0.99 * rate and r["driver_cpu_pct"] < SATURATED_PCT
                and r["send_lag_p99_us"] <= FLAT_FACTOR * max(lag_floor[0], LAG_LIMIT_US))

    def page_step(rate, connections):
        """One page step, measured once more when it fails (the lag p99 of a few hundred
        sends moves with a single late one); the second verdict stands."""
        r, passed, attempts = measured_twice(
            lambda: measure(server, work, cpus, float(rate), connections, duration, False,
                            client="browser"), lambda r: held(r, rate))
        steps.append(dict(_browser_step(r, rate, connections, passed), attempts=attempts))
        log(f"browser {rate:g}/s at {connections} connections: " + _said(steps[-1]))
        return passed

    steps, best = [], None
    for rate in QUICK_BROWSER_RATES if quick else BROWSER_RATES:
        if not page_step(rate, RATE_CONNECTIONS):
            break
        best = steps[-1]
    conns_best = None
    for n in QUICK_BROWSER_CONNECTIONS if quick else BROWSER_CONNECTIONS:
        try:
            if not page_step(BROWSER_CONNECTIONS_RATE, n):
                break
        except DriverError as exc:  # the page could not open them all: that is the answer
            steps.append(dict(rate=BROWSER_CONNECTIONS_RATE, connections=n, passed=False,
                              failure=str(exc)[:200]))
            log(f"browser {n} connections: {exc}")
            break
        conns_best = n
    out.update(browser_capacity_msg_s=best["achieved"] if best else 0.0,
               browser_capacity_cpu_pct=best["browser_cpu_pct"] if best else None,
               browser_lag_p99_floor_us=lag_floor[0] if lag_floor else None,
               browser_connections=conns_best or 0, browser_steps=steps)
    return out


def _browser_step(r, rate, connections, passed):
    """One page step as ``browser_steps`` lists it."""
    return dict(rate=rate, connections=connections, achieved=r["achieved_rate"],
                p50_us=r["p50_us"], p99_us=r["p99_us"], lag_p99_us=r["send_lag_p99_us"],
                devtools_p50_us=r["devtools_p50_us"], browser_cpu_pct=r["driver_cpu_pct"],
                driver_bound=bool(r["driver_bound"]), passed=passed)


def _said(step):
    """One page step as the progress log says it."""
    return (f"achieved {step['achieved']:.0f}/s, p50 {step['p50_us']} us (DevTools "
            f"{step['devtools_p50_us']} us), page lag p99 {step['lag_p99_us']} us, browser CPU "
            f"{step['browser_cpu_pct']:.0f} % -> {step['attempts']}")
