"""``python -m bench init``: a commented scenario file written from the app's own handlers.

The app is imported once in a child interpreter (``servers/userapp.py handlers``, in the
environment its requirements are layered onto, with ``--app-env``), which reports every
namespace and event handler with what its source says. Each handler becomes one
``[[messages]]`` table: one placeholder argument per parameter (a dict of the keys the handler
reads from its first argument, where it reads any), ``reply = "ack"`` where it returns a value,
``reply = "event:NAME"`` with a TODO where it emits to the sender instead. The text is checked
with the scenario file's own validator before it is written, and an existing file is never
overwritten. The format is docs/DESIGN.md's "The user's own traffic".
"""
import json
import os
import re
import sys
import tomllib

from bench.errors import UsageError
from bench import environments
from bench.plan import ownapp, traffic
from bench.paths import server_module

_userapp = server_module("userapp")  # the one parser of --app specs, shared with the servers
AppError, split_spec = _userapp.AppError, _userapp.split_spec

PLACEHOLDER = "TODO"


def _key(name):
    return name if re.fullmatch(r"[A-Za-z0-9_-]+", name) else json.dumps(name)


def _args(info):
    """The TOML array of placeholder arguments for a handler."""
    values = []
    for i, _ in enumerate(info["params"]):
        if i == 0 and info["keys"]:
            values.append("{ " + ", ".join(f"{_key(k)} = \"{PLACEHOLDER}\""
                                           for k in info["keys"]) + " }")
        else:
            values.append(json.dumps(PLACEHOLDER))
    return "[" + ", ".join(values) + "]"


def _reply(info):
    """``(reply, comment)`` for a handler: how it answers the sender, as far as its source
    tells."""
    if not info["source"]:
        return "ack", "TODO: its source could not be read; check how it answers"
    if info["returns"]:
        return "ack", "it returns a value: the ack carries it"
    to_sender = [e["event"] for e in info["emits"] if e["to_sender"] and e["event"]]
    if to_sender:
        return f"event:{to_sender[0]}", (
            f"TODO: it emits {to_sender[0]!r} instead of returning; check that this event "
            "answers the sender (put \"{seq}\" in args if the reply carries it back)")
    others = sorted({e["event"] or "(a computed name)" for e in info["emits"]})
    if others:
        return "ack", (f"TODO: it returns nothing and emits {', '.join(others)} to others "
                       "(to=/room=/broadcast, or socketio.emit): only the empty ack answers "
                       "the sender")
    return "ack", "it returns nothing: the ack (empty) comes once the handler is done"


def _message(event, info, comment_out=False):
    """One ``[[messages]]`` table for a handler (every line commented when ``comment_out``)."""
    reply, why = _reply(info)
    params = ", ".join(info["params"]) + (", *args" if info["varargs"] else "")
    lines = [f"# {info['function']}({params}): {len(info['params'])} argument"
             + ("s" * (len(info["params"]) != 1))
             + (" (and any number more)" if info["varargs"] else ""),
             "[[messages]]", f"event = {json.dumps(event)}", f"args = {_args(info)}"
             + (f"   # TODO: the values (it reads {', '.join(info['keys'])})"
                if info["keys"] else "   # TODO: the values" * bool(info["params"])),
             f"reply = {json.dumps(reply)}   # {why}", "weight = 1"]
    return "\n".join(("# " + ln if comment_out and not ln.startswith("#") else ln)
                     for ln in lines)


def measured(handlers):
    """The namespace a scenario file drives (one per file): the one with the most event
    handlers, "/" first among equals."""
    counted = {ns: len(events_of(handlers[ns])) for ns in handlers}
    return max(sorted(counted, key=lambda ns: (ns != "/", ns)), key=lambda ns: counted[ns])


def events_of(events):
    return {e: i for e, i in events.items() if e not in traffic.RESERVED and e != "*"}


