"""Scenario kinds as plugins: one module per kind of load, found by the kind's name.

A scenario (bench/plan/scenarios.py) names its kind; the kind's module says everything the
layers need to know about that kind of load: its traits (which clients run it, what it needs
of the server, which checks apply), its driver loop, the schedule a lost share counts, the row
builder, the row and per-message columns it adds (with their aggregation rule, read by
bench/analysis/columns.py). Layers ask ``kinds.get(step.kind)`` instead of branching on
the name, so a new kind is one new module here (named in ``NAMES``) plus its scenario record.

Kind modules are imported on first use and keep their imports light (the driver processes
import them); a hook that needs the analysis layer imports it inside the function.
"""
import importlib
from dataclasses import dataclass

NAMES = ("closed", "open", "fanout", "emit", "connect", "capacity", "reconnect")
ALL_CLIENTS = ("lean", "python-socketio", "browser")


@dataclass(frozen=True)
class Kind:
    """What one kind of load is and which functions carry it out."""
    name: str
    open_loop: bool                 # sends on a schedule (not one message in flight)
    clients: tuple = ALL_CLIENTS    # the clients that can drive it
    user_traffic: bool = False      # the user's own events (--scenario-file) can drive it
    members: bool = False           # its connections are members of one room (job.members)
    emitted: bool = False           # a separate emitter process sends, through the queue
    held: bool = False              # holds idle clients itself (own fleet, no load driver)
    restarts_server: bool = False   # restarts the server: a spawned variant, never --target
    one_row: bool = True            # one latency row per step (per-step intervals, precision)
    latency_series: bool = True     # one latency per message in send order (onsets, Nagle)
    split: bool = True              # its connections split over distributed workers
    page_connects: bool = True      # a browser page opens the step's connections up front
    extras: tuple = ()              # per-message arrays beyond the store's own
    columns: tuple = ()             # (names, type, unit, aggregation rule) of its row columns
    loop: object = None             # async (job, t0_source, sink) -> Messages: the lean loop
    schedule: object = None         # (job, t0) -> (conn, intended): what a lost share counts
    rows: object = None             # (step, load, transport, resources, client, note) -> rows
    sample_columns: object = None   # (frame, arrays) -> frame with per-message columns added
    page_plan: object = None        # (job, plan) -> the browser page's plan for this kind
    page_messages: object = None    # (job, got, offset_ns) -> Messages from the page's arrays
    measure: object = None          # held kinds: (runner, step, server, log, offset) -> rows
    estimate_s: object = None       # (step) -> its rough seconds, where not warm-up + window


def get(name):
    """The :class:`Kind` called ``name`` (a ValueError names the known ones)."""
    if name not in NAMES:
        raise ValueError(f"unknown scenario kind {name!r} (known: {', '.join(NAMES)})")
    return importlib.import_module(f"bench.kinds.{name}").KIND
