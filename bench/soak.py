"""Soak: one long, moderate open-loop step; does the driver (or the server) leak?

``python -m bench.soak [--minutes 10] [--rate 1000] [--connections 20]
[--variant socketio-run-eventlet] [--json]`` (``make soak``; not in CI).

One server and one driver worker run for the whole soak on 127.0.0.1; a sampler thread
reads both processes' RSS and open file descriptors every few seconds. Verdict: the driver's
RSS and FD count at the end are within ±10 % of the start (the start is taken after a short
warm-up, once connections and imports have settled).

The driver preallocates its per-message arrays for the whole step; the zero-filled ones are
mapped lazily by the kernel, so their pages join the RSS as messages are recorded. That growth
is by design (bytes per message × messages) and is reported on its own line; the verdict is
on the RSS *net* of it, so only memory the driver should not be holding counts as a leak.

Bounded (the load has a wall-clock budget), loopback only, and every process is killed in
``finally`` (also on Ctrl-C / SIGTERM, exit 130). Exit 0 when flat, 1 when not, 2 on bad input.
"""
import argparse
import json
import os
import signal
import sys
import tempfile
import threading
import time

import numpy as np

from bench import machine
from bench import processes
from bench.execute import deployment
from bench.plan import registry
from bench.errors import UsageError

TOLERANCE = 0.10
WARMUP_S = 5.0


class Args(argparse.ArgumentParser):
    """An argument parser whose errors are UsageErrors (one line, exit 2)."""
    def error(self, message):
        """Bad arguments: one line on stderr and exit 2, never argparse's usage dump."""
        raise UsageError(message)


def parse(argv):
    """The soak's options, checked."""
    p = Args(prog="python -m bench.soak", description=__doc__.split("\n\n")[0])
    p.add_argument("--minutes", type=float, default=10.0, help="soak length (10)")
    p.add_argument("--rate", type=float, default=1000.0, help="total msg/s (1000)")
    p.add_argument("--connections", type=int, default=20, help="connections (20)")
    p.add_argument("--variant", default="socketio-run-eventlet", help="variant to soak")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    args = p.parse_args(argv)
    if not 0 < args.minutes <= 120:
        raise UsageError(f"--minutes must be in (0, 120], got {args.minutes:g}")
    if not 0 < args.rate <= 20_000:
        raise UsageError(f"--rate must be in (0, 20000] msg/s, got {args.rate:g}")
    if not 1 <= args.connections <= 500:
        raise UsageError(f"--connections must be in [1, 500], got {args.connections}")
    return args


def lazy_bytes_per_message():
    """Bytes per message of the driver's zero-filled (lazily mapped) per-message arrays."""
    from bench.driver.store import Messages

    m = Messages(1)
    arrays = [a for a in vars(m).values() if isinstance(a, np.ndarray)]
    return sum(a.itemsize for a in arrays if not a.any())


class Watch(threading.Thread):
    """Samples driver and server every ``interval`` seconds until stopped (bounded by it)."""

    def __init__(self, server_pids, interval):
        super().__init__(name="soak-sampler", daemon=True)
        self.server_pids, self.interval = server_pids, interval
        self.driver_pid, self.t0 = None, None
        self.rows = []
        self.stop = threading.Event()

    def started(self, pids, t0):
        """Start sampling once the driver is connected (its pid known)."""
        self.driver_pid, self.t0 = pids[0], t0
        self.start()

    def run(self):
        """Sample both sides until stopped."""
        while not self.stop.is_set():
            now = time.monotonic_ns()
            d, s = machine.tree_usage([self.driver_pid]), machine.tree_usage(self.server_pids)
            if d[2] and s[2]:  # both still there (bytes of RSS, open descriptors)
                self.rows.append(dict(t=(now - self.t0) / 1e9, driver_rss=d[0] * 2 ** 20,
                                      driver_fds=d[2], server_rss=s[0] * 2 ** 20,
                                      server_fds=s[2]))
            self.stop.wait(self.interval)


