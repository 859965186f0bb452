"""Execute a plan: one server lifecycle per step, each step recorded as it finishes.

A failed variant (not ready, no transport, driver error) is a recorded row and the run goes
on. Summary, meta and sample parts are written after every step, so nothing measured is lost
when a later step or the harness itself dies.
"""
import os
import re
import shutil
import time
from dataclasses import replace

import pandas as pd

from bench import SCHEMA_VERSION, __version__
from bench.analysis import aggregate
from bench.analysis import recorder
from bench.execute import lifecycle
from bench.output import results
from bench.errors import ResultsWriteError
from bench.execute.load import DriverError, run_load
from bench.execute.resources import Sampler
from bench.execute.verify import verify

ERROR_LINE = re.compile(r"^([A-Za-z_][\w.]*(Error|Exception)): (.*)$", re.M)


def slo_text(o):
    return (f"p99 <= {o['slo_p99_ms']:g} ms, acked >= {100 * o['slo_ok']:g} %, "
            f"achieved >= {100 * o['slo_achieved']:g} % of target")


def slo_breach(row, rate, o):
    """Why a sweep step broke the SLO, or "" when it held."""
    if not row["transport"]:
        return "server failed"
    if row["attempted"] == 0:
        return "nothing measured"
    if row["driver_bound"]:
        return "driver-bound (the driver, not the server, limited this step)"
    if row["ok"] < o["slo_ok"] * row["attempted"]:
        return f"only {100 * row['ok'] / row['attempted']:.2f} % acked"
    if row["achieved_rate"] < o["slo_achieved"] * rate:
        return f"achieved {row['achieved_rate']:.0f} msg/s"
    if not row["p99_us"] <= o["slo_p99_ms"] * 1000:
        return f"p99 {row['p99_us'] / 1000:.1f} ms > {o['slo_p99_ms']:g} ms"
    return ""


def writing(run_dir, write):
    """Run a results write; a failure is a ResultsWriteError (not any OSError elsewhere)."""
    try:
        write()
    except OSError as exc:
        raise ResultsWriteError(f"{run_dir}: {exc}") from exc


def cpu_layout(pin):
    """(server cpus, driver cpus): separate cores when pinning and ≥ 2 cores, else None."""
    cpus = sorted(os.sched_getaffinity(0))
    if not pin or len(cpus) < 2:
        return None, None
    return [cpus[0]], cpus[1:]


def server_complaint(log_path, offset):
    """The last error line the server wrote during this step (e.g. its RuntimeError)."""
    try:
        with open(log_path, "rb") as f:
            f.seek(offset)
            text = f.read().decode("utf-8", "replace")
    except OSError:
        return ""
    hits = [m.group(0).strip() for m in ERROR_LINE.finditer(text)]
    return hits[-1][:200] if hits else ""


class Target:
    """A server the harness did not spawn (``--target``): no pid to sample, nothing to stop."""

    def __init__(self, host, port):
        self.host, self.port, self.pid = host, port, None


