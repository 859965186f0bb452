"""One step, start to end: serve → verify the transport → drive the load → rows.

A failed variant (unavailable, not ready, no transport, driver error) is a recorded row, and
the run goes on. The server is stopped in the lifecycle's ``finally`` whatever happens.
"""
import contextlib
import os
import re
from dataclasses import replace

from bench import machine
from bench.analysis import recorder
from bench.execute import capacity, lifecycle, profiler
from bench.execute import deployment as deploy
from bench.execute.emitting import emitting
from bench.execute.load import DriverError, run_load
from bench.execute.resources import Sampler
from bench.execute.verify import handler_exception, verify, verify_deployment
from bench.machine import cpu_layout
from bench.plan import limits
from bench.plan.job import for_step


class StepRunner:
    """Runs steps against variants of ``registry`` (or ``target``) into ``folder``."""

    def __init__(self, registry, folder, options, run_start, app=None, target=None,
                 workers=None):
        self.registry, self.folder, self.options = registry, folder, options
        self.app, self.target, self.run_start = app, target, run_start
        self.workers = workers  # a distributed Coordinator: the load comes from its workers
        self.server_cpus, self.driver_cpus = cpu_layout(options.get("pin", True))
        self.profiles = profiler.Collected(lambda: self.folder.run_dir)

    def run(self, step, part=0):
        """The step's summary rows (failures are rows too) and its resource rows. Every
        scenario's server is started here, through the deployment layer: knobs,
        ``--server-nodelay`` and scale-out topologies reach every kind of step."""
        if self.target:
            if step.kind == "reconnect":
                return [recorder.failed_row(step, "", "reconnect restarts the server: it needs "
                                            "a variant the harness spawns, not --target")], []
            return self.dispatch(step, deploy.Target(*self.target), None, 0, part)
        variant = self.registry.variants[step.variant]
        servers = deploy.server_count(variant, self.options)
        if servers:  # scale-out columns
            step = replace(step, extra=dict(step.extra, servers=servers,
                                            tls=deploy.uses_tls(variant, self.options)))
        reason = variant.unavailable_reason() or deploy.unavailable_reason(variant)
        if reason:
            return [recorder.failed_row(step, "", f"unavailable: {reason}")], []
        if step.kind == "emit" and not servers:
            return [recorder.failed_row(step, "", "emit needs a message queue: it runs on "
                                        "scale-out variants only (scaleout-redis, "
                                        "scaleout-redis-nginx)")], []
        if step.kind in capacity.KINDS:
            machine.raise_nofile()  # the servers inherit it: one process holds every client
        log_path = os.path.join(self.folder.run_dir, "logs", f"{step.variant}.log")
        with open(log_path, "a") as log:
            log.write(f"\n=== step {step.index}: {step.scenario} {step.load_point} "
                      f"repeat {step.repeat} ({machine.utc_now().isoformat()})\n")
        offset = os.path.getsize(log_path)
        env = dict(os.environ, BENCH_SERVER_NODELAY="1") if step.server_nodelay else None
        try:
            with deploy.serving_variant(variant, log_path, self.server_cpus,
                                        dict(self.options, app=self.app), env=env) as server:
                return self.dispatch(step, server, log_path, offset, part)
        except lifecycle.NotReady as exc:
            return [recorder.failed_row(step, "", f"not ready: {exc}")], []

    def dispatch(self, step, server, log_path, offset, part):
        """Measure ``step`` against a started ``server``: capacity and reconnect hold
        thousands of idle clients (their own driver), every other kind one load."""
        if step.kind in capacity.KINDS:
            return capacity.measure(self, step, server, log_path, offset)
        return self.verified(step, server, log_path, offset, part)

    def traffic(self, step):
        """The user's traffic for this step (None without --scenario-file); in the payload
        scenario every "{pad:N}" takes the step's payload size."""
        traffic = self.options.get("traffic")
        if traffic and step.scenario == "payload":
            traffic = dict(traffic, pad=step.payload)
        return traffic

    def verified(self, step, server, log_path, offset, part):
        """Verify one round trip and the transport (a failed row says why), then measure."""
        traffic = self.traffic(step)
        if traffic:  # the user's own events, at the entry point the driver uses
            verdict = verify(server.host, server.port, timeout=step.deadline,
                             transport=step.transport, traffic=traffic)
        elif hasattr(server, "backends"):  # every server of a scale-out, its entry point
            verdict = verify_deployment(server, timeout=step.deadline,
                                        transport=step.transport)
        else:
            verdict = verify(server.host, server.port, timeout=step.deadline,
                             transport=step.transport)
        complaint = lifecycle.stderr_note(log_path, offset) if log_path else ""
        complaint = re.sub(r"\x1b\[[0-9;]*m", "", complaint)  # terminal colours
        server_says = f" (server: {complaint})" if complaint and complaint != "(no output)" else ""
        raised = handler_exception(log_path, offset) if log_path and not verdict.transport \
            else ""
        if raised:
            server_says = f" (handler raised: {raised})" + server_says
        if not verdict.transport:
            return [recorder.failed_row(step, "", verdict.note + server_says)], []
        client = step.client if verdict.transport == "websocket" else "python-socketio"
        if client != "lean" and step.kind in ("fanout", "connect", "emit"):
            return [recorder.failed_row(step, verdict.transport, f"{verdict.note}; the "
                                        f"{step.scenario} scenario needs the lean client "
                                        "over WebSocket", client)], []
        note = ""
        if verdict.transport != "websocket" and step.transport is None:
            note = f"{verdict.note}; measured over {verdict.transport} with the stock client" \
                + server_says
        return self.measure(step, server, verdict.transport, client, note, part)

    def measure(self, step, server, transport, client, note, part):
        """Drive the step's load against a verified server, sample both sides, write its rows and samples."""
        step_transport = transport if client != "lean" else "websocket"
        # Busy-polling is honest only where the driver owns its cores alone (pinned apart
        # from the server); the stock client's threads never spin.
        # Thousands of connections take several driver processes (limits.PER_DRIVER_PROCESS
        # each); processes sharing a core must not spin against each other, nor against the
        # emitter, which shares the driver's cores (see meta pinning).
        processes = limits.driver_processes(step.connections) if client == "lean" else 1
        spin = bool(self.driver_cpus) and client == "lean" and step.kind != "emit" \
            and processes <= len(self.driver_cpus)
        sources = getattr(server, "source_addresses", ()) or \
            limits.source_addresses(step.connections)
        job = replace(for_step(step, getattr(server, "targets", [(server.host, server.port)]),
                               spin=spin, cpus=self.driver_cpus or (), source_addresses=sources),
                      transport=step_transport, ca_file=getattr(server, "ca_file", None) or "",
                      room=f"room-{step.index}-{part}", traffic=self.traffic(step))
        sampler = Sampler(step.variant, self.run_start)
        pids = [p for p in getattr(server, "pids", [server.pid]) if p]
        if pids:
            sampler.watch("server", pids, tree=True)
        emitter = emitting(self.registry.variants[step.variant], server, step, job.room,
                           self.folder.work, self.driver_cpus) if step.kind == "emit" \
            else contextlib.nullcontext()
        emitter_proc, spread = None, {}
        prof = profiler.for_step(step, server.pid, self.folder.run_dir, self.driver_cpus)

        def on_start(pids, t0):
            if emitter_proc is not None:
                emitter_proc.start(t0)
            if hasattr(server, "spread"):
                spread["clients_per_server"] = server.spread()
            sampler.watch("driver", pids)
            sampler.mark("measure_start", t0 + int(step.warmup * 1e9))
            sampler.mark("measure_end", t0 + int((step.warmup + step.duration) * 1e9))
            if prof:  # py-spy runs in the measured window only
                prof.schedule(t0 + int(step.warmup * 1e9),
                              t0 + int((step.warmup + step.duration) * 1e9))

        sampler.start()
        failure = emitted = ""
        try:
            with emitter as emitter_proc:
                try:
                    load = self.workers.run_load(job, client=client, on_start=on_start) \
                        if self.workers else run_load(job, self.folder.work, workers=processes,
                                                      client=client, on_start=on_start)
                except DriverError as exc:
                    if exc.partial is None:
                        return [recorder.failed_row(step, transport, f"driver failed: {exc}",
                                                    client)], sampler.rows
                    load, failure = exc.partial, f"driver failed: {exc}"
                if emitter_proc is not None:
                    emitted = emitter_proc.finish(load.arrays, step.connections)
        except DriverError as exc:  # the emitter never became ready
            return [recorder.failed_row(step, transport, f"emitter failed: {exc}",
                                        client)], sampler.rows
        finally:
            sampler.stop()
            profile = self.profiles.finish(step, prof) if prof else {}
        died = server.status()
        rows = recorder.summarize(step, load, transport, sampler.window(), client,
                                  "; ".join(filter(None, [note, died, failure, emitted,
                                                          profile.get("profile_error")])))
        for row in rows:
            row.update(profile)
            row.update({k: v for k, v in spread.items() if v})
            if died or failure:
                row["valid"] = False
        name = f"{step.index:05d}-{part:02d}"
        self.folder.samples(name, recorder.sample_rows(step, load.arrays, load.t0, transport),
                            recorder.interval_log(step, load.arrays, load.t0))
        return rows, sampler.rows
