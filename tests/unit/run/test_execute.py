"""The run stage on real notebooks and a real kernel: errors, time limits, memory, dying kernels,
unreadable files. Each kernel-backed test runs one small notebook that exercises several things."""

from __future__ import annotations

import json

import nbformat
import pytest
from grader_notebooks import write_notebook

from grader.options import Limits
from grader.run.execute import MAX_NOTEBOOK_CELLS, MAX_NOTEBOOK_DEPTH, copy_notebook, execute_notebook, read_notebook


def run(tmp_path, *cells, limits=Limits(cell_timeout=20, timeout=60, memory_gib=4), **kwargs):
    path = write_notebook(tmp_path / "submission" / "nb.ipynb", *cells)
    workdir = tmp_path / "scratch" / "work"
    return execute_notebook(copy_notebook(path, workdir), workdir=workdir, limits=limits, **kwargs)


# ------------------------------------------------------------------------------- unreadable files


def test_truncated_notebook_says_where_it_stops_and_how_to_resave(tmp_path):
    good = write_notebook(tmp_path / "good.ipynb", "x = 1", "print(x)")
    raw = good.read_bytes()
    bad = tmp_path / "bad.ipynb"
    bad.write_bytes(raw[: len(raw) // 2])
    notebook, failure, _ = read_notebook(bad)
    assert notebook is None
    assert failure.kind == "invalid"
    assert "not valid JSON" in failure.message and "truncated" in failure.message
    assert f"byte {len(raw) // 2}" in failure.message
    assert "File > Save" in failure.message


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (b"", "empty"),
        (b'{"cells": [], "nbformat": 4,, }', "line 1"),
        (b"[1, 2, 3]", "not a Jupyter notebook"),
        (b"\xff\xfe\x00garbage", "not UTF-8"),
    ],
)
def test_unreadable_files_become_failures_with_a_reason(tmp_path, content, expected):
    path = tmp_path / "nb.ipynb"
    path.write_bytes(content)
    notebook, failure, _ = read_notebook(path)
    assert notebook is None and failure.kind == "invalid"
    assert expected in failure.message


@pytest.mark.parametrize("depth", [100_000, 900, MAX_NOTEBOOK_DEPTH + 1])
def test_json_nested_too_deep_is_the_students_invalid_file_not_a_grader_error(tmp_path, depth):
    """100,000 levels stop the JSON parser (RecursionError); 900 pass it and would stop the
    schema validation; just over the bound is refused by the grader's own walk."""
    path = tmp_path / "nb.ipynb"
    nested = "[" * depth + "]" * depth
    path.write_text('{"cells": [], "nbformat": 4, "nbformat_minor": 5, "metadata": {"x": ' + nested + "}}")
    notebook, failure, _ = read_notebook(path)
    assert notebook is None and failure.kind == "invalid"
    assert f"more than {MAX_NOTEBOOK_DEPTH} levels deep" in failure.message and "File > Save" in failure.message


def test_a_notebook_just_within_the_depth_bound_is_read(tmp_path):
    path = tmp_path / "nb.ipynb"
    nested = "[" * (MAX_NOTEBOOK_DEPTH - 3) + "]" * (MAX_NOTEBOOK_DEPTH - 3)
    path.write_text('{"cells": [], "nbformat": 4, "nbformat_minor": 5, "metadata": {"x": ' + nested + "}}")
    notebook, failure, _ = read_notebook(path)
    assert failure is None and notebook is not None


def test_too_many_cells_is_an_invalid_notebook(tmp_path):
    path = tmp_path / "nb.ipynb"
    cell = {"cell_type": "markdown", "metadata": {}, "source": "x"}
    path.write_text(json.dumps({"cells": [cell] * (MAX_NOTEBOOK_CELLS + 1), "nbformat": 4, "nbformat_minor": 5, "metadata": {}}))
    notebook, failure, _ = read_notebook(path)
    assert notebook is None and failure.kind == "invalid" and f"{MAX_NOTEBOOK_CELLS + 1:,} cells" in failure.message


def test_missing_notebook_is_a_result_not_an_exception(tmp_path):
    with execute_notebook(tmp_path / "absent.ipynb", workdir=tmp_path / "w") as result_run:
        assert result_run.kernel is None
        assert result_run.result.failure.kind == "missing"
        assert not result_run.result.readable


# ------------------------------------------------------------------------------- running


