"""Once-a-second CPU and RSS of the server's process tree and the driver processes (psutil),
and the machine's noise: CPU steal time, load average, CPU used by foreign processes.

Besides the 1 Hz rows for resources.csv, the sampler takes exact snapshots at the measure
window's start and end, so a step's CPU % is cumulative CPU time over the window, not an
average of coarse samples. A step is ``noisy`` when the hypervisor stole more than
``NOISY_STEAL_PCT`` % of the CPU time or processes other than ours used more than
``NOISY_FOREIGN_PCT`` % of a core during the window: these machines are shared VMs.

A ``--target`` server listening on this machine's loopback is found by its port
(:func:`listening_pids`) and sampled as the server, so its CPU is not foreign. The sampling
thread pins itself to the server's cores (``cpus``): it never runs on the driver's.
"""
import contextlib
import ipaddress
import os
import threading
import time

import psutil

NOISY_STEAL_PCT, NOISY_FOREIGN_PCT = 2.0, 25.0
MIN_WINDOW_S = 0.1      # a shorter window's CPU % is the kernel's 10 ms tick, not a figure


def _system():
    """(busy CPU seconds over all cores, steal seconds, all CPU seconds, 1-min load avg)."""
    t = psutil.cpu_times()
    steal = getattr(t, "steal", 0.0)
    total = sum(t)
    idle = t.idle + getattr(t, "iowait", 0.0)
    return total - idle - steal, steal, total, os.getloadavg()[0]


def _local(host):
    """Is ``host`` this machine's loopback, or the any-address (which loopback reaches)?"""
    try:
        address = ipaddress.ip_address(host.split("%")[0])
    except ValueError:
        return host == "localhost"
    address = getattr(address, "ipv4_mapped", None) or address
    return address.is_loopback or address.is_unspecified


def listening_pids(host, port):
    """The local server behind a loopback ``host:port`` ([] if remote or hidden), to sample."""
    if not _local(host):
        return []
    try:
        found = {c.pid for c in psutil.net_connections(kind="inet")
                 if c.status == psutil.CONN_LISTEN and c.laddr and c.laddr.port == port
                 and _local(c.laddr.ip)}
    except (psutil.Error, OSError):
        return []
    found.discard(None)
    roots = []  # a pre-fork server's workers listen too: keep the master, whose tree has them
    for pid in found:
        try:
            if not {p.pid for p in psutil.Process(pid).parents()} & found:
                roots.append(pid)
        except psutil.Error:
            continue
    return sorted(roots)


def _tree(pid):
    try:
        root = psutil.Process(pid)
        return [root, *root.children(recursive=True)]
    except psutil.Error:
        return []


def _usage(procs):
    """Total CPU seconds and RSS (MB) of processes; an exited process not yet reaped (a
    zombie) still has its CPU seconds, vanished ones are skipped."""
    cpu, rss = 0.0, 0.0
    for p in procs:
        try:
            t = p.cpu_times()
            cpu += t.user + t.system
        except psutil.Error:
            continue
        with contextlib.suppress(psutil.Error):
            rss += p.memory_info().rss / 1e6
    return cpu, rss


