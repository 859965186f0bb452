"""Latency harness for Flask-SocketIO deployments."""
import os

__version__ = "0.1.0"
SCHEMA_VERSION = 1
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # the repository
