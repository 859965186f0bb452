"""The app's Socket.IO handlers (namespace ``/``), registered on the package's ``socketio``.

  join     ``{"room": name}``: joins the room, acks ``{"joined": name}``
  render   ``{"text": markdown}``: acks ``{"html": ...}``, the text rendered by ``markdown``
  post     ``{"room": name, "text": markdown}``: renders it, sends ``message`` to the others in
           the room, acks ``{"id": n}``
  preview  ``{"text": markdown}``: emits ``preview`` (the HTML) back to the sender, no ack value
  hello    acks the configured greeting (``FACTORY_APP_GREETING``)
"""
import itertools

import markdown
from flask import current_app, request
from flask_socketio import emit, join_room

from examples.factory_app import socketio

ids = itertools.count(1)


@socketio.on("join")
def on_join(data):
    join_room(data["room"])
    return {"joined": data["room"]}


@socketio.on("render")
def on_render(data):
    return {"html": markdown.markdown(data["text"])}


@socketio.on("post")
def on_post(data):
    n = next(ids)
    html = markdown.markdown(data["text"])
    emit("message", {"id": n, "from": request.sid, "html": html}, to=data["room"],
         include_self=False)
    return {"id": n}


@socketio.on("preview")
def on_preview(data):
    emit("preview", {"html": markdown.markdown(data["text"])})


@socketio.on("hello")
def on_hello():
    return {"greeting": current_app.config["GREETING"]}
