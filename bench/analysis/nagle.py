"""The Nagle detector: does a step's latency cluster where a held TCP segment would put it?

A server that leaves Nagle's algorithm on (no TCP_NODELAY) holds a write while an earlier one
is unacknowledged. The client's kernel delays its ACK to piggyback it on its next data, so the
held reply leaves either when the client sends its next message on that connection (latency
= the per-connection send interval, connections ÷ total rate in an open loop) or when the
client's delayed-ACK timer fires, whichever comes first. Either way the latencies pile up in a
narrow peak at that time, far above the round trip, which no amount of server speed moves.

Where the delayed-ACK timer sits on this machine (Linux 6.18, loopback): measured with a
plain request/response pair of sockets, the server answering each 10-byte request with two
100-byte writes with Nagle on and the client sending its next request 0, 1 or 20 ms after the
answer: the second write arrives 41–49 ms after the request (median 42.9–44.4 ms; the
kernel's 40 ms TCP_DELACK_MIN plus timer ticks); with TCP_NODELAY 0.05 ms. With 100 ms or
more between requests the client is back in quick-ACK mode and nothing waits.
So the delayed-ACK window is 38–50 ms. The issue's "25 ms" on gevent 16 KiB binary at
400 msg/s over 10 connections is the other case: 10 / 400 = 25 ms, the next message.

Pure functions over a step's latencies; the recorder puts :func:`note` into the row.
"""
import numpy as np

from bench import kinds

DELAYED_ACK_MS = (38.0, 50.0)
MIN_SHARE = 0.005   # at least 0.5 % of the measured messages in the peak
MIN_COUNT = 10      # and at least this many
PEAK_RATIO = 3.0    # and that many times more than either neighbouring window as wide


def interval_ms(rate, connections):
    """The per-connection send interval of an open-loop step (None for a closed loop)."""
    if not rate or not connections or rate != rate:
        return None
    return 1000.0 * connections / rate


def interval_window(ms):
    """Where a reply released by the connection's next message lands: just after it."""
    return (ms - 0.5, ms * 1.15 + 1.0)


def peak(latency_ms, low, high):
    """Share of latencies in [low, high] if that window is a peak (see module constants),
    else 0.0."""
    lat = np.asarray(latency_ms, dtype=float)
    lat = lat[np.isfinite(lat)]
    if lat.size == 0 or high <= low:
        return 0.0
    width = high - low
    inside = int(((lat >= low) & (lat <= high)).sum())
    below = int(((lat >= low - width) & (lat < low)).sum())
    above = int(((lat > high) & (lat <= high + width)).sum())
    if inside < MIN_COUNT or inside < MIN_SHARE * lat.size:
        return 0.0
    if inside < PEAK_RATIO * max(below, above, 1):
        return 0.0
    return inside / lat.size


def detect(latency_ms, interval=None):
    """(kind, at_ms, share) of the first peak found, "interval" before "delayed-ack"; None
    when the latencies do not cluster at either."""
    if interval and interval > 2.0:
        low, high = interval_window(interval)
        share = peak(latency_ms, low, high)
        if share:
            return "interval", interval, share
    share = peak(latency_ms, *DELAYED_ACK_MS)
    if share:
        lat = np.asarray(latency_ms, dtype=float)
        inside = lat[(lat >= DELAYED_ACK_MS[0]) & (lat <= DELAYED_ACK_MS[1])]
        return "delayed-ack", float(np.median(inside)), share
    return None


def paired_command(variant, scenario, rate=None, connections=None, payload=None):
    """The command of the paired run: the same step without and with TCP_NODELAY."""
    parts = ["python -m bench run", f"--variants {variant}", f"--scenario {scenario}"]
    if rate and scenario in ("rate", "payload", "blocking"):
        parts.append(f"--rate {rate:g}")
    if connections:
        parts.append(f"--connections {connections}")
    if payload and scenario not in ("payload",) and payload != 64:
        parts.append(f"--payload {payload}")
    return " ".join(parts + ["--server-nodelay both"])


def note(found, server_nodelay, command):
    """The row's note for a detection (``found`` from :func:`detect`), or ""."""
    if not found:
        return ""
    kind, at, share = found
    where = (f"the {at:.1f} ms per-connection send interval" if kind == "interval" else
             f"the client's delayed-ACK timer ({at:.1f} ms)")
    if server_nodelay:
        return (f"{100 * share:.1f} % of latencies cluster at {where} although the server "
                "sets TCP_NODELAY: a reply waits for the connection's next packet, but not "
                "through Nagle's algorithm")
    return (f"Nagle signature: {100 * share:.1f} % of latencies cluster at {where} (a reply "
            "held until the client's ACK); paired run with TCP_NODELAY: " + command)


def finding_for_step(step, latency_ms):
    """(reason code, note) of the detector on a recorded step (open or closed loop echo
    traffic), or ("", ""): the code is ``nagle:send_interval`` or ``nagle:delayed_ack`` for
    the signature, ``cluster:…`` for the same peak under TCP_NODELAY (a wait, not Nagle)."""
    if not kinds.get(step.kind).latency_series:
        return "", ""
    interval = interval_ms(step.rate, step.connections) if step.open_loop else None
    found = detect(latency_ms, interval)
    if not found:
        return "", ""
    nodelay = getattr(step, "server_nodelay", False)
    command = paired_command(step.variant, step.scenario, step.rate, step.connections,
                             step.payload)
    where = "send_interval" if found[0] == "interval" else "delayed_ack"
    return f"{'cluster' if nodelay else 'nagle'}:{where}", note(found, nodelay, command)
