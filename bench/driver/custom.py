"""Driver loop for the user's own traffic (``--scenario-file``, parsed by bench/plan/traffic.py).

It rides the lean driver's machinery unchanged: the same connections (with the file's namespace,
auth, query and headers), the same per-message arrays, the same open and closed loops, settle and
deadline. Two things are the user's: what a connection sends (``send_message`` picks one of the
file's ``[[messages]]`` by weight, from a generator seeded per connection) and how a reply is
recognised (a frame handler that understands namespaced packets):

* ``reply = "ack"``: the event carries the message's index as its ack id; the ack
  ``43[/ns,]<id>[...]`` completes it (as for echo). ``reply_match`` = ``ack``.
* ``reply = "event:NAME"`` with ``"{seq}"`` in the args: ``"{seq}"`` is sent as the message's
  id ``seq-C-K`` (connection index C, message number K: unique in the run); a ``NAME`` event
  completes the message of this connection whose id it carries anywhere in its payload (the
  first still waiting, if it carries several). ``reply_match`` = ``seq``.
* ``reply = "event:NAME"`` without ``"{seq}"``: the next ``NAME`` event completes the oldest
  such message still waiting on that connection (in order). ``reply_match`` = ``fifo``.

Every event the server sends is accounted for, never dropped silently (``Tally``): a reply-named
event that completes nothing (none waiting, an id not waiting here, or in surplus) is
``unsolicited``; any other event is ``pushed``, counted per name. Counting starts at the
connect (events a connect handler emits count too). Under ``fifo`` an unsolicited event means
the server emits the reply's name unprompted, so an earlier one may have completed the wrong
message: the row is marked ambiguous (bench/analysis/recorder.py).

Latency runs from the intended send time to that reply. ``[[setup]]`` events are sent once per
connection after connecting, each ack awaited, before the clock starts.
"""
import asyncio
import bisect
import collections
import json
import random
import re

from bench.driver import protocol
from bench.driver.connection import connect, mono, source_for, url_for
from bench.driver.loops import closed_loop, open_loop, open_schedule, settle_and_close
from bench.driver.store import UNSENT, Messages
from bench.plan.traffic import SEQ, expand, has_seq

SETUP_BASE = 1 << 40  # setup acks use ids far above any message index
SEQ_ID = re.compile(r"seq-(\d+)-(\d+)")
_DECODER = json.JSONDecoder()


def seq_id(conn_index, k):
    """The id "{seq}" becomes for message ``k`` of connection ``conn_index``."""
    return f"seq-{conn_index}-{k}"


class Plan:
    """The traffic compiled once: packet bodies serialised, weights cumulated."""

    def __init__(self, traffic, pad=None):
        self.namespace = traffic["namespace"]
        self.prefix = protocol.ns_prefix(self.namespace)
        self.connect = dict(namespace=self.namespace, auth=traffic.get("auth"),
                            query=traffic.get("query") or None,
                            headers=traffic.get("headers") or None)
        self.setup = [(s["event"], _body(s["event"], s["args"], pad)) for s in traffic["setup"]]
        self.messages = [(m["event"], None if m["reply"] == "ack" else m["reply"][6:],
                          _body(m["event"], m["args"], pad)) for m in traffic["messages"]]
        self.seq = [has_seq(m["args"]) for m in traffic["messages"]]
        total, self.cumulative = 0.0, []
        for m in traffic["messages"]:
            total += m["weight"]
            self.cumulative.append(total)
        self.replies = {reply for _, reply, _ in self.messages if reply}
        self.by_seq = {r for (_, r, _), s in zip(self.messages, self.seq) if r and s}
        self.by_fifo = {r for (_, r, _), s in zip(self.messages, self.seq) if r and not s}
        # the least exact matching any message uses names the row
        self.reply_match = "fifo" if self.by_fifo else "seq" if self.by_seq else "ack"


