"""Churn soak: clients joining and leaving at a steady rate; does a server's memory grow?

``python -m bench.churn [--variants socketio-run-gevent] [--duration 600] [--rate 20]
[--population 200] [--json]`` (``make soak``; not in CI). Beside the driver soak
(``python -m bench.soak``, ``make soak-driver``), which looks at the driver under load.

Per variant: the server is spawned on 127.0.0.1, one driver worker (``bench.driver.capacity``)
holds ``--population`` clients open while ``--rate`` per second leave and as many join; the
server's RSS and open descriptors (process tree) and the driver's RSS are sampled every
``SAMPLE_S`` (or a twentieth of the soak). Verdict per variant: the server's RSS over the last fifth of the soak against
the fifth after the warm-up (medians); more than ``TOLERANCE`` higher, or open descriptors
climbing past the population, is growth. The samples go to ``--out`` as CSV when given.

Bounded (duration, a wall budget for every wait), every process killed in ``finally``.
Exit 0 when flat, 1 when a server grew, 2 on bad input.
"""
import argparse
import json
import os
import select
import signal
import sys
import tempfile
import time

import numpy as np

from bench import machine
from bench.errors import UsageError
from bench import processes
from bench.execute import deployment
from bench.execute.fleet import Workers
from bench.plan import limits, registry
from bench.plan.job import Job

TOLERANCE = 0.10
SAMPLE_S = 2.0
WARMUP_FRACTION = 0.2


class Args(argparse.ArgumentParser):
    """An argument parser whose errors are UsageErrors (one line, exit 2)."""
    def error(self, message):
        """Bad arguments: one line on stderr and exit 2, never argparse's usage dump."""
        raise UsageError(message)


