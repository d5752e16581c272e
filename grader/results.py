"""What grading produces, as plain dataclasses: one per level (check, cell, notebook, submission).

Every stage of the grader returns these and never raises for a broken submission: a notebook
that is not JSON, a kernel that dies or a function that returns garbage all end as a
`CheckResult` with a message the student can act on. `grader.report.formats` turns them into JSON,
Markdown, JUnit XML and a CSV row; `to_dict` is the JSON form.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

__all__ = [
    "CellRun",
    "CheckResult",
    "ExecutionResult",
    "NotebookResult",
    "RunFailure",
    "SandboxInfo",
    "Status",
    "SubmissionResult",
    "from_dict",
    "to_dict",
]

Status = Literal["passed", "failed", "error", "skipped"]
"""passed / failed (the work is wrong) / error (the check could not run: missing name, dead
kernel) / skipped (not applicable, or left for a person to read)."""

CellStatus = Literal["ok", "error", "timeout", "died", "not_run"]


@dataclass
class CheckResult:
    """One graded check.

    Attributes:
        name: stable identifier (``conv_full``), used in JUnit and the gradebook.
        title: one line a student understands ("custom_conv_2d_full matches conv2d").
        points: points earned.
        max_points: points available; 0 for informational checks.
        status: see `Status`.
        message: what was found and, when it failed, what to fix.
        manual: True when a person must read the answer (no automatic points).
        manual_max: points an instructor may give by reading it (written answers; `grader.report.marking`).
        answer: the text the instructor reads (written answers only).
        answer_sha: sha256 of that text, whitespace folded: manual points stay while it is the same.
        numbers: the numbers the answer cites, for a quick check against the measured ones.
    """

    name: str
    title: str
    points: float
    max_points: float
    status: Status
    message: str = ""
    manual: bool = False
    manual_max: float = 0.0
    answer: str = ""
    answer_sha: str = ""
    numbers: list[str] = field(default_factory=list)


@dataclass
class CellRun:
    """How one code cell ran. ``index`` counts all cells from 0, as Jupyter's cell list does."""

    index: int
    first_line: str
    status: CellStatus
    elapsed: float = 0.0
    cpu_seconds: float = 0.0
    error_name: str = ""
    error_message: str = ""

    def describe(self) -> str:
        """``cell 7 (`def custom_conv_2d(...`)`` for messages."""
        return f"cell {self.index} (`{self.first_line}`)" if self.first_line else f"cell {self.index}"


@dataclass
class RunFailure:
    """Why a run stopped early: the notebook time limit, a cell's limit, memory, a dead kernel,
    or a file that is not a notebook (``cell`` is None then)."""

    kind: Literal["invalid", "missing", "cell_timeout", "notebook_timeout", "memory", "died", "kernel_start"]
    message: str
    cell: int | None = None


@dataclass
class SandboxInfo:
    """Whether the kernel ran inside bubblewrap, and if not, why not."""

    enabled: bool
    detail: str

    def describe(self) -> str:
        if self.enabled:
            return f"sandboxed ({self.detail})"
        return f"NOT sandboxed: {self.detail}"


@dataclass
class ExecutionResult:
    """The run stage's outcome for one notebook.

    Attributes:
        path: the notebook as submitted.
        cells: one entry per code cell, in order.
        failure: why the run stopped early, or None when every cell got its turn.
        elapsed: wall time of the run, kernel start included.
        cells_elapsed: time spent inside cells (the notebook's own work).
        cells_cpu: CPU seconds the cells used (the kernel's processes and threads together).
        cpu_limit: the notebook's CPU budget (`grader.options.Limits.timeout`).
        sandbox: how the kernel was confined.
        enforcement: which mechanism enforced the resource limits, in words
            (`grader.confine.limits.Enforcement.describe`; ``limits`` in result files of earlier versions).
        peak_memory: largest resident size of the kernel's process tree seen, in bytes.
        rerun_cells: when the kernel died or hung in cell k, how many cells before k were run
            again in a fresh kernel so that what they defined could still be graded (None: no
            re-run).
        warnings: things worth telling that are not failures (nbformat validation, ...).
        notebook: the executed notebook (an ``nbformat.NotebookNode``), or None if unreadable.
    """

    path: Path
    cells: list[CellRun] = field(default_factory=list)
    failure: RunFailure | None = None
    elapsed: float = 0.0
    cells_elapsed: float = 0.0
    cells_cpu: float = 0.0
    cpu_limit: float = 0.0
    sandbox: SandboxInfo | None = None
    enforcement: str = ""
    peak_memory: int = 0
    rerun_cells: int | None = None
    warnings: list[str] = field(default_factory=list)
    notebook: Any = field(default=None, repr=False, compare=False)

    @property
    def readable(self) -> bool:
        """False when the file is missing or not a notebook (nothing ran)."""
        return self.failure is None or self.failure.kind not in ("invalid", "missing")

    @property
    def errors(self) -> list[CellRun]:
        return [cell for cell in self.cells if cell.status != "ok" and cell.status != "not_run"]

    def cell(self, index: int) -> CellRun | None:
        return next((cell for cell in self.cells if cell.index == index), None)


