"""The results folder: created fresh per run (never overwriting), written atomically.

Summary rows are rewritten whole after every step (tmp file + rename), samples go to one
part file per step and are joined into samples.csv.gz at the end, so an interrupted run keeps
every finished step and no reader ever sees a half-written file.
"""
import datetime as dt
import glob
import json
import os
import platform
import shutil
import subprocess
from importlib import metadata

import pandas as pd


from bench.errors import UsageError
from bench import ROOT, paths

RESULTS = paths.results_dir()
PACKAGES = ["flask", "flask-socketio", "python-socketio", "python-engineio", "eventlet",
            "gevent", "greenlet", "werkzeug", "simple-websocket", "websocket-client",
            "requests", "picows", "uvloop", "hdrhistogram", "psutil", "pandas", "matplotlib",
            "numpy"]


def utc_now():
    return dt.datetime.now(dt.timezone.utc)


def atomic_write(path, data, mode="w"):
    tmp = f"{path}.tmp-{os.getpid()}"
    with open(tmp, mode) as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def atomic_csv(frame, path):
    tmp = f"{path}.tmp-{os.getpid()}"
    frame.to_csv(tmp, index=False, compression="gzip" if path.endswith(".gz") else None)
    os.replace(tmp, path)


def create_run_dir(out=None, label="run", started=None):
    """``results/<UTC stamp>-<label>/`` (or ``--out``), created new: never an earlier run's."""
    started = started or utc_now()
    base = out or RESULTS
    try:
        os.makedirs(base, exist_ok=True)
    except OSError as exc:
        raise UsageError(f"cannot create output folder {base}: {exc.strerror}") from None
    if not os.access(base, os.W_OK):
        raise UsageError(f"output folder {base} is not writable")
    stamp = started.strftime("%Y%m%dT%H%M%SZ")
    safe = "".join(c if c.isalnum() or c in "-_." else "-" for c in label)[:60] or "run"
    for n in range(1, 100):
        path = os.path.join(base, f"{stamp}-{safe}" + (f"-{n}" if n > 1 else ""))
        try:
            os.mkdir(path)
        except FileExistsError:
            continue
        except OSError as exc:
            raise UsageError(f"cannot create run folder {path}: {exc.strerror}") from None
        os.mkdir(os.path.join(path, "logs"))
        os.mkdir(os.path.join(path, ".parts"))
        return path
    raise UsageError(f"too many runs named {stamp}-{safe}")


def point_latest(run_dir):
    """``results/latest`` → this run (a relative symlink, replaced atomically)."""
    if os.path.dirname(os.path.abspath(run_dir)) != RESULTS:
        return
    link = os.path.join(RESULTS, "latest")
    tmp = f"{link}.tmp-{os.getpid()}"
    if os.path.lexists(tmp):
        os.remove(tmp)
    os.symlink(os.path.basename(run_dir), tmp)
    os.replace(tmp, link)


def git_commit():
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True,
                                text=True, timeout=5).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                               cwd=ROOT, capture_output=True, text=True, timeout=5).stdout.strip()
        return commit + ("-dirty" if dirty and commit else "") or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def cpu_model():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def host_info():
    return dict(cpu_model=cpu_model(), cores=os.cpu_count(), kernel=platform.release(),
                system=platform.system(), python=platform.python_version(),
                machine=platform.machine())


def package_versions():
    out = {}
    for name in PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def write_meta(run_dir, meta):
    atomic_write(os.path.join(run_dir, "meta.json"), json.dumps(meta, indent=2, default=str))


def write_summary(run_dir, rows, columns):
    """summary.csv: repeats are ints in code; an aggregate row is written with repeat "all"."""
    frame = pd.DataFrame(rows)
    if "aggregate" in frame:
        frame["repeat"] = [("all" if a is True else r) for a, r in
                           zip(frame.pop("aggregate"), frame["repeat"])]
    ordered = columns + [c for c in frame.columns if c not in columns]
    atomic_csv(frame.reindex(columns=ordered), os.path.join(run_dir, "summary.csv"))


def write_part(run_dir, index, frame):
    atomic_csv(frame, os.path.join(run_dir, ".parts", f"samples-{index}.csv.gz"))


def read_part(run_dir, index):
    """One step's samples part as written (None when it has none)."""
    path = os.path.join(run_dir, ".parts", f"samples-{index}.csv.gz")
    return pd.read_csv(path) if os.path.exists(path) else None


def write_hlog(run_dir, name, text):
    """One step's HdrHistogram interval log under hlog/."""
    os.makedirs(os.path.join(run_dir, "hlog"), exist_ok=True)
    atomic_write(os.path.join(run_dir, "hlog", f"{name}.hlog"), text)


def write_events(run_dir, name, frame):
    """One step's server events and sampler ticks under events/."""
    os.makedirs(os.path.join(run_dir, "events"), exist_ok=True)
    atomic_csv(frame, os.path.join(run_dir, "events", f"{name}.csv"))


def join_parts(run_dir):
    """samples.csv.gz = every step's part, in step order, in one atomic write."""
    parts = sorted(glob.glob(os.path.join(run_dir, ".parts", "samples-*.csv.gz")))
    frames = [pd.read_csv(p) for p in parts]
    if frames:
        atomic_csv(pd.concat(frames, ignore_index=True),
                   os.path.join(run_dir, "samples.csv.gz"))
    shutil.rmtree(os.path.join(run_dir, ".parts"), ignore_errors=True)
