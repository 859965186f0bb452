"""The reconnect scenario: N clients connected, every server of the deployment killed and
started again on its own port; how long until each client is back and has answered an echo,
and what was lost (probe echoes in flight, sessions).

One summary row per variant and repeat: its latencies are the clients' times back, measured
from the kill.
"""
import time
from dataclasses import replace

import numpy as np

from bench.analysis import recorder
from bench.execute.fleet import grow_budget, probe_arrays
from bench.execute.load import Load
from bench.plan.job import Outcome

OK = int(Outcome.OK)
WATCH_S = 60.0              # longest wait for every client to be back (at least 30 s)
RESTART_GRACE_S = 3.0


def restart(runner, step, server, workers, log_path, offset):
    """Connect N, restart the deployment's servers, watch them come back: the step's rows
    (the held-clients signature of bench/execute/capacity.py's ``measure``)."""
    grown = workers.ask(f"grow {step.connections}",
                        grow_budget(step, step.connections, len(workers.procs)))
    connected = sum(r["alive"] for r in grown)
    if connected < step.connections:
        errors = "; ".join(f"{k} ×{v}" for r in grown for k, v in r["errors"].items())
        return [recorder.failed_row(step, "websocket", f"only {connected} of "
                                    f"{step.connections} connected before the restart: {errors}",
                                    "lean", "not_connected")]
    watch = min(WATCH_S, max(step.duration, 30.0))
    workers.send(f"watch {watch:.3f}")
    workers.read(10, "starting the watch")
    t_kill = time.monotonic_ns()
    t_stopped, restart_note = server.restart(RESTART_GRACE_S)
    t_ready = time.monotonic_ns()
    replies = workers.read(watch + step.deadline + 30, "watching the reconnect")
    back = {int(i): t for r in replies for i, t in r["back_ns"].items()}
    n = step.connections
    arrays = dict(conn=np.arange(n, dtype=np.int32), intended=np.full(n, t_kill, np.int64),
                  sent=np.full(n, t_kill, np.int64), received=np.zeros(n, np.int64),
                  outcome=np.full(n, int(Outcome.TIMEOUT), np.int8),
                  recv_wait=np.zeros(n, np.int64))
    for i, t in back.items():
        arrays["received"][i], arrays["outcome"][i] = t, OK
    sub = replace(step, warmup=0.0, duration=watch, deadline=watch, rate=None)
    probe = probe_arrays(replies)
    lost = int(((probe["sent"] > 0) & (probe["outcome"] != OK)).sum()) if probe is not None \
        else 0
    never = n - len(back)
    note = "; ".join(filter(None, [restart_note, f"{never} never back within {watch:g} s"
                                   if never else ""]))
    row = recorder.summarize_messages(sub, Load(arrays, t_kill - 1, None), "websocket", {},
                                      "lean", note)
    row.update(step.extra)  # scale-out and toggle columns, as every other step's rows
    row.update(restart_ms=round((t_ready - t_kill) / 1e6, 1),
               stop_ms=round((t_stopped - t_kill) / 1e6, 1), back=len(back), never_back=never,
               all_back_ms=round((max(back.values()) - t_kill) / 1e6, 1) if back and not never
               else float("nan"),
               probes_lost=lost, sessions_lost=sum(r["sessions_lost"] for r in replies))
    return [row]
