"""Environments as data: one virtualenv per requirement set, built by uv on first use.

``servers/variants.toml`` declares ``[environments.NAME]`` with its ``requirements``. Each set
is locked in ``servers/locks/NAME.txt`` (``uv pip compile``; ``python -m bench envs --lock``
refreshes the locks) and installed from that lock into ``.envs/NAME-KEY/``, where KEY hashes
the requirement set, the lock and the Python version, so a changed lock or interpreter is a new
environment and an unchanged one is reused as it is. The environment marked ``harness = true``
is the harness's own ``.venv`` (locked the same way in ``servers/locks/harness.txt``, installed
by the Makefile).

The user's app may need more (``--app-requirements FILE``): ``use_app_requirements`` layers
that file onto every environment for the rest of the process. A layered environment is its own
folder ``.envs/NAME-KEY-app-LAYER/`` (LAYER hashes KEY and the file's content), installed in one
``uv pip install`` of the environment's requirements, constrained by its lock (so every version
the lock pins stays as it is), plus the app's file; the harness's own environment gets a layered
copy too, never an install into ``.venv``. uv's cache makes that about a second.

Builds run through the lifecycle (own process group, bounded in time, killed in ``finally``)
and hold a file lock, so two runs never build the same environment at once.
"""
import contextlib
import fcntl
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import sysconfig
import tempfile
import time
from dataclasses import dataclass
from importlib import metadata

from bench import ROOT, paths
from bench import processes

ENVS_DIR = paths.envs_dir()
HARNESS_LOCK = os.path.join(ROOT, "servers", "locks", "harness.txt")
BUILD_TIMEOUT_S = 900.0     # uWSGI compiles from source (~22 s here); a slow CI gets room
LOCK_TIMEOUT_S = 300.0
MARKER = "bench-env.json"   # written last: an environment without it is not built
FAILED = {}                 # environment path -> why its build failed (in this process)
COMPILE_COMMAND = "python -m bench envs --lock"
APP_LAYER = {}              # the app's requirements layered onto every environment (see below)

# Things outside Python an environment or variant may need: how to check, how to fix.
NEEDS = {
    "gcc": (lambda: shutil.which("gcc") or shutil.which("cc"), "gcc not found",
            "apt install gcc"),
    "python-headers": (lambda: os.path.exists(os.path.join(
        sysconfig.get_paths()["include"], "Python.h")), "Python.h not found",
        f"apt install python{sys.version_info.major}.{sys.version_info.minor}-dev"),
    "openssl-headers": (lambda: any(os.path.exists(os.path.join(d, "openssl", "ssl.h"))
                                    for d in ("/usr/include", "/usr/local/include")),
                        "openssl/ssl.h not found", "apt install libssl-dev"),
    "redis-server": (lambda: shutil.which("redis-server") or shutil.which("valkey-server"),
                     "redis-server not found", "apt install redis-server"),
    "nginx": (lambda: shutil.which("nginx") or os.path.exists("/usr/sbin/nginx"),
              "nginx not found", "apt install nginx"),
}


class BuildError(Exception):
    """An environment could not be built or locked; the message is one line."""


@dataclass(frozen=True)
class Environment:
    name: str
    requirements: tuple
    harness: bool = False
    needs: tuple = ()
    locks_dir: str = os.path.join(ROOT, "servers", "locks")
    description: str = ""

    @property
    def lock_path(self):
        return HARNESS_LOCK if self.harness else os.path.join(self.locks_dir, f"{self.name}.txt")

    def as_dict(self):
        return dict(name=self.name, requirements=list(self.requirements), harness=self.harness,
                    needs=list(self.needs), lock=os.path.relpath(self.lock_path, ROOT))


def from_table(name, table, locks_dir):
    """An Environment from a validated ``[environments.NAME]`` table."""
    return Environment(name=name, requirements=tuple(table.get("requirements", ())),
                       harness=bool(table.get("harness", name == "default")),
                       needs=tuple(table.get("needs", ())), locks_dir=locks_dir,
                       description=table.get("description", ""))


# --------------------------------------------------------------------------- tools

def uv_bin():
    """The uv executable (the ``uv`` package of the harness, else one on PATH), or None."""
    with contextlib.suppress(ImportError, FileNotFoundError):
        import uv

        return uv.find_uv_bin()
    return shutil.which("uv")


