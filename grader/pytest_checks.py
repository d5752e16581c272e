"""The grader's checks as pytest tests, for instructors who want pytest's output and ``--junitxml``.

    python -m pytest -p grader.pytest_plugin grader/pytest_checks.py --submission PATH \\
        [--hidden-seed N] [--cell-timeout S] [--notebook-timeout S] [--memory-limit GIB] [--no-sandbox] \\
        --junitxml=grade.xml

One test per check, named ``test_check[<notebook>-<check>]``: passed, failed (the message says
what to fix) or skipped (not applicable, or left for a person to read). Each test records its
``points`` and ``max_points`` as JUnit ``<property>`` elements.

`grader.pytest_plugin` adds the options, grades the submission once (a session fixture) and
makes one test per check of this file's `test_check`.

Why the grader exposes its checks to pytest rather than pytest driving the grader: the checks
of one notebook share one expensive run (a kernel that trained a model) and an order (run, re-run
after a crash, probe, verify, shut down), which the grader already manages with its limits. So
the submission is graded once, by `grader.grade.grade_submission`, in a session fixture, and each
test only reports one check's verdict. The list of tests is known before grading (it is the
assignments' check list), so collection is instant and a crash mid-grading still reports every
check.
"""

from __future__ import annotations

import pytest


def test_check(graded, check_id: str, request: pytest.FixtureRequest) -> None:
    checks, result = graded
    if check_id not in checks:
        pytest.fail(f"not graded: the grader stopped early ({result.grader_error})", pytrace=False)
    check = checks[check_id]
    # As JUnit <property> elements (record_property would warn under the default xunit2 family).
    request.node.user_properties += [("points", check.points), ("max_points", check.max_points)]
    if check.status == "skipped":
        pytest.skip(check.message)
    if check.status != "passed":
        prefix = "could not check: " if check.status == "error" else ""
        pytest.fail(f"{check.title}: {prefix}{check.message}", pytrace=False)