def change(a, b):
    """Relative change from ``a`` to ``b`` (NaN when ``a`` is 0)."""
    return (b - a) / a if a else float("nan")


def soak(minutes=10.0, rate=1000.0, connections=20, variant="socketio-run-eventlet", log=print):
    """Run one long moderate step and judge whether the driver's memory and files stay flat."""
    from bench.execute.load import run_load
    from bench.analysis import stats
    from bench.analysis.recorder import latency_histogram
    from bench.plan.job import Job

    reg = registry.load()
    v = reg.select([variant])[0]
    why = v.unavailable_reason()
    if why:
        raise UsageError(f"variant {variant!r} is unavailable: {why}")
    duration = minutes * 60.0
    interval = min(5.0, max(1.0, duration / 24))
    server_cpus, driver_cpus = machine.cpu_layout(True)
    per_message = lazy_bytes_per_message()
    with tempfile.TemporaryDirectory(prefix="bench-soak-") as work:
        log_path = os.path.join(work, "server.log")
        with deployment.serving_variant(v, log_path, cpus=server_cpus) as server:
            watch = Watch(server.pids, interval)
            job = Job(targets=tuple(tuple(t) for t in server.targets), connections=connections,
                      rate=rate, warmup=WARMUP_S, duration=duration,
                      spin=driver_cpus is not None, cpus=tuple(driver_cpus or ()))
            log(f"soak: {variant} on port {server.port}, {rate:g} msg/s over {connections} "
                f"connections for {minutes:g} min (+{WARMUP_S:g} s warm-up)")
            try:
                load = run_load(job, work, on_start=watch.started)
                arrays, t0 = load.arrays, load.t0
            finally:
                watch.stop.set()
                if watch.is_alive():
                    watch.join(interval + 5)
            server_status = server.status()
    rows = [r for r in watch.rows if WARMUP_S <= r["t"] <= WARMUP_S + duration]
    if len(rows) < 2:
        raise RuntimeError("too few resource samples; the soak was too short")
    first, last = rows[0], rows[-1]
    # messages due by each sample time: their lazily mapped array pages are legitimately in use
    lazy = {k: int(min(r["t"], WARMUP_S + duration) * rate) * per_message
            for k, r in (("start", first), ("end", last))}
    deadline_us = job.deadline * 1e6
    start = t0 + int(WARMUP_S * 1e9)
    mask = (arrays["intended"] >= start) & (arrays["intended"] < start + int(duration * 1e9))
    outcome = arrays["outcome"][mask]
    ok = outcome == 1
    latency = stats.summary(latency_histogram(arrays, mask, deadline_us),
                            int(mask.sum() - ok.sum()), deadline_us)
    minute_p99 = []
    for i in range(int(np.ceil(minutes))):
        lo, hi = t0 + int((WARMUP_S + 60 * i) * 1e9), t0 + int((WARMUP_S + 60 * (i + 1)) * 1e9)
        sel = mask & (arrays["intended"] >= lo) & (arrays["intended"] < hi)
        h = latency_histogram(arrays, sel, deadline_us)
        p99 = stats.summary(h, int(sel.sum() - (sel & (arrays["outcome"] == 1)).sum()),
                            deadline_us)["p99_us"]
        minute_p99.append(p99 if np.isfinite(p99) else None)
    net_start = first["driver_rss"] - lazy["start"]
    net_end = last["driver_rss"] - lazy["end"]
    out = dict(
        variant=variant, minutes=minutes, rate=rate, connections=connections,
        samples=len(rows), window_s=[round(first["t"], 1), round(last["t"], 1)],
        attempted=int(mask.sum()), ok=int(ok.sum()), timeouts=int((outcome == 2).sum()),
        p50_us=latency["p50_us"] if np.isfinite(latency["p50_us"]) else None,
        p99_us=latency["p99_us"] if np.isfinite(latency["p99_us"]) else None,
        p99_us_per_minute=minute_p99,
        driver_rss_mb=[round(first["driver_rss"] / 1e6, 2), round(last["driver_rss"] / 1e6, 2)],
        driver_array_pages_mb=[round(lazy["start"] / 1e6, 2), round(lazy["end"] / 1e6, 2)],
        driver_net_rss_mb=[round(net_start / 1e6, 2), round(net_end / 1e6, 2)],
        driver_net_rss_change=round(change(net_start, net_end), 4),
        driver_fds=[first["driver_fds"], last["driver_fds"]],
        driver_fds_change=round(change(first["driver_fds"], last["driver_fds"]), 4),
        server_rss_mb=[round(first["server_rss"] / 1e6, 2), round(last["server_rss"] / 1e6, 2)],
        server_rss_change=round(change(first["server_rss"], last["server_rss"]), 4),
        server_fds=[first["server_fds"], last["server_fds"]],
        server_exit=server_status,
    )
    out["flat"] = bool(abs(out["driver_net_rss_change"]) <= TOLERANCE and
                       abs(out["driver_fds_change"]) <= TOLERANCE)
    return out


