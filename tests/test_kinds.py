"""Scenario kinds as plugins: every scenario's kind is a module of bench/kinds with the hooks
its traits need, no other module branches on a kind's name, and the package has no
module-level import circle (a kind module imports the analysis layer only inside a hook)."""
import ast
import glob
import importlib
import os

import pytest

from bench import kinds
from bench.plan.scenarios import SCENARIOS
from tests.conftest import ROOT

BENCH = os.path.join(ROOT, "bench")


def modules():
    """(dotted module name, path) of every module of bench/."""
    for path in sorted(glob.glob(os.path.join(BENCH, "**", "*.py"), recursive=True)):
        name = os.path.relpath(path, ROOT)[:-3].replace(os.sep, ".")
        yield name.removesuffix(".__init__"), path


def test_every_scenario_kind_is_a_module_with_its_hooks():
    for scenario in SCENARIOS.values():
        kind = kinds.get(scenario.kind)
        assert kind.name == scenario.kind
        if kind.held:
            assert callable(kind.measure), kind.name
        else:
            assert callable(kind.loop) and callable(kind.rows) and callable(kind.schedule)
        if "browser" in kind.clients and not kind.user_traffic:  # not the echo loops
            assert callable(kind.page_plan) and callable(kind.page_messages), kind.name
    assert {s.kind for s in SCENARIOS.values()} == set(kinds.NAMES)
    with pytest.raises(ValueError, match="unknown scenario kind 'nope'"):
        kinds.get("nope")


def test_no_module_outside_the_kinds_branches_on_a_kind_name():
    """``x.kind == "fanout"`` or ``x.kind in ("open", ...)`` belongs in a trait of the kind."""
    found = []
    for name, path in modules():
        if name.startswith("bench.kinds"):
            continue
        for node in ast.walk(ast.parse(open(path).read(), path)):
            if not isinstance(node, ast.Compare):
                continue
            sides = [node.left, *node.comparators]
            on_kind = any(isinstance(s, ast.Attribute) and s.attr == "kind" for s in sides)
            literal = any(isinstance(s, ast.Constant) and s.value in kinds.NAMES or
                          isinstance(s, (ast.Tuple, ast.List, ast.Set)) and
                          any(isinstance(e, ast.Constant) and e.value in kinds.NAMES
                              for e in s.elts) for s in sides)
            if on_kind and literal:
                found.append(f"{name}:{node.lineno}")
    assert not found, found


def top_level_imports(name, path):
    """The bench modules ``name`` imports at module level (not inside a function)."""
    out = set()
    for node in ast.parse(open(path).read(), path).body:
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names if a.name.startswith("bench"))
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("bench"):
            for a in node.names:
                full = f"{node.module}.{a.name}"
                where = os.path.join(ROOT, *full.split("."))
                out.add(full if os.path.exists(where + ".py") or
                        os.path.exists(os.path.join(where, "__init__.py")) else node.module)
    return out


def test_no_module_level_import_circle_in_bench():
    graph = {name: top_level_imports(name, path) for name, path in modules()}
    state = {}

    def visit(node, trail):
        if state.get(node) == "done":
            return None
        if state.get(node) == "open":
            return trail[trail.index(node):] + [node]
        state[node] = "open"
        for nxt in sorted(graph.get(node, ())):
            if nxt in graph:
                circle = visit(nxt, trail + [node])
                if circle:
                    return circle
        state[node] = "done"
        return None

    for name in graph:
        circle = visit(name, [])
        assert circle is None, " -> ".join(circle)


def test_kind_modules_stay_light_for_the_driver_processes():
    """A driver process imports its kind: no pandas, scipy or matplotlib at module level."""
    for name in kinds.NAMES:
        path = os.path.join(BENCH, "kinds", f"{name}.py")
        heavy = {i for i in top_level_imports(f"bench.kinds.{name}", path)
                 if i.startswith(("bench.analysis", "bench.output", "bench.execute"))}
        assert not heavy, (name, heavy)
        importlib.import_module(f"bench.kinds.{name}")
