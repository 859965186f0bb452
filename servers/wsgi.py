"""WSGI entry point for the production servers (gunicorn, uWSGI): ``servers.wsgi:app``.

The harness passes what to serve in the environment variable ``BENCH_APP_SPEC`` (JSON:
``{"socketio_kwargs": {...}, "app": "module:attr" or null}``), set on the server's command
line (gunicorn ``-e``, uWSGI ``--env``), so the command a user reads in ``logs/`` is the whole
truth. No monkey patching here: gunicorn's gevent/eventlet workers and uWSGI's
``--gevent-monkey-patch`` patch before this module is imported.
"""
import json
import os
import sys

SPEC_VAR = "BENCH_APP_SPEC"


def make_app(spec=None):
    """The Flask app (a WSGI callable) the spec asks for."""
    if spec is None:
        spec = json.loads(os.environ.get(SPEC_VAR) or "{}")
    sys.path.insert(0, os.getcwd())
    # The user's app (--app) is imported and its own SocketIO re-initialised with this
    # variant's socketio_kwargs and the server knobs; else servers/app.py (servers/userapp.py).
    from servers.userapp import build

    app, socketio = build(spec.get("app"), spec.get("socketio_kwargs", {}),
                          spec.get("knobs") or {})
    if spec.get("knobs"):
        from servers.userapp import effective_knobs
        print(f"launch: knobs {json.dumps(effective_knobs(socketio))}", file=sys.stderr,
              flush=True)
    print(f"wsgi: async_mode={socketio.server.eio.async_mode} pid={os.getpid()}",
          file=sys.stderr, flush=True)
    from servers import nodelay
    nodelay.apply()  # TCP_NODELAY when BENCH_SERVER_NODELAY=1, else nothing
    from servers import events
    events.apply()  # --server-gc and --server-events, once the app is built
    return app


app = make_app()
