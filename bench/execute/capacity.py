"""The capacity and reconnect scenarios: thousands of idle clients against one server.

capacity: connected clients rise in steps (100, 300, 1k, 3k, 10k … up to
``--max-connections``), held idle but answering Engine.IO pings for longer than the server's
ping interval; at each step: connect latency, a probe set's echo latency at a fixed low rate,
server RSS (and per connection, net of the server's RSS before any client), server CPU while
idle, driver RSS, drops and ping timeouts → one ``capacity.csv`` row per (variant, step,
repeat) and a summary row of the probes. The capacity knee is the most connections held with
none dropped, no ping timeout and probe p99 within the SLO; ``bound`` as for sweeps: exact
(a step broke it), lower (every step held), none (the first step broke). Past the knee the
walk goes on while every client is held (how many a server holds at all, slow or not) and
stops at the first step that is not: the server's own limit, recorded with its reason.

reconnect: N clients connected, the server killed and started again on the same port; how
long until each client is back and has answered an echo, and what was lost (probe echoes in
flight, sessions). One summary row per variant and repeat: its latencies are the clients'
times back, measured from the kill.

The driver workers (``bench.driver.capacity``) are spawned in their own process groups and
killed in ``finally``; every wait is bounded.
"""
import json
import os
import subprocess
import sys
import time
from dataclasses import replace

import numpy as np
import psutil

from bench.analysis import recorder, stats
from bench.execute import lifecycle
from bench.execute.load import DriverError, Load, _readline
from bench.execute.resources import Sampler
from bench.execute.verify import verify
from bench.output import results
from bench.plan import limits
from bench.plan.job import Job, Outcome

KINDS = ("capacity", "reconnect")
OK = int(Outcome.OK)
HOLD_MARGIN_S = 2.0         # a hold lasts the ping interval plus this (at least --duration)
WATCH_S = 60.0              # reconnect: longest wait for every client to be back (≥ 30 s)
RESTART_GRACE_S = 3.0
GROW_MAX_S = 900.0          # the longest one capacity step may spend connecting
COLUMNS = ["variant", "repeat", "connections", "held", "dropped", "ping_timeouts",
           "connect_p50_us", "connect_p99_us", "probe_p50_us", "probe_p99_us",
           "server_rss_mb", "rss_per_conn_kb", "server_cpu_pct", "driver_rss_mb", "bound",
           "reason",
           # additions
           "knee", "knee_connections", "step_ok", "step_reason", "connect_failed",
           "connect_errors", "connect_retries", "hold_s", "pinged", "probes", "probes_lost",
           "ping_interval_ms",
           "server_rss_base_mb", "driver_processes", "server_fds"]


class Workers:
    """The driver processes of one capacity or reconnect step."""

    def __init__(self, job, workdir, cpus):
        self.procs, self.job = [], job
        self.log_path = os.path.join(workdir, "capacity-driver.log")
        self.offset = os.path.getsize(self.log_path) if os.path.exists(self.log_path) else 0
        n = limits.driver_processes(job.connections)
        try:
            for w in range(min(n, job.connections)):
                path = os.path.join(workdir, f"capacity-{w}.json")
                job.share(w, n, "").dump(path)
                self.procs.append(lifecycle.spawn(
                    [sys.executable, "-m", "bench.driver.capacity", path], self.log_path,
                    cpus=cpus, stdin=subprocess.PIPE, stdout=subprocess.PIPE))
            deadline = time.monotonic() + 30
            for p in self.procs:
                line = _readline(p, deadline, self.log_path, self.offset, "while starting")
                if line != "ready":
                    raise DriverError(f"driver said {line[:80]!r} instead of ready")
        except BaseException:
            self.close()
            raise

    @property
    def pids(self):
        return [p.pid for p in self.procs]

    def send(self, command):
        for p in self.procs:
            p.stdin.write(f"{command}\n".encode())
            p.stdin.flush()

    def read(self, timeout, what):
        deadline = time.monotonic() + timeout
        out = []
        for p in self.procs:
            line = _readline(p, deadline, self.log_path, self.offset, what)
            try:
                out.append(json.loads(line))
            except ValueError:
                raise DriverError(f"driver said {line[:80]!r} {what}") from None
        return out

    def ask(self, command, timeout):
        self.send(command)
        return self.read(timeout, f"answering {command!r}")

    def rss_mb(self):
        total = 0.0
        for pid in self.pids:
            try:
                total += psutil.Process(pid).memory_info().rss / 2 ** 20
            except psutil.Error:
                pass
        return total

    def close(self):
        for p in self.procs:
            try:
                p.stdin.write(b"quit\n")
                p.stdin.flush()
            except (OSError, ValueError):
                pass
        for p in self.procs:
            lifecycle.kill_group(p, grace=2.0)


