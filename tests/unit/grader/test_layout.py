"""The grader's layout: every module belongs to a stage (`grader/__init__.py`), imports only its
own stage or lower ones (function-level imports included), and the import graph has no cycle."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from grader.paths import GRADER_DIR

# Lowest first; a module is matched by its longest prefix here.
STAGES = {
    "grader.paths": 0,
    "grader.results": 0,
    "grader.options": 0,
    "grader.markers": 0,
    "grader.confine": 1,
    "grader.run": 2,
    "grader.evidence": 3,
    "grader.checks": 4,
    "grader.assignments": 4,
    "grader.grade": 4,
    "grader.report": 5,
    "grader.classroom": 6,
    "grader.release": 7,
    "grader.cli": 8,
    "grader.pytest_plugin": 8,
    "grader.pytest_checks": 8,
    "grader.__main__": 8,
    "grader": 0,  # the package's own docstring
}


def _name(path: Path) -> str:
    parts = path.relative_to(GRADER_DIR.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _stage(module: str) -> int:
    prefixes = [p for p in STAGES if module == p or module.startswith(p + ".")]
    if not prefixes:
        raise KeyError(module)
    return STAGES[max(prefixes, key=len)]


def _imports(path: Path) -> set[str]:
    """Every ``grader.*`` module this file imports, anywhere in it (a name imported from a
    package counts as its module when there is one)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names if alias.name.split(".")[0] == "grader"}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and (node.module or "").split(".")[0] == "grader":
            for alias in node.names:
                child = f"{node.module}.{alias.name}"
                found.add(child if child in MODULES else node.module)
    return found


FILES = sorted(GRADER_DIR.rglob("*.py"))
MODULES = {_name(path): path for path in FILES}
GRAPH = {name: _imports(path) - {name} for name, path in MODULES.items()}


def test_every_module_has_a_stage():
    assert "grader.run.kernel" in MODULES and "grader.cli" in MODULES  # the walk found the package
    unplaced = [module for module in sorted(MODULES) if not any(module == p or module.startswith(p + ".") for p in STAGES)]
    assert not unplaced, f"add these to STAGES (and to grader/__init__.py's list): {unplaced}"


def test_no_module_imports_a_higher_stage():
    upward = [
        f"{module} (stage {_stage(module)}) imports {target} (stage {_stage(target)})"
        for module in sorted(GRAPH)
        for target in sorted(GRAPH[module])
        if _stage(target) > _stage(module)
    ]
    assert not upward, "\n".join(upward)


def test_the_import_graph_has_no_cycle():
    done: set[str] = set()
    path: list[str] = []

    def visit(module: str) -> None:
        if module in path:
            raise AssertionError("import cycle: " + " -> ".join(path[path.index(module):] + [module]))
        if module in done:
            return
        path.append(module)
        for target in sorted(GRAPH.get(module, ())):
            visit(target)
        path.pop()
        done.add(module)

    for module in sorted(GRAPH):
        visit(module)


def test_the_checker_sees_an_upward_import_and_a_cycle():
    """The rules above can fail: a made-up graph with both faults is caught."""
    assert _stage("grader.confine.sandbox") < _stage("grader.classroom.batch")
    bad = {"grader.report.marking": {"grader.classroom.batch"}, "grader.classroom.batch": {"grader.report.marking"}}
    saved = dict(GRAPH)
    GRAPH.update(bad)
    try:
        with pytest.raises(AssertionError, match="import cycle"):
            test_the_import_graph_has_no_cycle()
        with pytest.raises(AssertionError, match="grader.report.marking .stage 5. imports grader.classroom.batch"):
            test_no_module_imports_a_higher_stage()
    finally:
        GRAPH.clear()
        GRAPH.update(saved)
