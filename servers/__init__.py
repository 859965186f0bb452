"""Variant servers: one Flask-SocketIO app, launched as each variant declares."""