class Tally:
    """What a driver process's connections received besides the replies they matched."""

    def __init__(self, plan):
        self.plan = plan
        self.unsolicited = collections.Counter()
        self.pushed = collections.Counter()

    def count(self, name):
        """An event that completed nothing: unsolicited if reply-named, else pushed."""
        if name is None:
            return
        (self.unsolicited if name in self.plan.replies else self.pushed)[name] += 1

    def early(self, _conn, text, _now):
        """connection.connect's ``on_event`` before ``attach``: nothing is waiting yet."""
        packet = protocol.parse_packet(text)
        if packet is not None and packet[1] == self.plan.namespace:
            self.count(event_name(packet[4]))

    def as_dict(self):
        """The ``replies`` entry of the driver's ``done`` line (merge_replies adds them up)."""
        return dict(reply_match=self.plan.reply_match, unsolicited=dict(self.unsolicited),
                    pushed=dict(self.pushed),
                    ambiguous=sum(n for name, n in self.unsolicited.items()
                                  if name in self.plan.by_fifo))


def merge_replies(parts):
    """Several driver processes' ``replies`` as one (counts added); None when none has one."""
    parts = [p for p in parts if p]
    if not parts:
        return None
    out = dict(reply_match=parts[0]["reply_match"], unsolicited=collections.Counter(),
               pushed=collections.Counter(), ambiguous=0)
    for p in parts:
        out["unsolicited"].update(p.get("unsolicited") or {})
        out["pushed"].update(p.get("pushed") or {})
        out["ambiguous"] += int(p.get("ambiguous") or 0)
    out["unsolicited"], out["pushed"] = dict(out["unsolicited"]), dict(out["pushed"])
    return out


def _body(event, args, pad):
    return json.dumps([event, *expand(args, pad)], separators=(",", ":"))


def event_name(data):
    """The event name of an event packet's data ``["NAME",...]`` without decoding the rest."""
    if len(data) < 3 or data[0] != "[":
        return None
    try:
        name, _ = _DECODER.raw_decode(data, 1)
    except ValueError:
        return None
    return name if isinstance(name, str) else None


def attach(conn, plan, seed, observer=None, tally=None):
    """Make a connected lean Connection speak ``plan``: its frame handler and its sender.
    ``observer(text)``, when given, sees every packet but pings (verification's witness);
    ``tally`` counts the events that completed nothing."""
    from picows import WSMsgType

    pick = random.Random(seed * 1_000_003 + conn.index).random
    top = plan.cumulative[-1]
    fifos = {name: collections.deque() for name in plan.by_fifo}
    conn.setup_waiters, conn.binary_pending, conn.force_choice = {}, None, None
    conn.errors = []
    tally = tally or Tally(plan)
    m = conn.messages
    extras = m.extras.get("message")

    def waiting_here(k, name):
        return (0 <= k < m.used and m.conn[k] == conn.index and m.outcome[k] == UNSENT
                and m.sent[k] > 0 and extras is not None
                and plan.messages[extras[k]][1] == name)

    def match(name, data):
        """The message this ``name`` event answers, or None."""
        if name in plan.by_seq:
            for found in SEQ_ID.finditer(data):
                c, k = int(found.group(1)), int(found.group(2))
                if c == conn.index and waiting_here(k, name):
                    return k
        fifo = fifos.get(name)
        return fifo.popleft() if fifo else None

    def complete(k, attachments, now):
        if attachments:
            conn.binary_pending = [k, attachments]
        elif k is not None:
            conn.acked(k, now)

    def on_frame(transport, frame):
        now = mono()
        kind = frame.msg_type
        if kind == WSMsgType.BINARY:
            if conn.binary_pending is not None:
                conn.binary_pending[1] -= 1
                if conn.binary_pending[1] <= 0:
                    k, conn.binary_pending = conn.binary_pending[0], None
                    conn.acked(k, now)
            return
        if kind == WSMsgType.CLOSE:
            transport.disconnect()
            return
        if kind != WSMsgType.TEXT:
            return
        text = frame.get_payload_as_utf8_text()
        if text == "2":
            transport.send(WSMsgType.TEXT, b"3")
            return
        if observer is not None:
            observer(text)
        if text.startswith("1"):
            transport.disconnect()
            return
        packet = protocol.parse_packet(text)
        if packet is None:
            return
        ptype, namespace, ack_id, attachments, data = packet
        if namespace != plan.namespace:
            return
        if ptype in "36" and ack_id is not None:
            if ack_id >= SETUP_BASE:
                waiter = conn.setup_waiters.pop(ack_id, None)
                if waiter is not None and not waiter.done():
                    waiter.set_result(data)
                return
            complete(ack_id, attachments, now)
        elif ptype in "25":
            name = event_name(data)
            k = match(name, data) if name in plan.replies else None
            if k is None:
                tally.count(name)
            else:
                complete(k, attachments, now)
        elif ptype == "1":
            transport.disconnect()
        elif ptype == "4":
            conn.errors.append(data[:200])

    def send_message(k, _body=None):
        if conn.force_choice is not None:
            choice = conn.force_choice
        else:
            choice = bisect.bisect_right(plan.cumulative, pick() * top)
            choice = min(choice, len(plan.messages) - 1)
        if extras is not None:
            extras[k] = choice
        _, reply, body = plan.messages[choice]
        if plan.seq[choice]:
            body = body.replace(SEQ, seq_id(conn.index, k))
        if reply is None:
            conn.send_text(protocol.user_event_packet(plan.namespace, k, body))
        else:
            if reply in fifos and not plan.seq[choice]:
                fifos[reply].append(k)
            conn.send_text(protocol.user_event_packet(plan.namespace, None, body))

    conn.on_ws_frame = on_frame
    conn.send_message = send_message


