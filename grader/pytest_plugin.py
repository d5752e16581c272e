"""pytest plugin behind `grader.pytest_checks`: the ``--submission`` option and friends, one
test per check, and the session fixture that grades the submission once.

Load it with ``-p grader.pytest_plugin``; see `grader.pytest_checks` for the command.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from grader.confine.limits import Limits
from grader.grade import GradeOptions, find_notebooks, grade_submission


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
    from grader.evidence.convolution import resolve_hidden_seed

    hidden = None
    if not pytestconfig.getoption("visible_only"):
        import secrets

        hidden = resolve_hidden_seed(pytestconfig.getoption("hidden_seed"))[0]
        hidden = secrets.randbelow(2**62) if hidden is None else hidden
    limits = Limits(
        cell_timeout=pytestconfig.getoption("cell_timeout"),
        timeout=pytestconfig.getoption("notebook_timeout"),
        memory_gib=pytestconfig.getoption("memory_limit"),
    )
    sandbox = False if pytestconfig.getoption("no_sandbox") else True
    if sandbox:
        from grader.confine.sandbox import SANDBOX_FIX, probe_bwrap

        problem = probe_bwrap()
        if problem:
            raise pytest.UsageError(f"grading student work needs confinement, and {problem}. {SANDBOX_FIX}")
    options = GradeOptions(limits=limits, hidden_seed=hidden, sandbox=sandbox)
    result = grade_submission(_submission(pytestconfig), options=options)
    return {f"{Path(n.name).stem}-{c.name}": c for n in result.notebooks for c in n.checks}, result
