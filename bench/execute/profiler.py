"""py-spy profiles of the server's process tree during a step's measured window only.

At ``measure_start`` a ``py-spy record --pid SERVER --subprocesses --gil --format raw`` starts
(in its own process group, pinned with the driver, away from the server's core); at
``measure_end`` it gets SIGINT, which makes it write what it sampled. The collapsed stacks
are then turned into the step's two files under ``profiles/``:

* ``<name>.svg``, a flame graph (self-contained SVG, hover a frame for its samples), and
* ``<name>.speedscope.json`` (open in speedscope for time-ordered and sandwich views),

plus the step's top self-time functions in ``profiles/top.csv`` and one line per step in
``profiles/profiles.csv``.

Sampling mode: ``--gil``, so a sample is recorded only while a thread of the server holds the
GIL (runs Python). ``% of samples`` in the tables is therefore a share of the time the
server ran Python, and ``gil_held_pct`` = recorded samples ÷ (rate × sampled seconds) is the
share of the window in which the GIL was held (summed over the server's processes).
py-spy pauses the process at each sample (its default, exact stacks); ``--profile both``
measures the same steps without it, so the overhead is read from one run.
"""
import html
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
import zlib
from collections import Counter, defaultdict

from bench.errors import UsageError
from bench import processes

RATE = 200          # samples per second
TOP = 15            # functions per step kept in top.csv
STOP_GRACE_S = 10.0
FRAME = re.compile(r"^(?P<name>.*?) \((?P<file>[^()]*?)(?::(?P<line>\d+))?\)$")
PROCESS = re.compile(r'^process (\d+):".*"$', re.S)
NATIVE = "(native code: no Python frame, e.g. the event loop)"
PERMISSION = re.compile(r"permission denied|operation not permitted|EPERM|ptrace", re.I)


def pyspy():
    """Path of the py-spy executable (installed with the harness), or None."""
    beside = os.path.join(os.path.dirname(sys.executable), "py-spy")
    return beside if os.access(beside, os.X_OK) else shutil.which("py-spy")


def ptrace_scope():
    try:
        with open("/proc/sys/kernel/yama/ptrace_scope") as f:
            return int(f.read().strip())
    except (OSError, ValueError):
        return None


