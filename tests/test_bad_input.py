"""Bad input through the real CLI: exactly one line on stderr naming the problem, exit 2, no
traceback, nothing on stdout, and no run folder written.

Each case is one subprocess (``python -m bench ...`` from the repository root)."""
import os
import textwrap

import pytest

GOOD_TOML = """
[environments.default]
requirements = ["flask"]

[groups]
default = ["a"]

[variants.a]
description = "a variant"
launcher = "socketio.run"
patch = "none"
environment = "default"
socketio_kwargs = { async_mode = "threading" }
run_kwargs = { allow_unsafe_werkzeug = true }
"""

# (id, arguments after `python -m bench`, text the one stderr line must contain)
RUN_CASES = [
    ("rate-zero", ["--rate", "0"], "--rate"),
    ("rate-negative", ["--rate", "-5"], "--rate"),
    ("rate-not-a-number", ["--rate", "fast"], "not a number"),
    ("rate-nan", ["--rate", "nan"], "finite"),
    ("rate-inf", ["--rate", "inf"], "finite"),
    ("rate-too-many-messages", ["--rate", "150000", "--duration", "60"], "messages"),
    ("duration-zero", ["--duration", "0"], "--duration"),
    ("duration-too-long", ["--duration", "5000"], "--duration"),
    ("duration-missing-value", ["--duration"], "--duration"),
    ("warmup-negative", ["--warmup", "-1"], "--warmup"),
    ("repeats-zero", ["--repeats", "0"], "--repeats"),
    ("repeats-fraction", ["--repeats", "1.5"], "whole number"),
    ("connections-zero", ["--connections", "0"], "--connections"),
    ("connections-too-many", ["--connections", "100000"], "--connections"),
    ("payload-too-small", ["--payload", "4"], "--payload"),
    ("seed-negative", ["--seed", "-1"], "--seed"),
    ("unknown-variant", ["--variants", "no-such-variant"], "unknown variant 'no-such-variant'"),
    ("empty-variants", ["--variants", ","], "--variants is empty"),
    ("unknown-group", ["--group", "no-such-group"], "unknown group 'no-such-group'"),
    ("variants-and-group", ["--variants", "seed-app-run", "--group", "default"], "exclusive"),
    ("unknown-scenario", ["--scenario", "no-such-scenario"], "unknown scenario"),
    ("unknown-client", ["--client", "curl"], "curl"),
    ("app-without-attr", ["--app", "myapp"], "--app must look like module:attr"),
    ("target-remote", ["--target", "http://10.1.2.3:5000"], "loopback"),
    ("target-bad-scheme", ["--target", "ftp://127.0.0.1:21"], "--target"),
    ("target-with-variants", ["--target", "http://127.0.0.1:5000", "--variants",
                              "seed-app-run"], "--target"),
    ("unknown-option", ["--frobnicate"], "--frobnicate"),
    ("stray-argument", ["extra"], "extra"),
    ("missing-variants-file", ["--variants-file", "/nonexistent/variants.toml"], "cannot read"),
]

OTHER_CASES = [
    ("no-command", [], "command"),
    ("unknown-command", ["frobnicate"], "frobnicate"),
    ("list-unknown-option", ["list", "--frobnicate"], "--frobnicate"),
    ("list-missing-variants-file", ["list", "--variants-file", "/nonexistent/v.toml"],
     "cannot read"),
    ("calibrate-unknown-option", ["calibrate", "--rate", "5"], "--rate"),
    ("calibrate-stray-argument", ["calibrate", "--json", "now"], "now"),
]


def toml_replace(old, new):
    assert old in GOOD_TOML
    return GOOD_TOML.replace(old, new)


