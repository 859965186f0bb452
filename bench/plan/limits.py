"""What this machine allows in connections, checked before anything starts.

One server process holds every connection of a single-process variant, so its open-file
limit bounds a step: the harness raises its own soft RLIMIT_NOFILE to the hard limit (every
process it spawns inherits it), and a plan asking for more than that is refused. Client
sockets are spread over several 127.0.0.x source addresses, so the ephemeral port range
(about 28k per source address) is not the limit; memory is checked at a generous 150 KB per
connection (server ≈ 60 KB measured on socketio-run-gevent, plus the driver's side).
"""
import os

from bench.machine import nofile_hard_limit

FD_MARGIN = 256                 # listening sockets, logs, pipes, the interpreter's own files
PER_CONNECTION_KB = 150
SOURCE_ADDRESSES = 8            # clients bind to 127.0.0.1 … 127.0.0.8 before connecting
PER_DRIVER_PROCESS = 10_000     # load connections per driver process: one spinning process on
#                               its own core holds 10,000 at a 20,000 msg/s open loop (calibrate)
HELD_PER_PROCESS = 2500         # held clients (capacity, reconnect, churn) per process: each
#                               keeps its own handshakes in flight, so more processes walk a
#                               server that stalls connects sooner


def ephemeral_ports():
    """Client ports one source address offers (the kernel's ephemeral range)."""
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            low, high = map(int, f.read().split())
        return high - low + 1
    except (OSError, ValueError):
        return 28_000


def available_kb():
    """Memory available now (kB), or None where /proc does not say."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return None


def connection_limit():
    """(most connections one step may hold here, what sets that limit)."""
    hard = nofile_hard_limit()
    limits = []
    if hard is not None:
        limits.append((hard - FD_MARGIN, f"the open-file hard limit ({hard}) of the one "
                                         "server process that holds them"))
    limits.append((ephemeral_ports() * SOURCE_ADDRESSES - FD_MARGIN,
                   f"ephemeral ports over {SOURCE_ADDRESSES} source addresses"))
    kb = available_kb()
    if kb:
        limits.append((kb // PER_CONNECTION_KB, f"available memory ({kb // 1024} MB at "
                                                f"{PER_CONNECTION_KB} KB per connection)"))
    return min(limits)


def source_addresses(connections):
    """Client source addresses for ``connections``: none (the kernel picks) for a few,
    else 127.0.0.1 … 127.0.0.8 in turn."""
    if connections <= 900:
        return ()
    return tuple(f"127.0.0.{k}" for k in range(1, SOURCE_ADDRESSES + 1))


def per_driver_process(default=PER_DRIVER_PROCESS):
    """Connections per driver process (``default``); ``BENCH_PER_DRIVER_PROCESS`` overrides
    it (tests spread a few hundred connections over several processes with it)."""
    try:
        value = int(os.environ.get("BENCH_PER_DRIVER_PROCESS", default))
    except ValueError:
        return default
    return value if value > 0 else default


def driver_processes(connections, per_process=PER_DRIVER_PROCESS):
    """Driver processes for ``connections``: each holds at most ``per_process`` (load
    connections by default, ``HELD_PER_PROCESS`` for held clients) or the test override."""
    return max(1, -(-int(connections) // per_driver_process(per_process)))


def check(name, value):
    """A UsageError text when ``value`` connections exceed the machine, else ""."""
    limit, why = connection_limit()
    if value > limit:
        return f"--{name} {value} is more than this machine allows ({limit}: {why})"
    return ""


CAPACITY_LEVELS = (100, 300, 1000, 3000, 10_000, 30_000, 100_000)


def capacity_levels(max_connections):
    """The capacity scenario's steps: 100, 300, 1k, 3k, 10k, … up to ``max_connections``
    (which is always the last step)."""
    levels = [n for n in CAPACITY_LEVELS if n < max_connections]
    return tuple(levels + [int(max_connections)])


def parse_members(text):
    """``--members N[,N…]`` → sorted distinct room sizes, or a UsageError text."""
    items = [t.strip() for t in str(text).split(",") if t.strip()]
    try:
        sizes = [int(t) for t in items]
    except ValueError:
        return None, f"--members takes whole numbers separated by commas, got {text!r}"
    if not sizes or min(sizes) < 1:
        return None, f"--members sizes must be at least 1, got {text!r}"
    return sorted(set(sizes)), ""


def validate(o):
    """Connection counts of a plan against the machine: a UsageError text, or ""."""
    if o.get("connections") is not None:
        if o["connections"] < 1:
            return f"--connections must be at least 1, got {o['connections']}"
        problem = check("connections", o["connections"])
        if problem:
            return problem
    if o.get("max_connections") is not None:
        if o["max_connections"] < 1:
            return f"--max-connections must be at least 1, got {o['max_connections']}"
        problem = check("max-connections", o["max_connections"])
        if problem:
            return problem
    if o.get("members") is not None and not isinstance(o["members"], (list, tuple)):
        sizes, problem = parse_members(o["members"])
        if problem:
            return problem
        o["members"] = sizes
        for size in sizes:  # the sender is one connection more
            problem = check("members", size + 1)
            if problem:
                return problem
    return ""
