"""The same four handlers as servers/app.py on python-socketio's AsyncServer, as an ASGI app.

``uvicorn servers.asgi_app:app --loop uvloop --http httptools``: the stack a user might pick
instead of Flask. Handlers (the contract in docs/DESIGN.md):
  echo       acks its argument unchanged
  join       enters the room named in ``{"room": ...}``, acks True
  broadcast  emits ``broadcast`` with its argument to ``data["room"]``, acks True
  block      blocks for ``data["ms"]`` ms: ``asyncio.sleep`` (cooperative, as the natural
             asyncio handler would be) or burning CPU (blocks the loop), then acks True
Extra ``AsyncServer`` keyword arguments come as JSON in ``BENCH_APP_SPEC``
(``{"socketio_kwargs": {...}}``); ``async_mode`` is always ``asgi``.
"""
import asyncio
import json
import os
import sys
import time

import socketio

SPEC_VAR = "BENCH_APP_SPEC"


def create_app(**server_kwargs):
    """Return ``(asgi_app, sio)`` serving the four handlers."""
    server_kwargs.pop("async_mode", None)
    sio = socketio.AsyncServer(async_mode="asgi", **server_kwargs)

    @sio.on("echo")
    async def echo(sid, data):
        return data

    @sio.on("join")
    async def join(sid, data):
        await sio.enter_room(sid, data["room"])
        return True

    @sio.on("broadcast")
    async def broadcast(sid, data):
        await sio.emit("broadcast", data, to=data["room"])
        return True

    @sio.on("block")
    async def block(sid, data):
        seconds = float(data.get("ms", 0)) / 1000.0
        if data.get("kind") == "cpu":
            end = time.perf_counter() + seconds
            while time.perf_counter() < end:
                pass
        else:
            await asyncio.sleep(seconds)
        return True

    async def health(scope, receive, send):
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"text/plain")]})
        await send({"type": "http.response.body", "body": b"ok"})

    return socketio.ASGIApp(sio, other_asgi_app=health), sio


def make_app():
    spec = json.loads(os.environ.get(SPEC_VAR) or "{}")
    if spec.get("app"):
        sys.exit("asgi_app: --app takes a Flask app; uvicorn-asgi serves its own AsyncServer")
    app, _ = create_app(**dict(spec.get("socketio_kwargs", {}), **spec.get("knobs", {})))
    print(f"asgi_app: python-socketio AsyncServer (asgi) pid={os.getpid()}", file=sys.stderr,
          flush=True)
    from servers import nodelay
    nodelay.apply()  # TCP_NODELAY when BENCH_SERVER_NODELAY=1, else nothing
    from servers import events
    events.apply()  # --server-gc and --server-events, once the app is built
    return app


app = make_app()
