"""The scenarios, as data: one frozen record each, with the one function that lists its
load points. Adding a scenario of an existing kind means adding a record here; a new kind of
load is one module of bench/kinds plus its record. Planning, recording, the table and the
charts read the record and its kind.
"""
from dataclasses import dataclass, field

from bench import kinds

ECHO_CONNECTIONS, RATE_CONNECTIONS, FANOUT_MEMBERS = 1, 10, 50
PAYLOADS = [("64 B", 64, False), ("1 KiB", 1024, False), ("16 KiB", 16384, False),
            ("64 KiB", 65536, False), ("16 KiB binary", 16384, True)]
MIXES = ["echo-only", "sleep-blockers", "cpu-blockers"]
QUICK_SWEEP_STEPS = 4


@dataclass(frozen=True)
class Point:
    """One load point of a scenario: its label and what it sets on the step."""
    load_point: str
    rate: float | None
    connections: int
    payload: int | None = None
    binary: bool = False
    blockers: dict | None = None
    extra: dict = field(default_factory=dict)


@dataclass(frozen=True)
class Scenario:
    """What a scenario is: its kind, load points and extra columns."""
    name: str
    kind: str               # a kind of load: a module of bench/kinds
    load_unit: str          # what the load point varies
    description: str
    points: object          # options -> [Point]
    columns: tuple = ()     # (names, type, unit, aggregation rule) of its own row columns
    chart: str = "bars"     # its own chart beside the spectrum and CDF (bench/output/plots)
    searched: bool = False  # rates walked until the SLO breaks (one step per rate)

    @property
    def open_loop(self):
        """Does the scenario send on a schedule (not one message in flight)?"""
        return kinds.get(self.kind).open_loop


def _echo(o):
    c = o["connections"] or ECHO_CONNECTIONS
    return [Point(f"{c} conn closed loop", None, c)]


def _rate(o):
    return [Point(f"{o['rate']:g} msg/s", float(o["rate"]), o["connections"] or RATE_CONNECTIONS)]


def sweep_rates(o):
    """The rates a sweep may walk, from --sweep-start by --sweep-factor up to --sweep-max."""
    rates, r = [], o["sweep_start"]
    while r <= o["sweep_max"] + 1e-9:
        rates.append(round(r, 3))
        r *= o["sweep_factor"]
    return tuple(rates[:QUICK_SWEEP_STEPS] if o.get("quick") else rates)


def _sweep(o):
    return [Point(f"{r:g} msg/s", r, o["connections"] or RATE_CONNECTIONS)
            for r in sweep_rates(o)]


def _payload(o):
    return [Point(name, float(o["rate"]), o["connections"] or RATE_CONNECTIONS, size, binary,
                  extra={"payload_bytes": size, "binary": binary})
            for name, size, binary in PAYLOADS]


def _blocking(o):
    return [Point(mix, float(o["rate"]), o["connections"] or RATE_CONNECTIONS,
                  blockers=None if mix == "echo-only" else dict(
                      kind=mix.split("-")[0], ms=o["block_ms"], rate=o["block_rate"]),
                  extra={"mix": mix})
            for mix in MIXES]


def _fanout(o):
    sizes = o.get("members") or [o["connections"] or FANOUT_MEMBERS]  # --members wins
    return [Point(f"{members} members, {o['fanout_rate']:g} broadcasts/s",
                  float(o["fanout_rate"]), members) for members in sizes]


def _emit(o):
    return [Point(f"{members} members, {o['emit_rate']:g} emits/s", float(o["emit_rate"]),
                  members)
            for members in o.get("members") or [FANOUT_MEMBERS]]


RECONNECT_CLIENTS = 100


def _capacity(o):
    top = int(o["max_connections"])
    return [Point(f"up to {top} connections", None, top)]


def _reconnect(o):
    clients = o["connections"] or RECONNECT_CLIENTS
    return [Point(f"{clients} clients", None, clients)]


def _connect(o):
    return [Point(f"{o['connect_rate']:g} connects/s", float(o["connect_rate"]), 1)]


SCENARIOS = {s.name: s for s in [
    Scenario("echo", "closed", "connections",
             "closed loop, one message in flight per connection: the round-trip floor", _echo),
    Scenario("rate", "open", "msg/s",
             "open loop, N connections, total rate R, latency from each intended send time",
             _rate),
    Scenario("sweep", "open", "msg/s", "rising rates until the SLO breaks: the knee", _sweep,
             columns=(("slo_pass", "bool", "", "repeat"),), chart="sweep", searched=True),
    Scenario("fanout", "fanout", "members",
             "broadcast to N room members: first/median/last recipient and reach", _fanout,
             chart="fanout"),
    Scenario("emit", "emit", "members",
             "a separate process emits to a room through the message queue (write-only "
             "manager): first/median/last recipient and reach (scale-out variants)", _emit,
             chart="fanout"),
    Scenario("connect", "connect", "connects/s",
             "new connections arriving at a rate: TCP, upgrade, Engine.IO open, Socket.IO connect",
             _connect),
    Scenario("payload", "open", "size", "echo at the rate with 64 B … 64 KiB and binary",
             _payload, columns=(("payload_bytes", "float", "bytes", "static"),
                                ("binary", "bool", "", "static"))),
    Scenario("blocking", "open", "mix",
             "echo traffic plus handlers that block (sleep or CPU): does one delay everyone?",
             _blocking, columns=(("mix", "text", "", "static"),), chart="blocking"),
    Scenario("capacity", "capacity", "connections",
             "connected clients rising in steps, idle but answering pings: how many a server "
             "holds (probe latency, RSS, drops per step; capacity.csv)", _capacity),
    Scenario("reconnect", "reconnect", "clients",
             "the server restarted under N clients: time until every client is back and "
             "answering, and what was lost", _reconnect),
]}
