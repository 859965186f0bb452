"""Driver worker in a real browser: headless Chromium running socket.io-client on a page.

The same job file and ready/t0/done protocol as ``bench.driver.lean``, the same schedule
(``loops.open_schedule``) and the same store and settle rule; what differs is who sends. The
page (``page/index.html`` + ``page/bench.js``, with socket.io-client's own dist bundle from the
committed npm lock) keeps the schedule on ``performance.now()`` and records, per message, the
ack callback (``received``), the next animation frame after the reply was written into the
DOM (``painted``) and, through the DevTools protocol, when the WebSocket frames carrying the
message and its ack left and arrived (``devtools_sent`` / ``devtools_received``). Clicks
dispatched through the DevTools protocol at :data:`INTERACTIONS_PER_S` are interactions,
emitting on a connection of their own; their Event Timing entries give INP.

The page is served *from the server's own origin*: the DevTools protocol answers requests
for ``/__bench__/*`` on the server's address, so the Socket.IO server's same-origin check
passes unchanged (no CORS setting of any server is touched), and the page is cross-origin
isolated (COOP/COEP headers), which gives ``performance.now()`` 5 µs resolution instead of
100 µs. Chromium's Local Network Access check refuses loopback connections from a page that
was not fetched from the network, so that one check is switched off
(``--disable-features=LocalNetworkAccessChecks``); meta.json records the flags.

Page times map onto CLOCK_MONOTONIC through the offset of the tightest of several
``performance.now()`` round trips; DevTools timestamps are CLOCK_MONOTONIC already.
"""
import asyncio
import base64
import contextlib
import json
import os
import re
import shutil
import signal
import sys
import time
from urllib.parse import parse_qs, urlparse

import numpy as np

from bench import kinds
from bench.driver import protocol, store
from bench.driver.lean import process_job, save, stdin_t0
from bench.driver.loops import open_schedule
from bench.driver.store import Messages
from bench.plan.traffic import expand, has_seq

PAGE_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "page")
CLIENT_BUNDLE = os.path.join(PAGE_DIR, "node_modules", "socket.io-client", "dist",
                             "socket.io.min.js")
CHROMIUM_NAMES = ("chromium", "chromium-browser")
FLAGS = ("--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run", "--mute-audio",
         "--disable-features=LocalNetworkAccessChecks",
         "--disable-background-timer-throttling", "--disable-renderer-backgrounding")
INTERACTIONS_PER_S = 10.0     # clicks during the window (each one message, own connection)
OFFSET_PROBES = 15            # performance.now() round trips; the tightest sets the offset
PAGE_LOAD_MS = 5_000          # the page is answered locally: seconds mean Chromium is stuck
EXTRAS = ("painted", "devtools_sent", "devtools_received")
# a connect attempt's stages as the lean driver stores them; a page sees the Engine.IO open
# and the Socket.IO connect, never the TCP handshake or the HTTP upgrade (those stay 0)
# Socket.IO packets inside an Engine.IO message: EVENT/BINARY_EVENT out, ACK/BINARY_ACK in,
# with an optional attachment count and namespace before the ack id.
SENT_RE = re.compile(r"^4[25](?:\d+-)?(?:/[^,]*,)?(\d+)")
ACK_RE = re.compile(r"^4[36](?:\d+-)?(?:/[^,]*,)?(\d+)")
PAGE_FILES = {"index.html": "text/html", "bench.js": "application/javascript",
              "traffic.js": "application/javascript",
              "socket.io.min.js": "application/javascript"}


def chromium():
    """The Chromium executable on PATH, or None."""
    return next((p for p in map(shutil.which, CHROMIUM_NAMES) if p), None)


def unavailable_reason():
    """Why ``--client browser`` cannot run here (one line), or None."""
    if not chromium():
        return "chromium not found: apt install chromium"
    try:
        import playwright  # noqa: F401 - only asking whether it is installed
    except ImportError:
        return "playwright not installed: pip install playwright (no browser download needed)"
    if not os.path.exists(CLIENT_BUNDLE):
        return f"socket.io-client not installed: npm ci --prefix {os.path.relpath(PAGE_DIR)}"
    return None


