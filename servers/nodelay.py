"""TCP_NODELAY on every socket the server process accepts, when ``BENCH_SERVER_NODELAY=1``.

Servers that leave Nagle's algorithm on hold a small second write (a Socket.IO binary
attachment, a frame written in two parts) until the peer ACKs the first one; a client that
delays its ACK (Linux: up to its delayed-ACK timer) then sees that wait as latency.

Each server stack accepts connections its own way, so the accept paths are wrapped where
they are, after monkey patching (call :func:`apply` right after it):

* ``socket.socket.accept``: Werkzeug (socketserver), gunicorn's sync/gthread workers, and,
  after monkey patching, whatever class the patch installed there;
* ``eventlet.greenio.GreenSocket.accept``: eventlet.wsgi (and gunicorn's eventlet worker);
* ``gevent.server.StreamServer.do_read``: gevent pywsgi (and gunicorn's gevent worker), which
  accepts a raw fd and builds its socket itself, bypassing ``accept``.

asyncio/uvloop servers (uvicorn) already set TCP_NODELAY on every TCP transport; uWSGI's C
accept loop is out of reach from Python. The first socket each path accepts is read back
with ``getsockopt`` and one line goes to stderr (``nodelay: ...``), so the server log shows
that the option really took effect. Without the variable, :func:`apply` does nothing.
"""
import functools
import os
import socket
import sys

ENV = "BENCH_SERVER_NODELAY"
_reported = set()


def enabled():
    return os.environ.get(ENV, "") == "1"


def _set(sock, path):
    try:
        if sock.family not in (socket.AF_INET, socket.AF_INET6):
            return
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if path not in _reported:
            _reported.add(path)
            value = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
            print(f"nodelay: TCP_NODELAY={value} on accepted socket via {path} pid={os.getpid()}",
                  file=sys.stderr, flush=True)
    except OSError:
        pass  # the peer already went away: nothing to tune


def _wrap(cls, name, path):
    original = getattr(cls, name, None)
    if original is None or getattr(original, "_bench_nodelay", False):
        return False

    @functools.wraps(original)
    def accept(self, *args, **kwargs):
        result = original(self, *args, **kwargs)
        if result:
            _set(result[0], path)
        return result

    accept._bench_nodelay = True
    setattr(cls, name, accept)
    return True


def apply():
    """Wrap every accept path present in this process; a no-op unless BENCH_SERVER_NODELAY=1.
    Returns the wrapped paths (for tests and logs)."""
    if not enabled():
        return []
    done = []
    if _wrap(socket.socket, "accept", f"{socket.socket.__module__}.socket.accept"):
        done.append("socket.accept")
    if "eventlet" in sys.modules:
        from eventlet.greenio import GreenSocket

        if _wrap(GreenSocket, "accept", "eventlet GreenSocket.accept"):
            done.append("GreenSocket.accept")
    if "gevent" in sys.modules:
        from gevent.server import StreamServer

        if _wrap(StreamServer, "do_read", "gevent StreamServer.do_read"):
            done.append("StreamServer.do_read")
    return done
