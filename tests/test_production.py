"""Production variants: each single-server production variant through the real CLI
in its own uv environment, the registry's new keys, the environments and their locks, and the
faults: a gunicorn worker that never becomes ready, an unknown worker class.

Environments are built on first use and cached under .envs/ (keyed by lock and Python), so a
test session builds each at most once; a fresh CI machine pays uWSGI's compile (~25 s) once."""
import json
import os
import re
import textwrap
import time

import pytest

from bench.errors import UsageError
from bench import environments
from bench.plan import registry

SINGLE = ["gunicorn-gevent", "gunicorn-gevent-websocket", "gunicorn-gthread",
          "gunicorn-eventlet", "uvicorn-asgi", "uwsgi-gevent"]
SCENARIOS = ("echo", "rate")


def available(names):
    """The variants this machine can run (ready or buildable); the rest skip with the reason."""
    reg = registry.load()
    return [n for n in names if reg.variants[n].availability()[0] != "unavailable"]


def write(tmp_path, text, name="variants.toml"):
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return str(path)


# --------------------------------------------------------------------------- the real CLI

@pytest.fixture(scope="module")
def prod_run(bench, tmp_path_factory):
    names = available(SINGLE)
    if not names:
        pytest.skip("no production variant can be built here")
    before, since = bench.snapshot()
    out = tmp_path_factory.mktemp("production")
    args = ["run", "--quick", "--variants", ",".join(names), "--duration", "0.6",
            "--warmup", "0.3", "--rate", "200", "--out", out, "--no-report"]
    for s in SCENARIOS:
        args += ["--scenario", s]
    started = time.monotonic()
    r = bench.run(*args, timeout=900)
    elapsed = time.monotonic() - started
    orphans = bench.reap_or_fail(before, since, "the quick run of the production variants")
    dirs = bench.run_dirs(out)
    return dict(r=r, names=names, run_dir=dirs[0] if len(dirs) == 1 else None,
                orphans=orphans, elapsed=elapsed)


@pytest.fixture(scope="module")
def run_dir(prod_run):
    assert prod_run["r"].returncode == 0, prod_run["r"].stderr[-3000:]
    assert prod_run["run_dir"]
    return prod_run["run_dir"]


@pytest.mark.slow
def test_production_run_leaves_nothing_running(prod_run):
    assert prod_run["orphans"] == ""


@pytest.mark.slow
@pytest.mark.parametrize("variant", SINGLE)
def test_each_production_variant_is_measured_over_websocket(bench, prod_run, run_dir, variant):
    if variant not in prod_run["names"]:
        pytest.skip(f"{variant}: {registry.load().variants[variant].availability()[1]}")
    summary = bench.summary(run_dir)
    for scenario in SCENARIOS:
        rows = summary[(summary["variant"] == variant) & (summary["scenario"] == scenario) &
                       (summary["repeat"] == "1")]
        assert len(rows) == 1, (variant, scenario)
        row = rows.iloc[0]
        assert row["transport"] == "websocket", (variant, scenario, row["note"])
        assert row["ok"] > 0 and row["ok"] == row["attempted"], (variant, scenario, row["note"])
        assert row["p50_us"] > 0


@pytest.mark.slow
def test_meta_records_every_installed_version_per_environment(bench, prod_run, run_dir):
    meta = bench.meta(run_dir)
    reg = registry.load()
    for name in prod_run["names"]:
        variant = reg.variants[name]
        env = variant.environment
        assert meta["variants"][name]["environment"] == env
        packages = meta["packages"][env]
        locked = dict(re.findall(r"^([A-Za-z0-9_.\-]+)==(\S+)",
                                 open(variant.environment_spec.lock_path).read(), re.M))
        for dist, version in locked.items():   # installed exactly what the lock pins
            assert packages.get(re.sub(r"[-_.]+", "-", dist).lower()) == version, (env, dist)
        assert meta["environments"][env]["lock"] == f"servers/locks/{env}.txt"
        assert meta["environments"][env]["error"] == ""
    if "gunicorn-eventlet" in prod_run["names"]:
        assert int(meta["packages"]["gunicorn-eventlet"]["gunicorn"].split(".")[0]) < 26
    if "gunicorn-gevent" in prod_run["names"]:   # simple-websocket, never gevent-websocket
        assert "gevent-websocket" not in meta["packages"]["gunicorn"]
        assert "gevent-websocket" in meta["packages"]["gunicorn-gevent-websocket"]