def base_python():
    """The interpreter environments are made from: the one behind the harness's venv."""
    base = getattr(sys, "_base_executable", None)
    return base if base and os.path.exists(base) else sys.executable


def python_version():
    return ".".join(map(str, sys.version_info[:3]))


def missing_needs(needs):
    """``(reason, fix)`` of the first unmet need, or None."""
    for need in needs:
        check, reason, fix = NEEDS[need]
        if not check():
            return reason, fix
    return None


# --------------------------------------------------------------------------- paths and state

def _read(path):
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError:
        return None


def key(env):
    """Hash of the requirement set, the lock's content and the Python version."""
    h = hashlib.sha256()
    h.update(json.dumps(sorted(env.requirements)).encode())
    h.update(_read(env.lock_path) or b"<no lock>")
    h.update(python_version().encode())
    return h.hexdigest()[:12]


def use_app_requirements(requirements_path):
    """Layer the app's pip requirements file onto every environment from now on (None: no
    layer), so the servers can import what the app imports."""
    APP_LAYER.clear()
    if requirements_path:
        APP_LAYER.update(path=os.path.abspath(requirements_path),
                         text=_read(requirements_path) or b"")


def layer_key(env):
    """Hash of the environment's key (its lock, requirements, Python) and the app's file."""
    return hashlib.sha256(key(env).encode() + APP_LAYER["text"]).hexdigest()[:12]


def app_requirement_names():
    """The distributions the app's requirements file names (PEP 503 form), in its order."""
    from packaging.requirements import InvalidRequirement, Requirement

    names = []
    for line in APP_LAYER.get("text", b"").decode("utf-8", "replace").splitlines():
        line = line.split(" #", 1)[0].strip()
        if not line or line.startswith(("#", "-")):
            continue
        with contextlib.suppress(InvalidRequirement):
            names.append(re.sub(r"[-_.]+", "-", Requirement(line).name).lower())
    return list(dict.fromkeys(names))


def named_requirement(message):
    """The first of the app's requirements a build error names (uv names what it cannot
    resolve), or ""."""
    text = re.sub(r"[-_.]+", "-", message.lower())
    return next((n for n in app_requirement_names()
                 if re.search(rf"(?<![\w-]){re.escape(n)}(?![\w-])", text)), "")


def _own(env):
    """True when the environment is the harness's own ``.venv`` as it is (no app layer)."""
    return env.harness and not APP_LAYER


def path(env):
    base = os.path.join(ENVS_DIR, f"{env.name}-{key(env)}")
    return f"{base}-app-{layer_key(env)}" if APP_LAYER else base


def python(env):
    """The interpreter of an environment (built or not)."""
    if _own(env):
        return sys.executable
    return os.path.join(path(env), "bin", "python")


def bin_path(env, script):
    """A console script or binary installed in the environment (e.g. ``uwsgi``)."""
    if _own(env):
        return os.path.join(os.path.dirname(sys.executable), script)
    return os.path.join(path(env), "bin", script)


def is_built(env):
    return _own(env) or os.path.exists(os.path.join(path(env), MARKER))


def state(env):
    """``("ready", "")``, ``("buildable", how)`` or ``("unavailable", "reason: fix")``."""
    if _own(env):
        return "ready", ""
    unmet = missing_needs(env.needs)
    if unmet:
        return "unavailable", f"{unmet[0]}: {unmet[1]}"
    if is_built(env):
        return "ready", ""
    if path(env) in FAILED:
        return "unavailable", f"building it failed: {FAILED[path(env)]}"
    if not uv_bin():
        return "unavailable", "uv not found: pip install uv (or make .venv/.installed)"
    how = "built" if os.path.exists(env.lock_path) else "locked and built"
    return "buildable", f"{how} on first use, or now: python -m bench envs {env.name}"


# --------------------------------------------------------------------------- running uv

