"""What a browser row adds: paint and DevTools latencies, INP, interaction → reply painted.

Three latencies of the same message tell apart where its time went (every one from the
message's intended send time, like ``latency``, and with messages that got no answer counted at
the deadline, so a percentile includes what timed out):

* ``latency`` (the row's p50/p99): to socket.io-client's ack callback, the reply parsed;
* ``devtools_*``: the WebSocket frame carrying the message leaving the browser → the frame
  carrying its ack arriving, as Chrome DevTools' Network panel shows them (server + network,
  without the client library on either side); empty over polling, which has no frames;
* ``paint_*``: to the next animation frame after the reply was written into the DOM (what a
  user can see).

INP follows the web-vitals library's definition: each interaction's latency is the longest
Event Timing duration among its entries (input → next paint, rounded by the browser to 8 ms);
of the 10 longest, INP skips one for every 50 interactions (the 98th percentile). The page
observes entries from 16 ms, the smallest threshold Event Timing allows (web-vitals' default
is 40 ms); where interactions happened but none reached 16 ms, INP is 0. Interaction → reply
painted is the click's event time to the next frame after the reply to the message the click
emitted.
"""
import collections

import numpy as np

from bench.analysis import stats
from bench.plan.job import Outcome

OK = int(Outcome.OK)
INTERACTIONS_PER_SKIP = 50   # web-vitals: one worst interaction ignored per 50
LONGEST_KEPT = 10            # web-vitals keeps the 10 longest interactions only
POLLING_CONNECTIONS_PER_HOST = 6


def inp_us(entries, interaction_count):
    """INP in µs from Event Timing entries (``id``, ``duration`` ms) and the page's
    interaction count; NaN when there was no interaction at all."""
    worst = {}
    for e in entries:
        worst[e["id"]] = max(worst.get(e["id"], 0.0), float(e["duration"]))
    count = max(int(interaction_count or 0), len(worst))
    if not count:
        return float("nan")
    if not worst:
        return 0.0
    latencies = sorted(worst.values(), reverse=True)[:LONGEST_KEPT]
    return latencies[min(len(latencies) - 1, count // INTERACTIONS_PER_SKIP)] * 1000.0


def _percentiles(values_us, censored, deadline_us):
    """(p50, p99) in µs of ``values_us`` plus ``censored`` at the deadline (min-count rule)."""
    if not len(values_us) and not censored:
        return float("nan"), float("nan")
    h = stats.histogram_of(values_us, censored=censored, deadline_us=deadline_us)
    s = stats.summary(h, censored, deadline_us)
    return s["p50_us"], s["p99_us"]


def columns(arrays, measure, page, deadline_us):
    """The browser columns of a row from the page's arrays (``measure``: the messages of the
    measured window) and its summary (``page``: interactions and Event Timing entries)."""
    # connect attempts paint nothing; broadcasts carry no ack to pair frames by
    out = _message_columns(arrays, measure, deadline_us) \
        if page.get("kind") not in ("connect", "fanout") else \
        dict.fromkeys(("paint_p50_us", "paint_p99_us", "devtools_p50_us", "devtools_p99_us"),
                      float("nan"))
    clicks = page.get("interactions") or []
    answered = [c["painted_ns"] - c["at_ns"] for c in clicks if c["painted_ns"]]
    out.update(zip(("interaction_to_reply_p50_us", "interaction_to_reply_p99_us"), _percentiles(
        np.asarray(answered, dtype=float) / 1000.0, len(clicks) - len(answered), deadline_us)))
    out["inp_us"] = inp_us(page.get("event_entries") or [], page.get("interaction_count"))
    return out


def _message_columns(arrays, measure, deadline_us):
    """``paint_*`` and ``devtools_*`` of the measured messages."""
    outcome = arrays["outcome"][measure]
    intended = arrays["intended"][measure]
    ok = outcome == OK
    painted = arrays["painted"][measure]
    seen = ok & (painted > 0)
    out = dict(zip(("paint_p50_us", "paint_p99_us"), _percentiles(
        (painted[seen] - intended[seen]) / 1000.0, int((~seen).sum()), deadline_us)))
    sent_frame = arrays["devtools_sent"][measure]
    ack_frame = arrays["devtools_received"][measure]
    framed = ok & (sent_frame > 0) & (ack_frame > 0)
    if framed.any():
        lost = int((~ok).sum())
        out.update(zip(("devtools_p50_us", "devtools_p99_us"), _percentiles(
            (ack_frame[framed] - sent_frame[framed]) / 1000.0, lost, deadline_us)))
    else:
        out.update(devtools_p50_us=float("nan"), devtools_p99_us=float("nan"))
    return out


def negotiated(page):
    """The transport the page ended on (``websocket`` when every connection upgraded, else
    ``polling``) and one sentence on how it got there."""
    transports = page.get("transports") or []
    upgrades = [u for u in page.get("upgrade_ms") or [] if u is not None]
    final = "websocket" if transports and all(t == "websocket" for t in transports) \
        else "polling"
    if page.get("kind") == "connect" and not transports:
        return "", "no attempt connected"
    if page.get("kind") == "connect":
        counts = collections.Counter(transports)
        how = ("each attempt was closed once its Socket.IO connect completed, over "
               + " and ".join(f"{name} for {n}" for name, n in sorted(counts.items()))
               + f" of {len(transports)} (socket.io-client starts on polling; the WebSocket "
               "upgrade may finish before the connect)")
    elif upgrades and final == "websocket":
        how = (f"socket.io-client connected over polling and upgraded to WebSocket after "
               f"{np.median(upgrades):.0f} ms (median of {len(upgrades)} connections)")
    elif final == "websocket":
        how = "socket.io-client connected over WebSocket directly"
    else:
        how = "socket.io-client stayed on polling (the WebSocket upgrade did not happen)"
        if len(transports) + 1 > POLLING_CONNECTIONS_PER_HOST // 2:
            how += (f"; Chromium opens at most {POLLING_CONNECTIONS_PER_HOST} HTTP connections "
                    f"per host and each polling connection holds one or two: with "
                    f"{len(transports)} (+ the clicks' one), emits queue in the browser")
    if page.get("isolated") is False:
        how += ("; the page was not cross-origin isolated: its times have 100 µs resolution, "
                "not 5 µs")
    return final, how
