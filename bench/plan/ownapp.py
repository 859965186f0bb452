"""The user's own app, traffic and server knobs, checked before anything starts.

``prepare`` turns ``--app``, ``--scenario-file`` and the server knobs into what the plan
carries (``traffic``, ``knobs``, ``app_override`` for meta.json), or fails with one line:

* ``--app``: imported once in a child interpreter (``servers/userapp.py check``, no patching)
  so a missing module, a missing attribute or an object that is not a Flask app with a
  SocketIO is refused before any server starts; the events and namespaces it declares are
  checked against the traffic (or against ``echo`` without a scenario file).
* variants that cannot serve a user's Flask app (``seed-*`` are fixed snippets,
  ``uvicorn-asgi`` is python-socketio's own ASGI server) are refused when named, skipped with a
  note when they come from a group.
* ``--app-requirements FILE`` (default: a ``requirements.txt`` beside the app's file or in
  its package, said on stderr) is layered onto every environment the run uses
  (bench/environments.py), built here, so a requirement that cannot be installed is
  one line naming it before any server starts; the app is then checked in the layered
  environment.
* ``--app-env KEY=VALUE`` (repeatable) is the servers' environment (and the check's); meta.json
  records it with the values of secret-looking keys masked (``masked``).
* knobs reach every variant server as ``SocketIO(...)`` keyword arguments.
"""
import json
import os
import subprocess
import sys
import tempfile

from bench import ROOT
from bench.errors import UsageError
from bench import environments
from bench.plan import traffic as traffic_mod
from bench.paths import server_module

_userapp = server_module("userapp")  # the one parser of --app specs, shared with the servers
AppError, split_spec = _userapp.AppError, _userapp.split_spec

TRAFFIC_SCENARIOS = ("echo", "rate", "sweep", "payload")
NEEDS = {"echo": ["echo"], "rate": ["echo"], "sweep": ["echo"], "payload": ["echo"],
         "fanout": ["join", "broadcast"], "blocking": ["echo", "block"], "connect": []}
CHECK_TIMEOUT_S = 60
WS_COMPRESSION_NOTE = (
    "python-engineio has no WebSocket compression switch: its WebSocket servers "
    "(simple-websocket, eventlet) negotiate permessage-deflate only when the client offers it, "
    "and neither the lean client nor the stock client does; so WebSocket traffic is never "
    "compressed here and --ws-compression on is refused (long-polling responses follow "
    "engineio's http_compression, on by default above 1 KiB)")


SECRET_WORDS = ("SECRET", "TOKEN", "PASSWORD", "KEY")
REQUIREMENTS_NAME = "requirements.txt"


def parse_app_env(values):
    """``{KEY: VALUE}`` of the ``--app-env KEY=VALUE`` options (the last of a key wins)."""
    env = {}
    for item in values or ():
        name, sep, value = item.partition("=")
        if not sep or not name.strip() or "\0" in item:
            raise UsageError(f"--app-env takes KEY=VALUE, got {item!r}")
        env[name.strip()] = value
    return env


def masked(env):
    """``env`` as meta.json records it: values of keys naming a secret become "***"."""
    return {k: "***" if any(w in k.upper() for w in SECRET_WORDS) else v
            for k, v in (env or {}).items()}


def app_files(spec):
    """The folders searched for the app's requirements, nearest first: a file's folder; for a
    module (importable from the current directory), its package's folder or its file's, then
    each parent up to the current directory."""
    target, _, _ = split_spec(spec)
    if target.endswith(".py") or "/" in target or os.sep in target:
        return [os.path.dirname(os.path.abspath(target))]
    root = os.getcwd()
    parts = target.split(".")
    here = os.path.join(root, *parts)
    if not os.path.isfile(os.path.join(here, "__init__.py")):
        if not os.path.isfile(here + ".py"):
            return []
        parts = parts[:-1]
    return [os.path.join(root, *parts[:n]) for n in range(len(parts), -1, -1)]