def tree(pid):
    try:
        root = psutil.Process(pid)
        return [root, *root.children(recursive=True)]
    except psutil.Error:
        return []


def server_rss_mb(pid):
    total = 0.0
    for p in tree(pid):
        try:
            total += p.memory_info().rss / 2 ** 20
        except psutil.Error:
            pass
    return total


def server_cpu_s(pid):
    total = 0.0
    for p in tree(pid):
        try:
            t = p.cpu_times()
            total += t.user + t.system
        except psutil.Error:
            pass
    return total


def server_fds(pid):
    total = 0
    for p in tree(pid):
        try:
            total += p.num_fds()
        except psutil.Error:
            pass
    return total


def probe_arrays(replies, key="probe"):
    parts = [r[key] for r in replies if r.get(key)]
    if not parts:
        return None
    arrays = {k: np.concatenate([np.asarray(p[k], dtype=np.int64) for p in parts])
              for k in ("conn", "intended", "sent", "received", "outcome", "recv_wait")}
    order = np.argsort(arrays["intended"], kind="stable")
    return {k: v[order] for k, v in arrays.items()}


def probe_load(arrays):
    """A Load whose window holds every probe (t0 just before the first)."""
    return Load(arrays, int(arrays["intended"].min()) - 1 if len(arrays["intended"]) else 0, None)


def run(runner, step):
    """A capacity or reconnect step for ``runner`` (a StepRunner): (summary rows, resources).
    Capacity rows go to ``capacity.csv`` through the run folder."""
    if runner.target:
        if step.kind == "reconnect":
            return [recorder.failed_row(step, "", "reconnect restarts the server: it needs a "
                                        "variant the harness spawns, not --target")], []
        return measure(runner, step, runner_target(runner), None, None)
    variant = runner.registry.variants[step.variant]
    reason = variant.unavailable_reason()
    if reason:
        return [recorder.failed_row(step, "", f"unavailable: {reason}")], []
    limits.raise_nofile()  # the server inherits it: one process holds every connection
    log_path = os.path.join(runner.folder.run_dir, "logs", f"{step.variant}.log")
    with open(log_path, "a") as log:
        log.write(f"\n=== step {step.index}: {step.scenario} {step.load_point} "
                  f"repeat {step.repeat} ({results.utc_now().isoformat()})\n")

    def make_argv(port):
        return variant.argv(port, app=runner.app)
    try:
        with lifecycle.serving(make_argv, log_path, cpus=runner.server_cpus) as server:
            return measure(runner, step, server, make_argv, log_path)
    except lifecycle.NotReady as exc:
        return [recorder.failed_row(step, "", f"not ready: {exc}")], []


def runner_target(runner):
    from bench.execute.step import Target
    return Target(*runner.target)


def measure(runner, step, server, make_argv, log_path):
    verdict = verify(server.host, server.port, timeout=step.deadline, transport="websocket")
    if verdict.transport != "websocket":
        return [recorder.failed_row(step, verdict.transport or "", f"{verdict.note}; the "
                                    f"{step.scenario} scenario needs WebSocket")], []
    job = Job(targets=((server.host, server.port),), connections=step.connections, warmup=0.0,
              duration=step.duration, deadline=step.deadline, kind=step.kind, seed=step.seed,
              source_addresses=limits.source_addresses(max(step.connections, 901)),
              cpus=tuple(runner.driver_cpus or ()))
    sampler = Sampler(step.variant, runner.run_start)
    if server.pid:
        sampler.watch("server", [server.pid], tree=True)
    sampler.start()
    workers = None
    try:
        workers = Workers(job, runner.folder.work, runner.driver_cpus)
        sampler.watch("driver", workers.pids)
        if step.kind == "capacity":
            rows = walk(runner, step, server, workers)
        else:
            rows = restart(runner, step, server, workers, make_argv, log_path)
    except DriverError as exc:
        rows = [recorder.failed_row(step, "websocket", f"driver failed: {exc}", "lean")]
        if step.kind == "capacity":
            runner.folder.table("capacity.csv", [capacity_row(
                step, step.connections, dict(step_ok=False, step_reason=f"driver failed: {exc}",
                                             held=0), "none", f"driver failed: {exc}")])
    finally:
        if workers is not None:
            workers.close()
        sampler.stop()
    return rows, sampler.rows


