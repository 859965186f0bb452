"""One step, start to end: serve → verify the transport → drive the load → rows.

A failed variant (unavailable, not ready, no transport, driver error) is a recorded row, and
the run goes on. The server is stopped in the lifecycle's ``finally`` whatever happens.
"""
import contextlib
import os
import re
from dataclasses import replace

from bench import kinds, machine
from bench.analysis import browserrow, recorder
from bench.driver import browser
from bench import processes
from bench.execute import profiler, serverevents
from bench.execute import deployment as deploy
from bench.execute.emitting import emitting
from bench.execute.load import DriverError, run_load
from bench.execute.resources import Sampler
from bench.execute.verify import handler_exception, verify, verify_deployment
from bench.machine import cpu_layout
from bench.plan import limits, precision
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
        self.events_folder = None  # where this step's servers record their events
        kind = kinds.get(step.kind)
        if self.target:
            if kind.restarts_server:
                return [recorder.failed_row(step, "", f"{step.scenario} restarts the server: "
                                            "it needs a variant the harness spawns, not "
                                            "--target", code="not_applicable")], []
            return self.dispatch(step, deploy.Target(*self.target), None, 0, part)
        variant = self.registry.variants[step.variant]
        servers = deploy.server_count(variant, self.options)
        if servers:  # scale-out columns
            step = replace(step, extra=dict(step.extra, servers=servers,
                                            tls=deploy.uses_tls(variant, self.options)))
        reason = variant.unavailable_reason() or deploy.unavailable_reason(variant)
        if reason:
            return [recorder.failed_row(step, "", f"unavailable: {reason}",
                                        code="unavailable")], []
        if kind.emitted and not servers:
            return [recorder.failed_row(step, "", f"{step.scenario} needs a message queue: it "
                                        "runs on scale-out variants only (scaleout-redis, "
                                        "scaleout-redis-nginx)", code="not_applicable")], []
        if kind.held:
            machine.raise_nofile()  # the servers inherit it: one process holds every client
        log_path = os.path.join(self.folder.run_dir, "logs", f"{step.variant}.log")
        with open(log_path, "a") as log:
            log.write(f"\n=== step {step.index}: {step.scenario} {step.load_point} "
                      f"repeat {step.repeat} ({machine.utc_now().isoformat()})\n")
        offset = os.path.getsize(log_path)
        env = dict(os.environ, BENCH_SERVER_NODELAY="1") if step.server_nodelay else None
        causes, self.events_folder = serverevents.environment(step, self.folder.work, part)
        if causes:
            env = dict(env or os.environ, **causes)
        try:
            with deploy.serving_variant(variant, log_path, self.server_cpus,
                                        dict(self.options, app=self.app), env=env) as server:
                return self.dispatch(step, server, log_path, offset, part)
        except processes.NotReady as exc:
            return [recorder.failed_row(step, "", f"not ready: {exc}", code="not_ready")], []

    def dispatch(self, step, server, log_path, offset, part):
        """Measure ``step`` against a started ``server``: capacity and reconnect hold
        thousands of idle clients (their own driver), every other kind one load."""
        kind = kinds.get(step.kind)
        if kind.held:
            return kind.measure(self, step, server, log_path, offset)
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
        complaint = processes.stderr_note(log_path, offset) if log_path else ""
        complaint = re.sub(r"\x1b\[[0-9;]*m", "", complaint)  # terminal colours
        server_says = f" (server: {complaint})" if complaint and complaint != "(no output)" else ""
        raised = handler_exception(log_path, offset) if log_path and not verdict.transport \
            else ""
        if raised:
            server_says = f" (handler raised: {raised})" + server_says
        if not verdict.transport:
            return [recorder.failed_row(step, "", verdict.note + server_says)], []
        if step.client == "browser":
            return self.in_browser(step, server, verdict, part)
        client = step.client if verdict.transport == "websocket" else "python-socketio"
        if client not in kinds.get(step.kind).clients:
            return [recorder.failed_row(step, verdict.transport, f"{verdict.note}; the "
                                        f"{step.scenario} scenario needs the lean client "
                                        "over WebSocket", client, "not_applicable")], []
        note = ""
        if verdict.transport != "websocket" and step.transport is None:
            note = f"{verdict.note}; measured over {verdict.transport} with the stock client" \
                + server_says
        return self.measure_precisely(step, server, verdict.transport, client, note, part)

    def in_browser(self, step, server, verdict, part):
        """A browser step: the page negotiates its own transport (socket.io-client's
        defaults unless ``--transport`` says), so the verified one only tells it serves."""
        reason = browser.unavailable_reason()
        if reason:
            return [recorder.failed_row(step, "", f"unavailable: {reason}", "browser",
                                        "unavailable")], []
        if len(getattr(server, "targets", ())) > 1:
            return [recorder.failed_row(step, verdict.transport, "a page has one origin: the "
                                        "browser client needs one entry point (an nginx "
                                        "variant), not several servers", "browser",
                                        "not_applicable")], []
        traffic = self.traffic(step)
        kind = kinds.get(step.kind)
        if "browser" not in kind.clients or step.blockers or (traffic and not kind.user_traffic):
            return [recorder.failed_row(step, verdict.transport, f"the browser client runs "
                                        f"the echo, rate, sweep, payload, connect and fanout "
                                        f"scenarios (the first four with --scenario-file), not "
                                        f"{step.scenario}", "browser", "not_applicable")], []
        if traffic and traffic.get("headers"):
            return [recorder.failed_row(step, verdict.transport, "a page cannot set headers "
                                        "on a WebSocket (socket.io-client's extraHeaders reach "
                                        "polling requests only): the scenario file's headers "
                                        "cannot be sent from a browser", "browser",
                                        "not_applicable")], []
        return self.measure_precisely(step, server, step.transport or "", "browser", "", part)

    def measure_precisely(self, step, server, transport, client, note, part):
        """:meth:`measure`, then again for longer while the step's own interval is wider than
        ``--precision`` asks (bench/plan/precision.py), up to ``--max-duration``; the row kept
        is the last attempt's, the earlier attempts' samples stay, marked superseded."""
        targets = self.options.get("precision") or {}
        rows, resources = self.measure(step, server, transport, client, note, part)
        if not targets or len(rows) != 1 or not kinds.get(step.kind).one_row:
            return rows, resources
        attempt = 0
        while rows[0]["valid"] and precision.unmet(rows[0], targets):
            longer = precision.next_duration(rows[0], targets, step.duration,
                                             self.options["max_duration"])
            if longer is None:  # at least ×2 each time: bounded by --max-duration
                break
            attempt += 1
            longer_step = replace(step, duration=longer)
            more_rows, more = self.measure(longer_step, server, transport, client, note, part,
                                           attempt)
            resources = [*resources, *more]
            if not more_rows[0]["attempted"]:  # it failed: the attempt before it stands
                break
            self.folder.supersede(self.sample_name(step, part, attempt - 1))
            step, rows = longer_step, more_rows
        return [precision.judge(rows[0], targets)], resources

    @staticmethod
    def sample_name(step, part, attempt=0):
        """The name of a step's samples, interval log and events (one per attempt)."""
        return f"{step.index:05d}-{part:02d}" + (f"-{attempt}" if attempt else "")

    def measure(self, step, server, transport, client, note, part, attempt=0):
        """Drive the step's load against a verified server, sample both sides, write its rows and samples."""
        step_transport = transport if client != "lean" else "websocket"  # browser: "" = auto
        # Busy-polling is honest only where the driver owns its cores alone (pinned apart
        # from the server); the stock client's threads never spin.
        # Thousands of connections take several driver processes (limits.PER_DRIVER_PROCESS
        # each); processes sharing a core must not spin against each other, nor against the
        # emitter, which shares the driver's cores (see meta pinning).
        processes = limits.driver_processes(step.connections) if client == "lean" else 1
        spin = bool(self.driver_cpus) and client == "lean" and not kinds.get(step.kind).emitted \
            and processes <= len(self.driver_cpus)
        sources = getattr(server, "source_addresses", ()) or \
            limits.source_addresses(step.connections)
        job = replace(for_step(step, getattr(server, "targets", [(server.host, server.port)]),
                               spin=spin, cpus=self.driver_cpus or (), source_addresses=sources),
                      transport=step_transport, ca_file=getattr(server, "ca_file", None) or "",
                      room=f"room-{step.index}-{part}", traffic=self.traffic(step))
        sampler = Sampler(step.variant, self.run_start, cpus=self.server_cpus)
        pids = [p for p in getattr(server, "pids", [server.pid]) if p]
        if pids:
            sampler.watch("server", pids, tree=True)
        unobserved = not getattr(server, "observed", True)  # a remote --target, or hidden
        if unobserved:
            note = "; ".join(filter(None, [note, "server side not observed"]))
        emitter = emitting(self.registry.variants[step.variant], server, step, job.room,
                           self.folder.work, self.driver_cpus) if kinds.get(step.kind).emitted \
            else contextlib.nullcontext()
        emitter_proc, spread = None, {}
        prof = profiler.for_step(step, server.pid, self.folder.run_dir, self.driver_cpus)

        def on_start(pids, t0):
            if emitter_proc is not None:
                emitter_proc.start(t0)
            if hasattr(server, "spread"):
                spread["clients_per_server"] = server.spread()
            sampler.watch("driver", pids, tree=client == "browser")  # Chromium's processes
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
                                                      client=client, on_start=on_start,
                                                      on_done=sampler.load_ended)
                except DriverError as exc:
                    if exc.partial is None:
                        return [recorder.failed_row(step, transport, f"driver failed: {exc}",
                                                    client, "driver_failed")], sampler.rows
                    load, failure = exc.partial, f"driver failed: {exc}"
                if emitter_proc is not None:
                    emitted = emitter_proc.finish(load.arrays, step.connections)
        except DriverError as exc:  # the emitter never became ready
            return [recorder.failed_row(step, transport, f"emitter failed: {exc}",
                                        client, "emitter_failed")], sampler.rows
        finally:
            sampler.stop()
            profile = self.profiles.finish(step, prof) if prof else {}
        died = server.status()
        if load.page:  # what the browser negotiated, not what was asked
            transport, how = browserrow.negotiated(load.page)
            note = "; ".join(filter(None, [note, how]))
        rows = recorder.summarize(step, load, transport, sampler.window(), client,
                                  "; ".join(filter(None, [note, died, failure, emitted,
                                                          profile.get("profile_error")])))
        for row in rows:
            row.update(profile)
            row.update({k: v for k, v in spread.items() if v})
            if died:
                recorder.mark_invalid(row, "server_died")
            if failure:
                recorder.mark_invalid(row, "driver_failed")
            if unobserved:
                row["reasons"] = ";".join(filter(None, [row.get("reasons"), "server_unobserved"]))
        name = self.sample_name(step, part, attempt)
        found, events = serverevents.finish(step, load, self.events_folder, sampler.ticks)
        for row in rows:
            row.update(found)
        self.folder.samples(name, recorder.sample_rows(step, load.arrays, load.t0, transport),
                            recorder.interval_log(step, load.arrays, load.t0), events)
        return rows, sampler.rows