def _run(argv, log_path, timeout, env=None, stdin_path=None):
    """A bounded command through the lifecycle (own group, killed in ``finally``)."""
    with open(log_path, "a") as log:
        log.write(f"\n$ {' '.join(argv)}\n")
    offset = os.path.getsize(log_path)
    if stdin_path:
        with open(stdin_path, "rb") as stdin:
            proc = processes.spawn(argv, log_path, env=env, stdin=stdin)
    else:
        proc = processes.spawn(argv, log_path, env=env)
    try:
        code = proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        raise BuildError(f"{os.path.basename(argv[0])} {argv[1]} took over {timeout:g} s "
                         f"(log: {log_path})") from None
    finally:
        processes.kill_group(proc, grace=1.0)
    if code != 0:
        raise BuildError(f"{' '.join(os.path.basename(a) for a in argv[:3])} "
                         f"{processes.exit_description(code)}: "
                         f"{processes.stderr_note(log_path, offset)} (log: {log_path})")


def _uv_env():
    env = dict(os.environ)
    env.setdefault("UV_PYTHON_DOWNLOADS", "never")   # the machine's Python, never a download
    env.pop("VIRTUAL_ENV", None)
    return env


@contextlib.contextmanager
def _file_lock(name):
    os.makedirs(ENVS_DIR, exist_ok=True)
    with open(os.path.join(ENVS_DIR, f".{name}.lock"), "w") as f:
        deadline = time.monotonic() + BUILD_TIMEOUT_S
        while True:
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise BuildError(f"environment {name!r} is locked by another build for "
                                     f"over {BUILD_TIMEOUT_S:g} s") from None
                time.sleep(0.2)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def compile_lock(env, log=None, offline=False):
    """(Re)write the environment's lock with ``uv pip compile``; returns its path."""
    uv = uv_bin()
    if not uv:
        raise BuildError("uv not found: pip install uv")
    os.makedirs(ENVS_DIR, exist_ok=True)
    os.makedirs(os.path.dirname(env.lock_path), exist_ok=True)
    log_path = os.path.join(ENVS_DIR, f"{env.name}.log")
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    with tempfile.TemporaryDirectory(dir=ENVS_DIR) as tmp:
        stdin_path = None
        if env.harness:
            source, extra = os.path.join(ROOT, "pyproject.toml"), ["--extra", "test"]
        else:   # from stdin, so the lock's annotations name no temporary path
            source, extra = "-", []
            stdin_path = os.path.join(tmp, f"{env.name}.in")
            with open(stdin_path, "w") as f:
                f.write("\n".join(env.requirements) + "\n")
        out = os.path.join(tmp, "lock.txt")
        if os.path.exists(env.lock_path):  # uv keeps the versions an existing lock pins
            shutil.copyfile(env.lock_path, out)
        _run([uv, "pip", "compile", "--quiet", "--python-version", version,
              "--custom-compile-command", COMPILE_COMMAND, *extra,
              *(["--offline"] if offline else []), source, "-o", out],
             log_path, LOCK_TIMEOUT_S, env=_uv_env(), stdin_path=stdin_path)
        with open(out) as f:   # the same lock from any working directory
            text = re.sub(r"\([^()\n]*pyproject\.toml\)", "(pyproject.toml)", f.read())
    if _read(env.lock_path) != text.encode():
        tmp_path = env.lock_path + ".tmp"
        with open(tmp_path, "w") as f:
            f.write(text)
        os.replace(tmp_path, env.lock_path)
        if log:
            log(f"envs: wrote {os.path.relpath(env.lock_path, ROOT)}")
    elif log:
        log(f"envs: {os.path.relpath(env.lock_path, ROOT)} unchanged")
    return env.lock_path


