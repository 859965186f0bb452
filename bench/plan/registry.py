"""Variants as data: load and validate servers/variants.toml, resolve groups.

Validation is strict (unknown keys, missing fields, unknown launcher, patch or worker class,
groups naming unknown variants) so a typo is one clear error line instead of a confusing
benchmark. Each variant runs in the environment it names (bench/environments.py).
"""
import importlib.util
import json
import os
import tomllib
from dataclasses import dataclass, field

from bench import ROOT
from bench.errors import UsageError
from bench import environments

DEFAULT_PATH = os.path.join(ROOT, "servers", "variants.toml")
DEV_LAUNCHERS = {"app.run", "socketio.run"}        # servers/launch.py
SERVER_LAUNCHERS = {"gunicorn", "uvicorn", "uwsgi"}  # production servers, their own CLIs
LAUNCHERS = DEV_LAUNCHERS | SERVER_LAUNCHERS
PATCHES = {"none", "eventlet", "gevent"}
# gunicorn worker classes a variant may name (-k): the built-in ones and gevent-websocket's.
WORKER_CLASSES = {"sync", "gthread", "gevent", "eventlet", "tornado",
                  "geventwebsocket.gunicorn.workers.GeventWebSocketWorker"}
REQUIRED = {"description", "launcher", "patch", "environment"}
ALLOWED = REQUIRED | {"socketio_kwargs", "run_kwargs", "worker_class", "workers",
                      "server_args", "needs", "topology"}
ENV_REQUIRED = {"requirements"}
ENV_ALLOWED = ENV_REQUIRED | {"harness", "needs", "description"}
TOP_LEVEL = {"environments", "groups", "variants"}
SPEC_VAR = "BENCH_APP_SPEC"   # servers/wsgi.py and servers/asgi_app.py read it


@dataclass(frozen=True)
class Variant:
    """One deployment to measure, as servers/variants.toml declares it."""
    name: str
    description: str
    launcher: str
    patch: str
    environment: str
    socketio_kwargs: dict = field(default_factory=dict)
    run_kwargs: dict = field(default_factory=dict)
    worker_class: str = ""
    workers: int = 1
    server_args: list = field(default_factory=list)
    needs: list = field(default_factory=list)
    topology: dict = field(default_factory=dict)
    env: dict = field(default_factory=dict)      # the environment's declaration, for meta

    @property
    def environment_spec(self):
        """The environment this variant's servers run in."""
        e = self.env
        return environments.Environment(
            name=self.environment, requirements=tuple(e.get("requirements", ())),
            harness=bool(e.get("harness", self.environment == "default")),
            needs=tuple(e.get("needs", ())),
            locks_dir=e.get("locks_dir", os.path.join(ROOT, "servers", "locks")))

    def argv(self, port, host="127.0.0.1", app=None, knobs=None):
        """Command that starts this variant on ``host:port``, run with its environment."""
        env = self.environment_spec
        py = environments.python(env)
        if self.launcher in DEV_LAUNCHERS:
            spec = dict(launcher=self.launcher, socketio_kwargs=self.socketio_kwargs,
                        run_kwargs=self.run_kwargs, host=host, port=port, app=app,
                        knobs=knobs or {})
            return [py, os.path.join(ROOT, "servers", "launch.py"), self.patch,
                    json.dumps(spec)]
        spec = json.dumps(dict(socketio_kwargs=self.socketio_kwargs, app=app,
                               **({"knobs": knobs} if knobs else {})),
                          separators=(",", ":"))
        if self.launcher == "gunicorn":
            control = ["--no-control-socket"] if self._gunicorn_has_control_socket() else []
            return [py, "-m", "gunicorn", "-k", self.worker_class, "-w", str(self.workers),
                    "-b", f"{host}:{port}", *control, "--graceful-timeout", "2",
                    "--pythonpath", ROOT, "-e", f"{SPEC_VAR}={spec}", *self.server_args,
                    "servers.wsgi:app"]
        if self.launcher == "uwsgi":
            return [environments.bin_path(env, "uwsgi"),
                    "--ini", os.path.join(ROOT, "servers", "uwsgi.ini"),
                    "--http-socket", f"{host}:{port}",
                    "--processes", str(self.workers), "--pythonpath", ROOT,
                    "--env", f"{SPEC_VAR}={spec}", "--module", "servers.wsgi:app",
                    "--need-app", "--die-on-term", "--disable-logging", "--show-config",
                    *self.server_args]
        if self.launcher == "uvicorn":
            workers = ["--workers", str(self.workers)] if self.workers > 1 else []
            # uvicorn has no option that sets the environment: env(1) does it when needed.
            prefix = ["env", f"{SPEC_VAR}={spec}"] if app or self.socketio_kwargs or knobs \
                else []
            return [*prefix, py, "-m", "uvicorn", "servers.asgi_app:app", "--host", host,
                    "--port", str(port), "--app-dir", ROOT, *workers, *self.server_args]
        raise ValueError(f"unknown launcher {self.launcher!r}")

    def _gunicorn_has_control_socket(self):
        """gunicorn >= 25.1 opens a control socket at one shared path: turn it off."""
        version = environments.environment_versions(self.environment_spec).get("gunicorn")
        if not version:
            return True
        parts = tuple(int(p) for p in version.split(".")[:2] if p.isdigit())
        return parts >= (25, 1)

    def availability(self):
        """``("ready"|"buildable"|"unavailable", reason)``; reason is one line with the fix."""
        unmet = environments.missing_needs(self.needs)
        if unmet:
            return "unavailable", f"{unmet[0]}: {unmet[1]}"
        env = self.environment_spec
        st, why = environments.state(env)
        if st != "ready":
            return st, why
        if env.harness:
            for module in {"eventlet": ["eventlet"], "gevent": ["gevent"]}.get(self.patch, []) + \
                    [m for m in [self.socketio_kwargs.get("async_mode")]
                     if m in ("eventlet", "gevent")]:
                if importlib.util.find_spec(module) is None:
                    return "unavailable", f"{module} is not installed: make .venv/.installed"
        return "ready", ""

    def unavailable_reason(self):
        """Why this variant cannot run now, or "" when it can (a buildable environment that
        is not built yet cannot run now: ``bench run`` builds it before its first step)."""
        st, why = self.availability()
        if st == "ready":
            return ""
        if st == "buildable":
            return f"environment {self.environment!r} is not built yet ({why})"
        return why


