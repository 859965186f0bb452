"""Execution: server lifecycles, verification, driving load, sampling resources, the run loop."""
