"""``python -m bench list|envs|run|report|compare|calibrate|worker|init``.

Bad input is one line on stderr and exit 2, never a traceback: every user-facing check
raises UsageError, and argparse's own errors are folded into the same single line.
"""
import argparse
import json
import math
import os
import signal
import sys

from bench.execute import deployment, lifecycle
from bench.plan import steps as plan
from bench.plan.scenarios import SCENARIOS
from bench.plan import registry
from bench.errors import ResultsWriteError, UsageError
from bench.distributed import DistributedError


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
                    "python-socketio (default lean; the stock client steps in for polling)")
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


def cmd_list(args):
    reg = registry.load(args.variants_file)
    print("variants:")
    for name, v in reg.variants.items():
        state, why = v.availability()
        if state == "unavailable":
            state = f"unavailable: {why}"
        elif deployment.unavailable_reason(v):  # redis-server / nginx a topology names
            state = f"unavailable: {deployment.unavailable_reason(v)}"
        elif why:
            state = f"{state} ({why})"
        print(f"  {name:26s} {state}  -- {v.description}")
    print("groups:")
    for group, members in reg.groups.items():
        print(f"  {group:26s} {', '.join(members)}")
    print("scenarios:")
    for s in SCENARIOS.values():
        print(f"  {s.name:10s} {s.description}")
    return 0


def cmd_run(args):
    from bench.output import results
    from bench.progress import Progress
    from bench.execute.runner import execute

    from bench.analysis import thresholds
    from bench.output import junit

    gates = thresholds.parse_all(args.fail_if)
    if args.junit:
        junit.check_writable(args.junit)
    target = parse_target(args.target, args.allow_remote) if args.target else None
    if target and (args.variants or args.group or args.app):
        raise UsageError("--target measures one running server; it excludes --variants, "
                         "--group and --app")
    reg = registry.load(args.variants_file)
    names = [n.strip() for n in args.variants.split(",") if n.strip()] if args.variants else None
    if args.variants is not None and not names:
        raise UsageError("--variants is empty")
    variants = ["target"] if target else [v.name for v in reg.select(names, args.group)]
    if args.tls and not any(deployment.topology(reg.variants[n]).get("proxy") == "nginx"
                            for n in variants if n in reg.variants):
        raise UsageError("--tls is terminated by nginx: select an nginx variant "
                         "(e.g. scaleout-redis-nginx)")
    scenarios = args.scenario or ["echo", "rate"]
    bind, token = distributed_bind(args)
    from bench.plan import ownapp
    variants, own = ownapp.prepare(args, reg, variants, scenarios, target)
    options = dict(rate=args.rate, connections=args.connections, duration=args.duration,
                   warmup=args.warmup, repeats=args.repeats, payload=args.payload,
                   seed=args.seed, quick=args.quick, slo_p99_ms=args.slo_p99_ms,
                   slo_ok=args.slo_ok, slo_achieved=args.slo_achieved,
                   sweep_start=args.sweep_start, sweep_factor=args.sweep_factor,
                   sweep_max=args.sweep_max, fanout_rate=args.fanout_rate,
                   connect_rate=args.connect_rate, block_ms=args.block_ms,
                   block_rate=args.block_rate, client=args.client, transport=args.transport,
                   arrivals=args.arrivals, deadline_ms=args.deadline_ms,
                   sweep_step_max=args.sweep_step_max, server_nodelay=args.server_nodelay,
                   profile=args.profile, emit_rate=args.emit_rate,
                   members=args.members, servers=args.servers, tls=args.tls or None,
                   max_connections=args.max_connections)
    steps, resolved = plan.build(variants, scenarios, options)
    if target and any(s.profiled or s.server_nodelay for s in steps):
        raise UsageError("--profile and --server-nodelay act on servers the harness starts; "
                         "they cannot reach a --target server")
    if any(s.profiled for s in steps) and not args.dry_run:
        from bench.execute import profiler
        profiler.check_permitted()  # one line naming what to change where ptrace is refused
    if args.dry_run:
        print_plan(steps, resolved, reg, target)
        return 0
    run_dir = results.create_run_dir(args.out, args.label)
    resolved.update(variants=variants, scenarios=scenarios, pin=not args.no_pin, app=args.app,
                    label=args.label, target=args.target, **own)
    workers = None
    if bind:
        from bench.distributed.master import Coordinator
        resolved.update(expect_workers=args.expect_workers, master_bind="%s:%d" % bind)
        workers = Coordinator(bind, args.expect_workers, os.path.join(run_dir, "logs"),
                              args.worker_wait, token=token, target=target)
        print(f"bench: master on {bind[0]}:{bind[1]}, waiting up to {args.worker_wait:g} s "
              f"for {args.expect_workers} workers (cluster token: "
              f"{workers.meta['token_fingerprint'] or 'none'})", file=sys.stderr, flush=True)
    progress = Progress(len(steps))
    print(f"bench: {len(steps)} steps -> {run_dir}", file=sys.stderr, flush=True)
    try:
        if workers:
            workers.start()
        rows = execute(reg, steps, resolved, run_dir, progress, app=args.app, target=target,
                       workers=workers)
    finally:
        progress.close()
        if workers:
            workers.close()
    print_table(rows)
    failed = ownapp.all_failed_line(rows) if own.get("traffic") else ""
    if not args.no_report:
        from bench.output import report
        report.build(run_dir)
        print(f"report: {os.path.join(run_dir, 'report.md')} (charts in plots/)")
    print(f"results: {run_dir}")
    broken = judge_gates(gates, run_dir, args.junit)
    if failed:
        raise UsageError(failed)
    return 1 if broken else 0


