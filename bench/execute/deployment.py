"""A variant as deployed for one step: one server, or a scale-out of several real parts.

``serving_variant(variant, log_path, cpus, options)`` yields a :class:`Deployment`:

* ``host, port``: where clients connect when there is one entry point (the server, or nginx);
* ``targets``: the (host, port) list the clients are spread over (connection i → i % len);
* ``source_addresses``: 127.0.0.x addresses clients bind before connecting (behind nginx, so
  that ``hash $remote_addr consistent`` spreads them over the servers for real);
* ``pids``: every process to sample; ``status()``: one line if any part died, else "";
* ``restart()``: every server killed and started again on its own port (the reconnect
  scenario), Redis and nginx left running.

A server the harness did not spawn (``--target``) is a :class:`Target`: the same address
fields, nothing to stop or restart; its ``pids`` (sampled as the server) when it listens on
this machine's loopback, and ``observed`` says whether they were found.

A plain variant delegates to ``processes.serving``. A variant whose ``topology`` says
``queue = "redis"`` starts a real Redis, then N single-worker servers sharing it through
``SocketIO(app, message_queue=...)``, then (``proxy = "nginx"``) a real nginx in front. Every
part is started by the lifecycle in its own process group and stopped in ``finally``, in
reverse order.
"""
import contextlib
import os
import time
from dataclasses import dataclass, field, replace
from functools import cached_property

import psutil

from bench import processes
from bench.execute import components, resources

DEFAULT_SERVERS = 2
MAX_SERVERS = 16
SOURCE_ADDRESSES = tuple(f"127.0.0.{i}" for i in range(2, 34))  # 32 client addresses


@dataclass(frozen=True)
class Target:
    """A server the harness did not spawn (``--target``): nothing to stop, sampled if local."""
    host: str
    port: int
    pid: None = None

    @cached_property
    def pids(self):
        """Local processes on the target's port: their CPU is the server's, not foreign load."""
        return resources.listening_pids(self.host, self.port)

    @property
    def observed(self):
        """Is the server's side sampled? A row without it says so."""
        return bool(self.pids)

    @property
    def targets(self):
        """Where clients connect: the one address given."""
        return [(self.host, self.port)]

    def status(self):
        """Always "": the harness cannot tell whether a server it did not start died."""
        return ""


def topology(variant):
    """The variant's topology table ({} for a single server)."""
    return dict(getattr(variant, "topology", None) or {})


def is_scaleout(variant):
    """Does the variant run several servers sharing a message queue?"""
    return topology(variant).get("queue") == "redis"


def server_count(variant, options):
    """N servers of a scale-out (``--servers`` over the variant's own), None when single."""
    if not is_scaleout(variant):
        return None
    return int(options.get("servers") or topology(variant).get("servers") or DEFAULT_SERVERS)


def uses_tls(variant, options):
    """``--tls`` applies where nginx terminates it."""
    return bool(options.get("tls")) and topology(variant).get("proxy") == "nginx"


def unavailable_reason(variant):
    """Missing components (redis-server, nginx) with the fix, or ""."""
    return components.missing(topology(variant))


