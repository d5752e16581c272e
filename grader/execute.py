"""Run stage: execute a student's notebook top to bottom in a fresh kernel, within limits.

What nbclient gives (outputs captured into the notebook, a per-cell timeout) is extended with
what grading needs; the kernel itself (seeds, memory watchdog, sandbox) is `grader.kernel`.

* a file that is not a notebook becomes a result that says why and how to re-save it;
* outputs are cleared first, and the kernel starts in a scratch copy of the submission;
* a whole-notebook time limit on top of the per-cell one: each cell gets
  ``min(cell_timeout, time left)``;
* an error in a cell is recorded and the run goes on, as "Run all" with errors allowed would:
  a later, independent cell still defines what it defines;
* a cell that hangs is interrupted and the run goes on; a kernel that dies (or is killed for
  memory, or does not stop when interrupted) ends the run, and the cells before the fatal one
  are run again in a fresh kernel so that what they defined can still be probed. Only the
  checks that depend on the fatal cell are lost.

The kernel stays alive after the run (`NotebookRun.kernel`) so `grader.probe` can ask it
questions; close the run to shut it down.
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from grader.kernel import Kernel, Limits, start_kernel
from grader.results import CellRun, ExecutionResult, RunFailure
from grader.sandbox import sandbox_info

__all__ = [
    "RESAVE_ADVICE",
    "Limits",
    "NotebookRun",
    "copy_to_scratch",
    "execute_notebook",
    "read_notebook",
]

RESAVE_ADVICE = (
    "Open the notebook in Jupyter (or Colab), run it, save it (File > Save), and download or "
    "commit the saved file again; do not edit .ipynb files in a text editor."
)


# --------------------------------------------------------------------------------------------
# Reading and copying


def read_notebook(path: Path) -> tuple[Any | None, RunFailure | None, list[str]]:
    """Load a notebook with nbformat and explain what is wrong if it cannot be loaded.

    Args:
        path: the ``.ipynb`` file.

    Returns:
        ``(notebook, None, warnings)`` on success, ``(None, failure, [])`` when the file is
        missing, empty, truncated, not JSON or not a notebook. A notebook that fails nbformat's
        schema validation but has cells is still returned, with a warning.
    """
    import nbformat  # here: its import overlaps the kernel's start-up (see grader.kernel)

    path = Path(path)
    if not path.is_file():
        return None, RunFailure("missing", f"{path.name} was not found in the submission ({path})."), []
    raw = path.read_bytes()
    if not raw.strip():
        return None, RunFailure("invalid", f"{path.name} is empty (0 bytes of JSON). {RESAVE_ADVICE}"), []
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as error:
        return (
            None,
            RunFailure(
                "invalid",
                f"{path.name} is not UTF-8 text (bad byte at position {error.start}), so it is not a "
                f"notebook file. {RESAVE_ADVICE}",
            ),
            [],
        )
    try:
        data = json.loads(text)
    except json.JSONDecodeError as error:
        size = len(raw)
        if not text.rstrip().endswith("}"):  # a notebook's JSON always ends with its closing brace
            what = (
                f"{path.name} is not valid JSON: it is truncated, the file stops at byte {size} "
                "in the middle of the notebook (an interrupted save, upload or copy, or a full disk)."
            )
        else:
            what = (
                f"{path.name} is not valid JSON: {error.msg} at line {error.lineno}, column "
                f"{error.colno} (byte {error.pos} of {size}); it was probably edited by hand "
                "or two versions were merged."
            )
        return None, RunFailure("invalid", f"{what} {RESAVE_ADVICE}"), []
    if not isinstance(data, dict) or "cells" not in data or "nbformat" not in data:
        kind = type(data).__name__
        return (
            None,
            RunFailure(
                "invalid",
                f"{path.name} is JSON but not a Jupyter notebook (a notebook is an object with "
                f"'cells' and 'nbformat'; this is a {kind}). {RESAVE_ADVICE}",
            ),
            [],
        )
    warnings: list[str] = []
    try:
        notebook = nbformat.reads(text, as_version=4, capture_validation_error={})
    except Exception as error:  # nbformat raises many kinds for odd files
        return None, RunFailure("invalid", f"{path.name} could not be read as a notebook: {error}. {RESAVE_ADVICE}"), []
    try:
        nbformat.validate(notebook)
    except nbformat.ValidationError as error:
        warnings.append(f"{path.name} does not fully follow the notebook format ({error.message}); graded anyway.")
    return notebook, None, warnings


def _clear_outputs(notebook: Any) -> None:
    for cell in notebook.cells:
        if cell.cell_type == "code":
            cell.outputs = []
            cell.execution_count = None
            cell.metadata.pop("execution", None)


def copy_to_scratch(source: Path, scratch: Path, *, exclude: tuple[str, ...] = ()) -> Path:
    """Copy a submission into a scratch folder the kernel may write to.

    Args:
        source: a submission folder, or a single notebook (then only that file is copied).
        scratch: destination folder (created).
        exclude: glob patterns left out, e.g. the artifacts the notebook must produce itself,
            so a stale file in the submission cannot pass for this run's output.

    Returns:
        ``scratch``.
    """
    source = Path(source)
    ignore = shutil.ignore_patterns(  # version control, caches and the outputs of earlier runs
        ".git", ".ipynb_checkpoints", "__pycache__", ".venv", ".nox", "out", "runs", "checkpoints", *exclude
    )
    if source.is_dir():
        shutil.copytree(source, scratch, ignore=ignore, dirs_exist_ok=True, symlinks=True)
    else:
        scratch.mkdir(parents=True, exist_ok=True)
        if source.is_file():
            shutil.copy2(source, scratch / source.name)
    return scratch


# --------------------------------------------------------------------------------------------
# Running a notebook


@dataclass
class NotebookRun:
    """An `ExecutionResult` plus the live kernel to probe (None when no kernel survived).

    Use as a context manager, or call `close`, to shut the kernel down.
    """

    result: ExecutionResult
    kernel: Kernel | None = None
    workdir: Path | None = None
    seed: int = 0
    limits: Limits = field(default_factory=Limits)

    def revive(self) -> bool:
        """Replace a kernel that died while being probed by a fresh one that has run the same
        cells (those that completed) again. Returns whether a kernel is available."""
        if self.result.notebook is None or self.workdir is None or self.result.sandbox is None:
            return False
        if self.kernel is not None:
            self.kernel.shutdown()
        cells = [cell.index for cell in self.result.cells if cell.status in ("ok", "error")]
        self.kernel, _ = _replay(
            self.result.notebook,
            cells,
            workdir=self.workdir,
            seed=self.seed,
            limits=self.limits,
            sandbox=self.result.sandbox.enabled,
        )
        return self.kernel is not None

    def close(self) -> None:
        if self.kernel is not None:
            self.kernel.shutdown()
            self.kernel = None

    def __enter__(self) -> NotebookRun:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _first_line(source: str) -> str:
    for line in source.splitlines():
        if line.strip():
            line = line.strip()
            return line if len(line) <= 60 else line[:57] + "..."
    return ""


def _error_output(name: str, message: str) -> Any:
    import nbformat

    return nbformat.v4.new_output("error", ename=name, evalue=message, traceback=[f"{name}: {message}"])


def _run_cells(
    kernel: Kernel, notebook: Any, indices: list[int], *, limits: Limits
) -> tuple[list[CellRun], RunFailure | None, bool]:
    """Execute the given code cells in order within the limits.

    Returns:
        ``(cell runs, failure or None, kernel_usable)``. The failure is the one that stopped
        the run, else the first cell timeout.
    """
    runs = [CellRun(i, _first_line(notebook.cells[i].source), "not_run") for i in indices]
    try:
        kernel.wait_ready()
    except Exception as error:
        reason = kernel.death_reason() if not kernel.is_alive() else str(error)
        return runs, RunFailure("kernel_start", f"the kernel did not start: {reason}"), False
    deadline = time.monotonic() + limits.timeout
    failure: RunFailure | None = None
    for run in runs:
        cell = notebook.cells[run.index]
        remaining = deadline - time.monotonic()
        if remaining < 1:
            message = f"the notebook's time limit of {limits.timeout:g} s was reached before {run.describe()}"
            return runs, RunFailure("notebook_timeout", message, run.index), True
        budget = min(limits.cell_timeout, remaining)
        started = time.monotonic()
        status = kernel.execute_cell(notebook, run.index, timeout=budget)
        run.elapsed = time.monotonic() - started
        run.status = "ok"
        if status in ("timeout", "stuck"):
            whole = budget < limits.cell_timeout
            run.status, run.error_name = "timeout", "Timeout"
            run.error_message = (
                f"the notebook's time limit of {limits.timeout:g} s ran out in this cell"
                if whole
                else f"the cell ran longer than its limit of {limits.cell_timeout:g} s"
            )
            if status == "stuck":
                run.error_message += " and did not stop when interrupted"
            cell.outputs.append(_error_output("TimeoutError", run.error_message))
            stop = whole or status == "stuck"
            if stop or failure is None:
                kind = "notebook_timeout" if whole else "cell_timeout"
                failure = RunFailure(kind, f"{run.describe()}: {run.error_message}", run.index)
            if stop:
                return runs, failure, status != "stuck"
            continue  # an interrupted cell is like a cell that raised: go on
        if status == "died":
            memory = kernel.watchdog is not None and kernel.watchdog.exceeded is not None
            run.status = "died"
            run.error_name = "MemoryLimit" if memory else "DeadKernel"
            run.error_message = kernel.death_reason()
            cell.outputs.append(_error_output(run.error_name, run.error_message))
            failure = RunFailure("memory" if memory else "died", f"{run.describe()}: {run.error_message}", run.index)
            return runs, failure, False
        for output in cell.outputs:
            if output.output_type == "error":
                run.status = "error"
                run.error_name = output.get("ename", "")
                run.error_message = output.get("evalue", "")
                break
    return runs, failure, True


def execute_notebook(
    path: Path,
    *,
    workdir: Path,
    limits: Limits = Limits(),
    seed: int = 0,
    sandbox: bool | None = None,
    kernel: Kernel | None = None,
    rerun: bool = True,
) -> NotebookRun:
    """Execute a notebook and keep its kernel for probing.

    Args:
        path: the notebook to run (its outputs are cleared first; the file is not modified).
        workdir: scratch folder the kernel starts in (see `copy_to_scratch`).
        limits: time and memory limits.
        seed: seed for ``random``, ``numpy``, ``torch``.
        sandbox: True / False / None (bubblewrap when it works). Ignored when ``kernel`` is given.
        kernel: an already started kernel for this workdir (see `start_kernel`), or None.
        rerun: when the kernel dies or hangs in cell k, run cells before k again in a fresh
            kernel so their definitions can be probed.

    Returns:
        A `NotebookRun`: the `ExecutionResult` (with the executed notebook) and the live
        kernel, or no kernel when none survived.
    """
    began = time.monotonic()
    notebook, failure, warnings = read_notebook(path)
    result = ExecutionResult(path=Path(path), failure=failure, warnings=warnings)
    if notebook is None:
        if kernel is not None:
            kernel.shutdown()
        result.sandbox = kernel.sandbox if kernel is not None else sandbox_info(sandbox)
        return NotebookRun(result, None)
    _clear_outputs(notebook)
    result.notebook = notebook
    if kernel is None:
        kernel = start_kernel(workdir=workdir, seed=seed, limits=limits, sandbox=sandbox)
    result.sandbox = kernel.sandbox
    indices = [i for i, cell in enumerate(notebook.cells) if cell.cell_type == "code" and cell.source.strip()]

    runs, failure, usable = _run_cells(kernel, notebook, indices, limits=limits)
    result.cells, result.failure = runs, failure
    result.cells_elapsed = sum(run.elapsed for run in runs)
    result.peak_memory = kernel.peak_memory
    if usable:
        result.elapsed = time.monotonic() - began
        return NotebookRun(result, kernel, workdir=workdir, seed=seed, limits=limits)

    kernel.shutdown()
    fatal = failure.cell if failure is not None else None
    before = [i for i in indices if fatal is not None and i < fatal]
    run = NotebookRun(result, None, workdir=workdir, seed=seed, limits=limits)
    if rerun and before:
        # Run what came before the fatal cell again, so what it defined can be probed.
        run.kernel, problem = _replay(
            notebook, before, workdir=workdir, seed=seed, limits=limits, sandbox=kernel.sandbox.enabled
        )
        result.rerun_cells = len(before)
        if problem:
            result.warnings.append(
                f"the cells before {fatal} were run again to grade what they define, "
                f"but that run failed too ({problem})"
            )
    result.elapsed = time.monotonic() - began
    return run


def _replay(
    notebook: Any, indices: list[int], *, workdir: Path, seed: int, limits: Limits, sandbox: bool
) -> tuple[Kernel | None, str]:
    """Run the given cells again in a fresh kernel, on a copy (the executed notebook keeps the
    first run's outputs). Returns the kernel, or None and why."""
    import nbformat

    fresh = start_kernel(workdir=workdir, seed=seed, limits=limits, sandbox=sandbox)
    copy = nbformat.from_dict(json.loads(json.dumps(notebook)))
    _clear_outputs(copy)
    _, failure, usable = _run_cells(fresh, copy, indices, limits=limits)
    if usable:
        return fresh, ""
    fresh.shutdown()
    return None, failure.message if failure else "unknown reason"
