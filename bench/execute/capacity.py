"""The capacity scenario: thousands of idle clients against one deployment.

Connected clients rise in steps (100, 300, 1k, 3k, 10k … up to ``--max-connections``), held
idle but answering Engine.IO pings for longer than the server's ping interval; at each step:
connect latency, a probe set's echo latency at a fixed low rate, server RSS (and per
connection, net of the servers' RSS before any client), server CPU while idle, driver RSS,
drops and ping timeouts → one ``capacity.csv`` row per (variant, step, repeat) and a summary
row of the probes. The knee rule is in :mod:`bench.execute.capacity_table`. Past the knee the
walk goes on while every client is held (how many a server holds at all, slow or not) and
stops at the first step that is not: the server's own limit, recorded with its reason.

The deployment (one server or a scale-out, with its knobs and ``--server-nodelay``) is
started by the step runner like every other step's; this module verifies it and drives the
idle-client workers (:mod:`bench.execute.fleet`) for any kind that holds clients (the
reconnect kind passes :func:`bench.execute.reconnect.restart` as its ``hold``).
"""
import time
from dataclasses import replace

import numpy as np

from bench import machine
from bench.analysis import recorder, stats
from bench import processes
from bench.execute.capacity_table import capacity_row, knee_rows
from bench.execute.fleet import Workers, grow_budget, probe_arrays, probe_load
from bench.execute.load import DriverError
from bench.execute.resources import Sampler
from bench.execute.verify import verify, verify_deployment
from bench.plan import limits
from bench.plan.job import Job, Outcome

OK = int(Outcome.OK)
HOLD_MARGIN_S = 2.0         # a hold lasts the ping interval plus this (at least --duration)


def server_pids(server):
    """Every process of the deployment to read (a --target's only if found locally)."""
    return [p for p in getattr(server, "pids", [server.pid]) if p]


def server_usage(server):
    """(RSS MB, CPU seconds, open descriptors) of the whole deployment, NaN if unseen."""
    pids = server_pids(server)
    return machine.tree_usage(pids) if pids else (float("nan"),) * 3


def measure(runner, step, server, log_path, offset, hold, on_driver_failure=None):
    """A held-clients step (its kind's ``hold(runner, step, server, workers, log_path,
    offset)`` -> rows: the capacity walk, a reconnect) against a started ``server`` (a
    deployment or a --target), its driver processes started and always closed: (summary
    rows, resource rows). ``on_driver_failure(runner, step, why)`` records what the kind
    keeps beside the row when the driver fails."""
    if hasattr(server, "backends"):  # every server of a scale-out answers, over WebSocket
        verdict = verify_deployment(server, timeout=step.deadline, transport="websocket")
    else:
        verdict = verify(server.host, server.port, timeout=step.deadline, transport="websocket")
    if verdict.transport != "websocket":
        return [recorder.failed_row(step, verdict.transport or "", f"{verdict.note}; the "
                                    f"{step.scenario} scenario needs WebSocket",
                                    code="no_websocket")], []
    sources = getattr(server, "source_addresses", ()) or \
        limits.source_addresses(max(step.connections, 901))
    job = Job(targets=tuple(tuple(t) for t in server.targets), connections=step.connections,
              warmup=0.0, duration=step.duration, deadline=step.deadline, kind=step.kind,
              seed=step.seed, source_addresses=tuple(sources),
              ca_file=getattr(server, "ca_file", None) or "", cpus=tuple(runner.driver_cpus or ()))
    sampler = Sampler(step.variant, runner.run_start, cpus=runner.server_cpus)
    if server_pids(server):
        sampler.watch("server", server_pids(server), tree=True)
    sampler.start()
    workers = None
    try:
        workers = Workers(job, runner.folder.work, runner.driver_cpus)
        sampler.watch("driver", workers.pids)
        rows = hold(runner, step, server, workers, log_path, offset)
    except DriverError as exc:
        rows = [recorder.failed_row(step, "websocket", f"driver failed: {exc}", "lean",
                                  "driver_failed")]
        if on_driver_failure:
            on_driver_failure(runner, step, f"driver failed: {exc}")
    finally:
        if workers is not None:
            workers.close()
        sampler.stop()
    return rows, sampler.rows


def hold_seconds(step, grown):
    """(seconds to hold, the ping interval the server announced): a hold outlasts one ping
    interval, so every held client must have answered a ping."""
    interval = next((r.get("ping_interval_ms") for r in grown if r.get("ping_interval_ms")),
                    None)
    if not interval:
        return step.duration, None
    return max(step.duration, interval / 1000.0 + HOLD_MARGIN_S), interval


