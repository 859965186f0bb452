"""Reference echo server for calibration: picows + uvloop speaking just enough Engine.IO 4 /
Socket.IO 5 to answer ``echo``. Not Flask, on purpose: it bounds what the driver can measure.

``python -m bench.driver.refserver PORT [SERVICE_US] [--delay-us D | --delay-lognormal
MEDIAN_US,SIGMA [--seed N]] [--drift-us-per-s G] [--stall-every-s S --stall-ms M]`` serves on
127.0.0.1:PORT until SIGTERM, with truths built in. SERVICE_US: every echo burns that many µs
of CPU, one at a time (true capacity = 1 / service time). Each ``42…`` echo's reply leaves D µs
after its request arrived, other connections served meanwhile (true latency = D + the floor
and one timer wake-up), or after a lognormal draw seeded by N, default 1 (true p99 =
MEDIAN·exp(2.3263·SIGMA)), plus G µs per second since the first request (a known leak). Every
S s after the first request the loop is blocked for M ms (``time.sleep``: a known stall).
Replies and stalls fire from one timerfd at absolute CLOCK_MONOTONIC ns (uvloop's timers round
to whole ms); stderr gets the ``time.monotonic_ns()`` of the first request and of each stall.
"""
import argparse
import asyncio
import contextlib
import ctypes
import heapq
import itertools
import math
import os
import random
import signal
import sys
import time

from picows import WSListener, WSMsgType, ws_create_server

OPEN = (b'0{"sid":"ref","upgrades":[],"pingInterval":25000,"pingTimeout":20000,'
        b'"maxPayload":1000000}')
CLOCK_MONOTONIC, TFD_NONBLOCK, TFD_CLOEXEC, TFD_TIMER_ABSTIME = 1, 0o4000, 0o2000000, 1


class Schedule:
    """Callbacks due at monotonic ns, fired from the loop by one timerfd: µs-precise, where
    ``loop.call_later`` rounds to whole milliseconds."""

    def __init__(self, loop):
        self.libc = ctypes.CDLL(None, use_errno=True)
        self.fd = self.libc.timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC)
        if self.fd < 0:
            raise OSError(ctypes.get_errno(), "timerfd_create")
        self.heap, self.order = [], itertools.count()
        loop.add_reader(self.fd, self.fire)

    def at(self, due_ns, action, *args):
        """Run ``action(*args)`` at ``due_ns`` (at once if past), without blocking the loop."""
        heapq.heappush(self.heap, (due_ns, next(self.order), action, args))
        if self.heap[0][0] == due_ns:
            self.arm(due_ns)

    def arm(self, due_ns):
        """Make the timerfd readable at ``due_ns`` (an instant in the past fires at once)."""
        spec = (ctypes.c_long * 4)(0, 0, *divmod(due_ns, 1_000_000_000))  # itimerspec
        if self.libc.timerfd_settime(self.fd, TFD_TIMER_ABSTIME, ctypes.byref(spec), None):
            raise OSError(ctypes.get_errno(), "timerfd_settime")

    def fire(self):
        """Run every callback that is due, then wait for the next."""
        with contextlib.suppress(BlockingIOError):
            os.read(self.fd, 8)
        while self.heap and self.heap[0][0] <= time.monotonic_ns():
            _, _, action, args = heapq.heappop(self.heap)
            action(*args)
        if self.heap:
            self.arm(self.heap[0][0])


class Truths:
    """The delays and stalls the options ask for, timed from the server's first request."""

    def __init__(self, args):
        self.fixed_ns, self.drift = args.delay_us * 1000, args.drift_us_per_s
        self.lognormal = args.delay_lognormal and (math.log(args.delay_lognormal[0]),
                                                   args.delay_lognormal[1])
        self.rng, self.first_ns, self.schedule = random.Random(args.seed), None, None
        self.stall = args.stall_ms and (int(args.stall_every_s * 1e9), args.stall_ms / 1000)
        self.active = bool(self.fixed_ns or self.lognormal or self.drift or self.stall)

    def reply(self, transport, packet, arrived_ns):
        """Send ``packet`` now, or at ``arrived_ns`` + this echo's delay."""
        delay = self.delay_ns(arrived_ns) if self.active else 0
        if delay > 0:
            self.schedule.at(arrived_ns + int(delay), transport.send, WSMsgType.TEXT, packet)
        else:
            transport.send(WSMsgType.TEXT, packet)

    def delay_ns(self, now):
        """This echo's delay; the first request starts the clock of drift and stalls."""
        if self.first_ns is None:
            self.first_ns = now
            print(f"refserver: first request at monotonic {now} ns", file=sys.stderr, flush=True)
            if self.stall:
                self.schedule.at(now + self.stall[0], self.block, 1)
        delay = self.fixed_ns + self.drift * (now - self.first_ns) / 1e6
        return delay + 1000 * self.rng.lognormvariate(*self.lognormal) if self.lognormal \
            else delay

    def block(self, k):
        """The k-th stall: the whole loop blocked, then the next one scheduled."""
        print(f"refserver: stall {k} at monotonic {time.monotonic_ns()} ns", file=sys.stderr,
              flush=True)
        time.sleep(self.stall[1])
        self.schedule.at(self.first_ns + (k + 1) * self.stall[0], self.block, k + 1)


