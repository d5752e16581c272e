"""grader.results: the records every stage shares, and their JSON form (``result.json``): what
`to_dict` writes, `from_dict` reads back whole, so a report can be written again later."""

from __future__ import annotations

import json
from pathlib import Path

from grader.results import (
    CellRun,
    CheckResult,
    ExecutionResult,
    NotebookResult,
    RunFailure,
    SandboxInfo,
    SubmissionResult,
    from_dict,
    to_dict,
)


def _result() -> SubmissionResult:
    execution = ExecutionResult(
        path=Path("s/02_cnn_fashion_mnist.ipynb"),
        cells=[CellRun(0, "x = 1", "ok"), CellRun(1, "trainer.train(9)", "timeout", cpu_seconds=1800.5)],
        failure=RunFailure(kind="cell_timeout", message="cell 1 used its 1800 CPU-s", cell=1),
        cells_cpu=1800.5,
        sandbox=SandboxInfo(enabled=True, detail="bubblewrap"),
        enforcement="cgroup-v1: memory and pids",
    )
    checks = [
        CheckResult("runs", "The notebook runs", 0, 2, "failed", "cell 1 used its budget"),
        CheckResult("comparison", "Written answer", 0, 0, "skipped", manual=True, manual_max=3, answer="x", numbers=["0.91"]),
    ]
    return SubmissionResult(
        name="alice", path=Path("s"), notebooks=[NotebookResult("02_cnn_fashion_mnist.ipynb", Path("s/02.ipynb"), checks, execution)]
    )


def test_a_result_survives_its_json_form_whole():
    result = _result()
    data = json.loads(json.dumps(to_dict(result)))
    again = from_dict(data)
    assert to_dict(again) == to_dict(result)
    notebook = again.notebooks[0]
    assert isinstance(notebook.execution.cells[1], CellRun) and notebook.execution.failure.cell == 1
    assert isinstance(notebook.path, Path) and notebook.execution.sandbox.enabled
    assert (again.points, again.max_points) == (0, 2)  # the written answer's points are manual


def test_a_result_file_of_an_earlier_version_is_read():
    """``limits`` was the name of ``enforcement`` before; unknown keys are left out, not fatal."""
    data = json.loads(json.dumps(to_dict(_result())))
    execution = data["notebooks"][0]["execution"]
    execution["limits"] = execution.pop("enforcement")
    execution["a_key_from_the_future"] = 1
    assert from_dict(data).notebooks[0].execution.enforcement == "cgroup-v1: memory and pids"