def requirements_file(args):
    """``(path, how)`` of the app's requirements (``--app-requirements`` or one found beside
    the app), or ``(None, "")``; UsageError when the file given does not exist."""
    given = getattr(args, "app_requirements", None)
    if given:
        if not os.path.isfile(given):
            raise UsageError(f"--app-requirements: no such file {given!r}")
        return given, "--app-requirements"
    for folder in app_files(args.app):
        candidate = os.path.join(folder, REQUIREMENTS_NAME)
        if os.path.isfile(candidate):
            return os.path.relpath(candidate), "found beside the app; --app-requirements " \
                "FILE chooses another"
    return None, ""


def harness_environment(registry):
    """The environment the harness itself runs in (where the app is checked)."""
    return next(e for e in map(registry.environment, registry.environments) if e.harness)


def build_layer(env, log):
    """Build ``env`` with the app's requirements; UsageError naming what cannot be installed."""
    try:
        environments.ensure(env, log=log)
    except environments.BuildError as exc:
        name = environments.named_requirement(str(exc))
        what = f"cannot install {name!r}" if name else "cannot install its requirements"
        raise UsageError(f"--app-requirements {environments.APP_LAYER['path']}: {what} "
                         f"into the {env.name} environment: {exc}") from None


def layer_requirements(args, registry):
    """Layer the app's requirements onto every environment and build the harness's own
    (quietly: the app is checked there, and bad input stays one line); ``{file, how, names}``
    or {}."""
    found, how = requirements_file(args)
    environments.use_app_requirements(found)
    if not found:
        return {}
    if not getattr(args, "dry_run", False):  # a dry run installs nothing
        build_layer(harness_environment(registry), None)
    return dict(file=found, how=how, names=environments.app_requirement_names())


def build_variant_layers(requirements, registry, variants):
    """Say which requirements are layered, and build the layer of every environment
    ``variants`` use (those that cannot be built here are skipped: their rows say why)."""
    print(f"bench: app requirements: {requirements['file']} ({requirements['how']}); layered "
          "onto every environment", file=sys.stderr, flush=True)
    log = lambda text: print(text, file=sys.stderr, flush=True)  # noqa: E731
    for env in {registry.variants[n].environment: registry.variants[n].environment_spec
                for n in variants}.values():
        if environments.state(env)[0] != "unavailable":
            build_layer(env, log)


def fixed_code_reason(variant):
    """Why ``variant`` cannot serve the user's app, or ""."""
    if variant.name.startswith("seed-"):
        return "it is the tutorial's snippet verbatim (fixed code)"
    if "uvicorn" in variant.name or "asgi" in variant.name or \
            "uvicorn" in variant.launcher or "asgi" in variant.launcher:
        return "it is python-socketio's own ASGI server, not a Flask app"
    return ""


def _on_off(name, value):
    if value is None:
        return None
    if value not in ("on", "off"):
        raise UsageError(f"--{name} takes on or off, got {value!r}")
    return value == "on"


def knobs_from(args):
    """SocketIO keyword arguments from the command line (only those given)."""
    knobs = {}
    handlers = _on_off("async-handlers", getattr(args, "async_handlers", None))
    if handlers is not None:
        knobs["async_handlers"] = handlers
    for name, key, low, high in (("ping-interval", "ping_interval", 0.01, 3600),
                                 ("ping-timeout", "ping_timeout", 0.01, 3600)):
        value = getattr(args, key, None)
        if value is not None:
            if not low <= value <= high:
                raise UsageError(f"--{name} must be in [{low:g}, {high:g}] seconds, "
                                 f"got {value:g}")
            knobs[key] = value
    size = getattr(args, "max_http_buffer_size", None)
    if size is not None:
        if not 1 <= size <= 1_000_000_000:
            raise UsageError(f"--max-http-buffer-size must be in [1, 1000000000] bytes, "
                             f"got {size}")
        knobs["max_http_buffer_size"] = size
    if _on_off("ws-compression", getattr(args, "ws_compression", None)):
        raise UsageError("--ws-compression on: " + WS_COMPRESSION_NOTE)
    return knobs


