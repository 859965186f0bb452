"""The one Flask-SocketIO app every variant serves, so only the deployment differs.

Handlers (the contract in docs/DESIGN.md):
  echo       acks its argument unchanged
  join       joins the room named in ``{"room": ...}``, acks True
  broadcast  emits ``broadcast`` with its argument to ``data["room"]``, acks True
  block      blocks for ``data["ms"]`` milliseconds by ``time.sleep`` (cooperative only
             where monkey patching made it so) or by burning CPU, then acks True
"""
import time

from flask import Flask
from flask_socketio import SocketIO, emit, join_room


def create_app(**socketio_kwargs):
    """Return ``(app, socketio)``; ``SocketIO(app, **socketio_kwargs)`` exactly as declared."""
    app = Flask(__name__)
    socketio = SocketIO(app, **socketio_kwargs)

    @app.route("/health")
    def health():
        return "ok"

    @socketio.on("echo")
    def echo(data):
        return data

    @socketio.on("join")
    def join(data):
        join_room(data["room"])
        return True

    @socketio.on("broadcast")
    def broadcast(data):
        emit("broadcast", data, to=data["room"])
        return True

    @socketio.on("block")
    def block(data):
        seconds = float(data.get("ms", 0)) / 1000.0
        if data.get("kind") == "cpu":
            end = time.perf_counter() + seconds
            while time.perf_counter() < end:
                pass
        else:
            time.sleep(seconds)
        return True

    return app, socketio
