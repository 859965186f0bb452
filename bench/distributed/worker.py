"""``python -m bench worker --master HOST:PORT``: one load machine of a distributed run.

Starts the Locust engine in worker mode (its own process: Locust's gevent never enters this
one), says hello, then serves steps until the master ends the run: for each step it runs the
lean driver processes of its share through :func:`bench.execute.load.run_load`, on the start
instant the master sends (a wall-clock instant in this machine's clock, mapped here to the
monotonic clock the drivers use), and sends the per-message arrays back. Bounded everywhere:
no master within ``--connect-timeout`` → exit 1; the master silent for ``--master-timeout``
(its engine's heartbeats) → the engine quits and so does this process; every driver process
is killed in ``finally``.

Trust: the engine seals and checks every message with the cluster token; a master that
refuses this worker (or fails its check) ends it with one line, exit 1. A step whose target
is outside ``--allow-target`` (default: loopback only) is refused with one line naming it and
reported to the master as refused; the worker then serves the next step.
"""
import os
import shutil
import socket
import sys
import tempfile
import time
from collections import Counter
from dataclasses import replace

from bench import __version__
from bench.distributed import allow_label, outside
from bench.distributed.bridge import Engine, EngineGone, pack
from bench.distributed.seal import fingerprint
from bench.driver.protocol import netloc
from bench.distributed.master import job_from_dict
from bench.execute.load import DriverError, run_load
from bench.plan.job import Outcome


def say(text):
    """One line on stderr, prefixed so a user can tell the worker's lines from others'."""
    print(f"bench worker: {text}", file=sys.stderr, flush=True)


class MasterEnded(Exception):
    pass


class Refused(Exception):
    """The master refused this worker, or failed its token check."""


def receive(engine, deadline, dropped):
    """The next event for this harness: drops by the check are counted, a refusal raised."""
    while True:
        ev = engine.recv(deadline)
        if ev is None or ev.get("event") not in ("dropped", "refused"):
            return ev
        if ev["event"] == "refused":
            raise Refused(ev.get("why"))
        if not dropped:
            say(f"dropped a {ev.get('type')} message that failed the check: {ev.get('why')}")
        dropped[ev.get("why")] += 1


def serve(master, drivers=1, connect_timeout=60.0, master_timeout=10.0, workdir=None,
          cpus=(), token=None, allow=None):
    """Join ``master`` and run every step share it sends until it ends the run."""
    host, port = master
    keep = workdir is not None
    workdir = workdir or tempfile.mkdtemp(prefix="bench-worker-")
    os.makedirs(workdir, exist_ok=True)
    log_path = os.path.join(workdir, "engine.log")
    engine = Engine("worker", host, port, log_path, token=token,
                    extra=["--connect-timeout", str(connect_timeout),
                           "--master-timeout", str(master_timeout)])
    steps, dropped = 0, Counter()
    mine = f"this worker's token: {fingerprint(token) or 'none'}"
    try:
        try:
            ev = receive(engine, time.monotonic() + connect_timeout + 15, dropped)
        except EngineGone as exc:
            say(f"no master at {netloc(host, port)}: {exc}")
            return 1
        except Refused as exc:
            say(f"{exc} ({mine})")
            return 1
        if not ev or ev.get("event") != "connected":
            say(f"no master answered at {netloc(host, port)} within {connect_timeout:g} s")
            return 1
        engine.send(op="send", type="bench_hello",
                    data=dict(host=socket.gethostname(), pid=os.getpid(), drivers=drivers,
                              token_fingerprint=fingerprint(token),
                              allowed_targets=allow_label(allow), harness_version=__version__))
        if ev.get("verified"):  # else the refusal (one line) follows
            say(f"connected to the master at {netloc(host, port)} as {ev['node']} ({mine}; targets "
                f"allowed: {', '.join(allow_label(allow))})")
        while True:
            try:
                ev = receive(engine, time.monotonic() + 60, dropped)
                if ev and ev.get("event") == "message" and ev.get("type") == "bench_step":
                    steps += 1
                    run_step(engine, ev["data"], workdir, drivers, tuple(cpus or ()), allow,
                             dropped)
                    continue
            except EngineGone as exc:
                say(f"the engine ended (master gone?): {exc}")
                return 1
            except Refused as exc:
                say(f"{exc} ({mine})")
                return 1
            except MasterEnded as exc:
                say(f"{exc}; served {steps} steps{dropped_note(dropped)}")
                return 0
            if ev is None:
                continue  # the engine ends itself when the master goes silent
            if ev.get("event") == "quit":
                say(f"{ev.get('why')}; served {steps} steps{dropped_note(dropped)}")
                return 0
    finally:
        engine.close()
        if not keep:
            shutil.rmtree(workdir, ignore_errors=True)


