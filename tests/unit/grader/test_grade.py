"""Whole-pipeline grading of small broken submissions: each ends as the right failed check with
an actionable message, and the other checks and notebooks are still graded."""

from __future__ import annotations

from pathlib import Path

import pytest
from grader_notebooks import (
    BATCHED_OK,
    BATCHED_ONE_CHANNEL,
    FAST,
    FULL_OK,
    FULL_STRIDE_2_BUG,
    SIMPLEST_OK,
    write_notebook,
)

from grader.grade import grade_submission
from grader.options import GradeOptions

HIDDEN = GradeOptions(limits=FAST, hidden_seed=12345)


def checks_of(result, notebook):
    [graded] = [n for n in result.notebooks if n.name == notebook]
    return {check.name: check for check in graded.checks}


@pytest.fixture(scope="module")
def conv_bugs(tmp_path_factory):
    """One submission: a right numpy convolution, a batched one that assumes one input channel,
    an unfold one wrong only for stride 2, and a broken second notebook."""
    folder = tmp_path_factory.mktemp("conv_bugs")
    write_notebook(folder / "01_convolution.ipynb", SIMPLEST_OK, BATCHED_ONE_CHANNEL, FULL_STRIDE_2_BUG)
    (folder / "02_cnn_fashion_mnist.ipynb").write_text('{"cells": [{"cell_type": "code", "source": "x')
    return grade_submission(folder, options=HIDDEN)


def test_right_convolution_passes_on_visible_and_hidden_cases(conv_bugs):
    check = checks_of(conv_bugs, "01_convolution.ipynb")["conv_simplest"]
    assert check.status == "passed" and check.points == check.max_points == 3
    assert "visible and hidden" in check.message


def test_convolution_wrong_for_several_input_channels_names_the_case(conv_bugs):
    check = checks_of(conv_bugs, "01_convolution.ipynb")["conv_batched"]
    assert check.status == "failed" and check.points == 0
    assert "custom_conv_2d" in check.message and "kernel (" in check.message
    assert "largest absolute error" in check.message
    assert "fails exactly on the cases with several input channels" in check.message


def test_convolution_wrong_only_for_stride_2_names_the_case(conv_bugs):
    check = checks_of(conv_bugs, "01_convolution.ipynb")["conv_full"]
    assert check.status == "failed"
    assert "stride 2, padding" in check.message and "expected (" in check.message
    assert "fails exactly on the cases with stride 2" in check.message


def test_broken_notebook_does_not_stop_the_others(conv_bugs):
    runs = checks_of(conv_bugs, "02_cnn_fashion_mnist.ipynb")["runs"]
    assert runs.status == "failed" and "truncated" in runs.message
    assert all(n.status == "failed" for n in checks_of(conv_bugs, "03_transfer_resnet18.ipynb").values())
    assert "was not found" in checks_of(conv_bugs, "03_transfer_resnet18.ipynb")["runs"].message
    assert conv_bugs.grader_error is None
    assert conv_bugs.points == 3


def test_visible_cases_only_in_self_check(tmp_path):
    path = write_notebook(tmp_path / "01_convolution.ipynb", SIMPLEST_OK)
    result = grade_submission(path, options=GradeOptions(limits=FAST, hidden_seed=None))
    check = checks_of(result, "01_convolution.ipynb")["conv_simplest"]
    assert check.status == "passed" and "visible cases" in check.message and "hidden" not in check.message
    assert not result.hidden_cases


@pytest.mark.slow
def test_kernel_death_loses_only_what_depends_on_the_fatal_cell(tmp_path):
    path = write_notebook(
        tmp_path / "01_convolution.ipynb",
        SIMPLEST_OK,
        BATCHED_OK,
        "import os\nos._exit(1)",
        FULL_OK,
    )
    result = grade_submission(path, options=HIDDEN)
    checks = checks_of(result, "01_convolution.ipynb")
    assert checks["conv_simplest"].status == "passed"
    assert checks["conv_batched"].status == "passed"  # defined before the fatal cell: re-run, graded
    assert checks["conv_full"].status == "failed"
    assert "never ran" in checks["conv_full"].message and "os._exit" in checks["conv_full"].message
    assert "run again in a fresh kernel" in checks["runs"].message


