"""A plan: variants × scenarios × load points × repeats, in a shuffled, seeded order.

Shuffling spreads slow drifts of a shared machine (thermal, neighbours) across variants
instead of letting them land on whichever variant runs last; the seed makes it reproducible.
"""
import random
from dataclasses import dataclass

from bench.errors import UsageError

SCENARIOS = ("echo", "rate")
DEFAULTS = dict(rate=400.0, connections=None, duration=3.0, warmup=1.0, repeats=3,
                payload=64, timeout=5.0, seed=1)
QUICK = dict(duration=1.0, warmup=0.5, repeats=1)
ECHO_CONNECTIONS, RATE_CONNECTIONS = 1, 10
MAX_MESSAGES = 5_000_000


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

    @property
    def open_loop(self):
        return self.rate is not None


def steps_for(scenario, variant, repeat, o):
    if scenario == "echo":
        conns = o["connections"] or ECHO_CONNECTIONS
        return [dict(variant=variant, scenario="echo", load_point=f"{conns} conn closed loop",
                     repeat=repeat, rate=None, connections=conns)]
    if scenario == "rate":
        conns = o["connections"] or RATE_CONNECTIONS
        return [dict(variant=variant, scenario="rate", load_point=f"{o['rate']:g} msg/s",
                     repeat=repeat, rate=float(o["rate"]), connections=conns)]
    raise UsageError(f"unknown scenario {scenario!r} (known: {', '.join(SCENARIOS)})")


def validate(o):
    if not o["rate"] > 0:
        raise UsageError(f"--rate must be > 0, got {o['rate']:g}")
    if not 0 < o["duration"] <= 3600:
        raise UsageError(f"--duration must be in (0, 3600] seconds, got {o['duration']:g}")
    if not 0 <= o["warmup"] <= 600:
        raise UsageError(f"--warmup must be in [0, 600] seconds, got {o['warmup']:g}")
    if not 1 <= o["repeats"] <= 100:
        raise UsageError(f"--repeats must be in [1, 100], got {o['repeats']}")
    if o["connections"] is not None and not 1 <= o["connections"] <= 900:
        raise UsageError(f"--connections must be in [1, 900], got {o['connections']}")
    if not 8 <= o["payload"] <= 1_000_000:
        raise UsageError(f"--payload must be in [8, 1000000] bytes, got {o['payload']}")
    if o["rate"] * (o["duration"] + o["warmup"]) > MAX_MESSAGES:
        raise UsageError(f"--rate × (--duration + --warmup) exceeds {MAX_MESSAGES} messages "
                         "per step; shorten the step")


def build(variants, scenarios, options):
    """Every step of the plan, shuffled with ``options['seed']``."""
    o = dict(DEFAULTS, **{k: v for k, v in options.items() if v is not None})
    if options.get("quick"):
        o.update({k: v for k, v in QUICK.items() if options.get(k) is None})
    validate(o)
    raw = []
    for repeat in range(1, o["repeats"] + 1):
        for variant in variants:
            for scenario in scenarios:
                raw.extend(steps_for(scenario, variant, repeat, o))
    random.Random(o["seed"]).shuffle(raw)
    steps = [Step(index=i, warmup=o["warmup"], duration=o["duration"], payload=o["payload"],
                  timeout=o["timeout"], **r) for i, r in enumerate(raw)]
    return steps, o


