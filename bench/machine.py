"""What the harness reads from the machine it runs on: UTC time, the CPU layout, open-file
limits and the usage of a process tree.

Small helpers every layer needs (plan, execute, driver, the soaks), kept here once so that no
layer imports another just for them.
"""
import datetime as dt
import os
import resource

import psutil


def utc_now():
    """The current time in UTC (timezone-aware): every timestamp the harness writes."""
    return dt.datetime.now(dt.timezone.utc)


def cpu_layout(pin):
    """(server cpus, driver cpus): separate cores when pinning and ≥ 2 cores, else None."""
    cpus = sorted(os.sched_getaffinity(0))
    if not pin or len(cpus) < 2:
        return None, None
    return [cpus[0]], cpus[1:]


def nofile_hard_limit():
    """This process's hard open-file limit (None when unlimited): what a server may hold."""
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    return None if hard == resource.RLIM_INFINITY else hard


def raise_nofile():
    """Raise this process's soft open-file limit to its hard limit (children inherit it, so
    one server or driver process can hold thousands of sockets); return the limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and soft < hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        except (ValueError, OSError):
            return soft
        return hard
    return soft if hard == resource.RLIM_INFINITY else hard


def tree(pids):
    """The live processes of ``pids`` and all their descendants (workers of a pre-fork
    server count with their master)."""
    procs = []
    for pid in pids:
        try:
            root = psutil.Process(pid)
            procs += [root, *root.children(recursive=True)]
        except psutil.Error:
            continue
    return procs


def tree_usage(pids):
    """(RSS MB, CPU seconds, open descriptors) summed over the process trees of ``pids``;
    processes that vanish while being read are skipped."""
    rss = cpu = 0.0
    fds = 0
    for p in tree(pids):
        try:
            rss += p.memory_info().rss / 2 ** 20
            t = p.cpu_times()
            cpu += t.user + t.system
            fds += p.num_fds()
        except psutil.Error:
            pass
    return rss, cpu, fds
