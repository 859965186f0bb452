"""Once-a-second CPU and RSS of the server's process tree and the driver processes (psutil).

Besides the 1 Hz rows for resources.csv, the sampler takes exact snapshots at the measure
window's start and end, so a step's CPU % is cumulative CPU time over the window, not an
average of coarse samples.
"""
import threading
import time

import psutil


def _tree(pid):
    try:
        root = psutil.Process(pid)
        return [root, *root.children(recursive=True)]
    except psutil.Error:
        return []


def _usage(procs):
    """Total CPU seconds and RSS (MB) of live processes; vanished ones are skipped."""
    cpu, rss = 0.0, 0.0
    for p in procs:
        try:
            t = p.cpu_times()
            cpu += t.user + t.system
            rss += p.memory_info().rss / 1e6
        except psutil.Error:
            pass
    return cpu, rss


class Sampler:
    """Samples ``roles`` ({"server": [pid], "driver": [pids]}) until stopped."""

    def __init__(self, variant, run_start, interval=1.0):
        self.variant, self.run_start, self.interval = variant, run_start, interval
        self.rows = []
        self.roles = {}
        self.marks = []
        self.snapshots = {}
        self._stop = threading.Event()
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

    def start(self):
        self._thread = threading.Thread(target=self._run, name="resource-sampler", daemon=True)
        self._thread.start()
        return self

    def stop(self):
        self._stop.set()
        if self._thread:
            self._thread.join(5)

    def _snapshot(self):
        with self._lock:
            return {role: _usage(procs) for role, procs in self.roles.items()}

    def _run(self):
        next_tick = time.monotonic()
        while not self._stop.is_set():
            now_ns = time.monotonic_ns()
            with self._lock:
                due = [m for m in self.marks if m[0] <= now_ns]
                self.marks = [m for m in self.marks if m[0] > now_ns]
            for _, name in due:
                self.snapshots[name] = (time.monotonic(), self._snapshot())
            if time.monotonic() >= next_tick:
                self._sample()
                next_tick += self.interval
            with self._lock:
                upcoming = [m[0] / 1e9 for m in self.marks]
            wake = min([next_tick, *upcoming])
            self._stop.wait(max(0.0, wake - time.monotonic()))

    def _sample(self):
        t = round(time.time() - self.run_start, 3)
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
        out = {}
        for role in b:
            if role in a and t_b > t_a:
                out[f"{role}_cpu_pct"] = round(100.0 * (b[role][0] - a[role][0]) / (t_b - t_a), 1)
                out[f"{role}_rss_mb"] = round(max(a[role][1], b[role][1]), 1)
        return out


def _process(pid):
    try:
        return psutil.Process(pid)
    except psutil.Error:
        return None
