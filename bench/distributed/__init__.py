"""Load from several machines, carried on Locust's master/worker: its entry points, its
message names, and the addresses it accepts (where the master binds, what a worker loads).

Locust monkey-patches the standard library with gevent when it is imported, so it never enters
the harness or a driver process: it runs in :mod:`bench.distributed.engine`, a process of its
own on each machine, which bridges Locust's custom messages to JSON lines on its stdin/stdout.

* master machine: ``python -m bench run ... --expect-workers N`` starts an engine in master
  mode (:class:`bench.distributed.master.Coordinator`), waits for N workers, and measures every
  step by handing each worker its share of the connections (and so of the rate);
* worker machine: ``python -m bench worker --master HOST:PORT``
  (:func:`bench.distributed.worker.serve`) starts an engine in worker mode and runs the lean
  driver processes of its share through :func:`bench.execute.load.run_load`, on a start
  instant agreed through the master, and sends the per-message arrays back.

Every message between them is sealed with the shared cluster token
(:mod:`bench.distributed.seal`), and a worker loads only the targets it was told to allow
(``--allow-target``, loopback by default).
"""
import ipaddress

from bench.errors import UsageError

DEFAULT_BIND = "127.0.0.1:5557"
# Custom message types, master → worker and worker → master (registered on both sides).
TO_WORKER = ("bench_challenge", "bench_refused", "bench_clock", "bench_step", "bench_go",
             "bench_abort")
TO_MASTER = ("bench_join", "bench_clock_reply", "bench_hello", "bench_ready", "bench_result")


class DistributedError(Exception):
    """A distributed run cannot go on (workers never joined, the master cannot bind)."""


def parse_hostport(text, option, allow_remote=True):
    """(host, port) of ``HOST:PORT``; a non-loopback host needs ``allow_remote``."""
    host, sep, port = (text or "").rpartition(":")
    host = host.strip("[]")
    if not sep or not host:
        raise UsageError(f"{option} must look like HOST:PORT, got {text!r}")
    try:
        port = int(port)
    except ValueError:
        raise UsageError(f"{option} has a bad port: {text!r}") from None
    if not 0 < port < 65536:
        raise UsageError(f"{option} port must be in 1..65535, got {port}")
    if not allow_remote and not is_loopback(host):
        raise UsageError(f"{option} {host} is not a loopback address; pass --allow-remote to "
                         "let workers on other hosts connect")
    return host, port


def is_loopback(host):
    """Whether ``host`` is this machine's loopback (where binding and loading need no token)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def parse_allow(text):
    """``--allow-target HOST[:PORT][,...]`` as [(host, port or None)]; None: loopback only."""
    if text is None:
        return None
    allow = []
    for item in (part.strip() for part in text.split(",")):
        if not item:
            raise UsageError(f"--allow-target has an empty entry: {text!r}")
        host, port = item, None
        if item.count(":") == 1 or item.startswith("["):  # HOST:PORT or [v6]:PORT
            host, port = parse_hostport(item, "--allow-target")
        allow.append((host.strip("[]").lower(), port))
    return allow


def allow_label(allow):
    """The allow-list as the worker states it (meta.json, its own lines)."""
    if allow is None:
        return ["loopback"]
    return [f"{h}:{p}" if p else h for h, p in allow]


def outside(targets, allow):
    """The first ``(host, port)`` of ``targets`` that ``allow`` does not cover, else None."""
    for host, port in targets:
        if allow is None:
            ok = is_loopback(host)
        else:
            ok = any(h == str(host).lower() and p in (None, port) for h, p in allow)
        if not ok:
            return host, port
    return None
