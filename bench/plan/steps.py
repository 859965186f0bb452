"""A plan: variants × scenarios × load points × repeats, in a shuffled, seeded order.

Shuffling spreads slow drifts of a shared machine (thermal, neighbours) across variants
instead of letting them land on whichever variant runs last; the seed makes it reproducible.
A sweep is one step per (variant, repeat) whose rates are walked in order until the SLO
breaks, since the next rate only makes sense if the previous one held.
"""
import random
from dataclasses import dataclass, field

from bench.errors import UsageError

SCENARIOS = ("echo", "rate", "sweep", "fanout", "connect", "payload", "blocking")
DEFAULTS = dict(rate=400.0, connections=None, duration=2.0, warmup=1.0, repeats=3,
                payload=64, timeout=5.0, seed=1, slo_p99_ms=50.0, slo_ok=0.999,
                slo_achieved=0.95, sweep_start=100.0, sweep_factor=2.0, sweep_max=25600.0,
                fanout_rate=20.0, connect_rate=20.0, block_ms=50.0, block_rate=2.0)
QUICK = dict(duration=1.0, warmup=0.5, repeats=1)
QUICK_SWEEP_STEPS = 4
ECHO_CONNECTIONS, RATE_CONNECTIONS, FANOUT_MEMBERS = 1, 10, 50
MAX_MESSAGES = 5_000_000
PAYLOADS = [("64 B", 64, False), ("1 KiB", 1024, False), ("16 KiB", 16384, False),
            ("64 KiB", 65536, False), ("16 KiB binary", 16384, True)]
MIXES = ["echo-only", "sleep-blockers", "cpu-blockers"]


@dataclass(frozen=True)
class Step:
    index: int
    variant: str
    scenario: str
    load_point: str
    repeat: int
    rate: float | None
    connections: int
    warmup: float
    duration: float
    payload: int
    timeout: float
    kind: str = "open"  # closed | open | fanout | connect
    binary: bool = False
    blockers: dict | None = None
    sweep_rates: tuple = ()
    extra: dict = field(default_factory=dict)  # scenario columns (mix, ...)

    @property
    def open_loop(self):
        return self.kind != "closed"


def sweep_rates(o):
    rates, r = [], o["sweep_start"]
    while r <= o["sweep_max"] + 1e-9:
        rates.append(round(r, 3))
        r *= o["sweep_factor"]
    return tuple(rates[:QUICK_SWEEP_STEPS] if o.get("quick") else rates)


def steps_for(scenario, variant, repeat, o):
    base = dict(variant=variant, scenario=scenario, repeat=repeat)
    conns = o["connections"]
    if scenario == "echo":
        c = conns or ECHO_CONNECTIONS
        return [dict(base, load_point=f"{c} conn closed loop", rate=None, connections=c,
                     kind="closed")]
    if scenario == "rate":
        return [dict(base, load_point=f"{o['rate']:g} msg/s", rate=float(o["rate"]),
                     connections=conns or RATE_CONNECTIONS)]
    if scenario == "sweep":
        rates = sweep_rates(o)
        return [dict(base, load_point=f"{rates[0]:g} msg/s", rate=rates[0],
                     connections=conns or RATE_CONNECTIONS, sweep_rates=rates)]
    if scenario == "payload":
        return [dict(base, load_point=name, rate=float(o["rate"]),
                     connections=conns or RATE_CONNECTIONS, payload=size, binary=binary,
                     extra={"payload_bytes": size, "binary": binary})
                for name, size, binary in PAYLOADS]
    if scenario == "blocking":
        out = []
        for mix in MIXES:
            blockers = None if mix == "echo-only" else dict(
                kind=mix.split("-")[0], ms=o["block_ms"], rate=o["block_rate"])
            out.append(dict(base, load_point=mix, rate=float(o["rate"]),
                            connections=conns or RATE_CONNECTIONS, blockers=blockers,
                            extra={"mix": mix}))
        return out
    if scenario == "fanout":
        members = conns or FANOUT_MEMBERS
        return [dict(base, load_point=f"{members} members, {o['fanout_rate']:g} broadcasts/s",
                     rate=float(o["fanout_rate"]), connections=members, kind="fanout")]
    if scenario == "connect":
        return [dict(base, load_point=f"{o['connect_rate']:g} connects/s",
                     rate=float(o["connect_rate"]), connections=1, kind="connect")]
    raise UsageError(f"unknown scenario {scenario!r} (known: {', '.join(SCENARIOS)})")


def validate(o):
    checks = [
        ("rate", 0 < o["rate"] <= 200_000, "must be in (0, 200000] msg/s"),
        ("duration", 0 < o["duration"] <= 3600, "must be in (0, 3600] seconds"),
        ("warmup", 0 <= o["warmup"] <= 600, "must be in [0, 600] seconds"),
        ("repeats", 1 <= o["repeats"] <= 100, "must be in [1, 100]"),
        ("payload", 8 <= o["payload"] <= 1_000_000, "must be in [8, 1000000] bytes"),
        ("seed", 0 <= o["seed"] < 2 ** 32, "must be in [0, 2^32)"),
        ("slo_p99_ms", 0 < o["slo_p99_ms"] <= 60_000, "must be in (0, 60000] ms"),
        ("slo_ok", 0 < o["slo_ok"] <= 1, "must be in (0, 1]"),
        ("slo_achieved", 0 < o["slo_achieved"] <= 1, "must be in (0, 1]"),
        ("sweep_start", 0 < o["sweep_start"] <= o["sweep_max"], "must be in (0, --sweep-max]"),
        ("sweep_factor", 1.05 <= o["sweep_factor"] <= 10, "must be in [1.05, 10]"),
        ("sweep_max", o["sweep_max"] <= 200_000, "must be at most 200000 msg/s"),
        ("fanout_rate", 0 < o["fanout_rate"] <= 1000, "must be in (0, 1000] per second"),
        ("connect_rate", 0 < o["connect_rate"] <= 1000, "must be in (0, 1000] per second"),
        ("block_ms", 0 < o["block_ms"] <= 10_000, "must be in (0, 10000] ms"),
        ("block_rate", 0 < o["block_rate"] <= 100, "must be in (0, 100] per second"),
    ]
    for name, ok, rule in checks:
        if not ok:
            raise UsageError(f"--{name.replace('_', '-')} {rule}, got {o[name]:g}")
    if o["connections"] is not None and not 1 <= o["connections"] <= 900:
        raise UsageError(f"--connections must be in [1, 900], got {o['connections']}")
    if max(o["rate"], o["sweep_max"]) * (o["duration"] + o["warmup"]) > MAX_MESSAGES:
        raise UsageError(f"rate × (duration + warmup) exceeds {MAX_MESSAGES} messages per "
                         "step; shorten the step or lower the rate")


def build(variants, scenarios, options):
    """Every step of the plan, shuffled with ``options['seed']``."""
    o = dict(DEFAULTS, **{k: v for k, v in options.items() if v is not None})
    if options.get("quick"):
        o.update({k: v for k, v in QUICK.items() if options.get(k) is None})
    validate(o)
    raw = []
    for repeat in range(1, o["repeats"] + 1):
        for variant in variants:
            for scenario in dict.fromkeys(scenarios):
                raw.extend(steps_for(scenario, variant, repeat, o))
    random.Random(o["seed"]).shuffle(raw)
    steps = [Step(index=i, **dict(dict(warmup=o["warmup"], duration=o["duration"],
                                       payload=o["payload"], timeout=o["timeout"]), **r))
             for i, r in enumerate(raw)]
    return steps, o
