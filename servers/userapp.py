"""The app a variant serves: the harness's own (servers/app.py) or the user's (``--app``).

One entry point for every launcher (``app.run``/``socketio.run`` in servers/launch.py, and the
production launchers that import an app object):

    from servers.userapp import build
    app, socketio = build(app_spec, socketio_kwargs, knobs)

* ``app_spec`` None: ``servers.app.create_app(**socketio_kwargs, **knobs)`` as declared.
* ``app_spec`` ``"module:attr"`` (importable from the current directory) or
  ``"path/to/file.py:attr"``: the user's Flask app is imported (the variant's monkey patching
  must already have happened, as in launch.py). ``module:create_app()`` or
  ``module:create_app('prod', debug=False)`` names a factory, called once with those literal
  arguments (read with ``ast.literal_eval``, never evaluated); a bare function name is called
  with none, as Flask's own ``--app`` does. Its SocketIO is the one Flask-SocketIO registered in
  ``app.extensions['socketio']`` (``SocketIO(app)`` or ``socketio.init_app(app)``). That
  ``SocketIO`` is then re-initialised with
  the variant's ``socketio_kwargs`` (async_mode above all) and the knobs:
  ``socketio.init_app(app, **overrides)`` builds a new ``socketio.Server`` from the declared
  options updated with ours and re-registers every handler the app declared (Flask-SocketIO
  keeps them in ``socketio.handlers`` / ``namespace_handlers``). The old middleware is unwrapped
  first so requests reach the new server only. What changed is printed on stderr as one line
  ``launch: app_override {json}``.

``python servers/userapp.py check SPEC`` imports the app without patching and prints one JSON
object (its declared async mode and options, the events and namespaces it serves) or exits 2
with one line; the harness calls it before a run so bad input fails before any server starts.
``python servers/userapp.py handlers SPEC`` prints every handler with what its source says
(argument count, whether it returns a value, what it emits): what ``bench init`` writes from.
"""
import ast
import contextlib
import importlib
import inspect
import importlib.util
import json
import os
import re
import sys
import textwrap
import traceback


class AppError(Exception):
    """The user's app cannot be used; the message is one line for the user."""


def _last_line(exc):
    lines = traceback.format_exception_only(type(exc), exc)
    return lines[-1].strip() if lines else type(exc).__name__


SPEC = re.compile(r"(?P<target>[^:]+):(?P<attr>[A-Za-z_]\w*)\s*(?P<call>\(.*\))?\s*", re.S)
SPEC_FORMS = "module:attr, path/to/file.py:attr or module:create_app(...)"


def split_spec(spec):
    """``(target, attr, call)`` of an ``--app`` spec; call is None or ``(args, kwargs)``."""
    m = SPEC.fullmatch(str(spec))
    if not m:
        raise AppError(f"--app must look like {SPEC_FORMS}, got {spec!r}")
    return m["target"].strip(), m["attr"], parse_call(m["call"], spec) if m["call"] else None


def parse_call(text, spec):
    """The literal arguments of ``(...)`` in a factory spec; nothing in it is evaluated."""
    try:
        node = ast.parse("f" + text, mode="eval").body
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        raise AppError(f"--app {spec}: the factory call is not valid Python") from None
    if not isinstance(node, ast.Call) or not isinstance(node.func, ast.Name):
        raise AppError(f"--app {spec}: expected one call like create_app('prod')")
    names = [k.arg for k in node.keywords if k.arg is not None]
    repeated = next((n for i, n in enumerate(names) if n in names[:i]), None)
    if repeated:
        raise AppError(f"--app {spec}: the keyword {repeated!r} is given twice")
    try:
        if any(isinstance(a, ast.Starred) for a in node.args) or \
                any(k.arg is None for k in node.keywords):
            raise ValueError
        return ([ast.literal_eval(a) for a in node.args],
                {k.arg: ast.literal_eval(k.value) for k in node.keywords})
    except (ValueError, TypeError, SyntaxError, RecursionError, MemoryError):
        raise AppError(f"--app {spec}: the factory's arguments must be literals (strings, "
                       "numbers, lists, dicts, True/False/None)") from None


def import_module(target, attr):
    """The module ``target`` names (a dotted module or a .py file); AppError (one line)."""
    if target.endswith(".py") or "/" in target or os.sep in target:
        path = os.path.abspath(target)
        if not os.path.isfile(path):
            raise AppError(f"--app: no such file {target!r}")
        name = os.path.splitext(os.path.basename(path))[0]
        sys.path.insert(0, os.path.dirname(path))  # the app's own sibling imports
        module_spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(module_spec)
        sys.modules[name] = module
        try:
            module_spec.loader.exec_module(module)
        except Exception as exc:  # noqa: BLE001 - the user's code: its last line is the message
            raise AppError(f"--app: importing {target} failed: {_last_line(exc)}") from None
        return module
    sys.path.insert(0, os.getcwd())
    try:
        return importlib.import_module(target)
    except ModuleNotFoundError as exc:
        if exc.name and (target == exc.name or target.startswith(exc.name + ".")):
            raise AppError(f"--app: no module named {exc.name!r} (importable from "
                           f"{os.getcwd()}; or give path/to/file.py:{attr})") from None
        raise AppError(f"--app: importing {target} failed: {_last_line(exc)}") from None
    except Exception as exc:  # noqa: BLE001
        raise AppError(f"--app: importing {target} failed: {_last_line(exc)}") from None