def report(r):
    """The soak's verdict as text lines."""
    pct = lambda x: f"{100 * x:+.1f} %"  # noqa: E731
    lines = [
        f"soak {r['variant']}: {r['minutes']:g} min at {r['rate']:g} msg/s over "
        f"{r['connections']} connections; {r['samples']} samples from t={r['window_s'][0]} s "
        f"to t={r['window_s'][1]} s",
        f"  messages     {r['ok']}/{r['attempted']} acked, {r['timeouts']} timeouts; "
        f"p50 {r['p50_us']} us, p99 {r['p99_us']} us; p99 per minute {r['p99_us_per_minute']}",
        f"  driver RSS   {r['driver_rss_mb'][0]} -> {r['driver_rss_mb'][1]} MB (of which "
        f"per-message arrays {r['driver_array_pages_mb'][0]} -> "
        f"{r['driver_array_pages_mb'][1]} MB)",
        f"  driver net   {r['driver_net_rss_mb'][0]} -> {r['driver_net_rss_mb'][1]} MB "
        f"({pct(r['driver_net_rss_change'])})",
        f"  driver FDs   {r['driver_fds'][0]} -> {r['driver_fds'][1]} "
        f"({pct(r['driver_fds_change'])})",
        f"  server RSS   {r['server_rss_mb'][0]} -> {r['server_rss_mb'][1]} MB "
        f"({pct(r['server_rss_change'])}); FDs {r['server_fds'][0]} -> {r['server_fds'][1]}",
        f"  verdict      {'FLAT' if r['flat'] else 'NOT FLAT'} (driver net RSS and FDs within "
        f"±{100 * TOLERANCE:g} %)",
    ]
    if r["server_exit"]:
        lines.append(f"  server       {r['server_exit']}")
    return "\n".join(lines)


def _interrupt(signum, frame):
    raise KeyboardInterrupt


def main(argv=None):
    """Run the soak; exit 0 when flat, 1 when not, 2 on bad input, 130 on interrupt."""
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        args = parse(sys.argv[1:] if argv is None else argv)
        log = (lambda *a: print(*a, file=sys.stderr, flush=True)) if args.json else \
            (lambda *a: print(*a, flush=True))
        result = soak(args.minutes, args.rate, args.connections, args.variant, log=log)
        print(json.dumps(result) if args.json else report(result))
        return 0 if result["flat"] else 1
    except UsageError as exc:
        print(f"bench.soak: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("bench.soak: interrupted", file=sys.stderr)
        return 130
    except (processes.NotReady, RuntimeError) as exc:
        print(f"bench.soak: failed: {exc}", file=sys.stderr)
        return 1
    finally:
        processes.kill_all_groups()


if __name__ == "__main__":
    raise SystemExit(main())
