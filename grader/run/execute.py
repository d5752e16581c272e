"""Run stage: execute a student's notebook top to bottom in a fresh kernel, within limits.

What nbclient gives (outputs captured into the notebook, a per-cell timeout) is extended with
what grading needs; the kernel itself (confinement, limits, seeds) is `grader.run.kernel`.

* a submission's files are data: only the assignment notebooks are copied into the scratch
  folder, and a symbolic link is never followed (it is reported as such);
* a file that is not a notebook becomes a result that says why and how to re-save it;
* outputs are cleared first;
* a whole-notebook CPU budget on top of the per-cell one: each cell gets
  ``min(cell_timeout, CPU seconds left)``, counted in CPU time so that a busy machine makes a
  run slower, never different (`grader.run.kernel.KernelSession.run_cells`);
* an error in a cell is recorded and the run goes on, as "Run all" with errors allowed would:
  a later, independent cell still defines what it defines;
* a cell that hangs is interrupted and the run goes on; a kernel that dies (or is killed for
  memory, or does not stop when interrupted) ends the run, and the cells before the fatal one
  are run again in a fresh kernel so that what they defined can still be probed. Only the
  checks that depend on the fatal cell are lost.

The kernel stays alive after the run (`NotebookRun.kernel`) so the checks can probe it; close
the run to shut it down.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from grader.confine.sandbox import sandbox_info
from grader.options import Limits
from grader.results import ExecutionResult, RunFailure
from grader.run.kernel import KernelSession, clear_outputs

__all__ = ["MAX_NOTEBOOK_BYTES", "RESAVE_ADVICE", "Limits", "NotebookRun", "copy_notebook", "execute_notebook", "read_notebook"]

RESAVE_ADVICE = (
    "Open the notebook in Jupyter (or Colab), run it, save it (File > Save), and download or "
    "commit the saved file again; do not edit .ipynb files in a text editor."
)
MAX_NOTEBOOK_BYTES = 64 * 2**20
MAX_NOTEBOOK_DEPTH = 64  # nested lists and objects; a saved notebook has about 10 (widget state: 20)
MAX_NOTEBOOK_CELLS = 5000


# --------------------------------------------------------------------------------------------
# Reading and copying


def _not_a_plain_file(path: Path) -> RunFailure | None:
    """Why ``path`` cannot be graded as a submitted file: missing, a link, not a regular file, huge."""
    if path.is_symlink():
        return RunFailure(
            "invalid",
            f"{path.name} is a symbolic link, not a notebook: the grader does not follow links out of a "
            "submission. Commit the notebook file itself.",
        )
    if not path.exists():
        return RunFailure("missing", f"{path.name} was not found in the submission ({path}).")
    if not path.is_file():
        return RunFailure("invalid", f"{path.name} is not a regular file. {RESAVE_ADVICE}")
    size = path.stat().st_size
    if size > MAX_NOTEBOOK_BYTES:
        return RunFailure(
            "invalid",
            f"{path.name} is {size / 2**20:.0f} MB, more than the {MAX_NOTEBOOK_BYTES // 2**20} MB a notebook may "
            "have: clear its outputs (Edit > Clear All Outputs) and save it again.",
        )
    return None


def read_notebook(path: Path) -> tuple[Any | None, RunFailure | None, list[str]]:
    """Load a notebook with nbformat and explain what is wrong if it cannot be loaded.

    Args:
        path: the ``.ipynb`` file.

    Returns:
        ``(notebook, None, warnings)`` on success, ``(None, failure, [])`` when the file is
        missing, a link, empty, truncated, not JSON or not a notebook. A notebook that fails
        nbformat's schema validation but has cells is still returned, with a warning.
    """
    import nbformat  # here: its import overlaps the kernel's start-up (see grader.run.kernel)

    path = Path(path)
    problem = _not_a_plain_file(path)
    if problem is not None:
        return None, problem, []
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
    except RecursionError:  # the parser's own limit, about 1,000 levels
        return None, _too_deep(path.name), []
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
    if _depth(data) > MAX_NOTEBOOK_DEPTH:
        return None, _too_deep(path.name), []
    cells = data.get("cells")
    if isinstance(cells, list) and len(cells) > MAX_NOTEBOOK_CELLS:
        return None, RunFailure(
            "invalid",
            f"{path.name} has {len(cells):,} cells, more than the {MAX_NOTEBOOK_CELLS:,} a notebook may have. {RESAVE_ADVICE}",
        ), []
    warnings: list[str] = []
    try:
        notebook = nbformat.reads(text, as_version=4, capture_validation_error={})
    except Exception as error:  # nbformat raises many kinds for odd files (RecursionError included)
        return None, RunFailure("invalid", f"{path.name} could not be read as a notebook: {error}. {RESAVE_ADVICE}"), []
    try:
        nbformat.validate(notebook)
    except nbformat.ValidationError as error:
        warnings.append(f"{path.name} does not fully follow the notebook format ({error.message}); graded anyway.")
    except RecursionError:
        return None, _too_deep(path.name), []
    return notebook, None, warnings


def _depth(data: Any) -> int:
    """How deeply lists and objects nest in parsed JSON, walked without recursion."""
    deepest, stack = 0, [(data, 1)]
    while stack:
        value, depth = stack.pop()
        if isinstance(value, dict):
            value = list(value.values())
        elif not isinstance(value, list):
            continue
        deepest = max(deepest, depth)
        if deepest > MAX_NOTEBOOK_DEPTH:
            return deepest
        stack.extend((item, depth + 1) for item in value)
    return deepest


def _too_deep(name: str) -> RunFailure:
    return RunFailure(
        "invalid",
        f"{name} nests its JSON more than {MAX_NOTEBOOK_DEPTH} levels deep; a notebook saved by Jupyter nests "
        f"about 10, so this file was not written by Jupyter. {RESAVE_ADVICE}",
    )


def copy_notebook(source: Path, scratch: Path) -> Path:
    """Copy one submitted notebook into the scratch folder, as data: a link is not followed (the
    copy is then absent, and `read_notebook` on the original says why).

    Returns:
        The path of the copy (it may not exist: the notebook is missing or is not a plain file).
    """
    source, target = Path(source), Path(scratch) / Path(source).name
    scratch.mkdir(parents=True, exist_ok=True)
    if _not_a_plain_file(source) is None:
        fd = os.open(source, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
        with os.fdopen(fd, "rb") as reader, open(target, "wb") as writer:
            shutil.copyfileobj(reader, writer)
    return target


# --------------------------------------------------------------------------------------------
# Running a notebook


@dataclass
class NotebookRun:
    """An `ExecutionResult` plus the live kernel to probe (None when no kernel survived).

    Use as a context manager, or call `close`, to shut the kernel down.
    """

    result: ExecutionResult
    kernel: KernelSession | None = None

    def revive(self) -> bool:
        """Replace a kernel that died while being probed by a fresh one that has run the same
        cells again. Returns whether a kernel is available."""
        if self.kernel is None:
            return False
        if self.kernel.revive():
            return True
        self.kernel.close()
        self.kernel = None
        return False

    def close(self) -> None:
        if self.kernel is not None:
            self.kernel.close()
            self.kernel = None

    def __enter__(self) -> NotebookRun:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def execute_notebook(
    path: Path,
    *,
    workdir: Path,
    limits: Limits = Limits(),
    seed: int = 0,
    sandbox: bool | None = None,
    kernel: KernelSession | None = None,
    rerun: bool = True,
) -> NotebookRun:
    """Execute a notebook and keep its kernel for probing.

    Args:
        path: the notebook to run (its outputs are cleared first; the file is not modified).
        workdir: scratch folder the kernel starts in.
        limits: time, memory, processes, disk and output limits.
        seed: seed for ``random``, ``numpy``, ``torch``.
        sandbox: True / False / None (bubblewrap when it works). Ignored when ``kernel`` is given.
        kernel: a session already started for this workdir (the grader starts the next
            notebook's kernel ahead of time), or None.
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
        result.sandbox = kernel.sandbox if kernel is not None else sandbox_info(sandbox)
        if kernel is not None:
            kernel.close()
        return NotebookRun(result, None)
    clear_outputs(notebook)
    result.notebook = notebook
    if kernel is None:
        info = sandbox_info(sandbox)
        if sandbox is True and not info.enabled:
            raise RuntimeError(f"sandbox required but unavailable: {info.detail}")
        kernel = KernelSession(workdir=workdir, seed=seed, limits=limits, sandbox=info)
        kernel.start()
    result.sandbox = kernel.sandbox
    result.enforcement = kernel.box.enforcement.describe() if kernel.box is not None else ""
    indices = [i for i, cell in enumerate(notebook.cells) if cell.cell_type == "code" and cell.source.strip()]

    runs, failure, usable = kernel.run_cells(notebook, indices)
    result.cells, result.failure = runs, failure
    result.cells_elapsed = sum(run.elapsed for run in runs)
    result.cells_cpu = sum(run.cpu_seconds for run in runs)
    result.cpu_limit = limits.timeout
    result.peak_memory = kernel.peak_memory
    run = NotebookRun(result, kernel)
    if not usable:
        fatal = failure.cell if failure is not None else None
        before = [i for i in indices if fatal is not None and i < fatal]
        if rerun and before:
            # Run what came before the fatal cell again, so what it defined can be probed.
            result.rerun_cells = len(before)
            if not run.revive():
                result.warnings.append(
                    f"the cells before {fatal} were run again to grade what they define, "
                    "but that run failed too"
                )
        else:
            run.close()
        result.peak_memory = max(result.peak_memory, run.kernel.peak_memory if run.kernel else 0)
    result.elapsed = time.monotonic() - began
    return run