def import_object(spec):
    """The object ``spec`` names, a factory's app once called; AppError (one line) when it
    cannot be had."""
    target, attr, call = split_spec(spec)
    module = import_module(target, attr)
    if not hasattr(module, attr):
        raise AppError(f"--app: {target} has no attribute {attr!r}")
    obj = getattr(module, attr)
    if call is None and not inspect.isfunction(obj):
        return obj
    if not callable(obj):
        raise AppError(f"--app {spec}: {attr} is not callable (a {type(obj).__name__})")
    args, kwargs = call or ([], {})
    try:
        return obj(*args, **kwargs)
    except Exception as exc:  # noqa: BLE001 - the user's factory: its last line is the message
        raise AppError(f"--app {spec}: the factory raised {_last_line(exc)}") from None


def app_and_socketio(obj, spec):
    """(Flask app, its SocketIO) of ``obj``; AppError when it is not a Flask app with one."""
    from flask import Flask
    from flask_socketio import SocketIO

    if isinstance(obj, SocketIO):
        raise AppError(f"--app {spec}: that is the SocketIO object; name the Flask app instead")
    if not isinstance(obj, Flask):
        raise AppError(f"--app {spec}: not a Flask app (a {type(obj).__name__})")
    socketio = obj.extensions.get("socketio")
    if not isinstance(socketio, SocketIO) or socketio.server is None:
        raise AppError(f"--app {spec}: this Flask app has no SocketIO (SocketIO(app) or "
                       "socketio.init_app(app) was never called)")
    return obj, socketio


def _plain(value):
    """JSON-safe form of an option value (objects by their type name)."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    return f"<{type(value).__name__}>"


def describe(socketio):
    """What the app declared and serves: async mode, options, events, namespaces."""
    server = socketio.server
    namespaces = set(server.handlers) | set(getattr(server, "namespace_handlers", {}))
    declared = server.namespaces
    return {
        "async_mode": socketio.async_mode,
        "declared_async_mode": socketio.server_options.get("async_mode"),
        "options": _plain({k: v for k, v in socketio.server_options.items()
                           if k not in ("client_manager", "json")}),
        "events": {ns: sorted(events) for ns, events in server.handlers.items()},
        "namespaces": "*" if declared == "*" else sorted(namespaces | set(declared or ["/"])),
    }


def take_over(app, socketio, overrides):
    """Re-initialise the app's own SocketIO with ``overrides``; returns what changed."""
    before = describe(socketio)
    previous = {k: socketio.server_options.get(k) for k in overrides}
    middleware = getattr(socketio, "sockio_mw", None)
    path = "socket.io"
    if middleware is not None:
        path = middleware.engineio_path.strip("/") or path
        if app.wsgi_app is middleware:  # unwrap, so only the new server sees /socket.io
            app.wsgi_app = middleware.wsgi_app
    old = socketio.server
    socketio.init_app(app, path=path, **overrides)
    # Handlers decorated after SocketIO(app) went straight onto the old server (Flask-SocketIO
    # keeps only those declared before init_app in socketio.handlers): carry them all over.
    new = socketio.server
    for namespace, events in old.handlers.items():
        for event, handler in events.items():
            if event not in new.handlers.get(namespace, {}):
                new.on(event, handler, namespace=namespace)
    for namespace, handler in old.namespace_handlers.items():
        if namespace not in new.namespace_handlers:
            new.register_namespace(handler)
    return {"app_async_mode": before["async_mode"],
            "declared_async_mode": before["declared_async_mode"],
            "async_mode": socketio.async_mode,
            "changed": {k: [_plain(previous[k]), _plain(v)] for k, v in overrides.items()
                        if previous[k] != v}}


def build(app_spec=None, socketio_kwargs=None, knobs=None):
    """``(app, socketio)`` a launcher serves (see the module docstring)."""
    overrides = dict(socketio_kwargs or {}, **(knobs or {}))
    if not app_spec:
        from servers.app import create_app

        return create_app(**overrides)
    app, socketio = app_and_socketio(import_object(app_spec), app_spec)
    change = take_over(app, socketio, overrides)
    print("launch: app_override " + json.dumps(dict(app=app_spec, **change)), file=sys.stderr,
          flush=True)
    return app, socketio