def walk(runner, step, server, workers, log_path, offset):
    """The capacity walk: grow, hold, record, until a step breaks or the last held."""
    o = runner.options
    slo_us = o.get("slo_p99_ms", 50.0) * 1000.0
    base_rss = server_usage(server)[0]
    summary, table, knee, broke = [], [], None, ""
    tables = runner.folder.tables.setdefault("capacity.csv", [])
    start = len(tables)
    for level in limits.capacity_levels(step.connections):
        try:
            grown = workers.ask(f"grow {level}", grow_budget(step, level, len(workers.procs)))
        except DriverError as exc:  # this step failed; the steps before it stand
            why = f"driver failed: {exc}"
            table.append(dict(connections=level, held=0, step_ok=False, step_reason=why,
                              server_rss_mb=round(server_usage(server)[0], 1),
                              driver_rss_mb=round(workers.rss_mb(), 1)))
            broke = broke or f"{why} at {level} connections"
            del tables[start:]
            runner.folder.table("capacity.csv", knee_rows(step, table, knee, broke))
            summary.append(recorder.failed_row(replace(step, load_point=f"{level} connections",
                                                       connections=level), "websocket", why,
                                               "lean", "driver_failed"))
            break
        connect_us = np.concatenate([np.asarray(r["connect_ns"], float) for r in grown]) / 1e3
        failed = sum(r["failed"] for r in grown)
        retried = sum(r.get("retries", 0) for r in grown)
        errors = {}
        for r in grown:
            for text, n in r["errors"].items():
                errors[text] = errors.get(text, 0) + n
        hold, interval = hold_seconds(step, grown)
        cpu0, wall0 = server_usage(server)[1], time.monotonic()
        held = workers.ask(f"hold {hold:.3f}", hold + step.deadline * 2 + 30)
        rss, cpu1, fds = server_usage(server)
        cpu = 100.0 * (cpu1 - cpu0) / (time.monotonic() - wall0)
        spread = server.spread() if hasattr(server, "spread") else ""
        alive = sum(r["alive"] for r in held)
        dropped = sum(r["dropped"] for r in held)
        late = sum(r["ping_timeouts"] for r in held)
        arrays = probe_arrays(held)
        h = stats.histogram_of([])
        probes = lost = 0
        if arrays is not None:
            ok = arrays["outcome"] == OK
            sent = arrays["sent"] > 0
            probes, lost = int(sent.sum()), int((sent & ~ok).sum())
            h = stats.histogram_of((arrays["received"][ok] - arrays["intended"][ok]) / 1e3,
                                   censored=lost, deadline_us=step.deadline * 1e6)
        probe = stats.summary(h, lost, step.deadline * 1e6)
        p99_raw = stats.value_at(h, 99)
        c50, c99 = stats.quantiles(connect_us, [50, 99])
        reasons = []
        if alive < level:
            reasons.append(f"held {alive} of {level}")
        if failed:
            top = max(errors, key=errors.get)
            reasons.append(f"{failed} connects failed ({top} ×{errors[top]})")
            said = processes.stderr_note(log_path, offset) if log_path else ""
            if "Error" in said or "Exception" in said:
                reasons.append(f"server: {said[:160]}")
        if dropped:
            reasons.append(f"{dropped} dropped while held")
        if late:
            reasons.append(f"{late} ping timeouts")
        died = server.status()
        if died:
            reasons.append(died)
        holding = not reasons  # every client held: the walk goes on
        if lost:
            reasons.append(f"{lost} probe echoes unanswered")
        if not p99_raw <= slo_us:
            reasons.append(f"probe p99 {p99_raw / 1000:.1f} ms > {slo_us / 1000:g} ms"
                           if p99_raw == p99_raw else "no probe answered")
        ok_step = not reasons
        values = dict(held=alive, dropped=dropped + max(0, level - alive - failed),
                      ping_timeouts=late, connect_p50_us=round(c50, 1),
                      connect_p99_us=round(c99, 1), probe_p50_us=probe["p50_us"],
                      probe_p99_us=probe["p99_us"], server_rss_mb=round(rss, 1),
                      rss_per_conn_kb=round(1024 * (rss - base_rss) / alive, 2) if alive else
                      float("nan"), server_cpu_pct=round(cpu, 1),
                      driver_rss_mb=round(workers.rss_mb(), 1), step_ok=ok_step,
                      step_reason="; ".join(reasons), connect_failed=failed,
                      connect_errors="; ".join(f"{k} ×{v}" for k, v in errors.items()),
                      connect_retries=retried, hold_s=round(hold, 2),
                      pinged=sum(r["pinged"] for r in held),
                      probes=probes, probes_lost=lost, ping_interval_ms=interval,
                      server_rss_base_mb=round(base_rss, 1),
                      driver_processes=len(workers.procs),
                      server_fds=fds, clients_per_server=spread or float("nan"))
        table.append(values | {"connections": level})
        if arrays is not None:
            sub = replace(step, load_point=f"{level} connections", connections=level,
                          warmup=0.0, duration=hold, rate=None)
            resources = dict(server_cpu_pct=round(cpu, 1), server_rss_mb=round(rss, 1))
            row = recorder.summarize_messages(sub, probe_load(arrays), "websocket", resources,
                                              "lean", "; ".join(reasons))
            summary.append(dict(row, **step.extra, held=alive, dropped=values["dropped"]))
            load = probe_load(arrays)
            runner.folder.samples(f"{step.index:05d}-{len(table):02d}",
                                  recorder.sample_rows(sub, arrays, load.t0, "websocket"))
        if ok_step and not broke:
            knee = level
        elif not broke:
            broke = f"{values['step_reason']} at {level} connections"
        # written after every step (replacing this walk's rows): a later crash keeps them
        del tables[start:]
        runner.folder.table("capacity.csv", knee_rows(step, table, knee, broke))
        if not holding:  # past the SLO the walk goes on while every client is held
            break
    if not summary:
        summary = [recorder.failed_row(step, "websocket", f"no probe measured: {broke}",
                                       "lean", "no_probe")]
    return summary


def failed_walk(runner, step, why):
    """The capacity.csv row of a walk whose driver failed before any level held."""
    runner.folder.table("capacity.csv", [capacity_row(
        step, step.connections, dict(step_ok=False, step_reason=why, held=0), "none", why)])
