"""Driver worker for thousands of idle clients: ``python -m bench.driver.capacity JOB.json``.

One of several processes (each holds its share ``job.conns`` of the step's connections, on
an epoll loop, its open-file limit raised, client sockets bound over 127.0.0.x). Clients stay
idle but answer every Engine.IO ping; a small probe set (the connections with the lowest
indices) sends echoes at a fixed low rate. The harness drives it line by line on stdin, and
every answer is one JSON line on stdout:

``grow L``    connect this process's connections below L (``IN_FLIGHT`` handshakes at a time,
              each bounded by the job's deadline, a failed one tried again twice) → ``{"connect_ns": [...], "failed": n,
              "errors": {...}, "alive": n, "ping_interval_ms": .., "ping_timeout_ms": ..}``
``hold S``    hold S seconds while probing → ``{"alive", "dropped", "ping_timeouts",
              "pinged", "probe": {arrays}}``; dropped = connections lost since the last
              answer, ping timeouts = live connections the server did not ping for longer
              than its ping interval + ping timeout (an Engine.IO client gives up there)
``watch S``   (reconnect) answer ``watching`` at once, then re-connect every connection that
              drops, with a bounded retry (``RETRY_S`` ± 50 %), until all are back and each
              has answered one echo, or S seconds → ``{"back_ns": {index: ns}, "probe": ..,
              "sessions_lost": n}``
``churn S R P`` (churn soak) hold P clients while R per second leave and R join, for S
              seconds → counts (opened, closed, failed, skipped, dropped)
``quit``      close everything and exit.

Every loop is bounded by count and time; the process dies with its group in the harness's
``finally``.
"""
import asyncio
import json
import random
import sys
from collections import Counter

from bench.driver import connection, lean, loops, protocol, store

mono = connection.mono
IN_FLIGHT = 50              # handshakes at once per process
PROBES = 10                 # connections 0 … 9 carry the probe echoes
PROBE_RATE = 50.0           # probe echoes per second, all processes together
RETRY_S = 0.25              # reconnect: pause between attempts (± 50 %)
CONNECT_ATTEMPTS = 3        # capacity: a connect that fails is tried again, twice
OK, UNSENT = store.OK, store.UNSENT


def short(exc):
    """One short line for a connect error, to count errors by kind."""
    text = str(exc).strip().splitlines()[0][:80] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


