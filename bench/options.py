"""The command line's grammar: every subcommand and its options, with their help.

Kept apart from what the commands do (bench/cli.py) so the whole surface a user types reads in
one place. argparse's own errors become UsageError: one line on stderr, exit 2.
"""
import argparse
import math
import os
import sys

from bench.errors import UsageError
from bench.plan import registry
from bench.plan.scenarios import SCENARIOS


class Parser(argparse.ArgumentParser):
    def error(self, message):
        raise UsageError(message)


def positive_float(text):
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"not a finite number: {text!r}")
    return value


def whole(text):
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None


def build_parser():
    from bench import __version__

    prog = "socketio-bench" if os.path.basename(sys.argv[0]) == "socketio-bench" \
        else "python -m bench"
    p = Parser(prog=prog, description="Latency harness for Flask-SocketIO "
               "deployments: spawns variant servers and measures WebSocket round trips.")
    p.add_argument("--version", action="version", version=f"socketio-bench {__version__}")
    sub = p.add_subparsers(dest="command", required=True, parser_class=Parser)
    lp = sub.add_parser("list", help="variants, scenarios, groups; availability and why not")
    lp.add_argument("--variants-file", default=registry.DEFAULT_PATH, help=argparse.SUPPRESS)

    ep = sub.add_parser("envs", help="build (or with --lock, re-lock) the variants' "
                        "environments; lists them with their state")
    ep.add_argument("names", nargs="*", help="environments (default: every one)")
    ep.add_argument("--lock", action="store_true",
                    help="refresh the committed locks servers/locks/<environment>.txt")
    ep.add_argument("--offline", action="store_true", help="install from uv's cache only")
    ep.add_argument("--list", action="store_true", help="only list, build nothing")
    ep.add_argument("--variants-file", default=registry.DEFAULT_PATH, help=argparse.SUPPRESS)

    rp = sub.add_parser("run", help="run a plan and write a results folder")
    rp.add_argument("--variants", help="comma-separated variant names")
    rp.add_argument("--group", help="a group of variants (default: default)")
    rp.add_argument("--scenario", action="append",
                    help=f"one of {', '.join(SCENARIOS)} (repeatable; default echo, rate)")
    rp.add_argument("--connections", type=whole, help="connections (echo: 1, rate: 10)")
    rp.add_argument("--rate", type=positive_float, help="rate scenario: total msg/s (400)")
    rp.add_argument("--duration", type=positive_float, help="measured seconds per step (2.5)")
    rp.add_argument("--warmup", type=positive_float, help="warm-up seconds per step (1)")
    rp.add_argument("--precision", action="append", metavar="METRIC=PCT",
                    help="measure each step until its own interval of METRIC (p50, p99) is "
                    "within ±PCT of it, e.g. p99=5%% (repeatable), or until --max-duration")
    rp.add_argument("--max-duration", type=positive_float, metavar="S",
                    help="the longest window --precision may measure a step for (60)")
    rp.add_argument("--repeats", type=whole, help="repeats of every step (3)")
    rp.add_argument("--payload", type=whole, help="echo argument size in bytes (64)")
    rp.add_argument("--target", help="measure an already running server at this URL")
    rp.add_argument("--app", help="your own app as module:attr, path/to/file.py:attr or a "
                    "factory module:create_app(...) (a Flask app with SocketIO), served under "
                    "every chosen Flask variant")
    rp.add_argument("--app-requirements", help="pip requirements of your app, layered onto "
                    "every variant's environment (default: a requirements.txt beside the app)")
    rp.add_argument("--app-env", action="append", metavar="KEY=VALUE",
                    help="environment of the servers (repeatable; values of keys naming a "
                    "SECRET, TOKEN, PASSWORD or KEY are recorded as ***)")
    rp.add_argument("--scenario-file", help="your own traffic (TOML: namespace, [connect], "
                    "[[setup]], [[messages]]; see examples/chat.toml)")
    kn = rp.add_argument_group("server knobs (SocketIO keyword arguments, recorded in meta.json)")
    kn.add_argument("--async-handlers", help="on|off: async_handlers")
    kn.add_argument("--ping-interval", type=positive_float, help="seconds: ping_interval")
    kn.add_argument("--ping-timeout", type=positive_float, help="seconds: ping_timeout")
    kn.add_argument("--max-http-buffer-size", type=whole, help="bytes: max_http_buffer_size")
    kn.add_argument("--ws-compression", help="on|off: engineio has no WebSocket compression "
                    "switch (permessage-deflate is negotiated only when a client offers it, and "
                    "ours do not): off is recorded, on is refused")
    rp.add_argument("--client", help="client list measured side by side: lean, "
                    "python-socketio, browser (default lean; the stock client steps in for "
                    "polling; browser: headless Chromium running socket.io-client)")
    rp.add_argument("--transport", help="force transports, side by side: websocket, polling "
                    "(default: WebSocket, else what the server serves)")
    rp.add_argument("--arrivals", choices=["uniform", "poisson"],
                    help="open-loop send times: evenly spaced (default) or Poisson")
    rp.add_argument("--deadline-ms", type=positive_float,
                    help="per-message deadline; unanswered by then = timeout (5000)")
    rp.add_argument("--dry-run", action="store_true",
                    help="print the plan and its estimated time, start nothing")
    rp.add_argument("--out", help="parent folder for the run folder (default: results/)")
    rp.add_argument("--label", default="run", help="suffix of the run folder name")
    rp.add_argument("--seed", type=whole, help="seed of the shuffled step order (1)")
    rp.add_argument("--no-pin", action="store_true", help="do not pin server and driver")
    rp.add_argument("--allow-remote", action="store_true",
                    help="allow --target beyond loopback (refused here: loopback only)")
    rp.add_argument("--quick", action="store_true", help="about 1 s per step, one repeat")
    dp = rp.add_argument_group("load from several machines (python -m bench worker)")
    dp.add_argument("--expect-workers", type=whole, help="be the master: wait for N workers "
                    "and split every step's connections and rate over them")
    dp.add_argument("--master-bind", help="HOST:PORT the master listens on for workers "
                    "(127.0.0.1:5557; beyond loopback needs --allow-remote, a cluster token "
                    "and --target)")
    dp.add_argument("--worker-wait", type=positive_float, default=60.0,
                    help="seconds to wait for the workers to join (60)")
    dp.add_argument("--cluster-token-file", metavar="FILE", help="shared secret that "
                    "authenticates every master-worker message (or BENCH_CLUSTER_TOKEN); "
                    "required when --master-bind is beyond loopback")
    sc = rp.add_argument_group("scenario settings")
    sc.add_argument("--slo-p99-ms", type=positive_float, help="sweep SLO: p99 limit (50 ms)")
    sc.add_argument("--slo-ok", type=positive_float, help="sweep SLO: acked fraction (0.999)")
    sc.add_argument("--slo-achieved", type=positive_float,
                    help="sweep SLO: achieved/target fraction (0.95)")
    sc.add_argument("--sweep-start", type=positive_float, help="sweep: first rate (100/s)")
    sc.add_argument("--sweep-factor", type=positive_float, help="sweep: rate step factor (2)")
    sc.add_argument("--sweep-max", type=positive_float, help="sweep: highest rate (25600/s)")
    sc.add_argument("--sweep-step-max", type=positive_float,
                    help="sweep: longest step while gathering the SLO's samples (20 s)")
    sc.add_argument("--fanout-rate", type=positive_float, help="fanout: broadcasts/s (20)")
    sc.add_argument("--connect-rate", type=positive_float, help="connect: arrivals/s (20)")
    sc.add_argument("--block-ms", type=positive_float, help="blocking: ms per block call (50)")
    sc.add_argument("--block-rate", type=positive_float,
                    help="blocking: block calls/s (2), beside the echo traffic")
    ex = rp.add_argument_group("explaining the numbers")
    ex.add_argument("--server-nodelay", nargs="?", const="on", choices=["on", "both", "off"],
                    help="TCP_NODELAY on the server's accepted sockets (bare: on; both: each "
                    "step without and with it)")
    ex.add_argument("--profile", nargs="?", const="on", choices=["on", "both", "off"],
                    help="py-spy flame graphs of the server per step under profiles/ (bare: "
                    "on; both: each step without and with the profiler)")
    ex.add_argument("--server-gc", metavar="default|freeze|off",
                    help="the server's cyclic GC: default, freeze (gc.freeze() once the app is "
                    "built) or off (gc.disable(), a diagnostic); a list runs side by side")
    ex.add_argument("--server-events", metavar="on|off",
                    help="the server records its GC collections and blocked loop into "
                    "events/<step>.csv (on by default: its cost is below the noise); on,off "
                    "runs side by side")
    so = rp.add_argument_group("scale-out")
    so.add_argument("--servers", type=whole, help="server processes of a scale-out variant (2)")
    so.add_argument("--emit-rate", type=positive_float, help="emit: emits/s (20)")
    so.add_argument("--members", help="fanout/emit room sizes N[,N...] (50; wins over "
                    "--connections)")
    so.add_argument("--tls", action="store_true",
                    help="nginx variants: terminate TLS in nginx, clients use wss")
    sc.add_argument("--max-connections", type=whole,
                    help="capacity: the last step of connected clients (10000)")
    gt = rp.add_argument_group("CI gates (judged on the aggregate rows after the run)")
    gt.add_argument("--fail-if", action="append", metavar="EXPR",
                    help="exit 1 unless it holds on every matching row, e.g. p99<50ms, "
                    "p50<=2ms, ok>=99.9%%, achieved>=95%%, errors<=0; scope it as "
                    "VARIANT:SCENARIO:EXPR (* = any); repeatable")
    gt.add_argument("--junit", metavar="FILE",
                    help="write the --fail-if judgements as JUnit XML (one case per "
                    "threshold × row)")
    rp.add_argument("--no-report", action="store_true", help=argparse.SUPPRESS)
    rp.add_argument("--variants-file", default=registry.DEFAULT_PATH, help=argparse.SUPPRESS)

    rep = sub.add_parser("report", help="rebuild plots/, report.md and report.html from CSVs")
    rep.add_argument("run_dir", help="a results folder")

    cmp_ = sub.add_parser("compare", help="differences with confidence intervals; exit 1 "
                          "on regression")
    cmp_.add_argument("base", help="baseline results folder")
    cmp_.add_argument("new", help="new results folder")
    cmp_.add_argument("--threshold", type=positive_float, default=0.10,
                      help="relative change that counts as a regression (0.10)")
    cmp_.add_argument("--force", action="store_true", help="compare incomparable runs anyway")
    cmp_.add_argument("--junit", metavar="FILE", help="write the comparison as JUnit XML (one "
                      "case per compared row, failed when it regressed)")

    wp = sub.add_parser("worker", help="a load machine of a distributed run: serve the "
                        "master's steps until it ends the run")
    wp.add_argument("--master", required=True, help="HOST:PORT of the master "
                    "(python -m bench run --expect-workers N --master-bind HOST:PORT)")
    wp.add_argument("--drivers", type=whole, default=1,
                    help="driver processes on this machine (1)")
    wp.add_argument("--connect-timeout", type=positive_float, default=60.0,
                    help="give up when no master answers within S seconds (60)")
    wp.add_argument("--master-timeout", type=positive_float, default=10.0,
                    help="leave when the master is silent for S seconds (10)")
    wp.add_argument("--workdir", help="keep driver and engine logs here (default: a temporary "
                    "folder, removed at the end)")
    wp.add_argument("--allow-target", metavar="HOST[:PORT][,...]", help="the only servers "
                    "this worker will load (default: loopback addresses only)")
    wp.add_argument("--cluster-token-file", metavar="FILE", help="the master's shared secret "
                    "(or BENCH_CLUSTER_TOKEN); required when --master is beyond loopback")

    ip = sub.add_parser("init", help="a commented scenario file from your app's handlers")
    ip.add_argument("--app", required=True, help="module:attr, path/to/file.py:attr or "
                    "module:create_app(...)")
    ip.add_argument("--out", default="traffic.toml",
                    help="the scenario file to write, never overwritten (traffic.toml)")
    ip.add_argument("--app-requirements", help="pip requirements of your app (default: a "
                    "requirements.txt beside the app)")
    ip.add_argument("--app-env", action="append", metavar="KEY=VALUE",
                    help="environment the app is imported with (repeatable)")
    ip.add_argument("--variants-file", default=registry.DEFAULT_PATH, help=argparse.SUPPRESS)

    cp = sub.add_parser("calibrate", help="the driver's own floor and capacity")
    cp.add_argument("--json", action="store_true", help="print one JSON object")
    cp.add_argument("--no-pin", action="store_true", help="do not pin server and driver")
    cp.add_argument("--quick", action="store_true", help="shorter steps")
    return p