MALFORMED_TOML = [
    ("not-toml", "[variants.a\nlauncher = ", "malformed variants.toml"),
    ("unknown-key", toml_replace('patch = "none"', 'patch = "none"\npatchh = 1'), "'patchh'"),
    ("missing-launcher", toml_replace('launcher = "socketio.run"\n', ""), "'launcher'"),
    ("unknown-launcher", toml_replace('"socketio.run"', '"uwsgi.run"'), "'uwsgi.run'"),
    ("unknown-patch", toml_replace('patch = "none"', 'patch = "trio"'), "'trio'"),
    ("unknown-environment", toml_replace('environment = "default"', 'environment = "x"'),
     "unknown environment 'x'"),
    ("kwargs-not-table", toml_replace("run_kwargs = { allow_unsafe_werkzeug = true }",
                                      "run_kwargs = 3"), "run_kwargs must be a table"),
    ("group-unknown-variant", toml_replace('default = ["a"]', 'default = ["zz"]'), "'zz'"),
    ("no-default-group", toml_replace('default = ["a"]', 'other = ["a"]'), "no default group"),
    ("no-variants", '[environments.default]\nrequirements = []\n[groups]\ndefault = ["a"]\n',
     "no variants"),
]

WRONG_TYPE_TOML = [
    ("variants-not-table", 'variants = 5\n[environments.default]\nrequirements = []\n'
     '[groups]\ndefault = ["a"]\n', "variants"),
    ("groups-not-table", "groups = [1]\n" + GOOD_TOML.replace('[groups]\ndefault = ["a"]', ""),
     "groups"),
]


@pytest.fixture
def out(tmp_path):
    path = tmp_path / "out"
    path.mkdir()
    return path


def assert_one_line_usage_error(r, needle, out=None):
    assert r.returncode == 2, (r.returncode, r.stderr[-2000:])
    assert "Traceback" not in r.stderr
    lines = [line for line in r.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, r.stderr
    assert lines[0].startswith("bench: "), lines[0]
    assert needle in lines[0], (needle, lines[0])
    assert r.stdout.strip() == ""
    if out is not None:
        assert os.listdir(out) == [], "a run folder was written for bad input"


@pytest.mark.parametrize("case,args,needle", RUN_CASES, ids=[c[0] for c in RUN_CASES])
def test_run_bad_option(bench, out, case, args, needle):
    r = bench.run("run", "--out", out, "--no-report", *args, timeout=60)
    assert_one_line_usage_error(r, needle, out)


@pytest.mark.parametrize("case,args,needle", OTHER_CASES, ids=[c[0] for c in OTHER_CASES])
def test_list_calibrate_and_command_bad_input(bench, case, args, needle):
    r = bench.run(*args, timeout=60)
    assert_one_line_usage_error(r, needle)


@pytest.mark.parametrize("command", ["run", "list"])
@pytest.mark.parametrize("case,text,needle", MALFORMED_TOML, ids=[c[0] for c in MALFORMED_TOML])
def test_malformed_variants_file(bench, tmp_path, out, command, case, text, needle):
    path = tmp_path / "variants.toml"
    path.write_text(textwrap.dedent(text))
    extra = ["--out", out, "--no-report", "--quick"] if command == "run" else []
    r = bench.run(command, "--variants-file", path, *extra, timeout=60)
    assert_one_line_usage_error(r, needle, out)
    assert "variants.toml" in r.stderr


@pytest.mark.parametrize("case,text,needle", WRONG_TYPE_TOML, ids=[c[0] for c in WRONG_TYPE_TOML])
def test_variants_file_sections_of_the_wrong_type(bench, tmp_path, out, case, text, needle):
    path = tmp_path / "variants.toml"
    path.write_text(text)
    r = bench.run("run", "--variants-file", path, "--out", out, "--no-report", timeout=60)
    assert_one_line_usage_error(r, needle, out)


def test_out_that_is_a_file_is_a_usage_error(bench, tmp_path):
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("x")
    r = bench.run("run", "--out", blocker / "sub", "--no-report", "--quick", timeout=60)
    assert_one_line_usage_error(r, "output folder")
    assert blocker.read_text() == "x"


def test_a_good_variants_file_is_accepted_by_list(bench, tmp_path):
    """The counterpart of the malformed cases: the same file, well formed, lists fine."""
    path = tmp_path / "variants.toml"
    path.write_text(GOOD_TOML)
    r = bench.run("list", "--variants-file", path, timeout=60)
    assert r.returncode == 0, r.stderr
    assert "a variant" in r.stdout and r.stderr == ""