class Fleet:
    """This process's connections, by index."""

    def __init__(self, job):
        self.job = job
        self.conns = {}
        self.idle = store.Messages(1)
        self.ping_ms = None
        self.sids = {}

    def url(self, i):
        """The URL connection ``i`` connects to."""
        return connection.url_for(self.job, i)

    async def open(self, i, timeout, messages=None):
        """Connect client ``i`` and note the ping interval the server announces."""
        c = await connection.connect(self.url(i), i, messages or self.idle, timeout,
                               source=connection.source_for(self.job, i),
                               ssl_context=connection.ssl_for(self.job))
        c.connected_ns = mono()
        c.last_ping_ns = c.connected_ns
        if self.ping_ms is None:
            info = getattr(c, "handshake_info", {}) or {}
            self.ping_ms = (info.get("pingInterval"), info.get("pingTimeout"))
        return c

    def alive(self):
        """The connections still open."""
        return [c for c in self.conns.values() if c.alive]

    async def grow(self, level):
        """Connect this process's clients below ``level``, each retried, and report how it went."""
        todo = [i for i in self.job.conns if i < level and i not in self.conns]
        gate = asyncio.Semaphore(IN_FLIGHT)
        took, errors = [], Counter()

        retries = [0]

        async def one(i):
            for attempt in range(CONNECT_ATTEMPTS):
                async with gate:
                    start = mono()
                    try:
                        c = await self.open(i, self.job.deadline)
                    except Exception as exc:  # noqa: BLE001 - a failed connect is counted
                        if attempt == CONNECT_ATTEMPTS - 1:
                            errors[short(exc)] += 1
                            return
                        c = None
                if c is None:  # as a client library would: pause, then try again
                    retries[0] += 1
                    await asyncio.sleep(RETRY_S * (1 + attempt))
                    continue
                took.append(c.connected_ns - start)
                self.conns[i] = c
                self.sids[i] = getattr(c, "sid", None)
                return

        await asyncio.gather(*(one(i) for i in todo))
        ping = self.ping_ms or (None, None)
        return dict(connect_ns=took, failed=sum(errors.values()), errors=dict(errors),
                    retries=retries[0],
                    alive=len(self.alive()), attempted=len(todo),
                    ping_interval_ms=ping[0], ping_timeout_ms=ping[1])

    def probe_set(self):
        """The held connections that carry probe echoes."""
        return sorted(i for i in self.conns if i < PROBES)

    async def probe(self, seconds, until_done=None):
        """Probe echoes at PROBE_RATE (this process's share) for ``seconds``; arrays back."""
        mine = self.probe_set()
        period = PROBES / PROBE_RATE  # seconds between two probes of one connection
        n_each = max(1, int(seconds / period))
        m = store.Messages(n_each * max(1, len(mine)) + 1)
        m.deadline_ns = int(self.job.deadline * 1e9)
        originals = {i: self.conns[i] for i in mine}
        for c in originals.values():
            c.messages = m
        start = mono() + 10_000_000
        schedule = sorted((start + int((n + p / PROBES) * period * 1e9), p)
                          for n in range(n_each) for p in mine)
        body = protocol.event_body("echo", loops.payload(64))
        for at, p in schedule:
            if until_done is not None and until_done():
                break
            await connection.wait_until(at, False)
            c = originals[p]  # a re-connected client is no longer probed: its probes are unsent
            k = m.used
            m.used += 1
            m.conn[k], m.intended[k] = p, at
            if c.alive and self.conns.get(p) is c:
                connection.send_recorded(c, m, k, body, mono())
            else:
                store.lost(m, k)
        probing = list(originals.values())
        last = int(m.intended[:m.used].max()) if m.used else mono()
        await connection.wait_for_replies(lambda: any(c.outstanding > 0 and c.alive for c in probing),
                                    last + m.deadline_ns, False)
        store.settle(m, store.liveness(probing))
        for c in probing:
            c.outstanding = 0
        return {k: v.tolist() for k, v in m.trimmed().items()}

    async def hold(self, seconds):
        """Hold every client for ``seconds`` while probing: who dropped, who was not pinged."""
        before = {i for i, c in self.conns.items() if c.alive}
        started = mono()
        probe = await self.probe(seconds)
        rest = started + int(seconds * 1e9) - mono()
        if rest > 0:
            await asyncio.sleep(rest / 1e9)
        now = mono()
        interval, timeout = self.ping_ms or (None, None)
        limit = (interval + timeout) * 1_000_000 if interval and timeout else None
        alive = self.alive()
        late = [c for c in alive if limit and now - max(c.last_ping_ns, started) > limit]
        pinged = sum(1 for c in alive if c.last_ping_ns >= started)
        dropped = [i for i in before if not self.conns[i].alive]
        return dict(alive=len(alive), dropped=len(dropped), ping_timeouts=len(late),
                    pinged=pinged, probe=probe)

    async def watch(self, seconds):
        """Re-connect every dropped connection until all are back and have answered one
        echo each (bounded by ``seconds``); when each came back, on the one clock."""
        end = mono() + int(seconds * 1e9)
        back, tasks = {}, {}
        m = store.Messages(len(self.job.conns) * 4 + 8)
        m.deadline_ns = int(self.job.deadline * 1e9)
        gate = asyncio.Semaphore(IN_FLIGHT)
        body = protocol.event_body("echo", loops.payload(64))
        rng = random.Random(self.job.seed)
        lost_sessions = 0

        async def come_back(i):
            nonlocal lost_sessions
            while mono() < end:
                async with gate:
                    try:
                        c = await self.open(i, min(2.0, self.job.deadline), messages=m)
                    except Exception:  # noqa: BLE001 - retried until the watch ends
                        c = None
                if c is not None:
                    self.conns[i] = c
                    if getattr(c, "sid", None) != self.sids.get(i):
                        lost_sessions += 1
                    self.sids[i] = getattr(c, "sid", None)
                    k = m.used
                    if k >= len(m.conn):
                        return
                    m.used += 1
                    now = mono()
                    m.conn[k], m.intended[k] = i, now
                    connection.send_recorded(c, m, k, body, now)
                    await connection.wait_for_replies(lambda: m.outcome[k] == UNSENT and c.alive,
                                                now + m.deadline_ns, False)
                    if m.outcome[k] == OK:
                        back[i] = int(m.received[k])
                        return
                await asyncio.sleep(RETRY_S * (0.5 + rng.random()))

        probe_task = asyncio.ensure_future(self.probe(seconds, until_done=lambda: len(back) ==
                                                      len(self.job.conns)))
        while mono() < end and len(back) < len(self.job.conns):
            for i in self.job.conns:
                c = self.conns.get(i)
                if i not in back and i not in tasks and (c is None or not c.alive):
                    tasks[i] = asyncio.ensure_future(come_back(i))
            await asyncio.sleep(0.02)
        for t in tasks.values():
            t.cancel()
        await asyncio.gather(*tasks.values(), return_exceptions=True)
        try:
            probe = await asyncio.wait_for(probe_task, self.job.deadline + 2)
        except asyncio.TimeoutError:
            probe = {}
        return dict(back_ns={str(i): t for i, t in back.items()}, probe=probe,
                    sessions_lost=lost_sessions, alive=len(self.alive()))

    async def churn(self, seconds, rate, population):
        """Clients joining and leaving at a steady ``rate`` per second each way around a
        ``population`` held open: every tick closes the oldest and opens a new one."""
        from collections import deque

        end = mono() + int(seconds * 1e9)
        counts = Counter()
        live = deque()
        gate = asyncio.Semaphore(IN_FLIGHT)
        serial = [0]

        async def join():
            i = serial[0]
            serial[0] += 1
            if gate.locked():
                counts["skipped"] += 1  # the server is this far behind: counted, not queued
                return
            async with gate:
                try:
                    c = await self.open(i, self.job.deadline)
                except Exception as exc:  # noqa: BLE001 - a failed connect is counted
                    counts["failed"] += 1
                    counts[short(exc)] += 1
                    return
            counts["opened"] += 1
            live.append(c)

        pending = set()
        await asyncio.gather(*(join() for _ in range(population)))
        at, step = mono(), int(1e9 / rate)
        while mono() < end:
            at += step
            await connection.wait_until(at, False)
            while live and not live[0].alive:
                live.popleft()
                counts["dropped"] += 1
            if len(live) >= population:
                live.popleft().close()
                counts["closed"] += 1
            task = asyncio.ensure_future(join())
            pending.add(task)
            task.add_done_callback(pending.discard)
        if pending:
            await asyncio.wait(pending, timeout=self.job.deadline + 1)
        for c in live:
            c.close()
        counts["alive_at_end"] = sum(1 for c in live if c.alive)
        return dict(counts)

    def close(self):
        """Close every connection (dead ones too)."""
        for c in self.conns.values():
            try:
                c.close()
            except Exception:  # noqa: BLE001 - closing a dead transport
                pass