def test_errors_are_recorded_and_the_run_goes_on_with_seeds_set_and_outputs_cleared(tmp_path):
    path = write_notebook(
        tmp_path / "submission" / "nb.ipynb",
        "import random, sys\nx = random.random()\nprint('warning!', file=sys.stderr)",
        "1 / 0",
        "y = x + 1\nprint('still running')",
    )
    notebook = nbformat.read(path, as_version=4)
    notebook.cells[0].outputs = [nbformat.v4.new_output("stream", name="stdout", text="stale output\n")]
    nbformat.write(notebook, path)
    with execute_notebook(copy_notebook(path, tmp_path / "s" / "w"), workdir=tmp_path / "s" / "w", seed=0) as result_run:
        result = result_run.result
        assert [c.status for c in result.cells] == ["ok", "error", "ok"]  # stderr alone is no failure
        assert result.cells[1].error_name == "ZeroDivisionError"
        assert result.failure is None
        outputs = result.notebook.cells[0].outputs
        assert not any("stale output" in o.get("text", "") for o in outputs)
        assert "still running" in result.notebook.cells[2].outputs[0]["text"]
        import random

        random.seed(0)
        expected = random.random()
        assert result_run.kernel.run_code("print(repr(x))", timeout=10).stdout.strip() == repr(expected)


def test_the_first_cell_sees_exactly_the_streams_of_the_seed_in_random_numpy_and_torch(tmp_path):
    """Seeds are set last, just before the first cell: whatever the kernel ran before it (the
    grader's set-up, a package that draws at import, numpy imported early) changes nothing."""
    first = (
        "import random, numpy, torch\n"
        "print(repr(random.random()), repr(float(numpy.random.rand())), repr(float(torch.rand(1))))"
    )
    with run(tmp_path, first, seed=7) as result_run:
        import random

        import numpy
        import torch

        random.seed(7)
        numpy.random.seed(7)
        torch.manual_seed(7)
        expected = f"{random.random()!r} {float(numpy.random.rand())!r} {float(torch.rand(1))!r}"
        assert result_run.result.notebook.cells[0].outputs[0]["text"].strip() == expected


def test_torch_is_seeded_and_deterministic_when_the_notebook_imports_it(tmp_path):
    with run(
        tmp_path, "import torch\nprint(torch.rand(3).tolist(), torch.are_deterministic_algorithms_enabled())", seed=3
    ) as result_run:
        import torch

        expected = f"{torch.rand(3, generator=torch.Generator().manual_seed(3)).tolist()} True"
        assert result_run.result.notebook.cells[0].outputs[0]["text"].strip() == expected


def test_output_is_cut_per_cell_and_for_the_whole_notebook(tmp_path):
    """A notebook that floods its output gets a bounded executed notebook: a third of the limit per
    cell, the limit for all cells together; later cells still run."""
    limits = Limits(cell_timeout=30, timeout=90, memory_gib=4, output_mib=3)
    flood = "for _ in range(300):\n    print('x' * 10_000)"  # 3 MB a cell
    with run(tmp_path, flood, flood, flood, flood, "print('after')", limits=limits) as result_run:
        cells = [cell.outputs for cell in result_run.result.notebook.cells]
        sizes = [sum(len(o.get("text", "")) for o in outputs) for outputs in cells]
        assert all(size <= 2**20 + 300 for size in sizes[:4])  # a third of 3 MiB each, and the note
        assert sum(sizes) <= 3 * 2**20 + 1000
        assert "output limit reached" in cells[0][-1]["text"] and "output limit reached" in cells[3][-1]["text"]
        assert sizes[3] < 1000  # the notebook's budget was spent by then
        assert result_run.result.cells[4].status == "ok"


BURN = "import time\nstart = time.process_time()\nwhile time.process_time() - start < {seconds}:\n    pass"


def test_a_cell_over_its_cpu_budget_is_interrupted_and_later_cells_still_run(tmp_path):
    with run(
        tmp_path, "x = 1", "while True:\n    pass", "y = x + 1", limits=Limits(cell_timeout=3, timeout=60)
    ) as result_run:
        result = result_run.result
        assert [c.status for c in result.cells] == ["ok", "timeout", "ok"]
        assert result.failure.kind == "cell_timeout" and result.failure.cell == 1
        assert "limit of 3 CPU-s" in result.failure.message and "while True" in result.failure.message
        assert 3 <= result.cells[1].cpu_seconds < 10
        assert result_run.kernel.run_code("print(y)", timeout=10).stdout.strip() == "2"


def test_a_cell_that_waits_is_stopped_by_the_wall_clock_backstop(tmp_path):
    """A sleeping cell uses no CPU: the wall clock, several times the CPU budget, stops it."""
    with run(tmp_path, "import time\ntime.sleep(300)", "y = 2", limits=Limits(cell_timeout=2, timeout=60)) as result_run:
        result = result_run.result
        assert [c.status for c in result.cells] == ["timeout", "ok"]
        assert "waited longer than 4 s" in result.cells[0].error_message
        assert 4 <= result.cells[0].elapsed < 60


def test_whole_notebook_cpu_budget_stops_the_run_but_keeps_the_kernel(tmp_path):
    with run(
        tmp_path,
        "x = 1",
        BURN.format(seconds=2),
        BURN.format(seconds=2),
        BURN.format(seconds=30),
        "z = 3",
        limits=Limits(cell_timeout=20, timeout=9),
    ) as result_run:
        result = result_run.result
        assert [c.status for c in result.cells] == ["ok", "ok", "ok", "timeout", "not_run"]
        assert result.failure.kind == "notebook_timeout" and result.failure.cell == 3
        assert "limit of 9 CPU-s" in result.failure.message
        assert result_run.kernel.run_code("print(x)", timeout=10).stdout.strip() == "1"


