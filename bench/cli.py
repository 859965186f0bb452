"""What each command does: ``list|envs|run|report|compare|calibrate|worker|init``.

The grammar lives in bench/options.py. Bad input is one line on stderr and exit 2, never a
traceback: every user-facing check raises UsageError, caught once in ``main``.
"""
import json
import math
import os
import signal
import sys

from bench import processes
from bench.execute import deployment, verify
from bench.plan import steps as plan
from bench.plan import registry
from bench.plan.scenarios import SCENARIOS
from bench.errors import ResultsWriteError, UsageError
from bench.options import build_parser
from bench.distributed import DistributedError


CLIENT_DESCRIPTIONS = {
    "lean": "the harness's own Engine.IO/Socket.IO client over picows (WebSocket)",
    "python-socketio": "the stock python-socketio client (WebSocket or polling)",
    "browser": "headless Chromium running socket.io-client on a page (echo, rate, sweep, "
               "payload)",
}


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
    print("clients:")
    from bench.driver import browser  # Chromium, Playwright and the npm lock: asked only here
    no_browser = browser.unavailable_reason()
    for name, what in CLIENT_DESCRIPTIONS.items():
        state = f"unavailable: {no_browser}" if name == "browser" and no_browser else "available"
        print(f"  {name:16s} {state}  -- {what}")
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
                   max_connections=args.max_connections, server_gc=args.server_gc,
                   server_events=args.server_events or ("off" if target else None),
                   precision=args.precision, max_duration=args.max_duration)
    steps, resolved = plan.build(variants, scenarios, options)
    if target and any(s.profiled or s.server_nodelay or s.server_events or
                      s.server_gc != "default" for s in steps):
        raise UsageError("--profile, --server-nodelay, --server-gc and --server-events act on "
                         "servers the harness starts; they cannot reach a --target server")
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
    failed = verify.all_failed_line(rows) if own.get("traffic") else ""
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


def distributed_bind(args):
    """((host, port), token) the master binds with when the run has workers, else
    (None, None); refused before anything binds: beyond loopback needs a token and --target."""
    from bench.distributed import DEFAULT_BIND, is_loopback, parse_hostport
    from bench.distributed.seal import ENV, load_token
    if args.expect_workers is None:
        for given, option in ((args.master_bind, "--master-bind"),
                              (args.cluster_token_file, "--cluster-token-file")):
            if given:
                raise UsageError(f"{option} needs --expect-workers N")
        os.environ.pop(ENV, None)  # no workers: nothing needs the token, and no child inherits it
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
    from urllib.parse import urlsplit

    from bench.distributed import is_loopback

    parts = urlsplit(url)
    if parts.scheme not in ("http", "ws") or not parts.hostname:
        raise UsageError(f"--target must look like http://127.0.0.1:PORT, got {url!r}")
    try:
        port = parts.port or 80
    except ValueError:
        raise UsageError(f"--target has a bad port: {url!r}") from None
    host = parts.hostname
    if not is_loopback(host) and not allow_remote:
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
    from bench.calibrate import BROWSER_CONNECTIONS_RATE, RATE_CONNECTIONS, calibrate

    log = (lambda *a: print(*a, file=sys.stderr, flush=True)) if args.json else print
    out = calibrate(pin=not args.no_pin, quick=args.quick, log=log)
    if args.json:
        print(json.dumps(finite(out), allow_nan=False))
    else:
        print(f"floor p50 {out['floor_p50_us']} us, p99 {out['floor_p99_us']} us; capacity "
              f"{out['capacity_msg_s']:.0f} msg/s per driver process (lag p99 "
              f"{out['lag_p99_us']} us)")
        if out["browser"] == "measured":
            print(f"browser: floor p50 {out['browser_floor_p50_us']} us "
                  f"(+{out['browser_floor_added_us']} us over the lean client), one page "
                  f"sustains {out['browser_capacity_msg_s']:.0f} msg/s at {RATE_CONNECTIONS} "
                  f"connections and {out['browser_connections']} connections at "
                  f"{BROWSER_CONNECTIONS_RATE:g} msg/s")
        else:
            print(f"browser: {out['browser']}")
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
    from bench import environments as envs

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
        processes.kill_all_groups()
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
        processes.kill_all_groups()
