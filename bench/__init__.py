"""Latency harness for Flask-SocketIO deployments."""
__version__ = "0.1.0"
SCHEMA_VERSION = 1
