"""The harness's end of the engine process: spawn it through the lifecycle (own process group,
killed in ``finally``), write JSON lines to its stdin, read JSON lines from its stdout with a
deadline on every read."""
import base64
import io
import json
import os
import select
import subprocess
import sys
import time

import numpy as np

from bench.distributed.seal import ENV
from bench import processes


class EngineGone(Exception):
    """The engine process ended (its stdout closed)."""


class Engine:
    def __init__(self, mode, host, port, log_path, extra=(), token=None):
        self.log_path = log_path
        self.offset = os.path.getsize(log_path) if os.path.exists(log_path) else 0
        argv = [sys.executable, "-m", "bench.distributed.engine", mode, host, str(port), *extra]
        env = {k: v for k, v in os.environ.items() if k != ENV}  # the token: never in argv
        if token:
            env[ENV] = token
        self.proc = processes.spawn(argv, log_path, stdin=subprocess.PIPE,
                                    stdout=subprocess.PIPE, env=env)
        self.buffer = b""
        self.lines = []

    def send(self, **op):
        try:
            self.proc.stdin.write((json.dumps(op) + "\n").encode())
            self.proc.stdin.flush()
        except (BrokenPipeError, ValueError, OSError):
            raise EngineGone(self.note()) from None

    def recv(self, deadline):
        """The next event, or None when ``deadline`` (monotonic s) passes first."""
        while not self.lines:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None
            ready, _, _ = select.select([self.proc.stdout], [], [], min(remaining, 0.5))
            if not ready:
                continue
            chunk = os.read(self.proc.stdout.fileno(), 1 << 20)
            if not chunk:
                raise EngineGone(self.note())
            self.buffer += chunk
            *complete, self.buffer = self.buffer.split(b"\n")
            self.lines.extend(line for line in complete if line.strip())
        return json.loads(self.lines.pop(0))

    def note(self):
        return processes.stderr_note(self.log_path, self.offset)

    def close(self, grace=3.0):
        """Ask the engine to quit (a master tells its workers), then stop its group."""
        try:
            self.send(op="quit")
            self.proc.stdin.close()
            self.proc.wait(timeout=grace)
        except (EngineGone, OSError, subprocess.TimeoutExpired):
            pass
        processes.kill_group(self.proc, grace=1.0)
        if self.proc.stdout:
            self.proc.stdout.close()


def pack(arrays):
    """Per-message arrays → text for a JSON line (compressed npz, base64)."""
    if arrays is None:
        return None
    buf = io.BytesIO()
    np.savez_compressed(buf, **arrays)
    return base64.b64encode(buf.getvalue()).decode("ascii")


def unpack(text):
    """Per-message arrays sent as base64 ``.npz`` text, as a dict (None for empty text)."""
    if not text:
        return None
    with np.load(io.BytesIO(base64.b64decode(text))) as data:
        return {k: data[k] for k in data.files}
