"""Latency harness for Flask-SocketIO deployments."""
from bench import paths

__version__ = "0.1.0"
SCHEMA_VERSION = 3  # 2: the user's traffic (reply_match, unsolicited, pushed); 3: server events and
#                     onsets, the self-checks (per-step intervals, arrivals, stationarity,
#                     independence, precision) and machine-readable reasons
ROOT = paths.servers_home(__version__)  # the folder holding servers/: the checkout or a cache copy
