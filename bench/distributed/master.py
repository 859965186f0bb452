"""The master's side of a distributed run: wait for the workers, split each step over them,
agree its start, merge what they measured into one :class:`~bench.execute.load.Load`.

Shares: a step's connections are dealt round-robin over the live workers (worker k of K gets
connections k, k+K, …), so each worker also carries its share of the rate: the open-loop
schedule is global (message j goes to connection j mod C) and every driver process sends
only the messages of its own connections. Scenarios whose messages do not split by connection
(fanout, connect) run whole on the first live worker.

Clocks: every round trip is measured on one worker's own monotonic clock (send and receive
in the same process), so latency needs no clock sync. The start is agreed as a wall-clock
instant: the master picks ``start`` (its wall clock, now + margin) and tells each worker
``start + offset`` (the same instant on the worker's wall clock, by the offset the engine
measured NTP-style just before); each worker maps that to its own monotonic clock (its
``t0``). To merge, each worker's timestamps are shifted by ``T0 − t0`` (``T0`` = the master's
monotonic time of the same instant), which puts every message on the master's monotonic
timeline: the measured window and the intended-time order are then consistent across workers
to within the offset's uncertainty (recorded per worker and per step in meta.json).

Faults: a worker that is lost (Locust's heartbeats), fails, refuses the step's target, or never
reports by the deadline has its share counted, not dropped: its scheduled messages enter the
arrays as errors (what it did send and save is kept), the step's row is invalid and its note
names the worker.

Trust: the engine checks every message against the cluster token
(:mod:`bench.distributed.seal`); a worker whose hello fails is refused (one line here, one on
its side), never admitted and never given a share; every message dropped by the check is
counted per node in meta.json. A share carries only the targets this master was given (its
``--target``, or the loopback servers it starts itself).
"""
import os
import socket
import sys
import time
from collections import Counter
from dataclasses import asdict, dataclass, field, replace

import numpy as np

from bench import __version__, kinds
from bench.distributed import DistributedError, is_loopback
from bench.distributed.bridge import Engine, EngineGone, unpack
from bench.distributed.seal import fingerprint
from bench.driver.custom import merge_replies
from bench import processes
from bench.execute.load import DriverError, Load, merge_arrays
from bench.output import results
from bench.plan.job import Job, Outcome

TIME_KEYS = ("intended", "sent", "received", "tcp_ns", "upgrade_ns", "open_ns")
BASE_KEYS = ("conn", "intended", "sent", "received", "outcome", "recv_wait")
START_MARGIN_S = 0.3


@dataclass
class WorkerInfo:
    node: str
    host: str = ""
    pid: int | None = None
    drivers: int | None = None
    token_fingerprint: str | None = None  # the one its hello states (and passed the check with)
    allowed_targets: list = field(default_factory=list)
    dropped_by_worker: dict = field(default_factory=dict)  # master messages it dropped
    offset_ns: int | None = None        # worker wall clock − master wall clock
    uncertainty_ns: int | None = None   # ± half the best exchange's round trip
    rtt_ns: int | None = None
    joined_utc: str = field(default_factory=lambda: results.utc_now().isoformat())
    hello: bool = False
    clocked: bool = False
    alive: bool = True
    lost_why: str = ""                  # why it was lost (or "back after: ..." once rejoined)

    @property
    def label(self):
        return f"{self.host or self.node} (pid {self.pid})"

    def record(self):
        return dict(node=self.node, host=self.host, pid=self.pid, drivers=self.drivers,
                    token_fingerprint=self.token_fingerprint,
                    allowed_targets=self.allowed_targets,
                    dropped_by_worker=self.dropped_by_worker,
                    clock_offset_ns=self.offset_ns, clock_uncertainty_ns=self.uncertainty_ns,
                    clock_rtt_ns=self.rtt_ns, joined_utc=self.joined_utc, alive=self.alive,
                    lost=self.lost_why or None)


def job_from_dict(data):
    """A worker's Job back from its JSON form (tuples where the Job keeps tuples)."""
    data = dict(data)
    data["targets"] = tuple(tuple(t) for t in data["targets"])
    for key in ("source_addresses", "cpus", "conns"):
        data[key] = tuple(data[key])
    return Job(**data)


def scheduled(job, t0, keys):
    """The messages ``job`` (one share) would have sent from ``t0``, all unsent: what a lost
    share counts as (its kind's schedule, bench/kinds)."""
    conn, intended = kinds.get(job.kind).schedule(job, t0)
    out = {k: np.zeros(len(intended), dtype=np.int64) for k in keys}
    out.update(conn=np.asarray(conn, dtype=np.int32), intended=np.asarray(intended, np.int64),
               outcome=np.full(len(intended), int(Outcome.UNSENT), dtype=np.int8))
    return out


