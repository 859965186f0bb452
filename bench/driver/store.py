"""The per-message store of a driver process and its one settle rule: how each message ends.

Every driver (the lean client, the stock python-socketio client, the idle-client capacity
driver, the user's traffic) records into :class:`Messages` and ends its messages here, so a
message that ends the same way has the same outcome in every driver:

* ``ok``: its reply arrived within the deadline (:func:`record_reply`);
* ``timeout``: its reply arrived past the deadline, or never while its connection stayed up;
* ``disconnect``: its connection was gone when it was due (:func:`lost`), or went away
  before its reply came (:func:`settle`);
* ``error``: it was never sent although its connection was up (the send itself failed).
"""
import numpy as np

from bench.plan.job import Outcome

OK, TIMEOUT, DISCONNECT, ERROR, UNSENT = (int(o) for o in (
    Outcome.OK, Outcome.TIMEOUT, Outcome.DISCONNECT, Outcome.ERROR, Outcome.UNSENT))


class Messages:
    """Per-message arrays for one worker, indexed by message number (= ack id)."""

    def __init__(self, capacity, extras=()):
        self.extras = {name: np.zeros(capacity, dtype=np.int64) for name in extras}
        self.conn = np.full(capacity, -1, dtype=np.int32)
        self.intended = np.zeros(capacity, dtype=np.int64)
        self.sent = np.zeros(capacity, dtype=np.int64)
        self.received = np.zeros(capacity, dtype=np.int64)
        self.outcome = np.zeros(capacity, dtype=np.int8)
        self.recv_wait = np.zeros(capacity, dtype=np.int64)
        self.deadline_ns = 1 << 62
        self.used = 0
        self.counters = {}  # figures beyond the arrays, for the done line (custom.py: replies)

    def trimmed(self):
        """The arrays cut to the messages used: what a driver process saves."""
        n = self.used
        return dict(conn=self.conn[:n], intended=self.intended[:n], sent=self.sent[:n],
                    received=self.received[:n], outcome=self.outcome[:n],
                    recv_wait=self.recv_wait[:n],
                    **{name: a[:n] for name, a in self.extras.items()})


def record_reply(m, k, now, woke_ns=None):
    """Record the reply to message ``k``; True when it counted. Only a message that was sent
    and is still waiting counts (a stray or repeated id must not invent a reply); past its
    deadline it is a timeout, its time kept in ``received``. ``woke_ns``: when the driver's
    loop woke with the reply ready (its receive wait), if the driver knows."""
    if 0 <= k < m.used and m.outcome[k] == UNSENT and m.sent[k] > 0:
        m.received[k] = now
        m.recv_wait[k] = now - woke_ns if woke_ns else 0
        m.outcome[k] = OK if now - m.intended[k] <= m.deadline_ns else TIMEOUT
        return True
    return False


def lost(m, k):
    """Message ``k`` fell due while its connection was gone (server, proxy or network died):
    it is lost to the disconnect, never sent."""
    m.outcome[k] = DISCONNECT


def liveness(conns):
    """{connection index: still connected} of lean connections, for :func:`settle`."""
    return {c.index: c.alive for c in conns}


def settle(m, alive):
    """End every message still waiting, by whether its connection (``alive``: index → bool)
    is still up: sent ones become timeouts (up) or disconnects (gone), never-sent ones errors
    (up) or disconnects (gone). Counted, never dropped."""
    n = m.used
    waiting = np.nonzero(m.outcome[:n] == UNSENT)[0]
    for k in waiting:
        up = alive.get(int(m.conn[k]), False)
        if m.sent[k] > 0:
            m.outcome[k] = TIMEOUT if up else DISCONNECT
        else:
            m.outcome[k] = ERROR if up else DISCONNECT
