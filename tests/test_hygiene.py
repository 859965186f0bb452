"""Hygiene: the contract's names are there, every process goes through the one owner of
processes, nothing listens beyond loopback, results stay out of git, entry points fail
fast with a message instead of hanging, and the code cites only what is in the repository."""
import ast
import glob
import os
import re
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SOURCES = sorted(glob.glob(os.path.join(ROOT, "bench", "**", "*.py"), recursive=True) +
                 glob.glob(os.path.join(ROOT, "servers", "*.py")))
RUN_OPTIONS = ["--variants", "--group", "--scenario", "--connections", "--rate", "--duration",
               "--warmup", "--repeats", "--payload", "--target", "--app", "--client", "--out",
               "--label", "--seed", "--no-pin", "--allow-remote", "--quick",
               "--scenario-file", "--async-handlers", "--ping-interval", "--ping-timeout",
               "--max-http-buffer-size", "--ws-compression", "--app-requirements",
               "--app-env"]
COMMANDS = ["list", "run", "report", "compare", "calibrate", "init"]


def calls(path):
    """(dotted name, ast.Call) of every call in a source file."""
    tree = ast.parse(open(path).read(), path)
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            f = node.func
            parts = []
            while isinstance(f, ast.Attribute):
                parts.append(f.attr)
                f = f.value
            if isinstance(f, ast.Name):
                parts.append(f.id)
            yield ".".join(reversed(parts)), node


def rel(path):
    return os.path.relpath(path, ROOT)


TEXT_SUFFIXES = (".py", ".j2", ".toml", ".ini", ".txt", ".md", ".js", ".json", ".cfg")
VENDORED = ("node_modules", "__pycache__")
# Written so that they do not match their own source text:
ISSUE_NUMBER = re.compile(r"(?<![\w&/])#[0-9]{1,2}\b|\b[Ii]ssues? #?[0-9]+\b")
OUTSIDE_FILE = re.compile(r"(?<!docs/)\bDESIGN[.]md|[.][.]/shared\b|/" + "work/")


def repository_text_files():
    """Every text file the project keeps under bench/, servers/ and tests/ (vendored
    dependencies and caches left out)."""
    for top in ("bench", "servers", "tests"):
        for folder, dirs, files in os.walk(os.path.join(ROOT, top)):
            dirs[:] = [d for d in dirs if d not in VENDORED]
            for name in files:
                if name.endswith(TEXT_SUFFIXES):
                    yield os.path.join(folder, name)


def test_no_issue_numbers_and_no_files_outside_the_repository_are_cited():
    """An issue number means nothing to a maintainer and a file outside the repository is
    not there for them: the contract the code cites is docs/DESIGN.md."""
    offenders = []
    for path in repository_text_files():
        for lineno, line in enumerate(open(path, errors="replace"), 1):
            for pattern in (ISSUE_NUMBER, OUTSIDE_FILE):
                match = pattern.search(line)
                if match:
                    offenders.append(f"{rel(path)}:{lineno}: {match.group(0)!r}")
    assert os.path.isfile(os.path.join(ROOT, "docs/DESIGN.md"))
    assert offenders == [], "\n".join(offenders)


def test_the_citation_checks_catch_what_they_look_for():
    for text in ("knobs (#" "13)", "Issue " "15 against", "issue " "11 A", "issues " "3"):
        assert ISSUE_NUMBER.search(text), text
    for text in ("colour '#999'", "#332288", "PKCS#8", "a page/#1", "item 12"):
        assert not ISSUE_NUMBER.search(text), text
    for text in ("the contract in DESIGN" ".md", "see ../" "shared/x", "/" + "work/shared"):
        assert OUTSIDE_FILE.search(text), text
    assert not OUTSIDE_FILE.search("the contract in docs/DESIGN.md")


def test_sources_were_found():
    assert any(p.endswith(os.path.join("bench", "processes.py")) for p in SOURCES)
    assert any(p.endswith(os.path.join("servers", "launch.py")) for p in SOURCES)


def test_only_lifecycle_starts_long_lived_processes():
    """Every Popen is in bench/processes.py, in its own session (so groups can be killed)."""
    found = []
    for path in SOURCES:
        for name, node in calls(path):
            if name.endswith("Popen") or name in ("os.fork", "os.spawnv", "os.system",
                                                   "os.popen", "multiprocessing.Process"):
                found.append((rel(path), node.lineno, name,
                              any(k.arg == "start_new_session" for k in node.keywords)))
    offenders = [f for f in found
                 if f[0] != os.path.join("bench", "processes.py") or not f[3]]
    assert found and not offenders, offenders


def test_only_the_deployment_layer_starts_servers():
    """A variant's server command is built in bench/execute/deployment.py alone, so every
    scenario's server gets the knobs, --server-nodelay and the topology (the emitter only
    reads which interpreter the variant's environment has)."""
    allowed = {os.path.join("bench", "execute", "deployment.py"),
               os.path.join("bench", "execute", "emitting.py")}
    found = [(rel(path), node.lineno) for path in SOURCES for name, node in calls(path)
             if name.endswith(".argv")]
    assert found and not [f for f in found if f[0] not in allowed], found


def test_every_short_subprocess_has_a_timeout():
    offenders = []
    for path in SOURCES:
        for name, node in calls(path):
            if name in ("subprocess.run", "subprocess.check_output", "subprocess.check_call",
                        "subprocess.call"):
                if not any(k.arg == "timeout" for k in node.keywords):
                    offenders.append((rel(path), node.lineno, name))
    assert offenders == []