@pytest.mark.slow
def test_function_that_kills_or_hangs_its_process_fails_only_its_own_check(tmp_path):
    """The functions run in the grader's worker, not in the kernel: a function that exhausts the
    worker's memory or never returns loses its own points; the next one gets a fresh worker."""
    path = write_notebook(
        tmp_path / "01_convolution.ipynb",
        SIMPLEST_OK.replace("kh, kw = kernel.shape", "blocks = [np.ones(2**26) for _ in range(100)]\n    kh, kw = kernel.shape"),
        "def custom_conv_2d(x, kernel, bias):\n    while True:\n        pass",
        FULL_OK,
    )
    result = grade_submission(path, options=GradeOptions(limits=FAST))
    checks = checks_of(result, "01_convolution.ipynb")
    simplest = checks["conv_simplest"]
    assert simplest.status == "failed" and "stopped its process" in simplest.message and "memory" in simplest.message
    assert checks["conv_batched"].status == "failed" and "did not return" in checks["conv_batched"].message
    assert checks["conv_full"].status == "passed"  # a fresh worker ran it
    assert checks["runs"].status == "passed"  # the notebook itself never called them


def test_untouched_template_points_at_the_placeholder(tmp_path):
    template = (
        "def custom_conv_2d_simplest_case(x, kernel, bias):\n"
        "    # <YOUR CODE>\n"
        "    raise NotImplementedError('write custom_conv_2d_simplest_case')"
    )
    path = write_notebook(tmp_path / "01_convolution.ipynb", template, "custom_conv_2d_simplest_case(1, 2, 3)")
    result = grade_submission(path, options=GradeOptions(limits=FAST))
    checks = checks_of(result, "01_convolution.ipynb")
    assert "NotImplementedError" in checks["runs"].message and "<YOUR CODE>" in checks["runs"].message
    simplest = checks["conv_simplest"]
    assert simplest.status == "failed" and "NotImplementedError" in simplest.message
    assert "custom_conv_2d" in checks["conv_batched"].message and "No cell defines" in checks["conv_batched"].message


TINY_CNN = (
    "import torch\nfrom torch import nn\nfrom src.export import save_model\n"
    "model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 26 * 26, 10))\n"
    "save_model(model, 'cnn_fashion_mnist.pt2')"
)


@pytest.mark.slow
def test_parameter_count_is_compared_with_the_saved_model(tmp_path):
    from grader.assignments import CNN
    from grader.grade import grade_notebook_run
    from grader.run.execute import execute_notebook

    workdir = tmp_path / "scratch" / "work"
    workdir.mkdir(parents=True)
    path = write_notebook(workdir / "02_cnn_fashion_mnist.ipynb", TINY_CNN, "n_params = 27_000")
    with execute_notebook(path, workdir=workdir, limits=FAST) as run:

        def graded():
            return {c.name: c for c in grade_notebook_run(CNN, run, workdir=workdir, hidden_seed=None, limits=FAST)}

        typed = graded()
        assert typed["n_params"].status == "failed"
        assert "`n_params` is 27,000 but cnn_fashion_mnist.pt2 has 27,090 parameters" in typed["n_params"].message
        assert "compute it from the model rather than typing a number" in typed["n_params"].message
        # An untrained model below the bar: the metric checks fail and say so, they do not crash.
        assert typed["accuracy"].status == "failed" and "below 0.7" in typed["accuracy"].message

        run.kernel.run_code(
            "model[3].requires_grad_(False)\nn_params = sum(p.numel() for p in model.parameters() if p.requires_grad)",
            timeout=30,
        )
        trainable_only = graded()["n_params"]
        assert trainable_only.status == "failed" and "(that is the trainable count of `model`)" in trainable_only.message

        run.kernel.run_code("n_params = sum(p.numel() for p in model.parameters())", timeout=30)
        right = graded()["n_params"]
        assert right.status == "passed" and right.points == 1 and "`n_params` = 27,090" in right.message


def test_generic_notebook_gets_only_the_run_check(tmp_path):
    path = write_notebook(tmp_path / "anything.ipynb", "x = 1")
    result = grade_submission(path, options=GradeOptions(limits=FAST))
    [notebook] = result.notebooks
    assert [c.name for c in notebook.checks] == ["runs"] and notebook.checks[0].status == "passed"
    assert result.name == "anything" and isinstance(result.path, Path)
