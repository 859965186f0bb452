"""The emit kind: a fan-out whose broadcasts come from a separate process that emits to the
room through the message queue (a write-only manager), so it needs a scale-out variant."""
from bench.kinds import Kind, fanout

KIND = Kind("emit", open_loop=True, clients=("lean",), members=True, emitted=True,
            one_row=False, latency_series=False, split=False, columns=fanout.COLUMNS,
            loop=fanout.run, schedule=fanout.scheduled, rows=fanout.rows)