def check_permitted(timeout=15.0):
    """Refuse (UsageError, exit 2) unless py-spy can attach to a process here: a real probe
    (``py-spy dump`` of a sleeping child), since capabilities and seccomp matter as much as
    the sysctl."""
    exe = pyspy()
    if not exe:
        raise UsageError("--profile needs py-spy: pip install py-spy (it is in the harness's "
                         "dependencies; run make .venv/.installed)")
    scope = ptrace_scope()
    if scope == 3:
        raise UsageError("--profile: ptrace is disabled on this machine "
                         "(kernel.yama.ptrace_scope=3 can only be lowered by a reboot); "
                         "profile on a machine with ptrace_scope 0 or 1 as root")
    work = os.path.join(os.environ.get("TMPDIR", "/tmp"), f"bench-pyspy-probe-{os.getpid()}")
    os.makedirs(work, exist_ok=True)
    log = os.path.join(work, "probe.log")
    child = processes.spawn([sys.executable, "-c", "import time; time.sleep(60)"], log)
    try:
        time.sleep(0.3)
        probe = subprocess.run([exe, "dump", "--pid", str(child.pid)], capture_output=True,
                               text=True, timeout=timeout, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        raise UsageError("--profile: py-spy could not attach within "
                         f"{timeout:g} s (is ptrace blocked?)") from None
    finally:
        processes.kill_group(child)
        shutil.rmtree(work, ignore_errors=True)
    if probe.returncode != 0:
        text = (probe.stderr or probe.stdout).strip()
        first = text.splitlines()[0] if text else f"exit {probe.returncode}"
        what = (f"kernel.yama.ptrace_scope={scope}: set it to 0 (sysctl -w "
                "kernel.yama.ptrace_scope=0) or run as root; in a container add the "
                "SYS_PTRACE capability") if PERMISSION.search(text) or scope else \
            "py-spy failed"
        raise UsageError(f"--profile: py-spy may not attach to processes here ({first[:120]}); "
                         f"{what}")


def profile_name(step):
    """``<variant>-<scenario>-<load point>-<repeat>`` (file-name safe), ``-nodelay`` when the
    step ran with TCP_NODELAY, so a ``--server-nodelay both`` run keeps both profiles."""
    base = f"{step.variant}-{step.scenario}-{step.load_point}-{step.repeat}"
    if getattr(step, "server_nodelay", False):
        base += "-nodelay"
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", base).strip("_")


class Profiler:
    """Samples ``pid``'s process tree between two monotonic instants, from a thread."""

    def __init__(self, pid, out_dir, name, log_path, cpus=None, rate=RATE):
        self.pid, self.out_dir, self.name = pid, out_dir, name
        self.log_path, self.cpus, self.rate = log_path, cpus, rate
        os.makedirs(out_dir, exist_ok=True)
        self.raw_path = os.path.join(out_dir, f".{name}.raw.txt")
        if os.path.exists(self.raw_path):
            os.remove(self.raw_path)
        self.sampled_s = 0.0
        self.error = ""
        self._abort = threading.Event()
        self._thread = None

    def schedule(self, start_ns, end_ns):
        self._thread = threading.Thread(target=self._run, args=(start_ns, end_ns),
                                        name="profiler", daemon=True)
        self._thread.start()

    def _wait_until(self, at_ns):
        while not self._abort.is_set():
            left = (at_ns - time.monotonic_ns()) / 1e9
            if left <= 0:
                return True
            self._abort.wait(min(left, 0.5))
        return False

    def _run(self, start_ns, end_ns):
        if not self._wait_until(start_ns):
            return
        argv = [pyspy(), "record", "--pid", str(self.pid), "--subprocesses", "--gil",
                "--rate", str(self.rate), "--format", "raw", "--output", self.raw_path]
        proc = processes.spawn(argv, self.log_path, cpus=self.cpus)
        began = time.monotonic()
        try:
            self._wait_until(end_ns)
            self.sampled_s = time.monotonic() - began
            os.killpg(proc.pid, signal.SIGINT)  # py-spy writes its output on Ctrl-C
            try:
                proc.wait(STOP_GRACE_S)
            except subprocess.TimeoutExpired:
                self.error = f"py-spy did not stop within {STOP_GRACE_S:g} s"
            if proc.returncode not in (0, None, -signal.SIGINT) and not self.error:
                self.error = f"py-spy exited {proc.returncode}: " + \
                    processes.stderr_note(self.log_path)
        except ProcessLookupError:
            self.error = "py-spy ended before the window closed: " + \
                processes.stderr_note(self.log_path)
        finally:
            processes.kill_group(proc)

    def finish(self):
        """Stop (if still waiting), write the SVG and speedscope files; a summary dict."""
        self._abort.set()
        if self._thread:
            self._thread.join(STOP_GRACE_S + 5)
        stacks = read_raw(self.raw_path)
        with_suffix = os.path.join(self.out_dir, self.name)
        summary = dict(profile_samples=sum(stacks.values()), profile_error=self.error,
                       gil_held_pct=float("nan"), profile_svg="", profile_speedscope="")
        if not stacks:
            summary["profile_error"] = self.error or "py-spy recorded no samples"
            return summary, []
        with open(with_suffix + ".svg", "w") as f:
            f.write(flame_svg(stacks, title=self.name))
        with open(with_suffix + ".speedscope.json", "w") as f:
            json.dump(speedscope(stacks, self.name), f)
        os.remove(self.raw_path)
        ticks = self.rate * self.sampled_s
        summary.update(profile_svg=f"profiles/{self.name}.svg",
                       profile_speedscope=f"profiles/{self.name}.speedscope.json",
                       gil_held_pct=round(100.0 * sum(stacks.values()) / ticks, 1)
                       if ticks else float("nan"))
        return summary, top_functions(stacks)


# ---------------------------------------------------------------- collapsed stacks

def parse_frame(text):
    """(function, file, line) of a py-spy frame ``func (file.py:12)``."""
    m = FRAME.match(text)
    if not m:
        return text, "", 0
    return m.group("name"), m.group("file"), int(m.group("line") or 0)


def read_raw(path):
    """Counter of stacks (tuples of frames, root first) from py-spy's raw output; the
    ``process PID:"cmdline"`` root frame is shortened to ``process PID``."""
    stacks = Counter()
    try:
        with open(path) as f:
            lines = f.read().splitlines()
    except OSError:
        return stacks
    for line in lines:
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        frames = []
        for frame in split_frames(stack):
            m = PROCESS.match(frame)
            frames.append(f"process {m.group(1)}" if m else frame)
        stacks[tuple(frames)] += int(count)
    return stacks


def split_frames(stack):
    """Split on ';' outside the quoted process command line."""
    out, cur, quoted = [], [], False
    for ch in stack:
        if ch == '"':
            quoted = not quoted
        if ch == ";" and not quoted:
            out.append("".join(cur))
            cur = []
        else:
            cur.append(ch)
    out.append("".join(cur))
    return [f for f in out if f]


def top_functions(stacks, n=TOP):
    """[(function, file, self samples, % of samples)] by self time (the innermost frame),
    line numbers merged so a function is one row."""
    total = sum(stacks.values())
    self_time = Counter()
    for frames, count in stacks.items():
        leaf = frames[-1] if frames else "?"
        name, file, _ = parse_frame(leaf)
        if name.startswith("process ") and len(frames) == 1:
            name = NATIVE
        self_time[(name, file)] += count
    return [dict(function=name, file=file, self_samples=c,
                 pct_samples=round(100.0 * c / total, 1) if total else 0.0)
            for (name, file), c in self_time.most_common(n)]


def speedscope(stacks, name):
    """A speedscope "sampled" profile (https://www.speedscope.app/file-format-schema.json)."""
    index, frames, samples, weights = {}, [], [], []
    for stack, count in stacks.items():
        ids = []
        for frame in stack:
            if frame not in index:
                fname, file, line = parse_frame(frame)
                index[frame] = len(frames)
                frames.append(dict(name=fname, file=file, line=line) if file else
                              dict(name=fname))
            ids.append(index[frame])
        samples.append(ids)
        weights.append(count)
    total = sum(weights)
    return {"$schema": "https://www.speedscope.app/file-format-schema.json",
            "shared": {"frames": frames},
            "profiles": [{"type": "sampled", "name": name, "unit": "none", "startValue": 0,
                          "endValue": total, "samples": samples, "weights": weights}],
            "name": name, "activeProfileIndex": 0, "exporter": "flask-socketio-bench"}


def flame_svg(stacks, title="", width=1200, row=16, min_fraction=0.001):
    """A flame graph (root at the bottom) as one self-contained SVG; frames narrower than
    ``min_fraction`` of all samples are left out, each frame's <title> gives its samples."""
    tree = lambda: defaultdict(tree)  # noqa: E731
    root, counts = tree(), Counter()
    for stack, count in stacks.items():
        node, path = root, ()
        for frame in stack:
            path += (frame,)
            counts[path] += count
            node = node[frame]
    total = sum(stacks.values()) or 1
    depth = max((len(s) for s in stacks), default=0)
    height = (depth + 3) * row
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
           f'font-family="Verdana, sans-serif" font-size="11">',
           '<rect width="100%" height="100%" fill="#fdfdf6"/>',
           f'<text x="6" y="{row}" font-size="13">{html.escape(title)} — {total} samples '
           '(GIL held), root at the bottom</text>']

    def walk(node, path, x, level):
        for frame in sorted(node):
            p = path + (frame,)
            w = counts[p] / total * (width - 12)
            if counts[p] / total >= min_fraction:
                y = height - (level + 1) * row
                hue = zlib.crc32(parse_frame(frame)[1].encode()) % 40
                label = html.escape(f"{frame} — {counts[p]} samples, "
                                    f"{100 * counts[p] / total:.1f} %")
                short = parse_frame(frame)[0]
                chars = int(w / 7)
                text = html.escape(short if len(short) <= chars else short[:max(chars - 2, 0)]
                                   + "..") if chars >= 3 else ""
                out.append(f'<g><title>{label}</title><rect x="{x + 6:.1f}" y="{y}" '
                           f'width="{max(w - 0.5, 0.5):.1f}" height="{row - 1}" '
                           f'fill="hsl({10 + hue},85%,{55 + hue // 4}%)"/>'
                           + (f'<text x="{x + 9:.1f}" y="{y + row - 4}">{text}</text>'
                              if text else "") + "</g>")
                walk(node[frame], p, x, level + 1)
            x += w
    walk(root, (), 0.0, 0)
    out.append("</svg>")
    return "\n".join(out)