def check_app(spec, python=None, env=None, command="check"):
    """What ``servers/userapp.py check`` says about the app (events, namespaces, declared
    async mode and options); UsageError with its one line when it cannot be used; None when
    importing it outlasts the servers' ready deadline (the steps then say what it did).
    ``python``: the interpreter (the app's layered environment); ``env``: ``--app-env``."""
    from bench import processes

    argv = [python or sys.executable, os.path.join(ROOT, "servers", "userapp.py"), command,
            spec]
    with tempfile.TemporaryDirectory(prefix="bench-app-check-") as folder:
        err_path, out_path = os.path.join(folder, "stderr"), os.path.join(folder, "stdout")
        with open(out_path, "wb") as out:
            proc = processes.spawn(argv, err_path, env=dict(os.environ, **(env or {})),
                                   stdout=out)
        try:  # its own process group: whatever the app's import starts goes with it
            code = proc.wait(timeout=min(CHECK_TIMEOUT_S, processes.ready_timeout_default()))
        except subprocess.TimeoutExpired:
            print(f"bench: --app {spec}: importing it did not finish within the ready "
                  "deadline; not inspected", file=sys.stderr, flush=True)
            return None
        finally:
            processes.kill_group(proc, grace=1.0)
        with open(out_path, encoding="utf-8", errors="replace") as out, \
                open(err_path, encoding="utf-8", errors="replace") as err:
            stdout, stderr = out.read(), err.read()
    lines = [ln for ln in stderr.splitlines() if ln.strip()]
    if code != 0:
        last = lines[-1] if lines else f"the check exited with code {code}"
        raise UsageError(last.strip())
    try:
        return json.loads(stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        raise UsageError(f"--app {spec}: the app printed something unexpected on import") \
            from None


def _serves(info, namespace):
    return info["namespaces"] == "*" or namespace in info["namespaces"]


def _handles(info, namespace, event):
    events = info["events"].get(namespace, []) + info["events"].get("*", [])
    return event in events or "*" in events


def check_traffic_against_app(info, traffic, spec):
    ns = traffic["namespace"]
    if not _serves(info, ns):
        raise UsageError(f"--app {spec} does not serve namespace {ns!r} (it serves "
                         f"{', '.join(info['namespaces'])})")
    if ns not in info["events"] and "*" not in info["events"]:
        return  # a class-based namespace: its events are methods, checked at verification
    missing = [e for e in traffic_mod.events(traffic) if not _handles(info, ns, e)]
    if missing:
        known = ", ".join(info["events"].get(ns, [])) or "none"
        raise UsageError(f"--app {spec} has no handler for event {missing[0]!r} on namespace "
                         f"{ns!r} (it handles: {known})")


def prepare(args, registry, variants, scenarios, target):
    """(variants to run, options to add to the plan) for the user's app, traffic and knobs."""
    knobs = knobs_from(args)
    if target and knobs:
        raise UsageError("--target measures a running server; the server knobs "
                         f"({', '.join('--' + k.replace('_', '-') for k in knobs)}) "
                         "cannot reach it")
    traffic = None
    if getattr(args, "scenario_file", None):
        traffic = traffic_mod.load(args.scenario_file)
        other = [s for s in scenarios if s not in TRAFFIC_SCENARIOS]
        if other:
            raise UsageError(f"--scenario-file drives the {', '.join(TRAFFIC_SCENARIOS)} "
                             f"scenarios; {other[0]!r} sends the harness's own events")
        if "python-socketio" in str(getattr(args, "client", "") or "") or \
                "polling" in str(getattr(args, "transport", "") or ""):
            raise UsageError("--scenario-file traffic is driven by the lean client over "
                             "WebSocket only; drop --client python-socketio / --transport "
                             "polling")
        if "payload" in scenarios and not traffic_mod.has_pad(traffic):
            raise UsageError("the payload scenario with --scenario-file needs a \"{pad:N}\" "
                             "string in the [[messages]] args (it becomes each payload size)")
    extra = dict(knobs=knobs, server_knobs=dict(knobs), traffic=traffic,
                 scenario_file=getattr(args, "scenario_file", None))
    if getattr(args, "ws_compression", None) == "off":
        extra["server_knobs"]["ws_compression"] = "off (never negotiated here: see --help)"
    app_env = parse_app_env(getattr(args, "app_env", None))
    if not args.app:
        for flag, given in (("--app-env", app_env),
                            ("--app-requirements", getattr(args, "app_requirements", None))):
            if given:
                raise UsageError(f"{flag} is for your app's servers: it needs --app")
        return variants, extra
    try:
        split_spec(args.app)
    except AppError as exc:
        raise UsageError(str(exc)) from None
    extra["app_env"] = app_env
    refused = [(n, fixed_code_reason(registry.variants[n])) for n in variants
               if fixed_code_reason(registry.variants[n])]
    if refused and args.variants:
        name, why = refused[0]
        raise UsageError(f"--app cannot run under {name}: {why}")
    variants = [n for n in variants if n not in dict(refused)]
    if not variants:
        raise UsageError("--app: no variant of this group can serve a Flask app")
    requirements = layer_requirements(args, registry)
    harness = harness_environment(registry)
    unbuilt = bool(requirements) and not environments.is_built(harness)  # a dry run's
    if requirements and getattr(args, "dry_run", False):
        print(f"bench: --dry-run: would layer {requirements['file']} ("
              f"{', '.join(requirements['names']) or 'no named distributions'}) onto the "
              "environments of " + ", ".join(variants) + ("; the app is not imported before "
                                                          "they are built" if unbuilt else ""),
              file=sys.stderr, flush=True)
    info = None if unbuilt else check_app(args.app, environments.python(harness), app_env)
    if info is None:
        info = dict(async_mode="not inspected", declared_async_mode="not inspected",
                    options={}, events={}, namespaces="*")
    elif traffic:
        check_traffic_against_app(info, traffic, args.app)
    else:
        for scenario in scenarios:
            missing = [e for e in NEEDS.get(scenario, []) if not _handles(info, "/", e)]
            if missing:
                raise UsageError(f"--app {args.app} has no {missing[0]!r} handler, which the "
                                 f"{scenario} scenario sends; describe your own traffic with "
                                 "--scenario-file (see examples/chat.toml)")
    if requirements and not getattr(args, "dry_run", False):
        build_variant_layers(requirements, registry, variants)
    if refused:
        print(f"bench: --app skips {', '.join(n for n, _ in refused)} (fixed code, not your "
              "app)", file=sys.stderr, flush=True)
    forced = {n: dict(async_mode=registry.variants[n].socketio_kwargs.get("async_mode"),
                      launcher=registry.variants[n].launcher, patch=registry.variants[n].patch)
              for n in variants}
    declared = info.get("declared_async_mode")
    text = (f"{args.app}: its SocketIO (declared async_mode={declared!r}, picked "
            f"{info['async_mode']!r} on import) is re-initialised under each variant with the "
            "variant's async_mode (" + ", ".join(f"{n}: {f['async_mode']}"
                                                 for n, f in forced.items()) + ")"
            + (f" and the knobs {knobs}" if knobs else "")
            + "; monkey patching happens before the app is imported"
            + (f"; its requirements {requirements['file']} are layered onto every environment"
               if requirements else "")
            + ("; server environment " + ", ".join(f"{k}={v}" for k, v in
                                                   masked(app_env).items()) if app_env else ""))
    extra["app_override"] = dict(app=args.app, declared_async_mode=declared,
                                 import_async_mode=info["async_mode"],
                                 declared_options=info["options"], per_variant=forced,
                                 knobs=knobs, text=text, env=masked(app_env),
                                 requirements=requirements)
    return variants, extra