@pytest.mark.slow
def test_kernel_that_kills_itself_fails_its_cell_and_earlier_cells_are_rerun(tmp_path):
    with run(tmp_path, "a = 41", "b = a + 1", "import os\nos.kill(os.getpid(), 9)", "c = 3") as result_run:
        result = result_run.result
        assert [c.status for c in result.cells] == ["ok", "ok", "died", "not_run"]
        assert result.failure.kind == "died" and result.failure.cell == 2
        assert "SIGKILL" in result.failure.message and "cell 2 (`import os`)" in result.failure.message
        assert result.rerun_cells == 2
        # The fresh kernel has what the cells before the fatal one defined.
        assert result_run.kernel.run_code("print(b)", timeout=10).stdout.strip() == "42"
        assert result_run.kernel.run_code("print(c)", timeout=10).status == "error"


@pytest.mark.slow
def test_a_kernel_whose_messages_cannot_be_read_fails_its_cell_not_the_grader(tmp_path):
    """The notebook's code can garble what its kernel sends (json.dumps replaced, here the
    session's packer): the cell counts as one that killed its kernel, and the cells before it are
    run again in a fresh kernel."""
    garble = "get_ipython().kernel.session.pack = lambda message: b'{}'\nprint('garbled')"
    with run(tmp_path, "a = 41", garble, "c = 3") as result_run:
        result = result_run.result
        assert [c.status for c in result.cells] == ["ok", "died", "not_run"]
        assert result.failure.kind == "died" and "could not read" in result.failure.message
        assert result_run.kernel.run_code("print(a + 1)", timeout=10).stdout.strip() == "42"


@pytest.mark.slow
def test_os_exit_names_the_exit_code(tmp_path):
    with run(tmp_path, "import os\nos._exit(3)", rerun=False) as result_run:
        assert result_run.kernel is None
        assert "exited with code 3" in result_run.result.failure.message


@pytest.mark.slow
def test_memory_hog_is_stopped_at_the_limit_and_only_its_notebook_fails(tmp_path):
    hog = "import numpy as np\nblocks = []\nfor _ in range(24):\n    blocks.append(np.ones(2**27))  # 1 GiB each"
    with run(tmp_path, "x = 1", hog, limits=Limits(cell_timeout=120, timeout=240, memory_gib=1.5)) as result_run:
        result = result_run.result
        assert result.failure.kind == "memory"
        assert "memory limit of 1.5 GiB exceeded" in result.failure.message
        assert result.cells[1].status == "died" and result.cells[1].error_name == "MemoryLimit"
        assert 1.5 * 2**30 <= result.peak_memory < 6 * 2**30  # stopped well before the 24 GiB asked for
        assert result_run.kernel.run_code("print(x)", timeout=10).stdout.strip() == "1"


def test_executed_notebook_is_valid_and_the_submission_is_untouched(tmp_path):
    path = write_notebook(tmp_path / "submission" / "nb.ipynb", "print('hello')", "1/0")
    before = path.read_bytes()
    with execute_notebook(copy_notebook(path, tmp_path / "s" / "w"), workdir=tmp_path / "s" / "w") as result_run:
        nbformat.validate(result_run.result.notebook)
        assert "hello" in json.dumps(result_run.result.notebook)
    assert path.read_bytes() == before


def test_progress_bars_in_the_kernel_refresh_every_few_seconds(tmp_path):
    """Each refresh is a message the grader records: the engine's bars follow $TQDM_MININTERVAL."""
    result = run(tmp_path, "from src.engine import _tqdm_options\nprint(_tqdm_options()['mininterval'])")
    with result as executed:
        assert executed.result.notebook.cells[0].outputs[0]["text"].strip() == "5.0"


def test_the_result_says_which_mechanism_enforced_the_limits_and_old_result_files_still_read(tmp_path):
    from grader.confine.limits import probe_enforcement
    from grader.results import NotebookResult, SubmissionResult, from_dict, to_dict

    with run(tmp_path, "x = 1") as result_run:
        execution = result_run.result
    assert execution.enforcement == probe_enforcement().describe()
    submission = SubmissionResult("s", tmp_path, [NotebookResult("nb", tmp_path / "nb.ipynb", [], execution)])
    data = to_dict(submission)
    assert data["notebooks"][0]["execution"]["enforcement"] == execution.enforcement
    assert from_dict(data).notebooks[0].execution.enforcement == execution.enforcement
    data["notebooks"][0]["execution"]["limits"] = data["notebooks"][0]["execution"].pop("enforcement")  # before the rename
    assert from_dict(data).notebooks[0].execution.enforcement == execution.enforcement
