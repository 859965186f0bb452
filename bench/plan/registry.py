"""Variants as data: load and validate servers/variants.toml, resolve groups.

Validation is strict (unknown keys, missing fields, unknown launcher or patch, groups naming
unknown variants) so a typo is one clear error line instead of a confusing benchmark.
"""
import importlib.util
import json
import os
import sys
import tomllib
from dataclasses import dataclass, field

from bench import ROOT
from bench.errors import UsageError

DEFAULT_PATH = os.path.join(ROOT, "servers", "variants.toml")
LAUNCHERS = {"app.run", "socketio.run"}
PATCHES = {"none", "eventlet", "gevent"}
REQUIRED = {"description", "launcher", "patch", "environment"}
ALLOWED = REQUIRED | {"socketio_kwargs", "run_kwargs"}
TOP_LEVEL = {"environments", "groups", "variants"}


@dataclass(frozen=True)
class Variant:
    name: str
    description: str
    launcher: str
    patch: str
    environment: str
    socketio_kwargs: dict = field(default_factory=dict)
    run_kwargs: dict = field(default_factory=dict)

    def argv(self, port, host="127.0.0.1", app=None):
        """Command that starts this variant on ``host:port`` (see servers/launch.py)."""
        spec = dict(launcher=self.launcher, socketio_kwargs=self.socketio_kwargs,
                    run_kwargs=self.run_kwargs, host=host, port=port, app=app)
        return [python_for(self.environment), os.path.join(ROOT, "servers", "launch.py"),
                self.patch, json.dumps(spec)]

    def unavailable_reason(self):
        """Why this variant cannot run here, or "" when it can."""
        if self.environment != "default":
            return f"environment {self.environment!r} is not built by this harness yet"
        for module in {"eventlet": ["eventlet"], "gevent": ["gevent"]}.get(self.patch, []) + \
                [m for m in [self.socketio_kwargs.get("async_mode")] if m in ("eventlet", "gevent")]:
            if importlib.util.find_spec(module) is None:
                return f"{module} is not installed"
        return ""


def python_for(environment):
    """The interpreter of a requirement set; ``default`` is the harness's own virtualenv."""
    return sys.executable


@dataclass(frozen=True)
class Registry:
    variants: dict
    groups: dict
    environments: dict
    path: str

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
    environments = data.get("environments", {})
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
        if spec["environment"] not in environments:
            _fail(path, f"variant {name!r} names unknown environment {spec['environment']!r}")
        for key in ("socketio_kwargs", "run_kwargs"):
            if not isinstance(spec.get(key, {}), dict):
                _fail(path, f"variant {name!r}: {key} must be a table")
        variants[name] = Variant(name=name, **spec)
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
    return Registry(variants, groups, environments, path)