def judge_gates(gates, run_dir, junit_path):
    """Judge ``--fail-if`` on the published aggregate rows: one stderr line per failure,
    the JUnit file when asked; the number of failed judgements."""
    if not gates:
        return 0
    from bench.analysis import reader, thresholds
    from bench.output import junit

    rows = reader.read(run_dir).aggregates.to_dict("records")
    judged = thresholds.judge(gates, rows)
    for j in judged:
        if not j.passed:
            print(f"fail-if {j.threshold.text}: {j.message}", file=sys.stderr)
    broken = sum(not j.passed for j in judged)
    print(f"fail-if: {len(judged) - broken} of {len(judged)} held", file=sys.stderr)
    if junit_path:
        junit.write(junit_path, "socketio-bench thresholds",
                    [junit.Case(j.row_name, j.threshold.text, "" if j.passed else j.message)
                     for j in judged])
        print(f"junit: {junit_path}", file=sys.stderr)
    return broken


def print_plan(steps, o, reg, target):
    """The plan as it would run: every step in order, the environments it needs, the time."""
    for s in steps:
        what = f"sweep {len(s.sweep_rates)} rates from {s.sweep_rates[0]:g}/s" if s.sweep_rates \
            else s.load_point
        via = s.client + (f"/{s.transport}" if s.transport else "")
        print(f"{s.index + 1:4d}. {s.variant:26s} {s.scenario:9s} {what:36s} #{s.repeat} {via}")
    envs = sorted({reg.variants[s.variant].environment for s in steps
                   if not target and s.variant in reg.variants})
    if envs:
        print(f"environments: {', '.join(envs)}")
    seconds = plan.estimate_seconds(steps, o)
    print(f"{len(steps)} steps, estimated {seconds / 60:.1f} min "
          f"(sweeps counted at every rate: an upper bound)")


LOOPBACK = ("localhost", "::1")


def distributed_bind(args):
    """((host, port), token) the master binds with when the run has workers, else
    (None, None); refused before anything binds: beyond loopback needs a token and --target."""
    from bench.distributed import DEFAULT_BIND, is_loopback, parse_hostport
    from bench.distributed.seal import load_token
    if args.expect_workers is None:
        for given, option in ((args.master_bind, "--master-bind"),
                              (args.cluster_token_file, "--cluster-token-file")):
            if given:
                raise UsageError(f"{option} needs --expect-workers N")
        return None, None
    if args.expect_workers < 1:
        raise UsageError(f"--expect-workers must be at least 1, got {args.expect_workers}")
    bind = parse_hostport(args.master_bind or DEFAULT_BIND, "--master-bind", args.allow_remote)
    token = load_token(args.cluster_token_file)
    if not is_loopback(bind[0]) and not token:
        raise UsageError(f"--master-bind {bind[0]} is beyond loopback: pass "
                         "--cluster-token-file FILE (or set BENCH_CLUSTER_TOKEN) so that only "
                         "workers holding the token can join")
    if not is_loopback(bind[0]) and not args.target:
        raise UsageError(f"--master-bind {bind[0]} is beyond loopback: workers there need "
                         "--target (the servers this master starts listen on its own "
                         "127.0.0.1)")
    return bind, token


def cmd_worker(args):
    from bench.distributed import is_loopback, parse_allow, parse_hostport
    from bench.distributed.seal import load_token
    from bench.distributed.worker import serve
    master = parse_hostport(args.master, "--master")
    if args.drivers < 1:
        raise UsageError(f"--drivers must be at least 1, got {args.drivers}")
    allow = parse_allow(args.allow_target)
    token = load_token(args.cluster_token_file)
    if not is_loopback(master[0]) and not token:
        raise UsageError(f"--master {master[0]} is beyond loopback: pass --cluster-token-file "
                         "FILE (or set BENCH_CLUSTER_TOKEN), the master's token")
    return serve(master, drivers=args.drivers, connect_timeout=args.connect_timeout,
                 master_timeout=args.master_timeout, workdir=args.workdir, token=token,
                 allow=allow)


def parse_target(url, allow_remote):
    """(host, port) of ``--target http://HOST:PORT``; loopback only unless --allow-remote."""
    import ipaddress
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    if parts.scheme not in ("http", "ws") or not parts.hostname:
        raise UsageError(f"--target must look like http://127.0.0.1:PORT, got {url!r}")
    try:
        port = parts.port or 80
    except ValueError:
        raise UsageError(f"--target has a bad port: {url!r}") from None
    host = parts.hostname
    try:
        loopback = host in LOOPBACK or ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    if not loopback and not allow_remote:
        raise UsageError(f"--target {host} is not a loopback address; pass --allow-remote "
                         "to measure a server on another host")
    return host, port