def parse(argv):
    """The churn soak's options, checked."""
    p = Args(prog="python -m bench.churn", description=__doc__.split("\n\n")[0])
    p.add_argument("--variants", default="socketio-run-gevent", help="variants to soak, "
                   "comma-separated (socketio-run-gevent)")
    p.add_argument("--duration", type=float, default=600.0, help="seconds per variant (600)")
    p.add_argument("--rate", type=float, default=20.0, help="clients leaving and joining "
                   "per second (20)")
    p.add_argument("--population", type=int, default=200, help="clients held open (200)")
    p.add_argument("--out", help="folder for churn.csv (the samples)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--variants-file", default=registry.DEFAULT_PATH, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if not 5 <= args.duration <= 24 * 3600:
        raise UsageError(f"--duration must be in [5, 86400] seconds, got {args.duration:g}")
    if not 0 < args.rate <= 500:
        raise UsageError(f"--rate must be in (0, 500] per second, got {args.rate:g}")
    if not 1 <= args.population <= limits.connection_limit()[0]:
        raise UsageError(f"--population must be in [1, {limits.connection_limit()[0]}], "
                         f"got {args.population}")
    reg = registry.load(args.variants_file)
    names = [n.strip() for n in args.variants.split(",") if n.strip()]
    if not names:
        raise UsageError("--variants is empty")
    args.selected = reg.select(names, None)
    return args


def verdict(samples):
    """(grew, text) from [(t, server_rss_mb, server_fds, driver_rss_mb)]."""
    if len(samples) < 5:
        return False, "too few samples for a verdict"
    rss = np.array([s[1] for s in samples])
    fds = np.array([s[2] for s in samples])
    n = len(samples)
    start = slice(int(n * WARMUP_FRACTION), max(int(n * 2 * WARMUP_FRACTION),
                                                 int(n * WARMUP_FRACTION) + 1))
    end = slice(int(n * (1 - WARMUP_FRACTION)), n)
    a, b = float(np.median(rss[start])), float(np.median(rss[end]))
    fa, fb = float(np.median(fds[start])), float(np.median(fds[end]))
    grew = b > a * (1 + TOLERANCE)
    fd_grew = fb > fa * (1 + TOLERANCE) + 10
    text = f"server RSS {a:.1f} -> {b:.1f} MB ({100 * (b - a) / a:+.1f} %), open files " \
           f"{fa:.0f} -> {fb:.0f}"
    return grew or fd_grew, text


def soak_one(variant, args, work, log):
    """Churn clients against ``variant`` (deployed as a run deploys it) for the soak's
    duration: (result, samples of (t, server RSS, server fds, driver RSS))."""
    server_cpus, driver_cpus = machine.cpu_layout(True)
    log_path = os.path.join(work, f"{variant.name}.log")
    machine.raise_nofile()
    samples = []
    with deployment.serving_variant(variant, log_path, cpus=server_cpus) as server:
        job = Job(targets=tuple(tuple(t) for t in server.targets), connections=args.population,
                  warmup=0.0, duration=args.duration, kind="churn",
                  source_addresses=tuple(server.source_addresses) or
                  limits.source_addresses(901), ca_file=server.ca_file or "",
                  cpus=tuple(driver_cpus or ()))
        workers = Workers(replace_connections(job), work, driver_cpus)
        try:
            [proc] = workers.procs
            workers.send(f"churn {args.duration:.3f} {args.rate:g} {args.population}")
            t0 = time.monotonic()
            budget = t0 + args.duration + 60 + args.population / 50
            reply = None
            while time.monotonic() < budget and reply is None:
                ready, _, _ = select.select([proc.stdout], [], [],
                                            min(SAMPLE_S, args.duration / 20))
                if ready:
                    line = proc.stdout.readline().decode(errors="replace").strip()
                    if not line:
                        raise RuntimeError(f"driver {processes.exit_description(proc.poll())}"
                                           f": {processes.stderr_note(workers.log_path)}")
                    reply = json.loads(line)
                rss, _, fds = machine.tree_usage(server.pids)
                samples.append((round(time.monotonic() - t0, 2), rss, fds, workers.rss_mb()))
                if server.status():
                    raise RuntimeError(server.status())
            if reply is None:
                raise RuntimeError("driver did not finish the churn within its budget")
        finally:
            workers.close()
    grew, text = verdict(samples)
    log(f"{variant.name}: {text}; clients opened {reply.get('opened', 0)}, closed "
        f"{reply.get('closed', 0)}, failed {reply.get('failed', 0)}, skipped "
        f"{reply.get('skipped', 0)}, dropped {reply.get('dropped', 0)} -> "
        f"{'GROWS' if grew else 'flat'}")
    return dict(variant=variant.name, grew=grew, verdict=text, counts=reply,
                duration_s=args.duration, rate=args.rate, population=args.population,
                server_rss_start_mb=samples[0][1] if samples else None,
                server_rss_end_mb=samples[-1][1] if samples else None), samples


def replace_connections(job):
    """One driver process holds the whole population (it churns its own indices)."""
    from dataclasses import replace
    return replace(job, connections=1)


def main(argv=None):
    """Run the churn soak; exit 0 when flat, 1 when a server grew, 2 on bad input."""
    def stop(signum, frame):
        raise KeyboardInterrupt
    signal.signal(signal.SIGTERM, stop)
    try:
        args = parse(sys.argv[1:] if argv is None else argv)
    except UsageError as exc:
        print(f"bench.churn: error: {exc}", file=sys.stderr)
        return 2
    log = (lambda *a: print(*a, file=sys.stderr, flush=True)) if args.json else print
    results, rows = [], []
    try:
        with tempfile.TemporaryDirectory(prefix="bench-churn-") as work:
            for variant in args.selected:
                reason = variant.unavailable_reason()
                if reason:
                    results.append(dict(variant=variant.name, grew=None,
                                        verdict=f"unavailable: {reason}"))
                    continue
                try:
                    result, samples = soak_one(variant, args, work, log)
                except (RuntimeError, processes.NotReady) as exc:
                    results.append(dict(variant=variant.name, grew=None, verdict=str(exc)[:300]))
                    log(f"{variant.name}: failed: {exc}")
                    continue
                results.append(result)
                rows += [dict(variant=variant.name, t=t, server_rss_mb=r, server_fds=f,
                              driver_rss_mb=d) for t, r, f, d in samples]
    except KeyboardInterrupt:
        print("bench.churn: interrupted", file=sys.stderr)
        return 130
    finally:
        processes.kill_all_groups()
    if args.out and rows:
        import pandas as pd
        os.makedirs(args.out, exist_ok=True)
        pd.DataFrame(rows).to_csv(os.path.join(args.out, "churn.csv"), index=False)
    if args.json:
        print(json.dumps(dict(results=results)))
    return 1 if any(r.get("grew") for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