class EchoSocketIO(WSListener):
    def __init__(self, service_ns, truths):
        super().__init__()
        self.service_ns, self.truths = service_ns, truths

    def on_ws_connected(self, transport):
        transport.send(WSMsgType.TEXT, OPEN)

    def on_ws_frame(self, transport, frame):
        if frame.msg_type != WSMsgType.TEXT:
            if frame.msg_type == WSMsgType.CLOSE:
                transport.disconnect()
            return
        data = frame.get_payload_as_bytes()
        if data.startswith(b"42"):
            arrived = time.monotonic_ns()
            if self.service_ns:
                until = time.perf_counter_ns() + self.service_ns
                while time.perf_counter_ns() < until:
                    pass
            # 42<id>["echo",ARG] -> 43<id>[ARG]
            bracket = data.index(b"[", 2)
            comma = data.index(b",", bracket)
            self.truths.reply(transport, b"43" + data[2:bracket] + b"[" + data[comma + 1:],
                              arrived)
        elif data == b"40":
            transport.send(WSMsgType.TEXT, b'40{"sid":"ref"}')
        elif data.startswith(b"41"):
            transport.disconnect()


async def serve(port, service_ns, truths):
    """Serve on 127.0.0.1:``port`` until SIGTERM or SIGINT."""
    loop = asyncio.get_running_loop()
    if truths.active:
        truths.schedule = Schedule(loop)
    server = await ws_create_server(lambda request: EchoSocketIO(service_ns, truths),
                                    "127.0.0.1", port)
    stop = loop.create_future()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set_result, None)
    print(f"refserver: listening on 127.0.0.1:{port}", file=sys.stderr, flush=True)
    async with server:
        await stop


def _number(text, positive=False):
    """A finite float ≥ 0 (> 0 when ``positive``), or argparse's one-line refusal."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or value < 0 or (positive and value == 0):
        raise argparse.ArgumentTypeError(f"expected a number {'>' if positive else '≥'} 0, "
                                         f"got {text!r}")
    return value


def _lognormal(text):
    """MEDIAN_US,SIGMA: median > 0 µs, sigma ≥ 0."""
    median, comma, sigma = text.partition(",")
    if not comma:
        raise argparse.ArgumentTypeError(f"expected MEDIAN_US,SIGMA, got {text!r}")
    return _number(median, positive=True), _number(sigma)


def parse(argv):
    """The command line, checked: a wrong value is one line on stderr and exit status 2."""
    p = argparse.ArgumentParser(prog="python -m bench.driver.refserver")
    p.error = lambda message: p.exit(2, f"refserver: {message}\n")
    p.add_argument("port", type=int)
    p.add_argument("service_us", type=_number, nargs="?", default=0.0)
    delay = p.add_mutually_exclusive_group()
    delay.add_argument("--delay-us", type=_number, default=0.0)
    delay.add_argument("--delay-lognormal", type=_lognormal, metavar="MEDIAN_US,SIGMA")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--drift-us-per-s", type=_number, default=0.0)
    p.add_argument("--stall-every-s", type=_number)
    p.add_argument("--stall-ms", type=_number)
    args = p.parse_args(argv)
    if (args.stall_every_s is None) != (args.stall_ms is None):
        p.error("--stall-every-s and --stall-ms go together")
    if args.stall_ms is not None and not 0 < args.stall_ms < 1000 * args.stall_every_s:
        p.error("--stall-ms must be > 0 and shorter than the --stall-every-s period")
    return args


if __name__ == "__main__":
    import uvloop

    options = parse(sys.argv[1:])
    uvloop.run(serve(options.port, int(options.service_us * 1000), Truths(options)))