@dataclass
class Deployment:
    """A started variant: where clients connect and every part that runs for it."""
    host: str
    port: int
    targets: list
    parts: list  # (role, processes.Server)
    source_addresses: list = field(default_factory=list)
    ca_file: str | None = None  # TLS: the self-signed certificate clients trust
    redis_url: str | None = None
    servers: int | None = None

    @property
    def pids(self):
        """Every part's process, to sample (servers, Redis, nginx)."""
        return [server.pid for _, server in self.parts]

    @property
    def pid(self):  # what single-server callers read
        """The server's pid when there is one server (None for a scale-out)."""
        return self.parts[0][1].pid if len(self.parts) == 1 else None

    @property
    def backends(self):
        """The servers' own addresses (behind nginx too), for verifying each one."""
        return [(s.host, s.port) for role, s in self.parts if role.startswith("server")]

    def status(self):
        """"" while every part runs, else which part ended and how."""
        notes = []
        for role, server in self.parts:
            note = server.status()
            if note:
                notes.append(note.replace("server ", f"{role} ", 1) if role != "server"
                             else note)
        return "; ".join(notes)

    def spread(self):
        """Established client connections on each server of a scale-out, as ``"26/24"``
        (behind nginx: nginx's upstream connections, one per client), or "" for one server.
        Read from the servers' own sockets, so it shows where clients really landed."""
        servers = [s for role, s in self.parts if role.startswith("server")]
        if len(servers) < 2:
            return ""
        counts = []
        for s in servers:
            try:
                proc = psutil.Process(s.pid)
                conns = [c for p in [proc, *proc.children(recursive=True)]
                         for c in p.net_connections(kind="tcp")]
            except psutil.Error:
                counts.append("?")
                continue
            counts.append(str(sum(1 for c in conns if c.status == psutil.CONN_ESTABLISHED
                                  and c.laddr and c.laddr.port == s.port)))
        return "/".join(counts)

    def restart(self, grace):
        """Kill every server of the deployment and start each again on its port, as an
        operator's restart does; Redis and nginx stay up. Returns (monotonic ns when all
        were stopped, "" or why one did not come back ready)."""
        servers = [s for role, s in self.parts if role.startswith("server")]
        for server in servers:
            server.stop(grace)
        stopped = time.monotonic_ns()
        for server in servers:
            server.respawn()
        note = ""
        for server in servers:
            try:
                server.wait_ready(processes.ready_timeout_default())
            except processes.NotReady as exc:
                note = note or f"restarted server not ready: {exc}"
        return stopped, note


@contextlib.contextmanager
def serving_variant(variant, log_path, cpus=None, options=None, env=None):
    """Start ``variant`` (all its parts) and yield a :class:`Deployment`; stop all of it.
    ``env``: the servers' environment (e.g. BENCH_SERVER_NODELAY), None to inherit."""
    options = options or {}
    app = options.get("app")
    knobs = options.get("knobs")  # server knobs, as SocketIO keyword arguments
    if options.get("app_env"):  # --app-env: where the user's app reads its configuration
        env = dict(env or os.environ, **options["app_env"])
    if not is_scaleout(variant):
        with processes.serving(lambda port: variant.argv(port, app=app, knobs=knobs), log_path,
                               cpus=cpus, env=env) as server:
            yield Deployment(server.host, server.port, [(server.host, server.port)],
                             [("server", server)])
        return
    n = server_count(variant, options)
    if not 1 <= n <= MAX_SERVERS:
        raise processes.NotReady(f"--servers must be in [1, {MAX_SERVERS}], got {n}")
    base, _ = os.path.splitext(log_path)
    proxy = topology(variant).get("proxy")
    with contextlib.ExitStack() as stack:
        redis = stack.enter_context(components.redis_serving(base + ".redis.log", cpus=cpus))
        url = f"redis://{processes.HOST}:{redis.port}"
        queued = replace(variant, socketio_kwargs=dict(variant.socketio_kwargs,
                                                       message_queue=url))
        parts = [("redis", redis)]
        for i in range(n):
            server = stack.enter_context(processes.serving(
                lambda port: queued.argv(port, app=app, knobs=knobs), log_path, cpus=cpus,
                env=env))
            parts.append((f"server {i + 1}/{n}", server))
        backends = [(s.host, s.port) for _, s in parts[1:]]
        if proxy == "nginx":
            folder = os.path.join(os.path.dirname(log_path), f"{variant.name}-nginx")
            nginx, ca_file = stack.enter_context(components.nginx_serving(
                folder, base + ".nginx.log", backends, cpus=cpus,
                tls=uses_tls(variant, options)))
            parts.append(("nginx", nginx))
            yield Deployment(nginx.host, nginx.port, [(nginx.host, nginx.port)], parts,
                             list(SOURCE_ADDRESSES), ca_file, url, n)
        else:
            yield Deployment(backends[0][0], backends[0][1], backends, parts, [], None,
                             url, n)
