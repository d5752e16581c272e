"""The convolution runner's budgets: CPU time measured from outside, a runner never reused after
it overran, a case tried once more in a fresh runner before it counts, the wall clock only as a
backstop for a function that waits; a library convolution absent from the runner."""

from __future__ import annotations

import nbformat
import pytest
from grader_notebooks import FULL_OK, SIMPLEST_OK

from grader.confine.sandbox import sandbox_info
from grader.evidence import convolution as conv
from grader.options import Limits

LIMITS = Limits(memory_gib=2, processes=64, disk_gib=0.5)


def run(monkeypatch, *cells, specs=(conv.SIMPLEST, conv.FULL), call_cpu=1.0):
    monkeypatch.setattr(conv, "CALL_CPU_S", call_cpu)
    starts = []
    real_start = conv._start_runner

    def counting_start(*args, **kwargs):
        starts.append(1)
        return real_start(*args, **kwargs)

    monkeypatch.setattr(conv, "_start_runner", counting_start)
    notebook = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(cell) for cell in cells])
    cases = {spec.name: conv.cases_for(spec, None) for spec in specs}
    answers = conv.verify_convolutions(
        notebook, set(range(len(cells))), cases, list(specs), sandbox=sandbox_info(None), limits=LIMITS
    )
    return cases, answers, len(starts)


def test_an_endless_loop_is_tried_once_more_in_a_fresh_runner_then_counts(monkeypatch):
    endless = "def custom_conv_2d_simplest_case(x, kernel, bias):\n    while True:\n        pass\n"
    cases, answers, starts = run(monkeypatch, endless, FULL_OK)
    outputs = answers["custom_conv_2d_simplest_case"].outputs
    assert outputs[0] == "did not return within 1 CPU-s (an endless loop?)"
    assert all("not run: an earlier case did not return" in o for o in outputs[1:])
    assert starts == 3  # the first, one for the retry, one for the next function: none reused
    full = answers["custom_conv_2d_full"]
    assert all(conv.compare(case, output) is None for case, output in zip(cases["custom_conv_2d_full"], full.outputs))
    assert full.windows


def test_a_function_that_waits_is_stopped_by_the_wall_clock_backstop(monkeypatch):
    sleeper = "import time\ndef custom_conv_2d_simplest_case(x, kernel, bias):\n    time.sleep(600)\n"
    _, answers, _ = run(monkeypatch, sleeper, specs=(conv.SIMPLEST,))
    assert answers["custom_conv_2d_simplest_case"].outputs[0].startswith("did not return within")


def test_no_library_convolution_exists_in_the_runner(monkeypatch):
    cells = (
        "import numpy as np\nimport torch\n"
        "def custom_conv_2d_simplest_case(x, kernel, bias):\n"
        "    return np.convolve(x[0], kernel[0])\n"
        "def custom_conv_2d_full(x, kernel, bias, stride=1, padding=0):\n"
        "    return torch.ops.aten._slow_conv2d_forward(x, kernel, kernel.shape[-2:], bias, [stride] * 2, [padding] * 2)\n",
    )
    _, answers, _ = run(monkeypatch, *cells, call_cpu=10.0)
    for name in ("custom_conv_2d_simplest_case", "custom_conv_2d_full"):
        assert conv.BLOCKED_MESSAGE in answers[name].outputs[0], answers[name].outputs[0]


def test_a_failing_import_leaves_the_other_definitions(monkeypatch):
    cells = ("import scipy.signal\ndef custom_conv_2d_full(x, kernel, bias, stride=1, padding=0):\n"
             "    return scipy.signal.correlate(x, kernel)\n", SIMPLEST_OK)
    cases, answers, _ = run(monkeypatch, *cells, call_cpu=10.0)
    simplest = answers["custom_conv_2d_simplest_case"]
    assert all(conv.compare(c, o) is None for c, o in zip(cases["custom_conv_2d_simplest_case"], simplest.outputs))
    assert "raised NameError" in answers["custom_conv_2d_full"].outputs[0]


@pytest.mark.parametrize("magic", ["%%time", "%%capture"])
def test_cell_magics_that_keep_definitions_are_recreated(monkeypatch, magic):
    _, answers, _ = run(monkeypatch, f"{magic}\n{SIMPLEST_OK}", specs=(conv.SIMPLEST,), call_cpu=10.0)
    assert answers["custom_conv_2d_simplest_case"].cell == 0 and not answers["custom_conv_2d_simplest_case"].problem