def dropped_note(dropped):
    """The messages this worker's check dropped, as words for its last line ("" for none)."""
    if not dropped:
        return ""
    return (f"; dropped {sum(dropped.values())} messages from the master that failed the "
            f"check ({', '.join(f'{k}: {v}' for k, v in sorted(dropped.items()))})")


def run_step(engine, data, workdir, drivers, cpus, allow, dropped):
    """Run one share of a step and send its result (a step it cannot read fails, reported)."""
    sid = data.get("step") if isinstance(data, dict) else None
    try:
        job = replace(job_from_dict(data["job"]), cpus=cpus, spin=False)
    except (TypeError, KeyError, ValueError) as exc:
        line = f"step {sid}: failed: this worker cannot read the step ({type(exc).__name__}: {exc})"
        say(line)
        engine.send(op="send", type="bench_result",
                    data=dict(step=sid, ok=False, error=line[:400], dropped=dict(dropped)))
        return
    bad = outside(job.targets, allow)
    if bad:
        line = (f"refused step {sid}: target {bad[0]}:{bad[1]} is outside --allow-target "
                f"{','.join(allow_label(allow))}")
        say(line)
        engine.send(op="send", type="bench_result",
                    data=dict(step=sid, ok=False, refused=line, dropped=dict(dropped)))
        return
    n_drivers = max(1, min(drivers, len(job.conns) or job.connections))
    go = {}

    def start_at():
        """Say ready, then wait for the master's start instant; map it to our monotonic."""
        engine.send(op="send", type="bench_ready", data=dict(step=sid))
        deadline = time.monotonic() + job.deadline + 30
        while True:
            ev = receive(engine, deadline, dropped)
            if ev is None:
                raise DriverError("the master never said go")
            if ev.get("event") == "quit":
                go["ended"] = ev.get("why")
                raise DriverError("the master ended the run before the start")
            data_ = ev.get("data") or {}
            if ev.get("type") == "bench_abort" and data_.get("step") == sid:
                raise DriverError("the master aborted the step")
            if ev.get("type") == "bench_go" and data_.get("step") == sid:
                now_wall, now_mono = time.time_ns(), time.monotonic_ns()
                go["margin_ns"] = data_["start_wall_ns"] - now_wall  # < 0: the go came late
                return now_mono + (data_["start_wall_ns"] - now_wall)

    try:
        load = run_load(job, workdir, workers=n_drivers, client=data.get("client", "lean"),
                        start_at=start_at)
        arrays = load.arrays
        result = dict(step=sid, ok=True, arrays=pack(arrays), t0=load.t0,
                      busy_share=load.busy_share, replies=load.replies)
    except DriverError as exc:
        if "ended" in go:
            raise MasterEnded(go["ended"]) from None
        arrays = exc.partial.arrays if exc.partial else None
        result = dict(step=sid, ok=False, error=str(exc)[:400], arrays=pack(arrays), t0=exc.t0)
    result.update(margin_ns=go.get("margin_ns"), dropped=dict(dropped))
    n = len(arrays["intended"]) if arrays is not None else 0
    ok = int((arrays["outcome"] == int(Outcome.OK)).sum()) if arrays is not None else 0
    say(f"step {sid}: {len(job.conns)} connections, {n} messages, {ok} ok"
        + ("" if result["ok"] else f"; failed: {result['error']}"))
    engine.send(op="send", type="bench_result", data=result)