def test_nothing_binds_beyond_loopback():
    offenders = []
    for path in SOURCES:
        text = open(path).read()
        for needle in ('"0.0.0.0"', "'0.0.0.0'", '"::"', "INADDR_ANY"):
            if needle in text:
                offenders.append((rel(path), needle))
    assert offenders == []


def test_results_are_ignored_by_git_except_the_reference_run():
    def ignored(path):
        return subprocess.run(["git", "check-ignore", "-q", path], cwd=ROOT,
                              timeout=10).returncode == 0
    assert ignored("results/20990101T000000Z-run/summary.csv")
    assert ignored("results/latest")
    assert not ignored("results/reference/summary.csv")
    tracked = subprocess.run(["git", "ls-files", "results"], cwd=ROOT, capture_output=True,
                             text=True, timeout=10).stdout.split()
    assert all(p.startswith("results/reference/") for p in tracked), tracked


def test_cli_help_names_every_command_and_run_option(bench):
    top = bench.run("--help", timeout=60)
    assert top.returncode == 0
    for command in COMMANDS:
        assert command in top.stdout, command
    run = bench.run("run", "--help", timeout=60)
    assert run.returncode == 0
    for option in RUN_OPTIONS:
        assert option in run.stdout, option


def test_list_shows_variants_groups_and_scenarios(bench):
    from bench.plan import registry
    from bench.plan.scenarios import SCENARIOS
    r = bench.run("list", timeout=60)
    assert r.returncode == 0 and r.stderr == ""
    reg = registry.load()
    for name in reg.variants:
        assert name in r.stdout
    for group in reg.groups:
        assert group in r.stdout
    for scenario in SCENARIOS:
        assert scenario in r.stdout


@pytest.mark.parametrize("module", sorted(
    os.path.relpath(p, ROOT)[:-3].replace(os.sep, ".").removesuffix(".__init__")
    for p in SOURCES if os.sep + "bench" + os.sep in p and not p.endswith("__main__.py")))
def test_every_bench_module_imports_without_side_effects(module):
    """Importing must not start processes, bind ports or print (a fresh interpreter)."""
    code = ("import importlib, psutil, sys; importlib.import_module('%s'); "
            "me = psutil.Process(); "
            "assert not me.children(), me.children(); "
            "assert not [c for c in me.net_connections() if c.status == 'LISTEN']" % module)
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout == ""


def test_launcher_refuses_an_unknown_patch_at_once():
    r = subprocess.run([sys.executable, os.path.join(ROOT, "servers", "launch.py"), "trio",
                        "{}"], cwd=ROOT, capture_output=True, text=True, timeout=30)
    assert r.returncode != 0 and "unknown patch 'trio'" in r.stderr


def test_driver_without_a_parent_gives_up_instead_of_hanging(tmp_path):
    """A driver worker whose parent closes stdin before t0 exits (bounded), not waits."""
    from bench import processes
    from bench.plan.job import Job
    with processes.serving(lambda port: [sys.executable, "-m", "bench.driver.refserver", str(port)],
                           str(tmp_path / "ref.log"), ready_timeout=30) as server:
        Job(targets=((processes.HOST, server.port),), connections=1, conns=(0,), rate=100.0,
            warmup=0.1, duration=0.2, deadline=2.0, payload=16,
            out=str(tmp_path / "d.npz")).dump(str(tmp_path / "job.json"))
        proc = subprocess.Popen([sys.executable, "-m", "bench.driver.lean",
                                 str(tmp_path / "job.json")], cwd=ROOT,
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, start_new_session=True)
        try:
            assert proc.stdout.readline().strip() == b"ready"
            proc.stdin.close()
            proc.wait(timeout=20)
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, 9)
                proc.wait(timeout=10)
            proc.stdout.close()
            proc.stderr.close()
        assert proc.returncode != 0
        assert not os.path.exists(tmp_path / "d.npz")


def test_makefile_has_the_contract_targets():
    text = open(os.path.join(ROOT, "Makefile")).read()
    for target in ("bench:", "test:", "smoke:", "soak:", "calibrate:"):
        assert f"\n{target}" in text, target
    assert "-m bench.soak" in text


def test_soak_rejects_bad_input_in_one_line():
    r = subprocess.run([sys.executable, "-m", "bench.soak", "--minutes", "0"], cwd=ROOT,
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert r.stderr.strip().splitlines() == ["bench.soak: error: --minutes must be in (0, 120], "
                                             "got 0"]


@pytest.mark.slow
def test_soak_runs_briefly_and_reports_flat_driver_resources():
    """`make soak` is not in CI; a 9-second soak keeps its code path alive."""
    import json

    r = subprocess.run([sys.executable, "-m", "bench.soak", "--minutes", "0.15", "--rate", "300",
                        "--connections", "5", "--json"], cwd=ROOT, capture_output=True,
                       text=True, timeout=120)
    assert r.returncode in (0, 1), r.stderr[-2000:]
    out = json.loads(r.stdout)
    assert out["attempted"] == int(300 * 0.15 * 60) and out["ok"] > 0
    assert out["samples"] >= 2 and all(n > 0 for n in out["driver_fds"])
    assert out["driver_fds"][0] == out["driver_fds"][1]
    assert out["flat"] is True and r.returncode == 0, out