def capacity_row(step, level, values, bound, reason):
    row = {c: float("nan") for c in COLUMNS}
    row.update(variant=step.variant, repeat=step.repeat, connections=level, bound=bound,
               reason=reason, knee=False)
    row.update(values)
    return row


def grow_budget(step, level, processes):
    """Seconds a ``grow`` may take: every handshake wave may wait out its deadline on every
    attempt (a slow server), bounded by GROW_MAX_S."""
    from bench.driver.capacity import CONNECT_ATTEMPTS, IN_FLIGHT, RETRY_S
    waves = -(-level // max(1, processes) // IN_FLIGHT) + 1
    return min(GROW_MAX_S, 30 + waves * CONNECT_ATTEMPTS * (step.deadline + RETRY_S * 3))


def hold_seconds(step, grown):
    interval = next((r.get("ping_interval_ms") for r in grown if r.get("ping_interval_ms")),
                    None)
    if not interval:
        return step.duration, None
    return max(step.duration, interval / 1000.0 + HOLD_MARGIN_S), interval


def walk(runner, step, server, workers):
    """The capacity walk: grow, hold, record, until a step breaks or the last held."""
    o = runner.options
    slo_us = o.get("slo_p99_ms", 50.0) * 1000.0
    base_rss = server_rss_mb(server.pid) if server.pid else float("nan")
    summary, table, knee, broke = [], [], None, ""
    tables = runner.folder.tables.setdefault("capacity.csv", [])
    start = len(tables)
    for level in limits.capacity_levels(step.connections):
        try:
            grown = workers.ask(f"grow {level}", grow_budget(step, level, len(workers.procs)))
        except DriverError as exc:  # this step failed; the steps before it stand
            why = f"driver failed: {exc}"
            table.append(dict(connections=level, held=0, step_ok=False, step_reason=why,
                              server_rss_mb=round(server_rss_mb(server.pid), 1)
                              if server.pid else float("nan"),
                              driver_rss_mb=round(workers.rss_mb(), 1)))
            broke = broke or f"{why} at {level} connections"
            del tables[start:]
            runner.folder.table("capacity.csv", knee_rows(step, table, knee, broke))
            summary.append(recorder.failed_row(replace(step, load_point=f"{level} connections",
                                                       connections=level), "websocket", why,
                                               "lean"))
            break
        connect_us = np.concatenate([np.asarray(r["connect_ns"], float) for r in grown]) / 1e3
        failed = sum(r["failed"] for r in grown)
        retried = sum(r.get("retries", 0) for r in grown)
        errors = {}
        for r in grown:
            for text, n in r["errors"].items():
                errors[text] = errors.get(text, 0) + n
        hold, interval = hold_seconds(step, grown)
        cpu0, wall0 = (server_cpu_s(server.pid) if server.pid else 0.0), time.monotonic()
        held = workers.ask(f"hold {hold:.3f}", hold + step.deadline * 2 + 30)
        cpu = 100.0 * (server_cpu_s(server.pid) - cpu0) / (time.monotonic() - wall0) \
            if server.pid else float("nan")
        rss = server_rss_mb(server.pid) if server.pid else float("nan")
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
            said = lifecycle.stderr_note(server.log_path, server.log_offset) \
                if getattr(server, "log_path", None) else ""
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
                      server_fds=server_fds(server.pid) if server.pid else float("nan"))
        table.append(values | {"connections": level})
        if arrays is not None:
            sub = replace(step, load_point=f"{level} connections", connections=level,
                          warmup=0.0, duration=hold, rate=None)
            resources = dict(server_cpu_pct=round(cpu, 1), server_rss_mb=round(rss, 1))
            row = recorder.summarize_messages(sub, probe_load(arrays), "websocket", resources,
                                              "lean", "; ".join(reasons))
            summary.append(dict(row, held=alive, dropped=values["dropped"]))
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
                                       "lean")]
    return summary