class Run:
    """One plan run into one results folder."""

    def __init__(self, registry, steps, options, run_dir, progress, app=None, target=None):
        self.registry, self.steps, self.options = registry, steps, options
        self.target = target
        self.run_dir, self.progress, self.app = run_dir, progress, app
        self.rows, self.resource_rows, self.knees = [], [], []
        self.server_cpus, self.driver_cpus = cpu_layout(options.get("pin", True))
        self.started = results.utc_now()
        self.started_wall = time.time()
        self.work = os.path.join(run_dir, ".work")
        os.makedirs(self.work, exist_ok=True)
        self.meta = dict(
            schema_version=SCHEMA_VERSION, harness_version=__version__,
            git_commit=results.git_commit(), started_utc=self.started.isoformat(),
            finished_utc=None, status="running", host=results.host_info(),
            packages={"default": results.package_versions()},
            variants={n: registry.variants[n].__dict__ if n in registry.variants else
                      {"target": options.get("target")}
                      for n in dict.fromkeys(s.variant for s in steps)},
            plan=dict(options=options, steps=len(steps),
                      order=[f"{s.variant}/{s.scenario}/{s.load_point}/{s.repeat}"
                             for s in steps]),
            pinning=dict(enabled=self.server_cpus is not None, server_cpus=self.server_cpus,
                         driver_cpus=self.driver_cpus),
            calibration=options.get("calibration"),
        )

    def execute(self):
        results.write_meta(self.run_dir, self.meta)
        if self.driver_cpus:
            os.sched_setaffinity(0, self.driver_cpus)
        try:
            for step in self.steps:
                if step.sweep_rates:
                    self.run_sweep(step)
                else:
                    self.progress.step(step)
                    self.record(step, self.run_step(step))
            self.meta["status"] = "complete"
        except BaseException as exc:
            self.meta["status"] = "partial"
            self.meta["stopped_by"] = f"{type(exc).__name__}: {exc}"[:300]
            raise
        finally:
            self.finish()
        return self.rows

    def record(self, step, rows):
        self.rows.extend(rows)
        self.progress.done(step, rows[-1])
        writing(self.run_dir, self.flush)

    def run_sweep(self, step):
        """Walk the rates upwards until the SLO breaks, then bisect (geometrically) between
        the last pass and the first failure to sharpen the knee."""
        o = self.options
        passed, failed, reason = None, None, "no break up to the sweep's top rate"
        rates = list(step.sweep_rates)
        refine = 0 if o.get("quick") else o.get("sweep_refine", 2)
        j, retried = 0, set()
        while rates:
            rate = rates.pop(0)
            sub = replace(step, rate=rate, load_point=f"{rate:g} msg/s", sweep_rates=(),
                          extra=dict(step.extra))
            self.progress.step(sub)
            rows = self.run_step(sub, part=j)
            j += 1
            broken = slo_breach(rows[0], rate, o)
            for row in rows:
                row["slo_pass"] = not broken
            self.record(sub, rows)
            if broken and rows[0]["driver_bound"] and rate not in retried:
                # Inconclusive (the driver, not the server, was late): measure again once.
                retried.add(rate)
                rates.insert(0, rate)
                continue
            if broken:
                failed, reason = rate, f"{broken} at {rate:g} msg/s"
                rates = []
            else:
                passed = rate
            if failed and passed and refine > 0:
                refine -= 1
                mid = round((passed * failed) ** 0.5, 1)
                rates = [mid]
        knee = max([r["target_rate"] for r in self.rows if r.get("slo_pass") is True and
                    r["variant"] == step.variant and r["scenario"] == "sweep" and
                    str(r["repeat"]) == str(step.repeat)], default=0.0)
        self.knees.append(dict(variant=step.variant, knee_msg_s=knee, slo=slo_text(o),
                               reason=reason, repeat=step.repeat))
        writing(self.run_dir, self.flush)

    def flush(self):
        rows = self.rows + aggregate.aggregate(self.rows)
        results.write_summary(self.run_dir, rows, recorder.SUMMARY_COLUMNS)
        if self.resource_rows:
            results.atomic_csv(pd.DataFrame(self.resource_rows),
                               os.path.join(self.run_dir, "resources.csv"))
        if self.knees:
            results.atomic_csv(pd.DataFrame(self.knees), os.path.join(self.run_dir, "knees.csv"))

    def finish(self):
        """Write what was measured, whatever happened; the first write error is re-raised
        after every other write has been tried."""
        lifecycle.kill_all_groups()
        self.meta["finished_utc"] = results.utc_now().isoformat()
        self.meta["steps_done"] = len(self.rows)
        first_error = None
        for write in (self.flush, lambda: results.join_parts(self.run_dir),
                      lambda: results.write_meta(self.run_dir, self.meta),
                      lambda: results.point_latest(self.run_dir)):
            try:
                write()
            except OSError as exc:
                first_error = first_error or exc
        shutil.rmtree(self.work, ignore_errors=True)
        if first_error:
            raise ResultsWriteError(f"{self.run_dir}: {first_error}") from first_error

    def run_step(self, step, part=0):
        """One server lifecycle; the step's summary rows (failures are rows too)."""
        if self.target:
            return self.run_target_step(step, part)
        variant = self.registry.variants[step.variant]
        reason = variant.unavailable_reason()
        if reason:
            return [recorder.failed_row(step, "", f"unavailable: {reason}")]
        log_path = os.path.join(self.run_dir, "logs", f"{step.variant}.log")
        with open(log_path, "a") as log:
            log.write(f"\n=== step {step.index}: {step.scenario} {step.load_point} "
                      f"repeat {step.repeat} ({results.utc_now().isoformat()})\n")
        offset = os.path.getsize(log_path)
        try:
            with lifecycle.serving(lambda port: variant.argv(port, app=self.app), log_path,
                                   cpus=self.server_cpus) as server:
                verdict = verify(server.host, server.port, timeout=step.timeout)
                if not verdict.transport:
                    complaint = server_complaint(log_path, offset)
                    return [recorder.failed_row(
                        step, "", verdict.note + (f" (server: {complaint})" if complaint else ""))]
                return self.measure(step, server, verdict, log_path, offset, part)
        except lifecycle.NotReady as exc:
            return [recorder.failed_row(step, "", f"not ready: {exc}")]

    def run_target_step(self, step, part):
        """``--target``: a server the user runs; verified and measured, never spawned."""
        host, port = self.target
        verdict = verify(host, port, timeout=step.timeout)
        if not verdict.transport:
            return [recorder.failed_row(step, "", verdict.note)]
        return self.measure(step, Target(host, port), verdict, None, 0, part)

    def measure(self, step, server, verdict, log_path, offset, part):
        client = "lean" if verdict.transport == "websocket" else "python-socketio"
        if client != "lean" and step.kind in ("fanout", "connect"):
            return [recorder.failed_row(step, verdict.transport, f"{verdict.note}; the "
                                        f"{step.scenario} scenario needs WebSocket", client)]
        note = ""
        if verdict.transport != "websocket":
            complaint = server_complaint(log_path, offset) if log_path else ""
            note = f"{verdict.note}; measured over {verdict.transport} with the stock client" + \
                (f" (server: {complaint})" if complaint else "")
        job = dict(host=server.host, port=server.port, connections=step.connections,
                   rate=step.rate, warmup=step.warmup, duration=step.duration,
                   timeout=step.timeout, payload=step.payload,
                   max_messages=min(5_000_000, int((step.warmup + step.duration) * 50_000)
                                    * step.connections),
                   event="echo", kind=step.kind, binary=step.binary,
                   blockers=step.blockers, members=step.connections)
        sampler = Sampler(step.variant, self.started_wall)
        if server.pid:
            sampler.watch("server", [server.pid], tree=True)

        def on_start(pids, t0):
            sampler.watch("driver", pids)
            sampler.mark("measure_start", t0 + int(step.warmup * 1e9))
            sampler.mark("measure_end", t0 + int((step.warmup + step.duration) * 1e9))

        sampler.start()
        failure = ""
        try:
            arrays, t0 = run_load(job, self.work, cpus=self.driver_cpus, client=client,
                                  on_start=on_start)
        except DriverError as exc:
            if exc.partial is None:
                return [recorder.failed_row(step, verdict.transport, f"driver failed: {exc}",
                                            client)]
            arrays, t0, failure = exc.partial, exc.t0, f"driver failed: {exc}"
        finally:
            sampler.stop()
            self.resource_rows.extend(sampler.rows)
        died = server.status() if hasattr(server, "status") else ""
        rows = recorder.summarize(step, arrays, t0, verdict.transport, sampler.window(),
                                  client, step.open_loop,
                                  "; ".join(filter(None, [note, died, failure])))
        if died or failure:
            for row in rows:
                row["valid"] = False
        samples = recorder.sample_rows(step, arrays, t0, verdict.transport)
        writing(self.run_dir, lambda: results.write_part(
            self.run_dir, f"{step.index:05d}-{part:02d}", samples))
        return rows