async def setup_one(conn, plan, index, timeout):
    """Send setup event ``index`` on ``conn`` and wait for its ack; TimeoutError otherwise."""
    event, body = plan.setup[index]
    ack_id = SETUP_BASE + index
    waiter = asyncio.get_running_loop().create_future()
    conn.setup_waiters[ack_id] = waiter
    conn.send_text(protocol.user_event_packet(plan.namespace, ack_id, body))
    return await asyncio.wait_for(waiter, timeout)


async def run_setup(conns, plan, timeout):
    """Every connection's [[setup]] events, each ack awaited, before the clock starts."""
    async def one(conn):
        for i, (event, _) in enumerate(plan.setup):
            try:
                await setup_one(conn, plan, i, timeout)
            except asyncio.TimeoutError:
                raise ConnectionError(f"setup event {event!r} on namespace {plan.namespace} "
                                      f"got no ack within {timeout:g} s") from None
    await asyncio.gather(*(one(c) for c in conns))


def fifo_linger_s(plan, m, job):
    """How long in-order matching stays connected after its last reply: long enough for a
    reply in surplus to arrive (three times the slowest reply seen, at least 0.25 s, at most
    the deadline); 0 when no message is matched in order."""
    if not plan.by_fifo:
        return 0.0
    n = m.used
    answered = m.received[:n] > 0
    slowest = float((m.received[:n][answered] - m.intended[:n][answered]).max()) / 1e9 \
        if answered.any() else 0.0
    return min(job.deadline, max(0.25, 3 * slowest))


async def run_custom(job, t0_source, sink):
    """Connect, set up, run the open or closed loop over the user's events, settle, close."""
    m = sink["m"] = Messages(job.max_messages, extras=("message",))
    m.deadline_ns = int(job.deadline * 1e9)
    plan = Plan(job.traffic, pad=job.traffic.get("pad"))
    tally = Tally(plan)
    conns = await asyncio.gather(*(
        connect(url_for(job, i), i, m, job.deadline, source=source_for(job, i),
                     on_event=tally.early, **plan.connect) for i in job.conns))
    for c in conns:
        attach(c, plan, job.seed, tally=tally)
    await run_setup(conns, plan, job.deadline)
    t0 = await t0_source()
    if job.rate:
        await open_loop(conns, m, open_schedule(job, t0), None, job.spin)
    else:
        await closed_loop(conns, m, None, t0, t0 + job.window_ns, m.conn.shape[0],
                               job.spin)
    await settle_and_close(m, conns, job, linger_s=fifo_linger_s(plan, m, job))
    m.counters["replies"] = tally.as_dict()  # the done line carries it
    return m
