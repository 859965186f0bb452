"""Execute a plan: each step through the step runner, sweeps through the sweep search, every
result into the run folder as it finishes; Ctrl-C or a crash still writes what was measured."""
import os
import sys
import time

from bench import processes
from bench.execute import sweep
from bench.driver import browser
from bench.execute.step import StepRunner
from bench.output.runfolder import RunFolder


def variant_records(registry, steps, options):
    return {n: registry.variants[n].__dict__ if n in registry.variants else
            {"target": options.get("target")} for n in dict.fromkeys(s.variant for s in steps)}


def prepare_environments(registry, steps, meta):
    """Build the variants' environments on first use (bench/environments.py) and
    record every installed version per environment in meta.json."""
    from bench import environments

    variants = [registry.variants[n] for n in dict.fromkeys(s.variant for s in steps)
                if n in registry.variants]
    packages, records = environments.prepare_for_run(
        variants, log=lambda text: print(text, file=sys.stderr, flush=True))
    meta["packages"].update(packages)
    meta["environments"] = records


def execute(registry, steps, options, run_dir, progress, app=None, target=None, workers=None):
    """Run every step of the plan into ``run_dir``; returns the summary rows (not aggregates).
    ``workers``: a distributed Coordinator whose workers drive the load (meta ``distributed``)."""
    started_wall = time.time()
    runner_ = StepRunner(registry, None, options, started_wall, app=app, target=target,
                         workers=workers)
    pinning = dict(enabled=runner_.server_cpus is not None, server_cpus=runner_.server_cpus,
                   driver_cpus=runner_.driver_cpus,
                   # a scale-out's parts (its servers, Redis, nginx) share server_cpus; the
                   # emit scenario's emitter shares driver_cpus with a driver that sleeps
                   roles={"driver": runner_.driver_cpus, "emitter": runner_.driver_cpus,
                          "servers, redis, nginx": runner_.server_cpus},
                   who="server (and everything it starts) on server_cpus; driver processes "
                       "alone on driver_cpus, busy-polling (emit steps: the emitter shares "
                       "driver_cpus with a sleeping driver); a scale-out's servers, Redis "
                       "and nginx share server_cpus" if runner_.server_cpus else
                       "not pinned: server and driver share every core; the driver sleeps")
    folder = RunFolder(run_dir, RunFolder.new_meta(
        steps, options, variant_records(registry, steps, options), pinning))
    runner_.folder = folder
    if workers:
        folder.meta["distributed"] = workers.meta  # updated in place as steps run
    prepare_environments(registry, steps, folder.meta)
    folder.meta.update({k: options[k] for k in ("app_override", "server_knobs", "scenario_file")
                        if options.get(k)})  # the user's app, knobs and traffic
    if any(s.client == "browser" for s in steps):
        folder.meta["browser"] = browser.settings()
    folder.start()
    if runner_.driver_cpus:
        os.sched_setaffinity(0, runner_.driver_cpus)
    status, stopped_by = "partial", None
    try:
        for step in steps:
            if step.sweep_rates:
                before, parts = len(folder.rows), {}

                def measure(sub, part):
                    progress.step(sub)
                    if sub.rate in parts:  # a retried rate: the first attempt's samples stay
                        folder.supersede(runner_.sample_name(sub, parts[sub.rate]))
                    parts[sub.rate] = part
                    rows, resources = runner_.run(sub, part)
                    folder.add(rows, resources)  # written at once; a retry replaces it below
                    progress.done(sub, rows[-1])
                    return rows
                rows, knee = sweep.search(step, options, measure)
                del folder.rows[before:]
                folder.add(rows, knee=knee)
            else:
                progress.step(step)
                rows, resources = runner_.run(step)
                folder.add(rows, resources)
                progress.done(step, rows[-1])
        status = "complete"
    except BaseException as exc:
        stopped_by = f"{type(exc).__name__}: {exc}"[:300]
        raise
    finally:
        processes.kill_all_groups()
        folder.finish(status, stopped_by)
    return folder.rows
