"""The closed kind: one message in flight per connection, the next sent as its reply
arrives: the round-trip floor (the echo scenario)."""
from bench.kinds import Kind, messages

KIND = Kind("closed", open_loop=False, user_traffic=True,
            loop=messages.run, schedule=messages.scheduled, rows=messages.rows)
