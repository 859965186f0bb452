"""The capacity kind: connected clients rising in steps, idle but answering pings, held by
the harness's own fleet of driver processes (bench/execute/capacity.py walks the levels)."""
from bench.kinds import Kind
from bench.plan import limits


def measure(runner, step, server, log_path, offset):
    """The walk of rising client counts against a started server: (rows, resources)."""
    from bench.execute import capacity

    return capacity.measure(runner, step, server, log_path, offset, capacity.walk,
                            capacity.failed_walk)


def estimate_s(step):
    """Every level held past the (default 25 s) ping interval, plus its connects."""
    return sum(max(step.duration, 27.0) + 2 + n / 500
               for n in limits.capacity_levels(step.connections))


KIND = Kind("capacity", open_loop=False, clients=("lean",), held=True, one_row=False,
            latency_series=False, split=False,
            columns=(("held dropped", "int", "clients", "repeat"),),
            measure=measure, estimate_s=estimate_s)
