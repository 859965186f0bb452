"""Latency harness for Flask-SocketIO deployments."""
from bench import paths

__version__ = "0.1.0"
SCHEMA_VERSION = 2  # 2: reply_match, unsolicited, pushed (the user's traffic)
ROOT = paths.servers_home(__version__)  # the folder holding servers/: the checkout or a cache copy
