"""A plan: variants × scenarios × load points × clients/transports × repeats, shuffled, seeded.

Shuffling spreads slow drifts of a shared machine (thermal, neighbours) across variants
instead of letting them land on whichever variant runs last; the seed makes it reproducible.
A sweep is one step per (variant, repeat) whose rates are walked in order until the SLO
breaks, since the next rate only makes sense if the previous one held.
"""
import random
from dataclasses import dataclass, field, replace

from bench import kinds
from bench.errors import UsageError
from bench.plan import limits, precision
from bench.plan.scenarios import SCENARIOS, sweep_rates

DEFAULTS = dict(rate=400.0, connections=None, duration=2.5, warmup=1.0, repeats=3,
                payload=64, deadline_ms=5000.0, seed=1, slo_p99_ms=50.0, slo_ok=0.999,
                slo_achieved=0.95, sweep_start=100.0, sweep_factor=2.0, sweep_max=25600.0,
                sweep_step_max=20.0, fanout_rate=20.0, connect_rate=20.0, block_ms=50.0,
                block_rate=2.0, arrivals="uniform", client="lean", transport=None,
                emit_rate=20.0, members=None, servers=None, max_connections=10_000,
                precision=None, max_duration=precision.MAX_DURATION_S)
QUICK = dict(duration=1.0, warmup=0.5, repeats=1)
MAX_MESSAGES = 5_000_000
SLO_QUANTILE = 99.0     # the sweep's SLO percentile: a step needs 10 / (1 − 0.99) samples
CLIENTS, TRANSPORTS = ("lean", "python-socketio", "browser"), ("websocket", "polling")


@dataclass(frozen=True)
class Step:
    """One measured step of a plan: variant, scenario, load point, repeat and its settings."""
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
    deadline: float
    binary: bool = False
    blockers: dict | None = None
    sweep_rates: tuple = ()
    client: str = "lean"
    transport: str | None = None        # forced transport; None: WebSocket, else what works
    arrivals: str = "uniform"
    seed: int = 1
    extra: dict = field(default_factory=dict)  # scenario columns (mix, ...)
    server_nodelay: bool = False        # BENCH_SERVER_NODELAY=1: TCP_NODELAY on accepted sockets
    profiled: bool = False              # py-spy samples the server in the measured window
    server_gc: str = "default"          # BENCH_SERVER_GC: the server's cyclic GC (freeze|off)
    server_events: bool = False         # BENCH_SERVER_EVENTS: the server records GC and its loop

    @property
    def kind(self):
        """The driver loop this step's scenario needs."""
        return SCENARIOS[self.scenario].kind

    @property
    def open_loop(self):
        """Does this step send on a schedule?"""
        return SCENARIOS[self.scenario].open_loop

    def at_rate(self, rate, o):
        """A sweep's step at ``rate``, long enough to hold the samples its SLO percentile
        needs (bounded by ``--sweep-step-max``)."""
        needed = (10.0 / (1.0 - SLO_QUANTILE / 100.0)) / rate
        duration = max(self.duration, min(needed * 1.05, o["sweep_step_max"]))
        return replace(self, rate=rate, load_point=f"{rate:g} msg/s", sweep_rates=(),
                       duration=round(duration, 3), extra=dict(self.extra))


def parse_list(name, text, allowed):
    """A comma-separated option as a list of allowed values, else one clear UsageError."""
    items = [t.strip() for t in str(text).split(",") if t.strip()]
    bad = [t for t in items if t not in allowed]
    if bad or not items:
        raise UsageError(f"--{name} takes a comma-separated list of {', '.join(allowed)}; "
                         f"got {text!r}")
    return list(dict.fromkeys(items))


def client_transports(o):
    """(client, transport) pairs measured side by side; transport None = automatic."""
    clients = parse_list("client", o["client"], CLIENTS)
    if o["transport"] is None:
        return [(c, None) for c in clients]
    transports = parse_list("transport", o["transport"], TRANSPORTS)
    pairs = [(c, t) for c in clients for t in transports if not (c == "lean" and t == "polling")]
    if not pairs:
        raise UsageError("the lean client speaks WebSocket only; add --client python-socketio "
                         "to measure polling")
    return pairs