class Sampler:
    """Samples ``roles`` ({"server": [pid], "driver": [pids]}) until stopped."""

    def __init__(self, variant, run_start, interval=1.0, cpus=None):
        self.variant, self.run_start, self.interval = variant, run_start, interval
        self.cpus = cpus  # where the sampling thread runs (None: wherever it is allowed)
        self.rows = []
        self.roles = {}
        self.marks = []
        self.snapshots = {}
        self.ticks = []  # (monotonic ns, ns spent) of every sample and snapshot taken
        self._stop = threading.Event()
        self._wake = threading.Event()  # a new mark: the thread re-plans its next wake-up
        self._lock = threading.Lock()
        self._thread = None

    def watch(self, role, pids, tree=False):
        with self._lock:
            procs = []
            for pid in pids:
                procs.extend(_tree(pid) if tree else [p for p in [_process(pid)] if p])
            for p in procs:  # psutil's first cpu_percent() is always 0.0: prime it
                try:
                    p.cpu_percent(None)
                except psutil.Error:
                    pass
            self.roles[role] = procs

    def mark(self, name, at_ns):
        """Take an exact snapshot at monotonic time ``at_ns`` (measure start/end)."""
        with self._lock:
            self.marks.append((at_ns, name))
            self.marks.sort()
        self._wake.set()  # the thread may be asleep until its next tick, past this mark

    def start(self):
        self._thread = threading.Thread(target=self._run, name="resource-sampler", daemon=True)
        self._thread.start()
        return self

    def load_ended(self):
        """The load is over: a mark still ahead is taken now, while the driver processes
        are still there to be read (exited, not yet reaped). The load can end before its
        window does (the last arrival answered early), and the snapshot then holds
        everything the window would have."""
        with self._lock:
            pending, self.marks = self.marks, []
        for _, name in pending:
            self.snapshots[name] = (time.monotonic(), self._snapshot())

    def stop(self):
        """Stop sampling; a mark still ahead is taken now (see :meth:`load_ended`)."""
        self._stop.set()
        self._wake.set()
        if self._thread:
            self._thread.join(5)
        self.load_ended()

    def _snapshot(self):
        with self._lock:
            snap = {role: _usage(procs) for role, procs in self.roles.items()}
        snap["_system"] = _system()
        return snap

    def _run(self):
        if self.cpus:  # a CPU set the machine no longer allows leaves the thread where it is
            with contextlib.suppress(OSError):
                os.sched_setaffinity(threading.get_native_id(), self.cpus)
        next_tick = time.monotonic()
        while not self._stop.is_set():
            now_ns = time.monotonic_ns()
            with self._lock:
                due = [m for m in self.marks if m[0] <= now_ns]
                self.marks = [m for m in self.marks if m[0] > now_ns]
            for _, name in due:
                self.snapshots[name] = (time.monotonic(), self._snapshot())
            sampled = bool(due)
            if time.monotonic() >= next_tick:
                self._sample()
                next_tick += self.interval
                sampled = True
            if sampled:
                self.ticks.append((now_ns, time.monotonic_ns() - now_ns))
            with self._lock:
                upcoming = [m[0] / 1e9 for m in self.marks]
            wake = min([next_tick, *upcoming])
            self._wake.wait(max(0.0, wake - time.monotonic()))
            self._wake.clear()

    def _sample(self):
        t = round(time.time() - self.run_start, 3)
        busy, steal, total, load = _system()
        last, self._last_system = getattr(self, "_last_system", None), (busy, steal, total)
        if last and total > last[2]:
            d_total = total - last[2]
            self.rows.append(dict(t=t, variant=self.variant, role="system", pid=0,
                                  cpu_pct=round(100.0 * (busy - last[0]) / d_total *
                                                psutil.cpu_count(), 1),
                                  rss_mb=float("nan"),
                                  steal_pct=round(100.0 * (steal - last[1]) / d_total, 2),
                                  load_avg=round(load, 2)))
        with self._lock:
            roles = dict(self.roles)
        for role, procs in roles.items():
            for p in procs:
                try:
                    with p.oneshot():
                        cpu = p.cpu_percent(None)
                        rss = p.memory_info().rss / 1e6
                except psutil.Error:
                    continue
                self.rows.append(dict(t=t, variant=self.variant, role=role, pid=p.pid,
                                      cpu_pct=round(cpu, 1), rss_mb=round(rss, 1)))

    def window(self, start="measure_start", end="measure_end"):
        """CPU % (100 = one core) and peak RSS per role between two snapshots."""
        if start not in self.snapshots or end not in self.snapshots:
            return {}
        (t_a, a), (t_b, b) = self.snapshots[start], self.snapshots[end]
        if t_b - t_a < MIN_WINDOW_S:  # the load ended before its window: CPU ticks are 10 ms
            return {}
        out = {}
        if t_b > t_a and "_system" in a and "_system" in b:
            (busy_a, steal_a, total_a, _), (busy_b, steal_b, total_b, load) = a["_system"], \
                b["_system"]
            ours = sum(b[r][0] - a[r][0] for r in b if r in a and not r.startswith("_"))
            steal = 100.0 * (steal_b - steal_a) / max(total_b - total_a, 1e-9)
            foreign = 100.0 * ((busy_b - busy_a) - ours) / (t_b - t_a)
            out.update(steal_pct=round(steal, 2), load_avg=round(load, 2),
                       foreign_cpu_pct=round(max(foreign, 0.0), 1),
                       noisy=bool(steal > NOISY_STEAL_PCT or foreign > NOISY_FOREIGN_PCT))
        for role in b:
            if role.startswith("_"):
                continue
            if role in a and t_b > t_a:
                out[f"{role}_cpu_pct"] = round(100.0 * (b[role][0] - a[role][0]) / (t_b - t_a), 1)
                out[f"{role}_rss_mb"] = round(max(a[role][1], b[role][1]), 1)
        return out


def _process(pid):
    try:
        return psutil.Process(pid)
    except psutil.Error:
        return None
