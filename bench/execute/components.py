"""The real parts of a scale-out deployment besides the servers: Redis and nginx.

Each is a real binary started through the lifecycle (own process group, free port, ready
deadline, killed in ``finally``):

* ``redis_serving``: ``redis-server`` (or ``valkey-server``) on 127.0.0.1, no persistence,
  ready once it answers ``PING``.
* ``nginx_serving``: nginx in the foreground (``daemon off; master_process on;``) with a config
  generated in the run folder: an upstream of the N servers chosen by
  ``hash $remote_addr consistent`` (clients are bound to several 127.0.0.x source addresses,
  so the hash spreads them), the headers Socket.IO needs behind a proxy, every pid/log/temp
  path inside the run folder, and optionally TLS with a self-signed certificate made here.
"""
import contextlib
import datetime
import ipaddress
import os
import shutil
import socket
import time

from bench import processes

REDIS_BINARIES = ("redis-server", "valkey-server")
NGINX_BINARIES = ("nginx",)
NGINX_SEARCH = ("/usr/sbin", "/usr/local/sbin", "/usr/local/nginx/sbin")


def which(names, extra_dirs=()):
    """First of ``names`` on PATH (or in ``extra_dirs``: /usr/sbin is often not on a user's
    PATH), else None."""
    path = os.pathsep.join([os.environ.get("PATH", ""), *extra_dirs])
    for name in names:
        found = shutil.which(name, path=path)
        if found:
            return found
    return None


def redis_binary():
    """The Redis (or Valkey) server binary here, or None."""
    return which(REDIS_BINARIES, NGINX_SEARCH)


def nginx_binary():
    """The nginx binary here (often outside a user's PATH), or None."""
    return which(NGINX_BINARIES, NGINX_SEARCH)


def missing(topology):
    """Why the components a topology names cannot run here ("" when they can), with the fix."""
    if not topology:
        return ""
    if topology.get("queue") == "redis" and not redis_binary():
        return "redis-server not found: apt install redis-server"
    if topology.get("proxy") == "nginx" and not nginx_binary():
        return "nginx not found: apt install nginx"
    return ""


# --------------------------------------------------------------------------------- Redis

def ping(port, timeout=1.0, host=processes.HOST):
    """True when a Redis server on ``port`` answers ``PING`` with ``+PONG``."""
    try:
        with socket.create_connection((host, port), timeout=timeout) as s:
            s.sendall(b"PING\r\n")
            return s.recv(64).startswith(b"+PONG")
    except OSError:
        return False


def redis_argv(binary, port):
    """A throwaway Redis on loopback: no persistence, readable in process audits."""
    return [binary, "--port", str(port), "--bind", processes.HOST, "--save", "",
            "--appendonly", "no", "--protected-mode", "yes", "--daemonize", "no",
            "--logfile", "", "--databases", "1",
            # keep argv and environment readable in /proc (no title rewrite): process
            # audits (the tests' no-orphan guard) can tell whose Redis this is
            "--set-proc-title", "no"]


@contextlib.contextmanager
def redis_serving(log_path, cpus=None, binary=None):
    """A real Redis on a free port, ready once it answers PING; stopped in ``finally``."""
    binary = binary or redis_binary()
    if not binary:
        raise processes.NotReady("redis-server not found: apt install redis-server")
    with processes.serving(lambda port: redis_argv(binary, port), log_path, cpus=cpus) as server:
        deadline = time.monotonic() + 5.0
        while not ping(server.port):
            if time.monotonic() > deadline or not server.alive():
                raise processes.NotReady(f"redis on port {server.port} does not answer PING: "
                                         f"{processes.stderr_note(log_path, server.log_offset)}")
            time.sleep(0.02)
        yield server


# --------------------------------------------------------------------------------- nginx

def self_signed(folder, host=processes.HOST):
    """A self-signed certificate for ``host`` (as IP SAN) in ``folder``; (cert, key) paths.
    The driver trusts exactly this certificate (its CA file), nothing is switched off."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, host)])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=2))
            .add_extension(x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address(host))]), critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    cert_path, key_path = os.path.join(folder, "cert.pem"), os.path.join(folder, "key.pem")
    with open(cert_path, "wb") as f:
        f.write(cert.public_bytes(serialization.Encoding.PEM))
    fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(key.private_bytes(serialization.Encoding.PEM,
                                  serialization.PrivateFormat.PKCS8,
                                  serialization.NoEncryption()))
    return cert_path, key_path


def nginx_config(folder, port, backends, tls=None):
    """nginx.conf text: one worker, everything under ``folder``, sticky by client address."""
    upstream = "\n".join(f"        server {h}:{p} max_fails=0;" for h, p in backends)
    user = "user root;\n" if os.geteuid() == 0 else ""  # workers can reach the run folder
    listen = f"{processes.HOST}:{port}" + (" ssl" if tls else "")
    ssl = (f"        ssl_certificate {tls[0]};\n        ssl_certificate_key {tls[1]};\n"
           "        ssl_protocols TLSv1.2 TLSv1.3;\n") if tls else ""
    temp = "\n".join(f"    {kind}_temp_path {os.path.join(folder, kind)};"
                     for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))
    return f"""# generated by bench/execute/components.py for one step; not for production
{user}daemon off;
master_process on;
worker_processes 1;
pid {os.path.join(folder, "nginx.pid")};
error_log stderr warn;
events {{
    worker_connections 4096;
}}
http {{
    access_log off;
{temp}
    map $http_upgrade $connection_upgrade {{
        default upgrade;
        ''      close;
    }}
    upstream socketio {{
        # Sticky by client address, spread over the servers. ip_hash would hash only the
        # first three octets of an IPv4 address: every 127.0.0.x client on one backend.
        hash $remote_addr consistent;
{upstream}
    }}
    server {{
        listen {listen};
{ssl}        location / {{
            proxy_pass http://socketio;
            proxy_http_version 1.1;
            # $http_host keeps the port: engine.io's origin check answers 400 without it
            proxy_set_header Host $http_host;
            proxy_set_header Upgrade $http_upgrade;
            proxy_set_header Connection $connection_upgrade;
            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
            proxy_read_timeout 3600s;
            proxy_send_timeout 3600s;
            proxy_buffering off;
            tcp_nodelay on;
        }}
    }}
}}
"""


@contextlib.contextmanager
def nginx_serving(folder, log_path, backends, cpus=None, tls=False, binary=None):
    """A real nginx in front of ``backends`` on a free port; yields (server, cert or None)."""
    binary = binary or nginx_binary()
    if not binary:
        raise processes.NotReady("nginx not found: apt install nginx")
    os.makedirs(folder, exist_ok=True)
    cert = self_signed(folder) if tls else None
    conf = os.path.join(folder, "nginx.conf")

    def argv(port):
        with open(conf, "w") as f:
            f.write(nginx_config(folder, port, backends, cert))
        return [binary, "-e", "stderr", "-p", folder, "-c", conf]

    with processes.serving(argv, log_path, cpus=cpus) as server:
        yield server, (cert[0] if cert else None)