def print_table(rows):
    """Aggregate view: one line per scenario, load point, variant and client, repeats merged,
    columns as wide as their content (bench.output.terminal)."""
    from bench.output import terminal

    print("\n".join(terminal.lines(rows)))


def finite(value):
    """JSON has no NaN: a number that could not be measured is null."""
    if isinstance(value, dict):
        return {k: finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [finite(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def cmd_calibrate(args):
    from bench.calibrate import calibrate

    log = (lambda *a: print(*a, file=sys.stderr, flush=True)) if args.json else print
    out = calibrate(pin=not args.no_pin, quick=args.quick, log=log)
    if args.json:
        print(json.dumps(finite(out), allow_nan=False))
    else:
        print(f"floor p50 {out['floor_p50_us']} us, p99 {out['floor_p99_us']} us; capacity "
              f"{out['capacity_msg_s']:.0f} msg/s per driver process (lag p99 "
              f"{out['lag_p99_us']} us)")
    return 0


def cmd_report(args):
    from bench.output import report
    if not os.path.isfile(os.path.join(args.run_dir, "summary.csv")):
        raise UsageError(f"{args.run_dir} is not a results folder (no summary.csv)")
    missing = report.build(args.run_dir)
    print(f"report: {os.path.join(args.run_dir, 'report.html')} and report.md"
          + (f" ({missing})" if missing else ", first screen in report.png"))
    return 0


def cmd_compare(args):
    from bench.output import comparison
    if not 0 < args.threshold < 10:
        raise UsageError(f"--threshold must be in (0, 10), got {args.threshold:g}")
    from bench.output import junit
    if args.junit:
        junit.check_writable(args.junit)
    return comparison.run(args.base, args.new, threshold=args.threshold, force=args.force,
                          junit_path=args.junit)


def cmd_envs(args):
    from bench.execute import environments as envs

    reg = registry.load(args.variants_file)
    names = args.names or list(reg.environments)
    unknown = [n for n in names if n not in reg.environments]
    if unknown:
        raise UsageError(f"unknown environment {unknown[0]!r} (known: "
                         f"{', '.join(reg.environments)})")
    log = lambda text: print(text, file=sys.stderr, flush=True)  # noqa: E731
    failed = 0
    for name in names:
        env = reg.environment(name)
        try:
            if args.lock:
                envs.compile_lock(env, log=log, offline=args.offline)
            elif not args.list and envs.state(env)[0] == "buildable":
                envs.ensure(env, log=log, offline=args.offline)
        except envs.BuildError as exc:
            failed += 1
            log(f"envs: {name}: {exc}")
        state, why = envs.state(env)
        info = envs.built_info(env) if state == "ready" else {}
        where = os.path.relpath(info["path"], os.getcwd()) if info.get("path") else ""
        built = f" (built in {info['build_s']:.1f} s)" if "build_s" in info else ""
        print(f"{name:26s} {state:10s} {where}{built}" + (f" {why}" if why else ""))
    return 1 if failed else 0


def cmd_init(args):
    from bench.plan import scaffold
    return scaffold.run(args, registry.load(args.variants_file))


COMMANDS = {"list": cmd_list, "envs": cmd_envs, "run": cmd_run, "report": cmd_report,
            "compare": cmd_compare, "calibrate": cmd_calibrate, "worker": cmd_worker,
            "init": cmd_init}


class Interrupted(BaseException):
    """SIGINT or SIGTERM: stop after cleaning up (finished steps stay written)."""


def _interrupt(signum, frame):
    """First signal: unwind through every ``finally`` (servers stopped, results written).
    Second signal: the user insists; kill every process group and leave at once."""
    if _interrupt.seen:
        lifecycle.kill_all_groups()
        os._exit(130)
    _interrupt.seen = True
    raise Interrupted(signal.Signals(signum).name)


_interrupt.seen = False


def main(argv=None):
    signal.signal(signal.SIGTERM, _interrupt)
    signal.signal(signal.SIGINT, _interrupt)
    try:
        args = build_parser().parse_args(argv)
        return COMMANDS[args.command](args)
    except UsageError as exc:
        print(f"bench: error: {exc}", file=sys.stderr)
        return 2
    except Interrupted as exc:
        print(f"bench: interrupted by {exc}; finished steps are written", file=sys.stderr)
        return 130
    except ResultsWriteError as exc:
        print(f"bench: error: cannot write results: {exc}", file=sys.stderr)
        return 1
    except DistributedError as exc:
        print(f"bench: error: {exc}", file=sys.stderr)
        return 1
    except BrokenPipeError:  # the reader left (``| head``): stop quietly, as cat does
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
    finally:
        lifecycle.kill_all_groups()
