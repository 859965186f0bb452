"""The app a variant serves: the harness's own (servers/app.py) or the user's (``--app``).

One entry point for every launcher (``app.run``/``socketio.run`` in servers/launch.py, and the
production launchers that import an app object):

    from servers.userapp import build
    app, socketio = build(app_spec, socketio_kwargs, knobs)

* ``app_spec`` None: ``servers.app.create_app(**socketio_kwargs, **knobs)`` as declared.
* ``app_spec`` ``"module:attr"`` (importable from the current directory) or
  ``"path/to/file.py:attr"``: the user's Flask app is imported (the variant's monkey patching
  must already have happened, as in launch.py), then its own ``SocketIO`` is re-initialised with
  the variant's ``socketio_kwargs`` (async_mode above all) and the knobs:
  ``socketio.init_app(app, **overrides)`` builds a new ``socketio.Server`` from the declared
  options updated with ours and re-registers every handler the app declared (Flask-SocketIO
  keeps them in ``socketio.handlers`` / ``namespace_handlers``). The old middleware is unwrapped
  first so requests reach the new server only. What changed is printed on stderr as one line
  ``launch: app_override {json}``.

``python servers/userapp.py check SPEC`` imports the app without patching and prints one JSON
object (its declared async mode and options, the events and namespaces it serves) or exits 2
with one line; the harness calls it before a run so bad input fails before any server starts.
"""
import importlib
import importlib.util
import json
import os
import sys
import traceback


class AppError(Exception):
    """The user's app cannot be used; the message is one line for the user."""


def _last_line(exc):
    lines = traceback.format_exception_only(type(exc), exc)
    return lines[-1].strip() if lines else type(exc).__name__


def split_spec(spec):
    target, sep, attr = str(spec).rpartition(":")
    if not sep or not target or not attr or not attr.isidentifier():
        raise AppError(f"--app must look like module:attr or path/to/file.py:attr, got {spec!r}")
    return target, attr


def import_object(spec):
    """The object ``spec`` names; AppError (one line) when it cannot be had."""
    target, attr = split_spec(spec)
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
    else:
        sys.path.insert(0, os.getcwd())
        try:
            module = importlib.import_module(target)
        except ModuleNotFoundError as exc:
            if exc.name and (target == exc.name or target.startswith(exc.name + ".")):
                raise AppError(f"--app: no module named {exc.name!r} (importable from "
                               f"{os.getcwd()}; or give path/to/file.py:{attr})") from None
            raise AppError(f"--app: importing {target} failed: {_last_line(exc)}") from None
        except Exception as exc:  # noqa: BLE001
            raise AppError(f"--app: importing {target} failed: {_last_line(exc)}") from None
    if not hasattr(module, attr):
        raise AppError(f"--app: {target} has no attribute {attr!r}")
    return getattr(module, attr)


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


def main(argv):
    if len(argv) != 2 or argv[0] != "check":
        sys.exit("usage: python servers/userapp.py check module:attr")
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    try:
        out = check(argv[1])
    except AppError as exc:
        print(str(exc), file=sys.stderr, flush=True)
        sys.exit(2)
    print(json.dumps(out), flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
