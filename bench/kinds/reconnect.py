"""The reconnect kind: the server restarted under N held clients; how long until every one
is back and answering (the clients held as capacity holds them)."""
from bench.kinds import Kind


def measure(runner, step, server, log_path, offset):
    """Hold the clients, restart the server under them, watch them come back."""
    from bench.execute import capacity, reconnect

    return capacity.measure(runner, step, server, log_path, offset, reconnect.restart)


KIND = Kind("reconnect", open_loop=False, clients=("lean",), held=True, restarts_server=True,
            one_row=False, latency_series=False, split=False,
            columns=(("restart_ms stop_ms all_back_ms", "float", "ms", "repeat"),
                     ("back never_back probes_lost sessions_lost", "int", "", "repeat")),
            measure=measure)
