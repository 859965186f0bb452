"""Execute a plan: one server lifecycle per step, each step recorded as it finishes.

A failed variant (not ready, no transport, driver error) is a recorded row and the run goes
on. Summary, meta and sample parts are written after every step, so nothing measured is lost
when a later step or the harness itself dies.
"""
import os
import re
import shutil
import time

from bench import SCHEMA_VERSION, __version__, aggregate, lifecycle, recorder, results
from bench.load import DriverError, run_load
from bench.resources import Sampler
from bench.verify import verify

ERROR_LINE = re.compile(r"^([A-Za-z_][\w.]*(Error|Exception)): (.*)$", re.M)


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


class Run:
    """One plan run into one results folder."""

    def __init__(self, registry, steps, options, run_dir, progress, app=None):
        self.registry, self.steps, self.options = registry, steps, options
        self.run_dir, self.progress, self.app = run_dir, progress, app
        self.rows, self.resource_rows = [], []
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
            variants={n: registry.variants[n].__dict__ for n in
                      dict.fromkeys(s.variant for s in steps)},
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
                self.progress.step(step)
                row = self.run_step(step)
                self.rows.append(row)
                self.progress.done(step, row)
                self.flush()
            self.meta["status"] = "complete"
        except BaseException:
            self.meta["status"] = "partial"
            raise
        finally:
            self.finish()
        return self.rows

    def flush(self):
        rows = self.rows + aggregate.aggregate(self.rows)
        results.write_summary(self.run_dir, rows, recorder.SUMMARY_COLUMNS)
        if self.resource_rows:
            import pandas as pd

            results.atomic_csv(pd.DataFrame(self.resource_rows),
                               os.path.join(self.run_dir, "resources.csv"))

    def finish(self):
        lifecycle.kill_all_groups()
        self.meta["finished_utc"] = results.utc_now().isoformat()
        self.meta["steps_done"] = len(self.rows)
        try:
            self.flush()
            results.join_parts(self.run_dir)
            results.write_meta(self.run_dir, self.meta)
            results.point_latest(self.run_dir)
        finally:
            shutil.rmtree(self.work, ignore_errors=True)

    def run_step(self, step):
        variant = self.registry.variants[step.variant]
        reason = variant.unavailable_reason()
        if reason:
            return recorder.failed_row(step, "", f"unavailable: {reason}")
        log_path = os.path.join(self.run_dir, "logs", f"{step.variant}.log")
        with open(log_path, "a") as log:
            log.write(f"\n=== step {step.index}: {step.scenario} {step.load_point} "
                      f"repeat {step.repeat} ({results.utc_now().isoformat()})\n")
        offset = os.path.getsize(log_path)
        try:
            with lifecycle.serving(lambda port: variant.argv(port, app=self.app), log_path,
                                   cpus=self.server_cpus) as server:
                verdict = verify(lifecycle.HOST, server.port, timeout=step.timeout)
                if not verdict.transport:
                    complaint = server_complaint(log_path, offset)
                    return recorder.failed_row(
                        step, "", verdict.note + (f" (server: {complaint})" if complaint else ""))
                return self.measure(step, server, verdict, log_path, offset)
        except lifecycle.NotReady as exc:
            return recorder.failed_row(step, "", f"not ready: {exc}")

    def measure(self, step, server, verdict, log_path, offset):
        client = "lean" if verdict.transport == "websocket" else "python-socketio"
        note = ""
        if verdict.transport != "websocket":
            complaint = server_complaint(log_path, offset)
            note = f"{verdict.note}; measured over {verdict.transport} with the stock client" + \
                (f" (server: {complaint})" if complaint else "")
        job = dict(host=lifecycle.HOST, port=server.port, connections=step.connections,
                   rate=step.rate, warmup=step.warmup, duration=step.duration,
                   timeout=step.timeout, payload=step.payload,
                   max_messages=min(5_000_000, int((step.warmup + step.duration) * 50_000)
                                    * step.connections),
                   event="echo")
        sampler = Sampler(step.variant, self.started_wall)
        sampler.watch("server", [server.pid], tree=True)

        def on_start(pids, t0):
            sampler.watch("driver", pids)
            sampler.mark("measure_start", t0 + int(step.warmup * 1e9))
            sampler.mark("measure_end", t0 + int((step.warmup + step.duration) * 1e9))

        sampler.start()
        try:
            arrays, t0 = run_load(job, self.work, cpus=self.driver_cpus, client=client,
                                  on_start=on_start)
        except DriverError as exc:
            return recorder.failed_row(step, verdict.transport, f"driver failed: {exc}", client)
        finally:
            sampler.stop()
            self.resource_rows.extend(sampler.rows)
        row = recorder.summarize(step, arrays, t0, verdict.transport, sampler.window(),
                                 client, step.open_loop, note)
        results.write_part(self.run_dir, step.index,
                           recorder.sample_rows(step, arrays, t0, verdict.transport))
        return row
