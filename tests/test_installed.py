"""The tool in a user's own workflow: installed from the checkout into a fresh virtualenv (as
``pip install .`` / pipx would), run as ``socketio-bench`` from a project folder holding the
user's app, its requirements and its traffic, gated with ``--fail-if`` and ``--junit`` as the
README's CI recipe does."""
import os
import shutil
import subprocess
import sys
import textwrap
import xml.etree.ElementTree as ET

import pytest

from bench import paths

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LOCK = os.path.join(ROOT, "servers", "locks", "harness.txt")
VARIANT = "socketio-run-threading"

APP = textwrap.dedent('''
    """A user's app: a factory-free Flask-SocketIO app whose echo handler uses a requirement."""
    import markdown
    from flask import Flask
    from flask_socketio import SocketIO

    app = Flask(__name__)
    socketio = SocketIO(app)


    @socketio.on("render")
    def render(data):
        return {"html": markdown.markdown(data["text"])}
''')
TRAFFIC = textwrap.dedent('''
    [[messages]]
    event = "render"
    args = [{ text = "*hi*" }]
    reply = "ack"
''')


def uv():
    import uv as uv_package

    return uv_package.find_uv_bin()


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """A fresh virtualenv holding the harness installed (not editable) from the checkout."""
    venv = tmp_path_factory.mktemp("installed") / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = str(venv / "bin" / "python")
    for extra in (["-r", LOCK], ["--no-deps", ROOT]):
        done = subprocess.run([uv(), "pip", "install", "--quiet", "--python", python, *extra],
                              capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, done.stderr[-2000:]
    return venv


@pytest.fixture
def project(tmp_path):
    folder = tmp_path / "myproject"
    folder.mkdir()
    (folder / "app.py").write_text(APP)
    (folder / "requirements.txt").write_text("markdown\n")
    (folder / "traffic.toml").write_text(TRAFFIC)
    return folder


def run_installed(venv, folder, *args, timeout=600):
    env = dict(os.environ, BENCH_CACHE_DIR=str(folder.parent / "cache"),
               BENCH_ENVS_DIR=paths.envs_dir(), PATH=f"{venv / 'bin'}:{os.environ['PATH']}")
    env.pop("PYTHONPATH", None)
    return subprocess.run([str(venv / "bin" / "socketio-bench"), *map(str, args)], cwd=folder,
                          env=env, capture_output=True, text=True, timeout=timeout)


def test_the_installed_package_puts_no_top_level_servers_on_sys_path(installed, tmp_path):
    probe = ("import importlib.util, bench; "
             "print(importlib.util.find_spec('servers') is None, bench.paths.CHECKOUT)")
    done = subprocess.run([str(installed / "bin" / "python"), "-c", probe], cwd=tmp_path,
                          capture_output=True, text=True, timeout=60,
                          env=dict(os.environ, BENCH_CACHE_DIR=str(tmp_path / "cache")))
    assert done.stdout.split() == ["True", "None"], done.stderr
    version = run_installed(installed, tmp_path, "--version")
    assert version.returncode == 0 and version.stdout.startswith("socketio-bench ")


def test_init_writes_a_loadable_scenario_file_in_the_project(installed, project):
    from bench.plan import traffic

    done = run_installed(installed, project, "init", "--app", "app.py:app", "--out", "new.toml")
    assert done.returncode == 0, done.stderr[-3000:]
    written = traffic.load(str(project / "new.toml"))
    assert [m["event"] for m in written["messages"]] == ["render"]
    assert written["messages"][0]["reply"] == "ack"   # the handler returns a value


@pytest.mark.slow
def test_a_project_folder_is_measured_and_gated_by_the_installed_command(installed, project):
    junit = project / "gates.xml"
    common = ("run", "--app", "app.py:app", "--scenario-file", "traffic.toml", "--variants",
              VARIANT, "--scenario", "echo", "--quick", "--junit", junit)
    held = run_installed(installed, project, *common, "--fail-if", "p50<=500ms",
                         "--fail-if", "ok>=99%")
    assert held.returncode == 0, held.stderr[-3000:]
    runs = sorted(os.listdir(project / "results"))
    assert [r for r in runs if r != "latest"], "no run folder under ./results"
    cases = ET.parse(junit).getroot().find("testsuite")
    assert (cases.get("tests"), cases.get("failures")) == ("2", "0")

    broken = run_installed(installed, project, *common, "--fail-if", "p50<1us")
    assert broken.returncode == 1, broken.stderr[-3000:]
    assert "fail-if p50<1us:" in broken.stderr
    suite = ET.parse(junit).getroot().find("testsuite")
    assert (suite.get("tests"), suite.get("failures")) == ("1", "1")
    assert len([r for r in os.listdir(project / "results") if r != "latest"]) == 2
    shutil.rmtree(project.parent / "cache", ignore_errors=True)
