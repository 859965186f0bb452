"""How often each self-check is wrong: repeated steps against servers whose truth is built in.

``python -m bench.checkrates [--repeats N] [--truths steady,lognormal,drift,stall,stopped]
[--out DIR | --tabulate DIR]``

Each truth is a ``bench.driver.refserver`` with a known behaviour, measured by the real
harness (``python -m bench run --target``, server on the server core, driver on the other),
one step per repeat at 400 msg/s over 10 connections:

* ``steady``: every echo delayed 1 ms, uniform arrivals. Every check should pass; each
  failure is a false positive.
* ``lognormal``: delays log-normal (median 5 ms, sigma 0.5), Poisson arrivals. Every check
  should pass, and the per-step p99 interval should cover the true p99 (16.0 ms plus the
  loopback floor, at most ``FLOOR_MAX_US``).
* ``drift``: 1 ms growing by 0.5 ms a second from the server's first request, a new server
  for every step. ``stationary`` should fail (its detection rate).
* ``stall``: 1 ms, and the server stops for 50 ms once a second: what ``independent`` and
  ``stationary`` make of a periodic stall (reported, not a truth either check promises).
* ``stopped``: Poisson arrivals while the driver is stopped for 0.3 s mid-window (SIGSTOP):
  ``arrivals_ok`` should fail.

Writes ``checkrates.csv`` (truth, check, steps, noisy_left_out, failed, rate, expected) beside
one run folder per truth, and prints the table. A step the harness flagged ``noisy`` (another
process used the machine) is left out of the rates and counted. ``--tabulate DIR`` measures
nothing and writes the table again from DIR's run folders. Every process is stopped in
``finally``; exit 2 on bad input.
"""
import argparse
import math
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass

import pandas as pd
import psutil

from bench import machine, processes
from bench.analysis import reader
from bench.output.results import atomic_write
from bench.paths import results_dir

FLOOR_MAX_US = 600.0          # the loopback round trip on top of a built-in delay, generously
LOGNORMAL_P99_US = 5000.0 * math.exp(2.3263 * 0.5)
CHECKS = ("arrivals_ok", "stationary", "independent")
STEP_S, WARMUP_S = 4, 1
STOP_AT_S, STOP_FOR_S = 2.5, 0.3  # the driver's pause, after its start (inside the window)


@dataclass(frozen=True)
class Truth:
    """A reference server's flags, the run's extra options, and what each check should say
    (True: pass, False: fail, None: no promise). ``per_step``: a new server and bench run
    for every step; ``stop_driver``: the driver is paused once in each step."""
    name: str
    server_flags: list
    run_flags: list
    expected: dict
    per_step: bool = False
    stop_driver: bool = False


TRUTHS = {t.name: t for t in [
    Truth("steady", ["--delay-us", 1000], [], dict.fromkeys(CHECKS, True)),
    Truth("lognormal", ["--delay-lognormal", "5000,0.5"], ["--arrivals", "poisson"],
          dict(dict.fromkeys(CHECKS, True), p99_interval_covers=True)),
    Truth("drift", ["--delay-us", 1000, "--drift-us-per-s", 500], [],
          dict(stationary=False), per_step=True),
    Truth("stall", ["--delay-us", 1000, "--stall-every-s", 1, "--stall-ms", 50], [],
          dict(independent=None, stationary=None)),
    Truth("stopped", ["--delay-us", 200], ["--arrivals", "poisson"], dict(arrivals_ok=False),
          per_step=True, stop_driver=True),
]}


def _bench_argv(url, out, repeats, flags):
    return [sys.executable, "-m", "bench", "run", "--target", url, "--scenario", "rate",
            "--rate", "400", "--connections", "10", "--warmup", str(WARMUP_S), "--duration",
            str(STEP_S), "--repeats", str(repeats), "--out", out, "--label", "checkrates",
            "--no-report", *map(str, flags)]


def _stop_drivers_once(proc, deadline):
    """Stop every lean driver under ``proc`` for STOP_FOR_S, STOP_AT_S after they appear."""
    drivers = []
    while not drivers and time.monotonic() < deadline and proc.poll() is None:
        try:
            drivers = [p for p in psutil.Process(proc.pid).children(recursive=True)
                       if "bench.driver.lean" in " ".join(p.cmdline())]
        except psutil.Error:
            return
        time.sleep(0.02)
    time.sleep(STOP_AT_S)
    for signum, then in ((signal.SIGSTOP, STOP_FOR_S), (signal.SIGCONT, 0)):
        for d in drivers:
            try:
                d.send_signal(signum)
            except psutil.Error:
                pass
        time.sleep(then)


def measure(truth, repeats, out):
    """The per-step rows of ``repeats`` steps against ``truth``'s server (a frame). A truth
    that is per step (a drift counted from the server's first request, a driver paused once)
    gets a fresh server and bench run for every step; the others one of each."""
    folder = os.path.join(out, truth.name)
    os.makedirs(folder, exist_ok=True)
    for count in [1] * repeats if truth.per_step else [repeats]:
        _run(truth, folder, count)
    return read_rows(folder)