def effective_knobs(socketio):
    """The server knobs as the running Socket.IO / Engine.IO servers hold them."""
    server, eio = socketio.server, socketio.server.eio
    return dict(async_handlers=server.async_handlers, ping_interval=eio.ping_interval,
                ping_timeout=eio.ping_timeout, max_http_buffer_size=eio.max_http_buffer_size,
                http_compression=eio.http_compression)


def check(spec):
    """Import ``spec`` (no patching) and describe it; AppError when it is unusable."""
    app, socketio = app_and_socketio(import_object(spec), spec)
    return describe(socketio)


# --------------------------------------------------------------------------- handler sources

EMITTERS = ("emit", "send")
ELSEWHERE = ("to", "room", "broadcast", "skip_sid")  # keywords that send to others


def _own_nodes(fn):
    """The nodes of a function body, not those of functions or classes nested in it."""
    todo = list(fn.body)
    while todo:
        node = todo.pop()
        yield node
        todo.extend(child for child in ast.iter_child_nodes(node) if not isinstance(
            child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda, ast.ClassDef)))


def _emit_of(call):
    """``{"event", "to_sender"}`` when ``call`` is an emit/send, else None."""
    func = call.func
    name = func.id if isinstance(func, ast.Name) else \
        func.attr if isinstance(func, ast.Attribute) else None
    if name not in EMITTERS:
        return None
    event = "message"
    if name == "emit":
        first = call.args[0] if call.args else None
        event = first.value if isinstance(first, ast.Constant) and \
            isinstance(first.value, str) else None
    # flask_socketio.emit in a handler answers the sender; socketio.emit broadcasts
    to_sender = isinstance(func, ast.Name) and not any(k.arg in ELSEWHERE
                                                       for k in call.keywords)
    return dict(event=event, to_sender=to_sender)


def _key_read(node, param):
    """The string key ``node`` reads from ``param`` (``data["k"]``, ``data.get("k")``)."""
    if isinstance(node, ast.Subscript) and isinstance(node.value, ast.Name) and \
            node.value.id == param and isinstance(node.slice, ast.Constant):
        return node.slice.value if isinstance(node.slice.value, str) else None
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and \
            node.func.attr == "get" and isinstance(node.func.value, ast.Name) and \
            node.func.value.id == param and node.args and \
            isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str):
        return node.args[0].value
    return None


def handler_info(handler):
    """What a handler's source says: its positional parameters, whether it returns a value
    (then the client's ack carries it), what it emits, the keys it reads from its first
    argument. ``source`` is False where the source cannot be read (then only the signature)."""
    func = inspect.unwrap(handler)
    params, varargs = [], False
    with contextlib.suppress(TypeError, ValueError):
        for p in inspect.signature(func).parameters.values():
            if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD):
                params.append(p.name)
            varargs = varargs or p.kind == p.VAR_POSITIONAL
    info = dict(function=getattr(func, "__qualname__", str(func)), params=params,
                varargs=varargs, returns=False, emits=[], keys=[], source=False)
    try:
        tree = ast.parse(textwrap.dedent(inspect.getsource(func)))
    except (OSError, TypeError, SyntaxError, IndentationError):
        return info
    fn = next((n for n in ast.walk(tree)
               if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))), None)
    if fn is None:
        return info
    info["source"] = True
    for node in _own_nodes(fn):
        if isinstance(node, ast.Return) and node.value is not None and not (
                isinstance(node.value, ast.Constant) and node.value.value is None):
            info["returns"] = True
        if isinstance(node, ast.Call) and _emit_of(node) and _emit_of(node) not in info["emits"]:
            info["emits"].append(_emit_of(node))
        key = _key_read(node, params[0]) if params else None
        if key and key not in info["keys"]:
            info["keys"].append(key)
    info["keys"].sort()
    return info


def handlers(spec):
    """Every handler of the app, per namespace: ``{namespace: {event: handler_info}}``
    (decorated handlers and the ``on_<event>`` methods of class-based namespaces)."""
    app, socketio = app_and_socketio(import_object(spec), spec)
    server, out = socketio.server, {}
    for namespace, events in server.handlers.items():
        for event, handler in events.items():
            out.setdefault(namespace, {})[event] = handler_info(handler)
    for namespace, obj in server.namespace_handlers.items():
        for name in dir(obj):
            method = getattr(obj, name, None)
            if name.startswith("on_") and callable(method) and not str(
                    getattr(method, "__module__", "")).startswith(("socketio", "flask_socketio")):
                out.setdefault(namespace, {})[name[3:]] = handler_info(method)
    return dict(describe(socketio), handlers=out)


COMMANDS = {"check": check, "handlers": handlers}


def main(argv):
    if len(argv) != 2 or argv[0] not in COMMANDS:
        sys.exit("usage: python servers/userapp.py check|handlers SPEC")
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    try:
        out = COMMANDS[argv[0]](argv[1])
    except AppError as exc:
        print(str(exc), file=sys.stderr, flush=True)
        sys.exit(2)
    print(json.dumps(out), flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
