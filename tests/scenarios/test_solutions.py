"""The grader on the reference solutions: every automatic check passes with full points.

Training is not repeated here: the checks of ``02`` and ``03`` run on the session fixtures of
``tests/conftest.py`` (each solution executed once per session by the grader's own run stage,
its kernel still alive). ``01`` is cheap, so it also goes through the whole command line (run
stage and sandbox included), with the template next to it.
"""

from __future__ import annotations

import json

import pytest

from grader.assignments import ASSIGNMENTS, CNN, CONVOLUTION, TRANSFER
from grader.cli import EXIT_OK, main
from grader.grade import grade_notebook_run
from grader.paths import KIT_ROOT
from grader.run.execute import NotebookRun

pytestmark = pytest.mark.slow

SOLUTIONS = [assignment.notebook for assignment in ASSIGNMENTS]


@pytest.mark.parametrize("name", SOLUTIONS)
def test_every_reference_solution_is_there(name):
    """A missing reference solution fails here, by name, instead of its tests skipping."""
    assert (KIT_ROOT / "solutions" / name).is_file(), f"solutions/{name} is missing: the kit ships all three"


def grade_conftest_run(run, assignment, tmp_path, hidden_seed=2024):
    """The grader's checks on a notebook the session already ran (its kernel still alive)."""
    notebook_run = NotebookRun(run.result, run.kernel)
    checks = grade_notebook_run(assignment, notebook_run, workdir=run.workdir, hidden_seed=hidden_seed)
    return {check.name: check for check in checks}


def assert_full_points(checks):
    for check in checks.values():
        if check.manual:
            assert check.status == "skipped" and "for the instructor to read" in check.message
        elif check.name == "printed_metrics":
            assert check.status in ("passed", "skipped"), check.message
        else:
            assert check.status == "passed" and check.points == check.max_points, f"{check.name}: {check.message}"


def test_reference_convolutions_pass_the_hidden_cases(convolution_run, tmp_path):
    assert_full_points(grade_conftest_run(convolution_run, CONVOLUTION, tmp_path))


def test_reference_cnn_gets_full_points(cnn_run, tmp_path):
    checks = grade_conftest_run(cnn_run, CNN, tmp_path)
    assert_full_points(checks)
    assert "test accuracy is 0.9" in checks["accuracy"].message


@pytest.fixture
def grader_weights(standin_weights, monkeypatch):
    """The grader's own process compares with the same stand-in the notebook kernel loaded."""
    from grader.evidence.artifacts import grading_weights
    from src.models import WEIGHTS_ENV

    monkeypatch.setenv(WEIGHTS_ENV, str(standin_weights))
    grading_weights.cache_clear()
    yield standin_weights
    grading_weights.cache_clear()


def test_reference_transfer_gets_full_points(transfer_run, grader_weights, tmp_path):
    checks = grade_conftest_run(transfer_run, TRANSFER, tmp_path)
    assert_full_points(checks)
    assert "stand-in (NOT official)" in checks["pretrained"].message


def test_command_line_grades_the_solution_and_the_template(tmp_path, capsys):
    paths = [str(KIT_ROOT / "solutions" / "01_convolution.ipynb"), str(KIT_ROOT / "assignments" / "01_convolution.ipynb")]
    assert main(["grade", *paths, "--out", str(tmp_path), "--hidden-seed", "1"]) == EXIT_OK
    solution = json.loads((tmp_path / "solutions-01_convolution" / "result.json").read_text())
    template = json.loads((tmp_path / "assignments-01_convolution" / "result.json").read_text())
    assert solution["points"] == solution["max_points"] == CONVOLUTION.max_points
    assert template["points"] == 0
    runs = template["notebooks"][0]["checks"][0]["message"]
    assert "still have <YOUR CODE>" in runs and "NotImplementedError" in runs
