"""Where the harness's own files live: a checkout, or an installed package and the user's cache.

From a checkout (``make bench``, ``python -m bench``) everything is where the repository keeps
it: ``servers/``, ``.envs/``, ``results/``. Installed (``pipx install``, ``pip install``), the
servers travel inside the package as ``bench/_servers`` and must never be importable as a
top-level ``servers`` by the user's own code, so they are copied once per harness version into
the user's cache folder (``<cache>/socketio-bench/runtime-<version>/servers``): only the server
processes the harness spawns put that folder on their ``sys.path``. Environments are cached
there too, and results go to ``./results`` of the folder the command runs in.
"""
import os
import shutil

PACKAGE = os.path.dirname(os.path.abspath(__file__))
_PARENT = os.path.dirname(PACKAGE)
CHECKOUT = _PARENT if os.path.isfile(os.path.join(_PARENT, "servers", "variants.toml")) \
    else None
PACKAGED_SERVERS = os.path.join(PACKAGE, "_servers")


def cache_dir():
    """The user's cache folder for the harness (``BENCH_CACHE_DIR`` overrides it)."""
    from platformdirs import user_cache_dir

    return os.environ.get("BENCH_CACHE_DIR") or user_cache_dir("socketio-bench")


def _materialised_servers(version):
    """A folder holding ``servers/`` copied from the package (once per version, atomically)."""
    home = os.path.join(cache_dir(), f"runtime-{version}")
    if os.path.isfile(os.path.join(home, "servers", "variants.toml")):
        return home
    os.makedirs(cache_dir(), exist_ok=True)
    staging = f"{home}.tmp-{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    shutil.copytree(PACKAGED_SERVERS, os.path.join(staging, "servers"),
                    ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    try:
        os.replace(staging, home)
    except OSError:  # another process materialised it first: theirs is as good
        shutil.rmtree(staging, ignore_errors=True)
    return home


def servers_home(version):
    """The folder whose ``servers/`` the harness launches: the checkout, or the cache copy."""
    if CHECKOUT:
        return CHECKOUT
    return _materialised_servers(version)


def envs_dir():
    """Where variant environments are built (``BENCH_ENVS_DIR`` overrides it)."""
    if os.environ.get("BENCH_ENVS_DIR"):
        return os.environ["BENCH_ENVS_DIR"]
    return os.path.join(CHECKOUT, ".envs") if CHECKOUT else os.path.join(cache_dir(), "envs")


def results_dir():
    """The default parent of run folders: the checkout's ``results/``, else ``./results``."""
    return os.path.join(CHECKOUT, "results") if CHECKOUT else os.path.join(os.getcwd(),
                                                                           "results")


def server_module(name):
    """``servers/<name>.py`` of the servers home, imported by file under a private name
    (``bench._servers_<name>``): the harness shares the servers' own code (the ``--app`` spec
    parser) without a top-level ``servers`` on its ``sys.path``. Only stdlib-only modules."""
    import importlib.util
    import sys

    from bench import ROOT

    key = f"bench._servers_{name}"
    if key not in sys.modules:
        spec = importlib.util.spec_from_file_location(key, os.path.join(ROOT, "servers",
                                                                         f"{name}.py"))
        module = importlib.util.module_from_spec(spec)
        sys.modules[key] = module
        spec.loader.exec_module(module)
    return sys.modules[key]