@dataclass(frozen=True)
class Registry:
    """Every environment, group and variant of a variants file."""
    variants: dict
    groups: dict
    environments: dict
    path: str

    def environment(self, name):
        """The Environment record of a declared environment."""
        return environments.from_table(name, self.environments[name], self.locks_dir)

    @property
    def locks_dir(self):
        """Where the committed requirement locks are (servers/locks beside the file)."""
        return os.path.join(os.path.dirname(os.path.abspath(self.path)), "locks")

    def select(self, names=None, group=None):
        """Variants by explicit names or by group (default group when neither is given)."""
        if names and group:
            raise UsageError("--variants and --group are exclusive; give one")
        if names:
            unknown = [n for n in names if n not in self.variants]
            if unknown:
                raise UsageError(f"unknown variant {unknown[0]!r} (known: "
                                 f"{', '.join(sorted(self.variants))})")
            return [self.variants[n] for n in dict.fromkeys(names)]
        group = group or "default"
        if group not in self.groups:
            raise UsageError(f"unknown group {group!r} (known: {', '.join(sorted(self.groups))})")
        return [self.variants[n] for n in self.groups[group]]


def _fail(path, message):
    raise UsageError(f"malformed {os.path.basename(path)}: {message}")


def load(path=DEFAULT_PATH):
    """Read and check a variants file; a bad one is one clear UsageError line."""
    try:
        with open(path, "rb") as f:
            data = tomllib.load(f)
    except OSError as exc:
        raise UsageError(f"cannot read {path}: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        _fail(path, str(exc))
    unknown = set(data) - TOP_LEVEL
    if unknown:
        _fail(path, f"unknown top-level key {sorted(unknown)[0]!r}")
    for section in TOP_LEVEL:
        if not isinstance(data.get(section, {}), dict):
            _fail(path, f"{section} must be a table")
    envs = data.get("environments", {})
    locks_dir = os.path.join(os.path.dirname(os.path.abspath(path)), "locks")
    for name, spec in envs.items():
        _check_environment(path, name, spec)
    if sum(bool(spec.get("harness", name == "default")) for name, spec in envs.items()) > 1:
        _fail(path, "only one environment can be the harness's own (harness = true)")
    variants = {}
    for name, spec in data.get("variants", {}).items():
        if not isinstance(spec, dict):
            _fail(path, f"variant {name!r} must be a table")
        extra = set(spec) - ALLOWED
        if extra:
            _fail(path, f"variant {name!r} has unknown key {sorted(extra)[0]!r}")
        missing = REQUIRED - set(spec)
        if missing:
            _fail(path, f"variant {name!r} is missing {sorted(missing)[0]!r}")
        if spec["launcher"] not in LAUNCHERS:
            _fail(path, f"variant {name!r} has unknown launcher {spec['launcher']!r}")
        if spec["patch"] not in PATCHES:
            _fail(path, f"variant {name!r} has unknown patch {spec['patch']!r}")
        if spec["environment"] not in envs:
            _fail(path, f"variant {name!r} names unknown environment {spec['environment']!r}")
        for key in ("socketio_kwargs", "run_kwargs", "topology"):
            if not isinstance(spec.get(key, {}), dict):
                _fail(path, f"variant {name!r}: {key} must be a table")
        _check_server_keys(path, name, spec)
        env = dict(envs[spec["environment"]], locks_dir=locks_dir)
        variants[name] = Variant(name=name, env=env, **spec)
    if not variants:
        _fail(path, "no variants declared")
    groups = data.get("groups", {})
    for group, members in groups.items():
        if not isinstance(members, list) or not members:
            _fail(path, f"group {group!r} must be a non-empty list of variant names")
        for member in members:
            if member not in variants:
                _fail(path, f"group {group!r} names unknown variant {member!r}")
    if "default" not in groups:
        _fail(path, "no default group")
    return Registry(variants, groups, envs, path)


def _string_list(value):
    return isinstance(value, list) and all(isinstance(v, str) and v for v in value)


def _check_environment(path, name, spec):
    if not isinstance(spec, dict):
        _fail(path, f"environment {name!r} must be a table")
    extra = set(spec) - ENV_ALLOWED
    if extra:
        _fail(path, f"environment {name!r} has unknown key {sorted(extra)[0]!r}")
    if "requirements" not in spec:
        _fail(path, f"environment {name!r} is missing 'requirements'")
    if not isinstance(spec["requirements"], list) or not all(
            isinstance(r, str) and r.strip() for r in spec["requirements"]):
        _fail(path, f"environment {name!r}: requirements must be a list of requirement strings")
    if not isinstance(spec.get("harness", False), bool):
        _fail(path, f"environment {name!r}: harness must be true or false")
    if not spec.get("harness", name == "default") and not spec["requirements"]:
        _fail(path, f"environment {name!r}: requirements must not be empty")
    _check_needs(path, f"environment {name!r}", spec.get("needs", []))
    if not all(c.isalnum() or c in "-_." for c in name):
        _fail(path, f"environment name {name!r} may hold only letters, digits, - _ .")


def _check_needs(path, where, needs):
    if not _string_list(needs):
        _fail(path, f"{where}: needs must be a list of names")
    for need in needs:
        if need not in environments.NEEDS:
            _fail(path, f"{where} needs unknown {need!r} (known: "
                        f"{', '.join(sorted(environments.NEEDS))})")


def _check_server_keys(path, name, spec):
    """The production-server keys: only where they mean something, and well-formed."""
    launcher = spec["launcher"]
    where = f"variant {name!r}"
    if launcher == "gunicorn":
        if "worker_class" not in spec:
            _fail(path, f"{where} is missing 'worker_class' (gunicorn -k)")
        if spec["worker_class"] not in WORKER_CLASSES:
            _fail(path, f"{where} has unknown worker class {spec['worker_class']!r} (known: "
                        f"{', '.join(sorted(WORKER_CLASSES))})")
    elif "worker_class" in spec:
        _fail(path, f"{where}: worker_class is for launcher 'gunicorn' only")
    if launcher in SERVER_LAUNCHERS:
        if spec["patch"] != "none":
            _fail(path, f"{where}: patch must be 'none' under {launcher} (its worker or "
                        "server_args do the patching)")
        if spec.get("run_kwargs"):
            _fail(path, f"{where}: run_kwargs is for app.run/socketio.run only")
    else:
        for key in ("workers", "server_args"):
            if key in spec:
                _fail(path, f"{where}: {key} is for launchers "
                            f"{', '.join(sorted(SERVER_LAUNCHERS))} only")
    workers = spec.get("workers", 1)
    if not isinstance(workers, int) or isinstance(workers, bool) or not 1 <= workers <= 64:
        _fail(path, f"{where}: workers must be a whole number from 1 to 64")
    if not _string_list(spec.get("server_args", [])):
        _fail(path, f"{where}: server_args must be a list of strings")
    _check_needs(path, where, spec.get("needs", []))