def settings():
    """What the browser client is and what it changed, for meta.json."""
    version = ""
    with contextlib.suppress(OSError, ValueError, KeyError):
        with open(os.path.join(PAGE_DIR, "package-lock.json")) as f:
            version = json.load(f)["packages"]["node_modules/socket.io-client"]["version"]
    return dict(chromium=chromium(), flags=list(FLAGS), socketio_client=version,
                interactions_per_s=INTERACTIONS_PER_S,
                interactions="clicks emit on a connection of their own, not measured",
                origin="the page is served on the server's own origin (DevTools Fetch), so "
                       "no server's CORS setting is changed",
                changed="Chromium's LocalNetworkAccessChecks off (a page not fetched from "
                        "the network may not reach loopback otherwise)")


def page_files():
    """{name: (content type, bytes)} of what the page is made of."""
    out = {}
    for name, kind in PAGE_FILES.items():
        path = CLIENT_BUNDLE if name == "socket.io.min.js" else os.path.join(PAGE_DIR, name)
        with open(path, "rb") as f:
            out[name] = (kind, f.read())
    return out


class Frames:
    """WebSocket frames as DevTools saw them: (connection, ack id) → CLOCK_MONOTONIC ns of the
    message's event frame leaving and of its ack frame arriving."""

    def __init__(self):
        self.conn_of = {}   # DevTools request id → connection index (from ?bench_conn=)
        self.sent, self.received = {}, {}

    def created(self, event):
        conn = parse_qs(urlparse(event.get("url", "")).query).get("bench_conn", [""])[0]
        if conn.isdigit():  # the clicks' connection ("clicks") is not measured
            self.conn_of[event["requestId"]] = int(conn)

    def frame(self, event, table, pattern):
        conn = self.conn_of.get(event.get("requestId"))
        response = event.get("response") or {}
        if conn is None or response.get("opcode") != 1:
            return
        match = pattern.match(response.get("payloadData", ""))
        if match:
            table.setdefault((conn, int(match.group(1))), int(event["timestamp"] * 1e9))

    def attach(self, cdp):
        cdp.on("Network.webSocketCreated", self.created)
        cdp.on("Network.webSocketFrameSent", lambda e: self.frame(e, self.sent, SENT_RE))
        cdp.on("Network.webSocketFrameReceived",
               lambda e: self.frame(e, self.received, ACK_RE))


async def serve_page(cdp, origin, files):
    """Answer the page's own requests on the server's origin from ``files``; nothing else is
    intercepted (the Socket.IO traffic goes to the server untouched)."""
    isolation = [{"name": "Cross-Origin-Opener-Policy", "value": "same-origin"},
                 {"name": "Cross-Origin-Embedder-Policy", "value": "require-corp"},
                 {"name": "Cross-Origin-Resource-Policy", "value": "same-origin"},
                 {"name": "Cache-Control", "value": "no-store"}]

    async def paused(event):
        name = urlparse(event["request"]["url"]).path.rsplit("/", 1)[-1]
        kind, body = files.get(name, ("text/plain", b"not found"))
        await cdp.send("Fetch.fulfillRequest", {
            "requestId": event["requestId"], "responseCode": 200 if name in files else 404,
            "responseHeaders": [{"name": "Content-Type", "value": kind}, *isolation],
            "body": base64.b64encode(body).decode()})

    cdp.on("Fetch.requestPaused", lambda e: asyncio.ensure_future(paused(e)))
    await cdp.send("Fetch.enable", {"patterns": [{"urlPattern": f"{origin}/__bench__/*",
                                                  "requestStage": "Request"}]})