async def serve(job):
    """Answer the harness's commands, one JSON line each, until ``quit`` (bounded)."""
    loop = asyncio.get_running_loop()
    fleet = Fleet(job)

    async def line():
        text = await loop.run_in_executor(None, sys.stdin.readline)
        if not text:
            raise SystemExit(0)  # the harness went away
        return text.split()

    def say(obj):
        print(json.dumps(obj, separators=(",", ":")), flush=True)

    print("ready", flush=True)
    try:
        for _ in range(10_000):  # bounded: a capacity run is a handful of commands
            words = await line()
            if not words:
                continue
            command, arg = words[0], float(words[1]) if len(words) > 1 else 0.0
            if command == "grow":
                say(await fleet.grow(int(arg)))
            elif command == "hold":
                say(await fleet.hold(arg))
            elif command == "watch":
                say({"watching": True})
                say(await fleet.watch(arg))
            elif command == "churn":
                say(await fleet.churn(arg, float(words[2]), int(words[3])))
            elif command == "quit":
                break
            else:
                say({"error": f"unknown command {command!r}"})
    finally:
        fleet.close()
        await asyncio.sleep(0.05)


def main(argv=None):
    """The idle-client driver process: its job, then the commands."""
    job = lean.process_job(sys.argv[1:] if argv is None else argv)
    connection.run_loop(serve(job), connections=connection.SELECT_LIMIT + 1)  # always epoll


if __name__ == "__main__":
    main()
