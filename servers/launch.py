"""Start one variant server exactly as declared in variants.toml.

Invoked by the harness as ``python servers/launch.py PATCH SPEC_JSON``. PATCH is read with
nothing but ``sys`` loaded, so monkey patching (when the variant asks for it) happens before
any other import, as the eventlet and gevent docs require.
"""
import sys

PATCH = sys.argv[1] if len(sys.argv) > 1 else "none"
if PATCH == "eventlet":
    import eventlet

    eventlet.monkey_patch()
elif PATCH == "gevent":
    from gevent import monkey

    monkey.patch_all()
elif PATCH != "none":
    sys.exit(f"launch: unknown patch {PATCH!r}")

import os  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # repo root
from servers.nodelay import apply as apply_nodelay  # noqa: E402

apply_nodelay()  # TCP_NODELAY on accepted sockets when BENCH_SERVER_NODELAY=1

import json  # noqa: E402


def main():
    spec = json.loads(sys.argv[2])
    sys.path[:0] = [os.getcwd(), os.path.dirname(os.path.dirname(os.path.abspath(__file__)))]
    from servers.userapp import AppError, build

    try:
        app, socketio = build(spec.get("app"), spec.get("socketio_kwargs", {}),
                              spec.get("knobs") or {})
    except AppError as exc:
        sys.exit(f"launch: {exc}")
    host, port = spec["host"], spec["port"]
    apply_nodelay()  # again: the app may have imported eventlet/gevent itself (idempotent)
    from servers import events
    events.apply()  # --server-gc and --server-events, once the app is built
    if spec.get("knobs"):  # as the server holds them, not as asked (servers/userapp.py)
        from servers.userapp import effective_knobs
        print(f"launch: knobs {json.dumps(effective_knobs(socketio))}", file=sys.stderr,
              flush=True)
    print(f"launch: async_mode={socketio.server.eio.async_mode} patch={PATCH} "
          f"launcher={spec['launcher']} pid={os.getpid()}", file=sys.stderr, flush=True)
    if spec["launcher"] == "app.run":
        app.run(host=host, port=port, **spec.get("run_kwargs", {}))
    elif spec["launcher"] == "socketio.run":
        socketio.run(app, host=host, port=port, **spec.get("run_kwargs", {}))
    else:
        sys.exit(f"launch: unknown launcher {spec['launcher']!r}")


if __name__ == "__main__":
    main()