def shifted(arrays, delta):
    """Timestamps moved by ``delta`` ns (0 stays 0: never sent / never received)."""
    out = dict(arrays)
    for key in TIME_KEYS:
        if key in out:
            a = out[key]
            out[key] = np.where(a > 0, a + delta, a)
    return out


def counted_share(job, arrays, t0):
    """A failed share's arrays: what it saved, plus every scheduled message it did not."""
    keys = set(arrays or {}) or set(BASE_KEYS) | set(kinds.get(job.kind).extras)
    synth = scheduled(job, t0, keys)
    if arrays is None or not len(arrays.get("intended", ())):
        return synth
    if job.rate:  # on a schedule: a message is known by its intended time
        keep = ~np.isin(synth["intended"], arrays["intended"])
    else:
        keep = ~np.isin(synth["conn"], arrays["conn"])
    common = set(synth) & set(arrays)
    return {k: np.concatenate([arrays[k], synth[k][keep]]) for k in common}


class Coordinator:
    """The master: owns the engine process and the list of workers."""

    def __init__(self, bind, expect, log_dir, wait_s=60.0, token=None, target=None):
        self.host, self.port = bind
        self.expect, self.wait_s = expect, wait_s
        self.token, self.target = token, target
        os.makedirs(log_dir, exist_ok=True)
        self.log_path = os.path.join(log_dir, "distributed-master.log")
        self.workers, self.order, self.inbox = {}, [], []
        self.dropped, self.refused = {}, {}
        self.engine, self.step_no = None, 0
        self.meta = dict(master=f"{self.host}:{self.port}", master_host=socket.gethostname(),
                         master_pid=os.getpid(), expected_workers=expect, workers=[], steps=[],
                         token_fingerprint=fingerprint(token), authenticated=bool(token),
                         refused=[], dropped={}, dropped_total=0,
                         clock="each worker's timestamps shifted onto the master's monotonic "
                               "clock by its start instant; offsets NTP-style through Locust "
                               "messages, uncertainty = best round trip / 2")

    # ----------------------------------------------------------------- engine events
    def handle(self, ev):
        kind, node = ev.get("event"), ev.get("node")
        if kind == "joined":
            w = self.workers.setdefault(node, WorkerInfo(node))
            if not w.alive:  # came back (Locust's heartbeats resumed): later steps use it
                w.alive, w.lost_why = True, f"back after: {w.lost_why}"
        elif kind == "clock" and node in self.workers:
            w = self.workers[node]
            if ev.get("offset_ns") is not None:
                w.offset_ns, w.uncertainty_ns = ev["offset_ns"], ev["uncertainty_ns"]
                w.rtt_ns, w.clocked = ev["rtt_ns"], True
            self.inbox.append(ev)
        elif kind == "lost" and node in self.workers:
            w = self.workers[node]
            w.alive, w.lost_why = False, ev.get("why", "lost")
            self.inbox.append(ev)
        elif kind == "dropped":
            self.dropped.setdefault(node, Counter())[ev.get("why")] += 1
        elif kind == "refused":
            self._refuse(node, ev.get("why"), ev.get("claims") or {}, "unverified")
        elif kind == "message":
            data = ev["data"] or {}
            w = self.workers.setdefault(node, WorkerInfo(node))
            w.dropped_by_worker = data.get("dropped") or w.dropped_by_worker
            if ev["type"] == "bench_hello" and data.get("harness_version") != __version__:
                why = (f"the worker runs harness version {data.get('harness_version')}, this "
                       f"master {__version__}: install the same version on both")
                self._refuse(node, why, data, "verified")
                self.engine.send(op="refuse", to=node, why=why)
            elif ev["type"] == "bench_hello":
                w.host, w.pid, w.drivers = (data.get(k) for k in ("host", "pid", "drivers"))
                w.token_fingerprint = data.get("token_fingerprint")
                w.allowed_targets = list(data.get("allowed_targets") or ())
                w.hello = True
            else:
                self.inbox.append(ev)
        self._refresh_meta()

    def _refuse(self, node, why, claims, checked):
        """Record and say (one line) why ``node`` never joins this run."""
        self.refused[node] = dict(node=node, why=why, claimed_host=claims.get("host"),
                                  claimed_pid=claims.get("pid"),
                                  claimed_token_fingerprint=claims.get("token_fingerprint"),
                                  refused_utc=results.utc_now().isoformat())
        print(f"bench: refused worker {node} (says host {claims.get('host')}, pid "
              f"{claims.get('pid')}; {checked}): {why}; this master's token: "
              f"{fingerprint(self.token) or 'none'}", file=sys.stderr, flush=True)

    def _refresh_meta(self):
        records = []
        for n in self.order:
            records.append(dict(self.workers[n].record(),
                                dropped=dict(self.dropped.get(n, {}))))
        self.meta["workers"] = records
        self.meta["refused"] = [dict(r, dropped=dict(self.dropped.get(n, {})))
                                for n, r in self.refused.items()]
        self.meta["dropped"] = {n: dict(c) for n, c in self.dropped.items()}
        self.meta["dropped_total"] = sum(sum(c.values()) for c in self.dropped.values())

    def pump(self, deadline):
        """Handle one event; False when the deadline passed first."""
        try:
            ev = self.engine.recv(deadline)
        except EngineGone as exc:
            raise DistributedError(f"the master's engine ended: {exc}") from None
        if ev is None:
            return False
        self.handle(ev)
        return True

    # ----------------------------------------------------------------- start / stop
    def start(self):
        self.engine = Engine("master", self.host, self.port, self.log_path, token=self.token)
        # Not in the lifecycle's kill-everything list: the run's own cleanup would kill it
        # before it could tell the workers the run is over. close() stops it in the CLI's
        # finally, and it quits by itself when this process's end closes its stdin.
        processes.LIVE_GROUPS.discard(self.engine.proc.pid)
        try:
            ev = self.engine.recv(time.monotonic() + 30)
        except EngineGone as exc:
            raise DistributedError(f"the master could not listen on {self.host}:{self.port}: "
                                   f"{exc}") from None
        if not ev or ev.get("event") != "listening":
            raise DistributedError(f"the master's engine did not start: {self.engine.note()}")
        deadline = time.monotonic() + self.wait_s
        while len(self.order) < self.expect:
            for node, w in self.workers.items():
                if w.hello and w.clocked and w.alive and node not in self.order \
                        and len(self.order) < self.expect:
                    self.order.append(node)
            if len(self.order) >= self.expect:
                break
            if not self.pump(deadline):
                raise DistributedError(f"{len(self.order)} of {self.expect} workers joined "
                                       f"within {self.wait_s:g} s (master on "
                                       f"{self.host}:{self.port}; log {self.log_path})")
        self.inbox.clear()
        self._refresh_meta()

    def close(self):
        if self.engine:
            self.engine.close()

    # ----------------------------------------------------------------- one step
    def run_load(self, job, client="lean", on_start=None):
        """The distributed equivalent of :func:`bench.execute.load.run_load`."""
        self.step_no += 1
        sid = self.step_no
        live = [self.workers[n] for n in self.order if self.workers[n].alive]
        if not live:
            why = "; ".join(f"{self.workers[n].label}: {self.workers[n].lost_why}"
                            for n in self.order)
            raise DriverError(f"no distributed workers left ({why})")
        foreign = [t for t in job.targets if (tuple(t) != tuple(self.target) if self.target
                                              else not is_loopback(t[0]))]
        if foreign:  # the plan's own targets only: never an address from anywhere else
            raise DriverError(f"a share would carry {foreign[0][0]}:{foreign[0][1]}, a target "
                              "this master was not given")
        base = replace(job, out="", cpus=(), spin=False)
        if kinds.get(job.kind).split:
            k = min(len(live), job.connections)
            parts = [(w, replace(base, conns=tuple(range(job.connections))[i::k]))
                     for i, w in enumerate(live[:k])]
        else:
            parts = [(live[0], base)]
        state = {w.node: {"worker": w, "job": share, "status": "sent", "why": ""}
                 for w, share in parts}
        self.inbox.clear()
        t0 = None
        try:
            for w, share in parts:
                self.engine.send(op="clock", to=w.node)
                self.engine.send(op="send", type="bench_step", to=w.node,
                                 data=dict(step=sid, client=client, job=asdict(share)))
            clocks = {w.node for w, _ in parts}
            self._collect(sid, state, clocks, "ready", time.monotonic() + job.deadline + 30)
            ready = [s for s in state.values() if s["status"] == "ready"]
            start_wall = time.time_ns() + int((START_MARGIN_S + max(
                [(s["worker"].rtt_ns or 0) / 1e9 for s in ready] or [0])) * 1e9)
            t0 = time.monotonic_ns() + (start_wall - time.time_ns())
            if on_start:
                on_start([], t0)
            for s in ready:
                w = s["worker"]
                s["status"] = "started"
                s["offset_ns"], s["uncertainty_ns"] = w.offset_ns, w.uncertainty_ns
                self.engine.send(op="send", type="bench_go", to=w.node,
                                 data=dict(step=sid, start_wall_ns=start_wall + (w.offset_ns
                                                                                  or 0)))
            budget = START_MARGIN_S + job.warmup + job.duration + job.deadline * 2 + 30
            self._collect(sid, state, set(), "done", time.monotonic() + budget)
        except EngineGone as exc:
            for s in state.values():
                if s["status"] not in ("done", "failed", "refused"):
                    s.update(status="failed", why=f"the master's engine ended: {exc}")
            t0 = t0 or time.monotonic_ns()
        return self._merge(job, sid, state, t0)

    def _collect(self, sid, state, clocks, until, deadline):
        """Events until every share reached ``until`` (or failed) and the clocks are in."""
        want = {"ready": ("sent",), "done": ("started",)}[until]
        while any(s["status"] in want for s in state.values()) or clocks:
            for ev in self.inbox:
                s = state.get(ev.get("node"))
                kind = ev.get("event")
                if kind == "clock":
                    clocks.discard(ev.get("node"))
                if s is None or s["status"] in ("failed", "done", "refused"):
                    continue
                if kind == "lost":
                    s.update(status="failed", why=f"lost: {ev.get('why')}")
                    clocks.discard(ev.get("node"))
                elif kind == "message" and ev["data"].get("step") == sid:
                    if ev["type"] == "bench_ready" and s["status"] == "sent":
                        s["status"] = "ready"
                    elif ev["type"] == "bench_result" and ev["data"].get("refused"):
                        s.update(status="refused", why=ev["data"]["refused"])
                    elif ev["type"] == "bench_result":
                        s["result"] = ev["data"]
                        ok = ev["data"].get("ok") and s["status"] == "started"
                        s.update(status="done" if ok else "failed",
                                 why="" if ok else ev["data"].get("error") or "failed")
            self.inbox.clear()
            if not (any(s["status"] in want for s in state.values()) or clocks):
                break
            if not self.pump(deadline):
                for s in state.values():
                    if s["status"] in want:
                        s.update(status="failed", why="never reported " + (
                            "ready" if until == "ready" else "its results") + " by the deadline")
                        if until == "ready":  # it may still start: tell it not to
                            self.engine.send(op="send", type="bench_abort", to=s["worker"].node,
                                             data=dict(step=sid))
                break

    def _merge(self, job, sid, state, t0):
        parts, failures, record, shares, replies = [], [], [], [], []
        start = t0 + int(job.warmup * 1e9)
        end = start + int(job.duration * 1e9)
        for s in state.values():
            w, share, res = s["worker"], s["job"], s.get("result") or {}
            arrays = unpack(res.get("arrays"))
            if arrays is not None and res.get("t0") is not None:
                arrays = shifted(arrays, t0 - int(res["t0"]))
            elif arrays is not None:
                arrays = None  # saved before any start: nothing it measured belongs here
            if s["status"] != "done":
                arrays = counted_share(share, arrays, t0)
                failures.append(f"worker {w.label} {s['why']}; its share ({len(share.conns)} "
                                f"of {job.connections} connections) counted as failed")
            elif res.get("busy_share") is not None:
                shares.append(res["busy_share"])
            replies.append(res.get("replies"))
            if arrays is None:
                continue
            parts.append(arrays)
            window = (arrays["intended"] >= start) & (arrays["intended"] < end)
            record.append(dict(node=w.node, host=w.host, pid=w.pid, status=s["status"],
                               why=s["why"] or None, connections=len(share.conns),
                               messages=int(len(arrays["intended"])),
                               attempted=int(window.sum()),
                               ok=int((window & (arrays["outcome"] == int(Outcome.OK))).sum()),
                               clock_offset_ns=s.get("offset_ns"),
                               clock_uncertainty_ns=s.get("uncertainty_ns"),
                               start_margin_ns=res.get("margin_ns")))
        self.meta["steps"].append(dict(step=sid, kind=job.kind, workers=record))
        self._refresh_meta()
        load = Load(merge_arrays(parts) if parts else None, t0, max(shares) if shares else None,
                    merge_replies(replies))
        if failures:
            raise DriverError("; ".join(failures), partial=load if parts else None, t0=t0)
        return load