def knee_rows(step, table, knee, broke):
    """capacity.csv rows of one walk so far, each with the walk's knee, bound and reason."""
    if knee is None:
        bound, reason = "none", f"first step failed: {broke}"
    elif not broke:
        bound, reason = "lower", f"held every step up to {knee} connections"
    else:
        bound, reason = "exact", broke
    return [capacity_row(step, values["connections"],
                         dict(values, knee=values["connections"] == knee,
                              knee_connections=knee or 0), bound, reason) for values in table]


def restart(runner, step, server, workers, make_argv, log_path):
    """Connect N, kill the server, start it again on its port; time until each is back."""
    grown = workers.ask(f"grow {step.connections}",
                        grow_budget(step, step.connections, len(workers.procs)))
    connected = sum(r["alive"] for r in grown)
    if connected < step.connections:
        errors = "; ".join(f"{k} ×{v}" for r in grown for k, v in r["errors"].items())
        return [recorder.failed_row(step, "websocket", f"only {connected} of "
                                    f"{step.connections} connected before the restart: {errors}",
                                    "lean")]
    watch = min(WATCH_S, max(step.duration, 30.0))
    workers.send(f"watch {watch:.3f}")
    workers.read(10, "starting the watch")
    t_kill = time.monotonic_ns()
    lifecycle.kill_group(server.proc, grace=RESTART_GRACE_S)
    deadline = time.monotonic() + RESTART_GRACE_S
    while not lifecycle.port_is_free(server.port) and time.monotonic() < deadline:
        time.sleep(0.01)
    t_stopped = time.monotonic_ns()
    offset = os.path.getsize(log_path) if os.path.exists(log_path) else 0
    again = lifecycle.Server(lifecycle.spawn(make_argv(server.port), log_path,
                                             cpus=runner.server_cpus),
                             server.port, log_path, offset)
    try:
        restart_note = ""
        try:
            again.wait_ready(lifecycle.ready_timeout_default())
        except lifecycle.NotReady as exc:
            restart_note = f"restarted server not ready: {exc}"
        t_ready = time.monotonic_ns()
        replies = workers.read(watch + step.deadline + 30, "watching the reconnect")
    finally:
        again.stop()
    back = {int(i): t for r in replies for i, t in r["back_ns"].items()}
    n = step.connections
    arrays = dict(conn=np.arange(n, dtype=np.int32), intended=np.full(n, t_kill, np.int64),
                  sent=np.full(n, t_kill, np.int64), received=np.zeros(n, np.int64),
                  outcome=np.full(n, int(Outcome.TIMEOUT), np.int8),
                  recv_wait=np.zeros(n, np.int64))
    for i, t in back.items():
        arrays["received"][i], arrays["outcome"][i] = t, OK
    sub = replace(step, warmup=0.0, duration=watch, deadline=watch, rate=None)
    probe = probe_arrays(replies)
    lost = int(((probe["sent"] > 0) & (probe["outcome"] != OK)).sum()) if probe is not None \
        else 0
    never = n - len(back)
    note = "; ".join(filter(None, [restart_note, f"{never} never back within {watch:g} s"
                                   if never else ""]))
    row = recorder.summarize_messages(sub, Load(arrays, t_kill - 1, None), "websocket", {},
                                      "lean", note)
    row.update(restart_ms=round((t_ready - t_kill) / 1e6, 1),
               stop_ms=round((t_stopped - t_kill) / 1e6, 1), back=len(back), never_back=never,
               all_back_ms=round((max(back.values()) - t_kill) / 1e6, 1) if back and not never
               else float("nan"),
               probes_lost=lost, sessions_lost=sum(r["sessions_lost"] for r in replies))
    return [row]
