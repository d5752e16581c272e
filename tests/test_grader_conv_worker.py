"""The convolution worker's timing: a student's call is charged its own time only.

The worker is run here as the grader runs it, minus the confinement (``python -I`` on a request
written by hand), so that the answers it writes can be read directly.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import torch

from grader.paths import CONV_WORKER


def run_worker(tmp_path: Path, source: str, name: str = "custom_conv_2d") -> dict:
    """Run ``name`` from ``source`` on two small cases; the worker's answer for it."""
    case = {
        "x": torch.rand(1, 1, 5, 5), "kernel": torch.rand(1, 1, 3, 3), "bias": torch.rand(1),
        "stride": None, "padding": None, "hidden": False,
    }
    torch.save({name: [case, case]}, tmp_path / "cases.pt")
    (tmp_path / "module.py").write_text(source)
    request = {
        "functions": [{"name": name, "numpy_inputs": False, "needs_windows": False}],
        "inputs": {"module.py": str(tmp_path / "module.py"), "cases.pt": str(tmp_path / "cases.pt")},
    }
    (tmp_path / "request.json").write_text(json.dumps(request))
    done = subprocess.run(
        [sys.executable, "-I", str(CONV_WORKER), str(tmp_path / "request.json")],
        capture_output=True, text=True, timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    [answer] = json.loads((tmp_path / "answers.json").read_text())["functions"]
    answer["outputs"] = torch.load(tmp_path / "tensors.pt", weights_only=True)[name]
    return answer


def test_the_guards_start_up_is_not_charged_to_the_students_first_call(tmp_path):
    """The first operation under torch's modes imports sympy and more (about 2 s of CPU): it once
    made an honest function time out on a busy machine. The worker pays it before any call."""
    source = (
        "import time\nimport torch\n\n"
        "def custom_conv_2d(x, kernel, bias):\n"
        "    start = time.perf_counter()\n"
        "    torch.ones(2, 2).sum(0) * 2 + 1\n"
        "    return torch.tensor([time.perf_counter() - start])\n"
    )
    answer = run_worker(tmp_path, source)
    assert [r["status"] for r in answer["results"]] == ["ok", "ok"] and answer["forbidden"] == []
    first_call = answer["outputs"][0].item()
    assert first_call < 0.5, f"the student's first torch operation took {first_call:.2f} s"


def test_a_call_that_runs_out_of_time_is_a_timeout_not_a_changed_guard(tmp_path):
    """The alarm mostly lands in the guard's profiler (called on every C call here), which Python
    then removes: that removal is the timeout's doing, not the student's."""
    source = "def custom_conv_2d(x, kernel, bias):\n    while True:\n        len(())\n"
    answer = run_worker(tmp_path, source)
    assert [r["status"] for r in answer["results"]] == ["timeout", "timeout"]
    assert answer["forbidden"] == []


def test_the_guard_still_sees_a_library_convolution_in_the_first_call(tmp_path):
    """Paying the start-up under the guard leaves it as it was: what the student's call reaches
    is still recorded."""
    source = (
        "import torch.nn.functional as F\n\n"
        "def custom_conv_2d(x, kernel, bias):\n"
        "    return F.conv2d(x, kernel, bias)\n"
    )
    answer = run_worker(tmp_path, source)
    assert [r["status"] for r in answer["results"]] == ["ok", "ok"]
    assert "aten::convolution" in answer["forbidden"], answer["forbidden"]