@pytest.mark.slow
def test_server_logs_show_the_real_server_and_worker(prod_run, run_dir):
    expect = {"gunicorn-gevent": "Using worker: gevent",
              "gunicorn-gthread": "Using worker: gthread",
              "gunicorn-eventlet": "Using worker: eventlet",
              "gunicorn-gevent-websocket": "GeventWebSocketWorker",
              "uwsgi-gevent": "async_mode=gevent_uwsgi",
              "uvicorn-asgi": "Uvicorn running on http://127.0.0.1:"}
    for name in prod_run["names"]:
        log = open(os.path.join(run_dir, "logs", f"{name}.log")).read()
        assert expect[name] in log, name


@pytest.mark.slow
def test_uwsgi_takes_tcp_nodelay_from_the_harness_switch(bench, prod_run, run_dir, tmp_path):
    """uWSGI accepts in C (no Python patch reaches it): servers/uwsgi.ini turns on its own
    --tcp-nodelay when BENCH_SERVER_NODELAY=1; off by default, as uWSGI ships."""
    if "uwsgi-gevent" not in prod_run["names"]:
        pytest.skip("uwsgi-gevent cannot be built here")
    stock = open(os.path.join(run_dir, "logs", "uwsgi-gevent.log")).read()
    assert "[uwsgi]" in stock and "tcp-nodelay = true" not in stock
    out = tmp_path / "out"
    r = bench.run("run", "--variants", "uwsgi-gevent", "--scenario", "echo", "--quick",
                  "--duration", "0.3", "--warmup", "0", "--out", out, "--no-report",
                  env=bench.env(BENCH_SERVER_NODELAY=1), timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    [nodelay_dir] = bench.run_dirs(out)
    assert "tcp-nodelay = true" in open(os.path.join(nodelay_dir, "logs",
                                                     "uwsgi-gevent.log")).read()


# --------------------------------------------------------------------------- faults

@pytest.mark.slow
def test_gunicorn_worker_that_never_becomes_ready_is_a_failed_row(bench, tmp_path):
    """gunicorn's master listens before its worker has imported the app: the TCP port is
    open, nothing answers. Verification's deadline makes it a failed row; the run ends."""
    if not available(["gunicorn-gthread"]):
        pytest.skip("gunicorn-gthread cannot be built here")
    (tmp_path / "hanging_wsgi.py").write_text(textwrap.dedent("""
        import sys, time
        print("hanging_wsgi: importing forever", file=sys.stderr, flush=True)
        for _ in range(3600):
            time.sleep(1)
    """))
    out = tmp_path / "out"
    started = time.monotonic()
    r = bench.run("run", "--variants", "gunicorn-gthread", "--app", "hanging_wsgi:app",
                  "--scenario", "echo", "--duration", "0.5", "--warmup", "0", "--repeats", "1",
                  "--deadline-ms", "1500",
                  "--out", out, "--no-report", cwd=tmp_path, timeout=120)
    elapsed = time.monotonic() - started
    assert r.returncode == 0, r.stderr[-2000:]
    [run_dir] = bench.run_dirs(out)
    summary = bench.summary(run_dir)
    row = summary[(summary["variant"] == "gunicorn-gthread") & (summary["repeat"] == "1")]
    row = row.iloc[0]
    note = str(row["note"])
    assert not bool(row["valid"]) and row["attempted"] == 0 and row["ok"] == 0
    assert "websocket failed" in note and "\n" not in note, note
    log = open(os.path.join(run_dir, "logs", "gunicorn-gthread.log")).read()
    assert "Booting worker" in log and "hanging_wsgi: importing forever" in log
    assert "Traceback" not in r.stderr + r.stdout
    assert elapsed < 60


def test_environment_that_cannot_be_built_is_a_failed_row_and_the_run_goes_on(bench, tmp_path):
    shipped = open(registry.DEFAULT_PATH).read()
    path = tmp_path / "variants.toml"
    path.write_text(shipped + textwrap.dedent("""
        [environments.broken]
        requirements = ["flask", "bench-test-no-such-distribution-xyz"]

        [variants.broken-env]
        description = "test only: an environment uv cannot resolve"
        launcher = "gunicorn"
        worker_class = "gthread"
        patch = "none"
        environment = "broken"
    """))
    out = tmp_path / "out"
    r = bench.run("run", "--variants-file", path, "--variants", "broken-env,socketio-run-gevent",
                  "--scenario", "echo", "--quick", "--duration", "0.3", "--warmup", "0",
                  "--out", out, "--no-report", timeout=180,
                  env=bench.env(BENCH_ENVS_DIR=tmp_path / "envs"))
    assert r.returncode == 0, r.stderr[-2000:]
    [run_dir] = bench.run_dirs(out)
    summary = bench.summary(run_dir)
    broken = summary[(summary["variant"] == "broken-env") & (summary["repeat"] == "1")].iloc[0]
    note = str(broken["note"])
    assert note.startswith("unavailable: building it failed:") and "\n" not in note, note
    assert "bench-test-no-such-distribution-xyz" in note, note
    assert not bool(broken["valid"]) and broken["attempted"] == 0
    fine = summary[(summary["variant"] == "socketio-run-gevent") & (summary["repeat"] == "1")]
    assert fine.iloc[0]["ok"] > 0
    meta = bench.meta(run_dir)
    assert "no-such-distribution" in meta["environments"]["broken"]["error"]
    assert not (tmp_path / "locks" / "broken.txt").exists()   # no lock from a failed compile
    assert "Traceback" not in r.stderr


def test_unknown_worker_class_is_one_line_and_exit_2(bench, tmp_path):
    shipped = open(registry.DEFAULT_PATH).read()
    assert 'worker_class = "gthread"' in shipped
    path = tmp_path / "variants.toml"
    path.write_text(shipped.replace('worker_class = "gthread"', 'worker_class = "gthreed"'))
    out = tmp_path / "out"
    for args in (["list"], ["run", "--variants", "gunicorn-gthread", "--quick", "--out", out]):
        r = bench.run(*args, "--variants-file", path, timeout=60)
        assert r.returncode == 2, r.stderr
        lines = r.stderr.strip().splitlines()
        assert len(lines) == 1 and "unknown worker class 'gthreed'" in lines[0], r.stderr
        assert "Traceback" not in r.stderr
    assert not out.exists()


def test_list_says_ready_buildable_or_unavailable_with_the_fix(bench, tmp_path):
    """Without redis-server on PATH the scale-out variants say so, with the apt fix."""
    r = bench.run("list", timeout=60, env=bench.env(PATH=os.path.dirname(bench.python)))
    assert r.returncode == 0 and r.stderr == ""
    lines = {line.split()[0]: line for line in r.stdout.splitlines()
             if line.startswith("  ") and line.split()}
    assert "unavailable: redis-server not found: apt install redis-server" in \
        lines["scaleout-redis"]
    for name in SINGLE:
        assert re.search(r"\s(ready|buildable \(|unavailable: )", lines[name]), lines[name]
    assert lines["socketio-run-gevent"].split()[1] == "ready"


# --------------------------------------------------------------------------- registry

def test_production_group_names_all_eight():
    reg = registry.load()
    assert reg.groups["production"] == SINGLE + ["scaleout-redis", "scaleout-redis-nginx"]
    assert reg.variants["scaleout-redis-nginx"].topology == \
        {"servers": 2, "queue": "redis", "proxy": "nginx"}


def test_every_production_environment_has_a_committed_lock():
    reg = registry.load()
    for name in reg.environments:
        env = reg.environment(name)
        assert os.path.exists(env.lock_path), name
        text = open(env.lock_path).read()
        assert environments.COMPILE_COMMAND in text and "/tmp" not in text
    assert "gunicorn==25." in open(reg.environment("gunicorn-eventlet").lock_path).read()
    assert "gevent-websocket" not in open(reg.environment("gunicorn").lock_path).read()


def test_argv_of_each_server_launcher(tmp_path):
    reg = registry.load()
    g = reg.variants["gunicorn-gthread"].argv(4321)
    assert g[1:3] == ["-m", "gunicorn"] and g[-1] == "servers.wsgi:app"
    assert g[g.index("-k") + 1] == "gthread" and g[g.index("-w") + 1] == "1"
    assert g[g.index("-b") + 1] == "127.0.0.1:4321"
    assert g[g.index("--threads") + 1] == "100"
    assert "--no-control-socket" in g
    spec = json.loads(g[g.index("-e") + 1].split("=", 1)[1])
    assert spec == {"socketio_kwargs": {"async_mode": "threading"}, "app": None}
    assert g[0] == environments.python(reg.environment("gunicorn"))
    w = reg.variants["uwsgi-gevent"].argv(4321)
    assert w[0].endswith("/bin/uwsgi") and w[w.index("--http-socket") + 1] == "127.0.0.1:4321"
    assert w[w.index("--gevent") + 1] == "1000" and "--http-websockets" in w
    assert w[w.index("--processes") + 1] == "1"
    u = reg.variants["uvicorn-asgi"].argv(4321)
    assert u[1:4] == ["-m", "uvicorn", "servers.asgi_app:app"]
    assert u[u.index("--host") + 1] == "127.0.0.1" and u[u.index("--port") + 1] == "4321"
    assert u[u.index("--loop") + 1] == "uvloop" and u[u.index("--http") + 1] == "httptools"


GOOD = """
[environments.default]
requirements = ["flask"]

[environments.g]
requirements = ["flask", "flask-socketio", "gunicorn[gevent]"]

[groups]
default = ["a"]

[variants.a]
description = "a"
launcher = "gunicorn"
worker_class = "gevent"
patch = "none"
environment = "g"
"""

BAD = [
    ("worker_class = \"gevent\"", "worker_class = \"nope\"", "unknown worker class 'nope'"),
    ("worker_class = \"gevent\"\n", "", "missing 'worker_class'"),
    ("patch = \"none\"", "patch = \"gevent\"", "patch must be 'none' under gunicorn"),
    ("launcher = \"gunicorn\"", "launcher = \"socketio.run\"", "worker_class is for launcher"),
    ("environment = \"g\"", "environment = \"g\"\nworkers = 0", "workers must be"),
    ("environment = \"g\"", "environment = \"g\"\nserver_args = \"--x\"", "server_args must be"),
    ("environment = \"g\"", "environment = \"g\"\nneeds = [\"redis\"]", "needs unknown 'redis'"),
    ('requirements = ["flask", "flask-socketio", "gunicorn[gevent]"]', "requirements = []",
     "requirements must not be empty"),
    ('requirements = ["flask", "flask-socketio", "gunicorn[gevent]"]',
     'requirements = ["flask"]\npython = "3.12"', "environment 'g' has unknown key 'python'"),
]


@pytest.mark.parametrize("old,new,needle", BAD, ids=[b[2] for b in BAD])
def test_production_keys_are_validated_strictly(tmp_path, old, new, needle):
    assert old in GOOD
    with pytest.raises(UsageError) as info:
        registry.load(write(tmp_path, GOOD.replace(old, new, 1)))
    assert needle in str(info.value) and "\n" not in str(info.value)


def test_environment_key_follows_the_lock_and_a_missing_need_is_unavailable(tmp_path):
    reg = registry.load(write(tmp_path, GOOD))
    env = reg.environment("g")
    assert env.lock_path == str(tmp_path / "locks" / "g.txt") and not env.harness
    first = environments.key(env)
    (tmp_path / "locks").mkdir()
    (tmp_path / "locks" / "g.txt").write_text("flask==3.1.3\n")
    assert environments.key(env) != first          # a new lock is a new environment
    assert environments.state(env)[0] in ("buildable", "ready")
    environments.NEEDS["test-missing"] = (lambda: False, "thing not found", "apt install thing")
    try:
        needy = environments.Environment("n", ("x",), needs=("test-missing",),
                                         locks_dir=str(tmp_path))
        assert environments.state(needy) == ("unavailable",
                                             "thing not found: apt install thing")
        with pytest.raises(environments.BuildError, match="thing not found"):
            environments.ensure(needy)
    finally:
        del environments.NEEDS["test-missing"]
