"""Variant registry (bench/registry.py): the shipped file, selection, and strict validation of
malformed files written to tmp paths (each must be one UsageError naming the problem)."""
import json
import os
import textwrap

import pytest

from bench.plan import registry
from bench.errors import UsageError

DEFAULT_GROUP = ["flask-run-threading", "flask-run-eventlet", "flask-run-gevent",
                 "socketio-run-threading", "socketio-run-eventlet", "socketio-run-gevent",
                 "seed-app-run", "seed-socketio-run"]

GOOD = """
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


def write(tmp_path, text, name="variants.toml"):
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return str(path)


# --------------------------------------------------------------------------- the real file

def test_shipped_registry_has_the_default_group_of_the_design():
    reg = registry.load()
    assert reg.groups["default"] == DEFAULT_GROUP
    for name in DEFAULT_GROUP:
        v = reg.variants[name]
        assert v.launcher in registry.LAUNCHERS and v.patch in registry.PATCHES
        assert v.description


def test_seed_variants_are_the_tutorial_snippets_verbatim():
    reg = registry.load()
    slow, fast = reg.variants["seed-app-run"], reg.variants["seed-socketio-run"]
    assert (slow.launcher, slow.patch, slow.socketio_kwargs) == ("app.run", "none", {})
    assert (fast.launcher, fast.patch, fast.socketio_kwargs) == \
        ("socketio.run", "none", {"async_mode": "eventlet"})


def test_argv_starts_the_launcher_on_loopback_with_the_declared_spec():
    v = registry.load().variants["socketio-run-threading"]
    argv = v.argv(54321)
    assert argv[1].endswith(os.path.join("servers", "launch.py")) and os.path.exists(argv[1])
    assert argv[2] == v.patch
    spec = json.loads(argv[3])
    assert spec["host"] == "127.0.0.1" and spec["port"] == 54321
    assert spec["launcher"] == v.launcher
    assert spec["socketio_kwargs"] == v.socketio_kwargs and spec["run_kwargs"] == v.run_kwargs


# --------------------------------------------------------------------------- selection

def test_select_by_names_group_and_default(tmp_path):
    reg = registry.load()
    assert [v.name for v in reg.select()] == DEFAULT_GROUP
    assert [v.name for v in reg.select(group="default")] == DEFAULT_GROUP
    picked = reg.select(["socketio-run-gevent", "seed-app-run", "socketio-run-gevent"])
    assert [v.name for v in picked] == ["socketio-run-gevent", "seed-app-run"]


@pytest.mark.parametrize("names,group,needle", [
    (["nope"], None, "unknown variant 'nope'"),
    (None, "nope", "unknown group 'nope'"),
    (["seed-app-run"], "default", "exclusive"),
])
def test_select_errors(names, group, needle):
    with pytest.raises(UsageError, match=needle):
        registry.load().select(names, group)


def test_variant_in_an_unbuilt_environment_is_unavailable_with_a_reason(tmp_path):
    path = write(tmp_path, GOOD + """
[environments.other]
requirements = ["gunicorn"]

[variants.b]
description = "b"
launcher = "app.run"
patch = "none"
environment = "other"
""")
    reg = registry.load(path)
    assert reg.variants["a"].unavailable_reason() == ""
    assert "other" in reg.variants["b"].unavailable_reason()


def test_a_good_file_loads(tmp_path):
    reg = registry.load(write(tmp_path, GOOD))
    assert list(reg.variants) == ["a"] and reg.groups == {"default": ["a"]}
    assert reg.variants["a"].run_kwargs == {"allow_unsafe_werkzeug": True}


# --------------------------------------------------------------------------- malformed

def replace(old, new):
    assert old in GOOD
    return GOOD.replace(old, new)


MALFORMED = [
    ("not-toml", "[variants.a\nlauncher = ", "malformed variants.toml"),
    ("bad-value", replace('patch = "none"', "patch = none"), "malformed variants.toml"),
    ("unknown-top-level", GOOD + "\n[extras]\nx = 1\n", "unknown top-level key 'extras'"),
    ("variant-not-table", replace("[groups]", "[groups]\n").replace(
        "[variants.a]", "[variants]\nb = 3\n[variants.a]"), "variant 'b' must be a table"),
    ("unknown-variant-key", replace('patch = "none"', 'patch = "none"\npatchh = "x"'),
     "variant 'a' has unknown key 'patchh'"),
    ("missing-description", replace('description = "a variant"\n', ""),
     "variant 'a' is missing 'description'"),
    ("missing-launcher", replace('launcher = "socketio.run"\n', ""),
     "variant 'a' is missing 'launcher'"),
    ("missing-patch", replace('patch = "none"\n', ""), "variant 'a' is missing 'patch'"),
    ("missing-environment", replace('environment = "default"\n', ""),
     "variant 'a' is missing 'environment'"),
    ("unknown-launcher", replace('launcher = "socketio.run"', 'launcher = "uwsgi.run"'),
     "unknown launcher 'uwsgi.run'"),
    ("unknown-patch", replace('patch = "none"', 'patch = "asyncio"'), "unknown patch 'asyncio'"),
    ("unknown-environment", replace('environment = "default"', 'environment = "prod"'),
     "unknown environment 'prod'"),
    ("socketio-kwargs-not-table", replace('socketio_kwargs = { async_mode = "threading" }',
                                          'socketio_kwargs = "threading"'),
     "socketio_kwargs must be a table"),
    ("run-kwargs-not-table", replace("run_kwargs = { allow_unsafe_werkzeug = true }",
                                     "run_kwargs = [1, 2]"), "run_kwargs must be a table"),
    ("no-variants", '[environments.default]\nrequirements = []\n[groups]\ndefault = ["a"]\n',
     "no variants declared"),
    ("group-unknown-variant", replace('default = ["a"]', 'default = ["a", "zz"]'),
     "group 'default' names unknown variant 'zz'"),
    ("group-empty", replace('default = ["a"]', "default = []"), "group 'default' must be"),
    ("group-not-list", replace('default = ["a"]', 'default = "a"'), "group 'default' must be"),
    ("no-default-group", replace('default = ["a"]', 'mine = ["a"]'), "no default group"),
]


@pytest.mark.parametrize("case,text,needle", MALFORMED, ids=[c[0] for c in MALFORMED])
def test_malformed_registry_is_one_clear_usage_error(tmp_path, case, text, needle):
    path = write(tmp_path, text)
    with pytest.raises(UsageError) as info:
        registry.load(path)
    message = str(info.value)
    assert needle in message
    assert "\n" not in message.strip()


# Sections of the wrong type are reported, not crashed on.
WRONG_TYPES = [
    ("variants-not-table", 'variants = 5\n[environments.default]\nrequirements = []\n'
     '[groups]\ndefault = ["a"]\n', "variants"),
    ("groups-not-table", "groups = [1]\n" + GOOD.replace('[groups]\ndefault = ["a"]', ""),
     "groups"),
    ("environments-not-table", 'environments = "default"\n' + GOOD.replace(
        '[environments.default]\nrequirements = ["flask"]', ""), "environments"),
]


@pytest.mark.parametrize("case,text,needle", WRONG_TYPES, ids=[c[0] for c in WRONG_TYPES])
def test_sections_of_the_wrong_type_are_usage_errors(tmp_path, case, text, needle):
    path = write(tmp_path, text)
    with pytest.raises(UsageError, match=needle):
        registry.load(path)


def test_missing_file_is_a_usage_error(tmp_path):
    with pytest.raises(UsageError, match="cannot read"):
        registry.load(str(tmp_path / "absent.toml"))
