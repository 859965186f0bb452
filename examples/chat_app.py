"""A small chat app, written the way people write one, to show `--app` with your own events.

It knows nothing of the harness: no `echo` handler, its own namespace, auth on connect, rooms.
Run it yourself with ``python examples/chat_app.py``; benchmark it under every Flask variant with

    python -m bench run --app examples/chat_app.py:app --scenario-file examples/chat.toml

Events (namespace ``/chat``):
  connect        refused unless the auth payload carries the right token
  join           ``{"room": name}``: joins the room, acks ``{"joined": name}``
  send_message   ``{"room": name, "text": ...}``: relays ``message`` to the others in the
                 room and acks ``{"id": n}`` (the sender's confirmation)
  fetch_history  ``{"room": name}``: emits ``history`` (the room's last messages) back to
                 the sender only, no ack
"""
import collections
import itertools

from flask import Flask, request
from flask_socketio import ConnectionRefusedError, SocketIO, emit, join_room

TOKEN = "bench-secret"
NS = "/chat"

app = Flask(__name__)
socketio = SocketIO(app)  # no async_mode: whatever is importable, as in many real apps
history = collections.defaultdict(lambda: collections.deque(maxlen=20))
ids = itertools.count(1)


@socketio.on("connect", namespace=NS)
def on_connect(auth):
    if not auth or auth.get("token") != TOKEN:
        raise ConnectionRefusedError("bad token")


@socketio.on("join", namespace=NS)
def on_join(data):
    join_room(data["room"])
    return {"joined": data["room"]}


@socketio.on("send_message", namespace=NS)
def on_send_message(data):
    n = next(ids)
    item = {"id": n, "from": request.sid, "text": data["text"]}
    history[data["room"]].append(item)
    emit("message", item, to=data["room"], include_self=False)
    return {"id": n}


@socketio.on("fetch_history", namespace=NS)
def on_fetch_history(data):
    emit("history", list(history[data["room"]])[-3:])


if __name__ == "__main__":
    socketio.run(app, port=5000)