def ensure(env, log=None, offline=False):
    """Build the environment unless it is built; returns (python, seconds spent building).

    Raises BuildError (one line) when it cannot be built."""
    if is_built(env):
        return python(env), 0.0
    unmet = missing_needs(env.needs)
    if unmet:
        raise BuildError(f"{unmet[0]}: {unmet[1]}")
    uv = uv_bin()
    if not uv:
        raise BuildError("uv not found: pip install uv")
    started = time.perf_counter()
    with _file_lock(env.name):
        if not os.path.exists(env.lock_path):
            if log:
                log(f"envs: {env.name}: no lock yet, compiling one (commit it)")
            compile_lock(env, log=log, offline=offline)
        target = path(env)
        if os.path.exists(os.path.join(target, MARKER)):   # built while we waited
            return python(env), 0.0
        if log:
            log(f"envs: building {env.name} in {os.path.relpath(target, ROOT)} ...")
        shutil.rmtree(target, ignore_errors=True)
        log_path = target + ".log"
        with contextlib.suppress(OSError):
            os.unlink(log_path)
        try:
            _run([uv, "venv", "--quiet", "--python", base_python(), target], log_path,
                 LOCK_TIMEOUT_S, env=_uv_env())
            install = [uv, "pip", "install", "--quiet", "--python", python(env),
                       *_install_sources(env, target)]
            try:   # the lock pins exact versions: uv's cache first, the index only if needed
                _run(install + ["--offline"], log_path, BUILD_TIMEOUT_S, env=_uv_env())
            except BuildError:
                if offline:
                    raise
                _run(install, log_path, BUILD_TIMEOUT_S, env=_uv_env())
        except BaseException:
            shutil.rmtree(target, ignore_errors=True)
            raise
        seconds = time.perf_counter() - started
        layer = dict(app_requirements=APP_LAYER["path"], layer_key=layer_key(env)) \
            if APP_LAYER else {}
        with open(os.path.join(target, MARKER), "w") as f:
            json.dump(dict(env.as_dict(), **layer, python=python_version(), key=key(env),
                           built_utc=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                           build_s=round(seconds, 3), offline=offline), f, indent=2)
    if log:
        log(f"envs: built {env.name} in {seconds:.1f} s")
    return python(env), seconds


def _install_sources(env, target):
    """What ``uv pip install`` installs: the lock, or (with the app's layer) the environment's
    requirements constrained by its lock plus the app's requirements file."""
    if not APP_LAYER:
        return ["-r", env.lock_path]
    wanted = os.path.join(target, "bench-requirements.in")
    with open(wanted, "w") as f:
        f.write("\n".join(env.requirements) + "\n")
    return ["-r", wanted, "-c", env.lock_path, "-r", APP_LAYER["path"]]


def environment_versions(env):
    """``{distribution: version}`` of everything installed in the environment ({} if unbuilt).

    Read from the environment's site-packages without starting its interpreter."""
    if _own(env):
        dists = metadata.distributions()
    else:
        if not is_built(env):
            return {}
        version = f"python{sys.version_info.major}.{sys.version_info.minor}"
        site = os.path.join(path(env), "lib", version, "site-packages")
        dists = metadata.distributions(path=[site])
    out = {}
    for dist in dists:
        name = dist.metadata["Name"]
        if name:   # PEP 503 names, as in the locks: zope.event -> zope-event
            out[re.sub(r"[-_.]+", "-", name).lower()] = dist.version
    return dict(sorted(out.items()))


def built_info(env):
    """What the marker says about a built environment (build time, key), or {}."""
    if _own(env):
        return dict(path=os.path.dirname(os.path.dirname(sys.executable)), harness=True)
    try:
        with open(os.path.join(path(env), MARKER)) as f:
            info = json.load(f)
    except (OSError, ValueError):
        return {}
    info["path"] = path(env)
    return info


def prepare(envs, log=None):
    """Build every environment of ``envs`` that can be built; returns
    ``{name: {"python", "built_now_s", "error"}}`` (error "" when ready)."""
    out = {}
    for env in envs:
        st, why = state(env)
        if st == "unavailable":
            out[env.name] = dict(python=None, built_now_s=0.0, error=why)
            continue
        try:
            py, seconds = ensure(env, log=log)
            out[env.name] = dict(python=py, built_now_s=round(seconds, 3), error="")
        except BuildError as exc:
            FAILED[path(env)] = str(exc)
            out[env.name] = dict(python=None, built_now_s=0.0, error=str(exc))
    return out


def prepare_for_run(variants, log=None):
    """Build the environments ``variants`` run in (first use) and describe them for meta.json:
    ``(packages, records)``: every installed version per environment, and per environment its
    requirement set, lock, path, Python, build time and any build error."""
    envs = {v.environment: v.environment_spec for v in variants}
    built = prepare([e for e in envs.values() if not _own(e)], log=log)
    packages, records = {}, {}
    for name, env in envs.items():
        if not _own(env):
            packages[name] = environment_versions(env)
        record = env.as_dict()
        record.update(built_info(env))
        record.update(built.get(name, {}))
        if APP_LAYER:   # the versions the app's own requirements got in this environment
            versions = environment_versions(env)
            record["app_requirements_versions"] = {n: versions.get(n)
                                                   for n in app_requirement_names()}
        records[name] = record
    return packages, records
