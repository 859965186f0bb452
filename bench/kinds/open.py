"""The open kind: each message sent at its intended time, whatever the replies do, latency
from that time (the rate, sweep, payload and blocking scenarios)."""
from bench.kinds import Kind, messages

KIND = Kind("open", open_loop=True, user_traffic=True,
            loop=messages.run, schedule=messages.scheduled, rows=messages.rows)