@dataclass
class NotebookResult:
    """A graded notebook: how it ran and each check's result."""

    name: str
    path: Path
    checks: list[CheckResult]
    execution: ExecutionResult | None = None
    executed_path: Path | None = None
    checks_elapsed: float = 0.0  # seconds the checks took (verification workers included)

    @property
    def points(self) -> float:
        return sum(check.points for check in self.checks)

    @property
    def max_points(self) -> float:
        return sum(check.max_points for check in self.checks)


@dataclass
class SubmissionResult:
    """All notebooks of one submission, plus what the grade depended on.

    Attributes:
        name: the submission's name (its folder, or the notebook's stem).
        path: the submission as given.
        notebooks: one result per expected notebook (a missing one is graded zero).
        weights: which ResNet-18 weights the grading machine has (official or stand-in, sha256).
        hidden_cases: True when the hidden convolution cases were used (``grade``), False for
            the public ones (``check``).
        hidden_seed_source: where the hidden seed came from (``$GRADER_HIDDEN_SEED``, ...).
        elapsed: wall time for the whole submission.
        grader_error: set only when the grader itself failed; the points are then unreliable.
    """

    name: str
    path: Path
    notebooks: list[NotebookResult] = field(default_factory=list)
    weights: dict[str, Any] | None = None
    hidden_cases: bool = True
    hidden_seed_source: str = ""
    elapsed: float = 0.0
    grader_error: str | None = None

    @property
    def points(self) -> float:
        return sum(notebook.points for notebook in self.notebooks)

    @property
    def max_points(self) -> float:
        return sum(notebook.max_points for notebook in self.notebooks)

    @property
    def checks(self) -> list[CheckResult]:
        return [check for notebook in self.notebooks for check in notebook.checks]


def to_dict(result: Any) -> Any:
    """A JSON-ready copy of a result (paths as strings; the notebook object left out)."""
    if dataclasses.is_dataclass(result) and not isinstance(result, type):
        out = {}
        for item in dataclasses.fields(result):
            if item.name == "notebook":
                continue
            out[item.name] = to_dict(getattr(result, item.name))
        for name in ("points", "max_points"):
            if hasattr(type(result), name):
                out[name] = getattr(result, name)
        return out
    if isinstance(result, Path):
        return str(result)
    if isinstance(result, (list, tuple)):
        return [to_dict(item) for item in result]
    if isinstance(result, dict):
        return {str(key): to_dict(value) for key, value in result.items()}
    return result


def from_dict(data: dict[str, Any]) -> SubmissionResult:
    """A `SubmissionResult` rebuilt from its JSON form (`to_dict`, a ``result.json``), so that a
    report can be written again later (manual points given after grading)."""

    def build(kind: type, value: Any) -> Any:
        if value is None:
            return None
        names = {f.name for f in dataclasses.fields(kind)}
        renamed = _RENAMED.get(kind, {})
        kwargs = {renamed.get(key, key): item for key, item in value.items() if renamed.get(key, key) in names}
        for key, nested in _NESTED.get(kind, {}).items():
            if key in kwargs:
                item = kwargs[key]
                kwargs[key] = [build(nested, x) for x in item] if isinstance(item, list) else build(nested, item)
        for key in ("path", "executed_path"):
            if kwargs.get(key) is not None:
                kwargs[key] = Path(kwargs[key])
        return kind(**kwargs)

    return build(SubmissionResult, data)


_NESTED: dict[type, dict[str, type]] = {
    SubmissionResult: {"notebooks": NotebookResult},
    NotebookResult: {"checks": CheckResult, "execution": ExecutionResult},
    ExecutionResult: {"cells": CellRun, "failure": RunFailure, "sandbox": SandboxInfo},
}
# Keys of result files written by earlier versions, and the fields they are now.
_RENAMED: dict[type, dict[str, str]] = {
    ExecutionResult: {"limits": "enforcement"},
}