async def clock_offset(page):
    """CLOCK_MONOTONIC ns minus page ns, from the tightest ``performance.now()`` round trip."""
    best = None
    for _ in range(OFFSET_PROBES):
        before = time.monotonic_ns()
        page_ms = await page.evaluate("performance.now()")
        after = time.monotonic_ns()
        if best is None or after - before < best[0]:
            best = (after - before, (before + after) // 2 - int(page_ms * 1e6))
    return best[1]


async def click_at_rate(page, start_ns, end_ns, rate):
    """Real input events: clicks on the page's button through the DevTools protocol, one
    every 1 / ``rate`` s from ``start_ns`` until ``end_ns`` (monotonic). A slot the page was
    too busy for is skipped, never made up in a burst."""
    box = await page.locator("#act").bounding_box()
    x, y = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
    gap = int(1e9 / rate)
    at = start_ns
    while at < end_ns:
        delay = (at - time.monotonic_ns()) / 1e9
        if delay > 0:
            await asyncio.sleep(delay)
        if time.monotonic_ns() >= end_ns:
            break
        await page.mouse.click(x, y)
        at += gap
        while at < time.monotonic_ns():
            at += gap


def plan_for(job):
    """The step as the page runs it, in page milliseconds from t0 (the schedule's offsets do
    not depend on t0, so the page gets them before the start)."""
    plan = dict(windowMs=job.window_ns / 1e6, deadlineMs=job.deadline * 1e3,
                event=job.event, payload=int(job.payload), binary=bool(job.binary),
                kind="open" if job.rate else "closed", offsets=[], conns=[],
                capacity=int(min(job.max_messages, 2_000_000)))
    kind = kinds.get(job.kind)
    if kind.page_plan:  # the kind's own plan (connect attempts, broadcasts)
        return kind.page_plan(job, plan)
    if job.rate:
        conn_of, times = open_schedule(job, 0)
        local = {c: i for i, c in enumerate(job.conns)}
        plan["offsets"] = (times / 1e6).tolist()
        plan["conns"] = [local[int(c)] for c in conn_of]
    return plan


def on_monotonic(values, offset_ns):
    """Page milliseconds as CLOCK_MONOTONIC ns (0 stays 0: never happened)."""
    a = np.asarray(values, dtype=np.float64)
    return np.where(a > 0, np.round(a * 1e6).astype(np.int64) + offset_ns, 0)


def page_traffic(job):
    """The user's traffic as the page runs it (page/traffic.js), "{pad:N}" expanded; None
    without --scenario-file."""
    traffic = job.traffic
    if not traffic:
        return None
    pad = traffic.get("pad")
    return dict(namespace=traffic["namespace"], auth=traffic.get("auth"),
                query=traffic.get("query") or {}, seed=int(job.seed),
                setup=[dict(event=s["event"], args=expand(s["args"], pad))
                       for s in traffic["setup"]],
                messages=[dict(event=m["event"], args=expand(m["args"], pad),
                               reply=None if m["reply"] == "ack" else m["reply"][6:],
                               seq=has_seq(m["args"]), weight=float(m["weight"]))
                          for m in traffic["messages"]])


def to_messages(job, got, frames, offset_ns):
    """The page's arrays as the store's :class:`Messages`, on CLOCK_MONOTONIC, settled."""
    kind = kinds.get(job.kind)
    if kind.page_messages:
        return kind.page_messages(job, got, offset_ns)
    n = int(got["used"])
    m = Messages(max(1, n), extras=EXTRAS)
    m.deadline_ns = int(job.deadline * 1e9)
    m.used = n

    m.conn[:n] = np.asarray([job.conns[c] for c in got["conn"]], dtype=np.int32)
    m.intended[:n] = on_monotonic(got["intended"], offset_ns)
    m.sent[:n] = on_monotonic(got["sent"], offset_ns)
    m.extras["painted"][:n] = on_monotonic(got["painted"], offset_ns)
    received = on_monotonic(got["received"], offset_ns)
    for k in range(n):
        local, ack = int(got["conn"][k]), int(got["ackId"][k])
        if got["lost"][k]:
            store.lost(m, k)
            continue
        m.extras["devtools_sent"][k] = frames.sent.get((local, ack), 0)
        m.extras["devtools_received"][k] = frames.received.get((local, ack), 0)
        if received[k]:
            store.record_reply(m, k, int(received[k]))
    store.settle(m, {job.conns[i]: bool(up) for i, up in enumerate(got["alive"])})
    return m


def page_summary(got, interactions, offset_ns, isolated, kind):
    """What the row needs beyond the arrays: transports, upgrades, interactions, INP inputs."""
    return dict(
        kind=kind, transports=got["transports"], upgrade_ms=got["upgradeMs"], isolated=isolated,
        replies=got.get("replies"),
        interactions=[dict(at_ns=int(i["at"] * 1e6) + offset_ns,
                           acked_ns=int(i["acked"] * 1e6) + offset_ns if i["acked"] else 0,
                           painted_ns=int(i["painted"] * 1e6) + offset_ns if i["painted"] else 0)
                      for i in interactions["interactions"]],
        event_entries=interactions["entries"], interaction_count=interactions["interactionCount"],
        event_threshold_ms=interactions["threshold"])


def page_said(exc):
    """The first line of what the page threw, without Playwright's wrapping."""
    return re.sub(r"^(Page\.evaluate: )?(Error: )?", "", str(exc).splitlines()[0])


async def run_job(job, read_t0):
    """Launch Chromium, load the page on the server's origin, connect, announce ``ready``,
    run the step from t0, and return (messages, page summary)."""
    from playwright.async_api import async_playwright

    host, port = job.targets[0]
    origin = f"{'https' if job.ca_file else 'http'}://{protocol.netloc(host, port)}"
    files = page_files()
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=chromium(), args=list(FLAGS),
                                           headless=True, handle_sigterm=False)
        # under --tls the page trusts the deployment's own certificate (as the lean client
        # trusts its ca_file): certificate errors are ignored for this context only
        context = await browser.new_context(viewport={"width": 800, "height": 600},
                                            ignore_https_errors=bool(job.ca_file))
        page = await context.new_page()
        cdp = await context.new_cdp_session(page)
        frames = Frames()
        frames.attach(cdp)
        await cdp.send("Network.enable")
        await serve_page(cdp, origin, files)
        # within the harness's connect budget (deadline + 15 s): launch, load, connect
        await page.goto(f"{origin}/__bench__/index.html", timeout=PAGE_LOAD_MS)
        transports = [job.transport] if job.transport else None
        try:
            await page.evaluate("([n, t, ms, traffic]) => bench.connect(n, t, ms, traffic)",
                                [len(job.conns) if kinds.get(job.kind).page_connects else 0,
                                 transports,
                                 job.deadline * 1e3, page_traffic(job)])
        except Exception as exc:  # noqa: BLE001 - the page's own words, one line
            said = page_said(exc)
            hint = (f" (the page's origin is {origin}, the server's own address: a refusal "
                    "there is its origin check, e.g. Flask-SocketIO's cors_allowed_origins)"
                    if " refused: " in said else "")
            raise SystemExit(f"browser: {said}{hint}") from None
        await page.evaluate("([e, n]) => bench.interactive(e, n)", [job.event, int(job.payload)])
        plan = plan_for(job)
        await page.evaluate("plan => bench.load(plan)", plan)
        if kinds.get(job.kind).members:  # as the lean loop: members joined before the clock
            try:
                await page.evaluate("([room, ms]) => bench.join(room, ms)",
                                    [plan["room"], job.deadline * 1e3 + 10 * len(job.conns)])
            except Exception as exc:  # noqa: BLE001 - the page's own words, one line
                raise SystemExit(f"browser: {page_said(exc)}") from None
        offset_ns = await clock_offset(page)
        t0 = await read_t0()
        clicks = asyncio.ensure_future(click_at_rate(
            page, t0 + int(job.warmup * 1e9), t0 + job.window_ns, INTERACTIONS_PER_S))
        budget_s = job.warmup + job.duration + job.deadline + 10
        got = await asyncio.wait_for(page.evaluate("t0 => bench.run(t0)", (t0 - offset_ns) / 1e6),
                                     budget_s)
        await clicks
        answered_by = time.monotonic() + job.deadline  # the last clicks' replies, painted
        while time.monotonic() < answered_by and not await page.evaluate("bench.clicksAnswered()"):
            await asyncio.sleep(0.05)
        interactions = await page.evaluate("bench.interactionReport()")
        await page.evaluate("bench.close()")
        m = to_messages(job, got, frames, offset_ns)
        summary = page_summary(got, interactions, offset_ns,
                               await page.evaluate("bench.isolated()"), plan["kind"])
        await browser.close()
        return m, summary


def main(argv=None):
    """The browser driver process: job in, ready, t0, the page's step, arrays saved, done."""
    job = process_job(sys.argv[1:] if argv is None else argv)
    reason = unavailable_reason()
    if reason:
        raise SystemExit(f"browser: {reason}")

    async def go():
        t0_source = stdin_t0()
        task = asyncio.current_task()
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)

        async def announce_then_read():
            print("ready", flush=True)
            return await t0_source()
        return await run_job(job, announce_then_read)

    from playwright.async_api import Error as PlaywrightError
    try:
        m, summary = asyncio.run(go())
    except (asyncio.CancelledError, asyncio.TimeoutError, PlaywrightError) as exc:
        what = "stopped" if isinstance(exc, asyncio.CancelledError) else \
            "the page did not finish in time" if isinstance(exc, asyncio.TimeoutError) else \
            str(exc).splitlines()[0]
        raise SystemExit(f"browser: {what}") from None
    save(m, job.out)
    print("done " + json.dumps({"busy_ns": None, "total_ns": None, "browser": summary,
                                "replies": summary.get("replies")}), flush=True)


if __name__ == "__main__":
    main()
