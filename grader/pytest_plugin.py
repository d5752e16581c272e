"""pytest plugin behind `grader.pytest_checks`: the ``--submission`` option and friends, one
test per check, and the session fixture that grades the submission once.

Load it with ``-p grader.pytest_plugin``; see `grader.pytest_checks` for the command.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from grader.grade import find_notebooks, grade_submission
from grader.options import GradeOptions, Limits, OptionError, confinement, hidden_seed


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("grader", "grading a submission (grader.pytest_plugin)")
    group.addoption("--submission", type=Path, default=None, help="submission folder or notebook to grade")
    group.addoption(
        "--hidden-seed",
        type=int,
        default=None,
        help="seed of the hidden convolution cases (default: as `python -m grader grade`)",
    )
    group.addoption("--visible-only", action="store_true", help="no hidden cases (a student's self-check)")
    group.addoption("--cell-timeout", type=float, default=Limits.cell_timeout)
    group.addoption("--notebook-timeout", type=float, default=Limits.timeout)  # pytest-timeout owns --timeout
    group.addoption("--memory-limit", type=float, default=Limits.memory_gib)
    group.addoption(
        "--no-sandbox",
        action="store_true",
        help="run the submission's code unconfined, with your rights (the report says so)",
    )


def _submission(config: pytest.Config) -> Path:
    path = config.getoption("submission", default=None)
    if path is None:
        raise pytest.UsageError("give the submission to grade: -p grader.pytest_plugin --submission PATH")
    return path


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "check_id" not in metafunc.fixturenames:
        return
    _, pairs = find_notebooks(_submission(metafunc.config))
    ids = [f"{notebook.stem}-{check.name}" for assignment, notebook in pairs for check in assignment.checks]
    metafunc.parametrize("check_id", ids)


@pytest.fixture(scope="session")
def graded(pytestconfig: pytest.Config):
    """The submission, graded once for all the tests."""
    from grader.confine.sandbox import SANDBOX_FIX, probe_bwrap

    grading = "self-check" if pytestconfig.getoption("visible_only") else "submission"
    hidden, source = hidden_seed(grading, pytestconfig.getoption("hidden_seed"))
    limits = Limits(
        cell_timeout=pytestconfig.getoption("cell_timeout"),
        timeout=pytestconfig.getoption("notebook_timeout"),
        memory_gib=pytestconfig.getoption("memory_limit"),
    )
    requested = False if pytestconfig.getoption("no_sandbox") else None
    try:
        sandbox = confinement(requested, optional=False, probe=probe_bwrap, fix=SANDBOX_FIX).sandbox
    except OptionError as error:
        raise pytest.UsageError(str(error)) from None
    options = GradeOptions(limits=limits, hidden_seed=hidden, hidden_seed_source=source, sandbox=sandbox)
    result = grade_submission(_submission(pytestconfig), options=options)
    return {f"{Path(n.name).stem}-{c.name}": c for n in result.notebooks for c in n.checks}, result