def _run(truth, folder, count):
    """``count`` steps of one bench run against a new server with ``truth``'s behaviour."""
    server_cpus, _ = machine.cpu_layout(True)
    argv = lambda port: [sys.executable, "-m", "bench.driver.refserver", str(port),  # noqa: E731
                         *map(str, truth.server_flags)]
    with processes.serving(argv, os.path.join(folder, "refserver.log"), ready_timeout=30,
                           cpus=server_cpus) as server:
        url = f"http://{server.host}:{server.port}"
        log = os.path.join(folder, "bench-run.log")
        offset = os.path.getsize(log) if os.path.exists(log) else 0
        proc = processes.spawn(_bench_argv(url, folder, count, truth.run_flags), log)
        try:
            if truth.stop_driver:
                _stop_drivers_once(proc, time.monotonic() + 60)
            proc.wait(timeout=120 + 10 * count * (STEP_S + WARMUP_S))
            if proc.returncode != 0:
                raise RuntimeError(f"{truth.name}: bench run exited {proc.returncode}: "
                                   f"{processes.stderr_note(log, offset)}")
        finally:
            processes.kill_group(proc)


def read_rows(folder):
    """The per-step rows of every run folder under ``folder`` (a frame)."""
    frames = [reader.read(os.path.join(folder, d)).repeats for d in sorted(os.listdir(folder))
              if os.path.isfile(os.path.join(folder, d, "summary.csv"))]
    return pd.concat(frames, ignore_index=True)


def rates(truth, rows):
    """Per check: steps, how many failed, the failure rate, and what the truth expects. A step
    flagged ``noisy`` (something else used the machine) is left out and counted apart."""
    noisy = int(rows["noisy"].sum())
    rows = rows[~rows["noisy"]]
    out = []
    for check, expected in truth.expected.items():
        if check == "p99_interval_covers":
            values = ((rows["p99_step_ci_low"] <= LOGNORMAL_P99_US + FLOOR_MAX_US)
                      & (rows["p99_step_ci_high"] >= LOGNORMAL_P99_US))
        else:
            values = rows[check].astype(bool)
        failed = int((~values).sum())
        out.append(dict(truth=truth.name, check=check, steps=len(rows), noisy_left_out=noisy,
                        failed=failed,
                        rate=round(failed / len(rows), 3) if len(rows) else float("nan"),
                        expected="pass" if expected else "fail" if expected is False
                        else "reported"))
    return out


def parse(argv):
    """The command line; bad input is one line and exit 2 (argparse)."""
    p = argparse.ArgumentParser(prog="python -m bench.checkrates", description=__doc__.split(
        "\n")[0])
    p.add_argument("--repeats", type=int, default=20, help="steps per truth (20)")
    p.add_argument("--truths", default=",".join(TRUTHS),
                   help=f"comma-separated, of {', '.join(TRUTHS)}")
    p.add_argument("--out", default=None, help="parent folder (default results/)")
    p.add_argument("--tabulate", metavar="DIR",
                   help="measure nothing: rewrite DIR/checkrates.csv from its run folders")
    args = p.parse_args(argv)
    if args.tabulate and not os.path.isdir(args.tabulate):
        p.error(f"--tabulate {args.tabulate}: no such folder")
    names = [n for n in args.truths.split(",") if n]
    unknown = [n for n in names if n not in TRUTHS]
    if unknown or not names:
        p.error(f"unknown truth {', '.join(unknown) or '(none)'} (known: {', '.join(TRUTHS)})")
    if not 1 <= args.repeats <= 1000:
        p.error("--repeats must be 1 … 1000")
    args.truths = [TRUTHS[n] for n in names]
    return args


def main(argv=None):
    """Measure each truth, write checkrates.csv, print it; exit 0, or 1 when a run failed."""
    args = parse(sys.argv[1:] if argv is None else argv)
    out = args.tabulate or os.path.join(args.out or results_dir(), time.strftime(
        "%Y%m%dT%H%M%SZ", time.gmtime()) + "-checkrates")
    os.makedirs(out, exist_ok=bool(args.tabulate))
    table = []
    try:
        for truth in args.truths:
            if args.tabulate:
                if os.path.isdir(os.path.join(out, truth.name)):
                    table += rates(truth, read_rows(os.path.join(out, truth.name)))
                continue
            table += rates(truth, measure(truth, args.repeats, out))
    except (RuntimeError, processes.NotReady, subprocess.TimeoutExpired) as exc:
        print(f"checkrates: {exc}", file=sys.stderr)
        return 1
    finally:
        if table:
            atomic_write(os.path.join(out, "checkrates.csv"),
                         pd.DataFrame(table).to_csv(index=False))
    print(pd.DataFrame(table).to_string(index=False))
    print(f"checkrates: {os.path.join(out, 'checkrates.csv')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
