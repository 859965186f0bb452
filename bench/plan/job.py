"""The job a driver process runs: one typed record, built in one place, serialised once.

Run, calibrate and soak all build their jobs with :func:`for_step` or :class:`Job` directly;
the driver processes read it back with :meth:`Job.load`. A job for one driver process carries
its share of connections (``conns``) out of ``total_conns``.
"""
import enum
import json
from dataclasses import asdict, dataclass, replace

from bench import kinds


class Outcome(enum.IntEnum):
    """What became of one message (stored as int8 in the per-message arrays)."""
    UNSENT = 0
    OK = 1
    TIMEOUT = 2
    DISCONNECT = 3
    ERROR = 4

    @property
    def label(self):
        """The word written in samples.csv.gz (a message never settled counts as an error)."""
        return "error" if self is Outcome.UNSENT else self.name.lower()


@dataclass(frozen=True)
class Job:
    """What one driver process runs: targets, load, its share of connections, where to write."""
    targets: tuple                      # ((host, port), ...): connection i goes to targets[i % n]
    connections: int                    # connections of the whole step
    warmup: float
    duration: float
    deadline: float = 5.0               # seconds a message may wait for its reply
    rate: float | None = None           # total msg/s (None: closed loop)
    kind: str = "open"                  # a name of bench/kinds
    payload: int = 64
    binary: bool = False
    event: str = "echo"
    blockers: dict | None = None        # {"kind": "sleep"|"cpu", "ms": .., "rate": ..}
    members: int = 0                    # fanout / emit room size
    arrivals: str = "uniform"           # uniform | poisson (open loop)
    seed: int = 1
    spin: bool = False                  # busy-poll: only when the driver owns its core alone
    source_addresses: tuple = ()        # client sockets bound to these before connecting
    transport: str = "websocket"        # the stock client's transport (python-socketio driver)
    ca_file: str = ""                   # wss: the one certificate trusted (nginx under --tls)
    room: str = ""                      # fanout / emit room (default: fan-<first port>)
    cpus: tuple = ()
    conns: tuple = ()                   # this process's connection indices
    out: str = ""                       # where this process writes its arrays
    traffic: dict | None = None         # the user's own events (bench/plan/traffic.py)

    @property
    def total_conns(self):
        """Connections of the whole step (this process holds ``conns`` of them)."""
        return self.connections

    @property
    def window_ns(self):
        """Warm-up plus measured window: how long the load runs."""
        return int((self.warmup + self.duration) * 1e9)

    @property
    def max_messages(self):
        """The arrays' bound: the whole open-loop schedule, or a closed-loop cap
        (50,000 round trips per second per connection is beyond any server here)."""
        if self.rate:
            return int(self.rate * (self.warmup + self.duration) + 2)
        return min(5_000_000, int((self.warmup + self.duration) * 50_000) * max(1, len(self.conns)
                                                                                 or self.connections))

    def share(self, worker, workers, out):
        """This job's part for driver process ``worker`` of ``workers`` (of the job's own
        connections when it is already a share, e.g. one machine's in a distributed run)."""
        mine = self.conns or tuple(range(self.connections))
        return replace(self, conns=tuple(mine)[worker::workers], out=out)

    def dump(self, path):
        """Write the job for a driver process to read."""
        with open(path, "w") as f:
            json.dump(asdict(self), f)

    @classmethod
    def load(cls, path):
        """Read a job written by :meth:`dump`."""
        with open(path) as f:
            data = json.load(f)
        data["targets"] = tuple(tuple(t) for t in data["targets"])
        for key in ("source_addresses", "cpus", "conns"):
            data[key] = tuple(data[key])
        return cls(**data)


def for_step(step, targets, spin=False, source_addresses=(), cpus=()):
    """The job that measures ``step`` against ``targets``."""
    return Job(targets=tuple(tuple(t) for t in targets), connections=step.connections,
               warmup=step.warmup, duration=step.duration, deadline=step.deadline,
               rate=step.rate if step.open_loop else None, kind=step.kind,
               payload=step.payload, binary=step.binary, blockers=step.blockers,
               members=step.connections if kinds.get(step.kind).members else 0,
               arrivals=step.arrivals, seed=step.seed, spin=spin,
               source_addresses=tuple(source_addresses), transport=step.transport,
               cpus=tuple(cpus or ()))
