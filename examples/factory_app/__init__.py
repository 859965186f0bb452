"""A Flask-SocketIO app laid out the way the Flask and Flask-SocketIO docs advise: a package
with an application factory, ``socketio = SocketIO()`` bound in the factory with
``socketio.init_app(app)``, configuration from the environment, and a dependency of its own
(``markdown``, in requirements.txt beside it).

Benchmark it from the repository root (the requirements.txt here is found and layered onto
every variant's environment)::

    python -m bench init --app "examples.factory_app:create_app('production')" \\
        --app-env SECRET_KEY=change-me --out my_traffic.toml
    python -m bench run --app "examples.factory_app:create_app('production')" \\
        --app-env SECRET_KEY=change-me --scenario-file examples/factory_app/traffic.toml

Configurations: ``development`` (the default) needs nothing; ``production`` refuses to start
without ``SECRET_KEY`` in the environment, as real apps do. ``FACTORY_APP_GREETING`` (optional)
is what ``hello`` answers.
"""
import os

from flask import Flask
from flask_socketio import SocketIO

socketio = SocketIO()  # bound to the app in create_app, as with every Flask extension

CONFIGS = {
    "development": dict(DEBUG=True, SECRET_KEY="dev"),
    "production": dict(DEBUG=False),
}


def create_app(config="development"):
    """The Flask app for ``config``, with its SocketIO and its handlers."""
    if config not in CONFIGS:
        raise ValueError(f"unknown config {config!r} (known: {', '.join(CONFIGS)})")
    app = Flask(__name__)
    app.config.update(CONFIGS[config])
    if "SECRET_KEY" in os.environ:
        app.config["SECRET_KEY"] = os.environ["SECRET_KEY"]
    if not app.config.get("SECRET_KEY"):
        raise RuntimeError("SECRET_KEY is not set (production reads it from the environment)")
    app.config["GREETING"] = os.environ.get("FACTORY_APP_GREETING", "hello")
    from examples.factory_app import events  # noqa: F401 - registers the handlers

    socketio.init_app(app)
    return app


if __name__ == "__main__":
    socketio.run(create_app(), port=5000)
