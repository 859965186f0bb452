"""The ``capacity.csv`` schema and the capacity knee rule.

One row per (variant, step of the walk, repeat). The knee is the most connections held with
none dropped, no ping timeout and probe p99 within the SLO; ``bound`` as for sweeps: exact
(a step broke it), lower (every step held), none (the first step broke). Columns are added,
never renamed (docs/DESIGN.md).
"""
COLUMNS = ["variant", "repeat", "connections", "held", "dropped", "ping_timeouts",
           "connect_p50_us", "connect_p99_us", "probe_p50_us", "probe_p99_us",
           "server_rss_mb", "rss_per_conn_kb", "server_cpu_pct", "driver_rss_mb", "bound",
           "reason",
           # additions
           "knee", "knee_connections", "step_ok", "step_reason", "connect_failed",
           "connect_errors", "connect_retries", "hold_s", "pinged", "probes", "probes_lost",
           "ping_interval_ms",
           "server_rss_base_mb", "driver_processes", "server_fds",
           "servers", "clients_per_server", "server_nodelay"]


def capacity_row(step, level, values, bound, reason):
    """One capacity.csv row: every column present (NaN where not measured)."""
    row = {c: float("nan") for c in COLUMNS}
    row.update(variant=step.variant, repeat=step.repeat, connections=level, bound=bound,
               reason=reason, knee=False, servers=step.extra.get("servers", float("nan")),
               server_nodelay=step.server_nodelay)
    row.update(values)
    return row


def knee_rows(step, table, knee, broke):
    """capacity.csv rows of one walk so far, each with the walk's knee, bound and reason."""
    if knee is None:
        bound, reason = "none", f"first step failed: {broke}"
    elif not broke:
        bound, reason = "lower", f"held every step up to {knee} connections"
    else:
        bound, reason = "exact", broke
    return [capacity_row(step, values["connections"],
                         dict(values, knee=values["connections"] == knee,
                              knee_connections=knee or 0), bound, reason) for values in table]
