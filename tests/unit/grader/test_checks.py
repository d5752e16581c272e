"""Checks and helpers that need no kernel: convolution cases and messages, printed-metric
parsing, the written answer's verdict, where a missing name should have come from."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import nbformat
import pytest
import torch
from grader_notebooks import notebook

from grader import checks
from grader.assignments import ASSIGNMENTS, find_assignment
from grader.evidence import convolution as conv
from grader.evidence.artifacts import printed_metrics
from grader.evidence.convolution import BATCHED, FULL, SIMPLEST
from grader.results import CellRun, ExecutionResult, RunFailure


def context(nb, cells=(), failure=None, kernel=None):
    result = ExecutionResult(path=None, cells=list(cells), failure=failure, notebook=nb)
    return checks.Context(run=SimpleNamespace(result=result, kernel=kernel), workdir=None)


# ------------------------------------------------------------------------------- convolution cases


@pytest.mark.parametrize("spec", [SIMPLEST, BATCHED, FULL], ids=lambda s: s.name)
def test_cases_are_deterministic_valid_and_cover_each_option(spec):
    first = conv.make_cases(spec, seed=7, count=16)
    again = conv.make_cases(spec, seed=7, count=16)
    other = conv.make_cases(spec, seed=8, count=16)
    assert all(torch.equal(a.x, b.x) for a, b in zip(first, again))
    assert not all(a.x.shape == b.x.shape and torch.equal(a.x, b.x) for a, b in zip(first, other))
    for case in first:
        assert conv.compare(case, conv.reference(case)) is None
    covered = {name for case in first for name, on in case.features.items() if on}
    assert {"a non-square kernel", "a non-square input", "a 1x1 kernel"} <= covered
    if spec is FULL:
        assert {"stride 2", "stride 3", "padding 1", "padding 2", "several input channels", "batch > 1"} <= covered


def test_compare_reports_shape_error_and_exceptions():
    case = conv.make_cases(FULL, seed=1, count=1)[0]
    expected = conv.reference(case)
    assert "expected" in conv.compare(case, expected[..., :-1])
    assert "largest absolute error 0.5" in conv.compare(case, expected + 0.5)
    assert conv.compare(case, "raised ValueError: bad") == "raised ValueError: bad"
    assert "NaN" in conv.compare(case, expected * float("nan"))


def test_messages_about_hidden_cases_hold_nothing_the_students_code_produced():
    """A function could encode its hidden inputs in a returned shape or in its error: the report
    gets the case's own shapes and the kind of failure only."""
    case = conv.make_cases(FULL, seed=1, count=1, hidden=True)[0]
    expected = conv.reference(case)
    leaked = torch.zeros(1234, 5678, dtype=torch.float64)
    shape = conv.compare(case, leaked)
    assert "1234" not in shape and "5678" not in shape and str(tuple(expected.shape)) in shape
    values = conv.compare(case, expected + 0.123456)
    assert "0.123" not in values and "differ" in values
    answer = {"status": "raised", "error_type": "ValueError", "message": "x[0,0]=0.4417"}
    assert conv._outcome(case, answer, Path("."), 0) == "raised an exception"
    assert conv._outcome(case, {"status": "bad_output", "message": "LEAK 0.4417"}, Path("."), 0) == (
        "returned something that is not an array of numbers"
    )
    visible = conv.make_cases(FULL, seed=1, count=1)[0]
    assert conv._outcome(visible, answer, Path("."), 0) == "raised ValueError: x[0,0]=0.4417"
    assert "bias" not in case.describe() and "0." not in case.describe()


def test_diagnose_names_the_feature_that_separates_failures():
    cases = conv.make_cases(FULL, seed=3, count=20)
    failed = [case.stride == 2 for case in cases]
    assert conv.diagnose(cases, failed) == "It fails exactly on the cases with stride 2."
    assert conv.diagnose(cases, [False] * len(cases)) == ""


# ------------------------------------------------------------------------------- notebook outputs


def test_printed_metrics_are_parsed_from_outputs():
    nb = notebook("print(...)", "r")
    nb.cells[0].outputs = [
        nbformat.v4.new_output("stream", name="stdout", text="epoch 1 val_acc 0.5\nTest accuracy: 91.2%\n")
    ]
    nb.cells[1].outputs = [nbformat.v4.new_output("execute_result", data={"text/plain": "{'acc': 0.9, 'f1': 0.88}"})]
    assert printed_metrics(nb) == pytest.approx({"acc": 0.9, "f1": 0.88})


def test_written_answer_is_left_for_reading_or_failed_when_missing_or_too_short():
    """The decision only: what the answer's text is comes from `grader.evidence.answers`."""
    question = nbformat.v4.new_markdown_cell("## Сравнение моделей")
    long = "The transfer model is worse here: the features were learned on colour photos, not on clothes."
    written = notebook("x = 1", question, nbformat.v4.new_markdown_cell(long))
    outcome = checks.written_answer(context(written), template=None)
    assert outcome.status == "skipped" and outcome.manual and outcome.fraction == 0.0
    assert outcome.message == f"for the instructor to read (16 words after cell 1): {long}" and outcome.answer == long

    too_short = notebook("x = 1", question, nbformat.v4.new_markdown_cell("It is worse."))
    short = checks.written_answer(context(too_short), template=None)
    assert short.status == "failed" and not short.manual and "(after cell 1) is empty or too short" in short.message

    missing = checks.written_answer(context(notebook("x = 1", nbformat.v4.new_markdown_cell(long))), template=None)
    assert missing.status == "failed" and "was not found; keep its heading" in missing.message

    excerpt = checks.written_answer(
        context(notebook(question, nbformat.v4.new_markdown_cell("word " * 200))), template=None
    ).message
    assert excerpt.endswith("...") and len(excerpt.split(": ", 1)[1]) == 300


def test_missing_name_is_explained_by_the_cell_that_should_define_it():
    nb = notebook(
        "x = 1", "def f():\n    # <YOUR CODE>\n    raise NotImplementedError", "import os; os._exit(1)", "g = f"
    )
    cells = [
        CellRun(0, "x = 1", "ok"),
        CellRun(1, "def f():", "error", error_name="SyntaxError", error_message="bad"),
        CellRun(2, "import os; os._exit(1)", "died", error_message="exited with code 1"),
        CellRun(3, "g = f", "not_run"),
    ]
    ctx = context(nb, cells, failure=RunFailure("died", "cell 2: the kernel exited with code 1", 2))
    assert "raised SyntaxError: bad" in ctx.explain_missing("f") and "<YOUR CODE>" in ctx.explain_missing("f")
    assert "never ran" in ctx.explain_missing("g") and "exited with code 1" in ctx.explain_missing("g")
    assert "No cell defines `h`" in ctx.explain_missing("h")


def test_every_assignment_has_points_and_unique_check_names():
    for assignment in ASSIGNMENTS:
        names = [check.name for check in assignment.checks]
        assert len(names) == len(set(names)) and assignment.max_points > 0
        assert find_assignment(assignment.notebook) is assignment
    assert find_assignment("02_my_own_name.ipynb").notebook == "02_cnn_fashion_mnist.ipynb"
    assert find_assignment("notes.ipynb") is None


def test_finding_the_defining_cell_takes_linear_time_on_a_line_of_commas():
    """A line of 5,000 comma-separated names took the old pattern exponential time (18 took 40 s)."""
    import time

    nb = notebook("a" + ",  a" * 5000 + " x", "x, model = 1, 2", "self.a, b[0], model: int = 3", "model == 3")
    started = time.perf_counter()
    assert context(nb).defining_cell("model") == 2
    assert time.perf_counter() - started < 2