def render(spec, info, out):
    """The scenario file's text for the app ``info`` describes (``userapp.py handlers``)."""
    handlers = {ns: ev for ns, ev in info["handlers"].items() if events_of(ev)}
    if not handlers:
        raise UsageError(f"init: --app {spec} has no event handlers (only connect/disconnect "
                         "or none): there is no traffic to describe")
    ns = measured(handlers)
    others = sorted(n for n in handlers if n != ns)
    head = [f"# The traffic of --app {spec}, written by `python -m bench init` from its "
            "handlers.",
            "# Format: docs/DESIGN.md, \"The user's own traffic\". Fill in the TODOs, set the "
            "weights, then:",
            f"#   python -m bench run --app {json.dumps(spec)} --scenario-file {out}",
            "# Each [[messages]] table is one handler of the app; `args` holds one placeholder "
            "per parameter.",
            "# A string \"{pad:N}\" in args becomes N bytes; \"{seq}\" becomes each message's "
            "unique id.",
            "# Handlers that set a connection up (join a room, log in) belong in [[setup]] "
            "(event, args):",
            "# sent once per connection, ack awaited, before the clock starts.",
            f"namespace = {json.dumps(ns)}"
            + (f"   # the app also serves {', '.join(others)}: their handlers are at the end, "
               "commented (one namespace per file)" if others else "")]
    connect = info["handlers"].get(ns, {}).get("connect")
    if connect and connect["params"]:
        keys = connect["keys"] or ["token"]
        head += ["", f"# {connect['function']}({', '.join(connect['params'])}) takes the auth "
                 "payload: TODO, give it", "# [connect]",
                 "# auth = { " + ", ".join(f"{_key(k)} = \"{PLACEHOLDER}\"" for k in keys)
                 + " }"]
    if "*" in info["handlers"].get(ns, {}):
        head.append("# a catch-all handler (\"*\") receives any event not listed here")
    body = [_message(e, i) for e, i in sorted(events_of(handlers[ns]).items())]
    for other in others:
        body.append(f"# ---- namespace {other!r}: to measure it, copy this file with "
                    f"namespace = {json.dumps(other)} and these tables uncommented")
        body += [_message(e, i, comment_out=True)
                 for e, i in sorted(events_of(handlers[other]).items())]
    return "\n".join(head) + "\n\n" + "\n\n".join(body) + "\n"


def run(args, registry):
    """Write the scenario file for ``--app``; 0, or UsageError (one line) on bad input."""
    out = args.out
    if os.path.lexists(out):
        raise UsageError(f"init: {out} exists; it is never overwritten (give --out NEW.toml)")
    try:
        split_spec(args.app)
    except AppError as exc:
        raise UsageError(str(exc)) from None
    app_env = ownapp.parse_app_env(args.app_env)
    found, how = ownapp.requirements_file(args)
    environments.use_app_requirements(found)
    harness = ownapp.harness_environment(registry)
    if found:
        ownapp.build_layer(harness, None)
    info = ownapp.check_app(args.app, environments.python(harness), app_env,
                            command="handlers")
    if info is None:
        raise UsageError(f"init: importing --app {args.app} did not finish in time")
    if found:
        print(f"init: app requirements: {found} ({how})", file=sys.stderr, flush=True)
    text = render(args.app, info, out)
    traffic.validate(tomllib.loads(text), out, text)   # what `run --scenario-file` accepts
    try:
        with open(out, "x") as f:   # "x": an existing file is never replaced
            f.write(text)
    except FileExistsError:
        raise UsageError(f"init: {out} exists; it is never overwritten") from None
    except OSError as exc:
        raise UsageError(f"init: cannot write {out}: {exc.strerror}") from None
    count = sum(len(events_of(e)) for e in info["handlers"].values())
    print(f"init: wrote {out} ({count} handlers); fill in its TODOs, then: python -m bench "
          f"run --app {json.dumps(args.app)} --scenario-file {out}")
    return 0