def for_step(step, pid, run_dir, cpus=None):
    """A Profiler for a ``profiled`` step of a server the harness started, else None."""
    if not getattr(step, "profiled", False) or not pid:
        return None
    out = os.path.join(run_dir, "profiles")
    return Profiler(pid, out, profile_name(step), os.path.join(out, "py-spy.log"), cpus=cpus)


class Collected:
    """Every profiled step's summary and top functions, rewritten to profiles/*.csv as each
    step finishes (so a run stopped half-way keeps what it profiled)."""

    def __init__(self, run_dir):
        self.run_dir = run_dir  # a callable: the run folder is known only once the run starts
        self.rows, self.top = [], []

    def finish(self, step, prof):
        import pandas as pd

        from bench.output.results import atomic_csv

        summary, top = prof.finish()
        key = dict(variant=step.variant, scenario=step.scenario, load_point=step.load_point,
                   repeat=step.repeat, server_nodelay=step.server_nodelay)
        self.rows.append(dict(key, **summary))
        self.top.extend(dict(key, rank=i + 1, **t) for i, t in enumerate(top))
        out = os.path.join(self.run_dir(), "profiles")
        for name, rows in (("profiles.csv", self.rows), ("top.csv", self.top)):
            if rows:
                atomic_csv(pd.DataFrame(rows), os.path.join(out, name))
        return summary