def validate(o):
    """Refuse out-of-range options before anything starts, one line each."""
    checks = [
        ("rate", 0 < o["rate"] <= 200_000, "must be in (0, 200000] msg/s"),
        ("duration", 0 < o["duration"] <= 3600, "must be in (0, 3600] seconds"),
        ("warmup", 0 <= o["warmup"] <= 600, "must be in [0, 600] seconds"),
        ("repeats", 1 <= o["repeats"] <= 100, "must be in [1, 100]"),
        ("payload", 8 <= o["payload"] <= 1_000_000, "must be in [8, 1000000] bytes"),
        ("deadline_ms", 1 <= o["deadline_ms"] <= 120_000, "must be in [1, 120000] ms"),
        ("seed", 0 <= o["seed"] < 2 ** 32, "must be in [0, 2^32)"),
        ("slo_p99_ms", 0 < o["slo_p99_ms"] <= 60_000, "must be in (0, 60000] ms"),
        ("slo_ok", 0 < o["slo_ok"] <= 1, "must be in (0, 1]"),
        ("slo_achieved", 0 < o["slo_achieved"] <= 1, "must be in (0, 1]"),
        ("sweep_start", 0 < o["sweep_start"] <= o["sweep_max"], "must be in (0, --sweep-max]"),
        ("sweep_factor", 1.05 <= o["sweep_factor"] <= 10, "must be in [1.05, 10]"),
        ("sweep_max", o["sweep_max"] <= 200_000, "must be at most 200000 msg/s"),
        ("sweep_step_max", 0 < o["sweep_step_max"] <= 600, "must be in (0, 600] seconds"),
        ("fanout_rate", 0 < o["fanout_rate"] <= 1000, "must be in (0, 1000] per second"),
        ("connect_rate", 0 < o["connect_rate"] <= 1000, "must be in (0, 1000] per second"),
        ("block_ms", 0 < o["block_ms"] <= 10_000, "must be in (0, 10000] ms"),
        ("block_rate", 0 < o["block_rate"] <= 100, "must be in (0, 100] per second"),
        ("emit_rate", 0 < o["emit_rate"] <= 1000, "must be in (0, 1000] per second"),
        ("max_duration", o["duration"] <= o["max_duration"] <= 3600,
         "must be in [--duration, 3600] seconds"),
    ]
    for name, ok, rule in checks:
        if not ok:
            raise UsageError(f"--{name.replace('_', '-')} {rule}, got {o[name]:g}")
    problem = limits.validate(o)  # connection counts against what this machine allows
    if problem:
        raise UsageError(problem)
    if o["arrivals"] not in ("uniform", "poisson"):
        raise UsageError(f"--arrivals must be uniform or poisson, got {o['arrivals']!r}")
    if o["servers"] is not None and not 1 <= o["servers"] <= 16:
        raise UsageError(f"--servers must be in [1, 16], got {o['servers']}")
    if max(o["rate"], o["sweep_max"]) * (o["duration"] + o["warmup"]) > MAX_MESSAGES:
        raise UsageError(f"rate × (duration + warmup) exceeds {MAX_MESSAGES} messages per "
                         "step; shorten the step or lower the rate")


def options_with_defaults(options):
    """The run's options with defaults (and --quick) filled in, validated."""
    o = dict(DEFAULTS, **{k: v for k, v in options.items() if v is not None})
    if options.get("quick"):
        o.update({k: v for k, v in QUICK.items() if options.get(k) is None})
    validate(o)
    o["precision"] = precision.parse(o["precision"])
    return o


TOGGLES = {"server_nodelay": ("--server-nodelay", "server_nodelay"),
           "profile": ("--profile", "profiled")}


def toggled(raw, o):
    """Each step once per value of ``--server-nodelay`` / ``--profile`` (``both``: off and
    on, in the same shuffled plan); the value is a Step field and a row column."""
    for option, (flag, name) in TOGGLES.items():
        value = o.get(option) or "off"
        values = {"off": [False], "on": [True], "both": [False, True]}.get(value)
        if values is None:
            raise UsageError(f"{flag} must be on, both or off; got {value!r}")
        raw = [dict(r, **{name: v}, extra=dict(r.get("extra", {}), **{name: v}))
               for r in raw for v in values]
    return raw


GC_SETTINGS, EVENTS_SETTINGS = ("default", "freeze", "off"), ("on", "off")


def causes(raw, o):
    """Each step once per ``--server-gc`` value and ``--server-events`` value (lists run side
    by side); a column where a run sets or varies it (``server_gc``, ``server_events``)."""
    gcs = parse_list("server-gc", o.get("server_gc") or "default", GC_SETTINGS)
    events = parse_list("server-events", o.get("server_events") or "on", EVENTS_SETTINGS)
    out = []
    for r in raw:
        for g in gcs:
            for e in events:
                extra = dict(r.get("extra", {}))
                if gcs != ["default"]:
                    extra["server_gc"] = g
                if len(events) > 1:
                    extra["server_events"] = e == "on"
                out.append(dict(r, server_gc=g, server_events=e == "on", extra=extra))
    return out


def build(variants, scenarios, options):
    """Every step of the plan, shuffled with ``options['seed']``."""
    o = options_with_defaults(options)
    unknown = [s for s in scenarios if s not in SCENARIOS]
    if unknown:
        raise UsageError(f"unknown scenario {unknown[0]!r} (known: {', '.join(SCENARIOS)})")
    pairs = client_transports(o)
    raw = []
    for repeat in range(1, o["repeats"] + 1):
        for variant in variants:
            for name in dict.fromkeys(scenarios):
                scenario = SCENARIOS[name]
                points = scenario.points(o)
                if scenario.searched:  # walked by the sweep search from its first rate
                    points = points[:1]
                for client, transport in pairs:
                    for p in points:
                        raw.append(dict(
                            variant=variant, scenario=name, repeat=repeat,
                            load_point=p.load_point, rate=p.rate, connections=p.connections,
                            payload=p.payload or o["payload"], binary=p.binary,
                            blockers=p.blockers, extra=dict(p.extra), client=client,
                            transport=transport,
                            sweep_rates=sweep_rates(o) if scenario.searched else ()))
    raw = causes(toggled(raw, o), o)
    random.Random(o["seed"]).shuffle(raw)
    steps = [Step(index=i, warmup=o["warmup"], duration=o["duration"],
                  deadline=o["deadline_ms"] / 1000.0, arrivals=o["arrivals"],
                  seed=o["seed"] + i, **r)
             for i, r in enumerate(raw)]
    return steps, o


def estimate_seconds(steps, o, overhead_s=2.5):
    """Rough wall time of a plan: each step's warm-up + window + lifecycle overhead; a sweep
    counts every rate it may walk (an upper bound: it stops at the first break)."""
    total = 0.0
    for s in steps:
        estimate = kinds.get(s.kind).estimate_s
        if estimate:
            total += estimate(s) + overhead_s
        elif s.sweep_rates:
            total += sum(s.at_rate(r, o).duration + s.warmup + overhead_s
                         for r in s.sweep_rates)
        else:
            total += s.warmup + s.duration + overhead_s
    return total
