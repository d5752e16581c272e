"""The convolution runner's budgets: CPU time measured from outside, a runner never reused after
it overran, a case tried once more in a fresh runner before it counts, the wall clock only as a
backstop for a function that waits; a library convolution absent from the runner."""

from __future__ import annotations

import json

import nbformat
import pytest
from grader_notebooks import FULL_OK, SIMPLEST_OK

from grader.confine.sandbox import sandbox_info
from grader.confine.worker import RunnerReply
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


# ----------------------------------------------------------------- the retry rules, with a scripted runner


class ScriptedRunner:
    """Stands in for `grader.confine.worker.Runner`: answers each case from ``script`` (a list of
    `RunnerReply` factories taking the index sent), shared across the fresh runners."""

    def __init__(self, folder, script, log):
        self.folder, self.script, self.log = folder, script, log
        self.closed = False

    def send(self, line):
        self.log.append(json.loads(line))

    def receive(self, *, cpu_budget):
        return self.script.pop(0)(self.log[-1]["index"])

    def close(self):
        self.closed = True


def scripted(monkeypatch, tmp_path, starts, script, specs=(conv.SIMPLEST, conv.FULL)):
    """Run verify_convolutions where each runner start takes the next of ``starts`` (True: a
    runner, else the problem), and each call the next of ``script``."""
    log, runners = [], []

    def start(module, *, sandbox, limits):
        outcome = starts.pop(0)
        if outcome is not True:
            return None, {}, outcome
        runners.append(ScriptedRunner(tmp_path, script, log))
        return runners[-1], {"kind": "loaded"}, ""

    monkeypatch.setattr(conv, "_start_runner", start)
    notebook = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(SIMPLEST_OK), nbformat.v4.new_code_cell(FULL_OK)])
    cases = {spec.name: conv.cases_for(spec, None) for spec in specs}
    answers = conv.verify_convolutions(notebook, {0, 1}, cases, list(specs), sandbox=sandbox_info(None), limits=LIMITS)
    return cases, answers, runners, log


def done(index):
    return RunnerReply("ok", {"kind": "done", "index": index, "status": "raised", "error_type": "E"}, cpu_seconds=0.01)


def timeout(index):
    return RunnerReply("timeout", reason="used more than its 10 CPU-s")


def test_a_runner_that_does_not_start_twice_is_every_functions_problem_and_the_graders_fault(monkeypatch, tmp_path):
    problem = "grader: its convolution runner did not start (no answer)"
    _, answers, runners, _ = scripted(monkeypatch, tmp_path, [problem, problem], [])
    assert runners == []
    for answer in answers.values():
        assert answer.problem == "its convolution runner did not start (no answer)" and answer.grader_fault
        assert answer.outputs == []


def test_a_runner_that_starts_on_the_second_try_grades_everything(monkeypatch, tmp_path):
    cases, answers, runners, log = scripted(monkeypatch, tmp_path, ["grader: no", True], [done] * 40)
    assert len(runners) == 1 and len(log) == sum(len(c) for c in cases.values())
    assert all(o == "raised E" for answer in answers.values() for o in answer.outputs)
    assert not any(answer.problem for answer in answers.values())


def test_definitions_that_never_load_are_the_notebooks_problem(monkeypatch, tmp_path):
    problem = "running the notebook's definitions did not finish within 60 CPU-s"
    _, answers, _, _ = scripted(monkeypatch, tmp_path, [problem, problem], [])
    assert all(a.problem == problem and not a.grader_fault for a in answers.values())


def test_a_call_that_overruns_twice_counts_and_the_functions_other_cases_are_not_run(monkeypatch, tmp_path):
    cases, answers, runners, log = scripted(
        monkeypatch, tmp_path, [True] * 4, [timeout, timeout] + [done] * 40, specs=(conv.SIMPLEST, conv.FULL)
    )
    simplest = answers["custom_conv_2d_simplest_case"].outputs
    assert simplest[0] == "did not return within 10 CPU-s (an endless loop?)"
    assert simplest[1:] == ["not run: an earlier case did not return"] * (len(simplest) - 1)
    assert [r.closed for r in runners] == [True, True, True]  # none reused after it overran; the last closed at the end
    assert all(o == "raised E" for o in answers["custom_conv_2d_full"].outputs)
    assert [m["function"] for m in log[:3]] == ["custom_conv_2d_simplest_case"] * 2 + ["custom_conv_2d_full"]


def test_a_call_that_overruns_once_is_answered_in_a_fresh_runner(monkeypatch, tmp_path):
    cases, answers, runners, log = scripted(monkeypatch, tmp_path, [True] * 2, [timeout] + [done] * 40)
    assert len(runners) == 2 and all(o == "raised E" for a in answers.values() for o in a.outputs)
    assert log[0]["function"] == log[1]["function"] and log[1]["index"] == 2  # the same case, sent again


def test_the_functions_budget_and_the_memory_limit_are_named(monkeypatch, tmp_path):
    def slow(index):
        return RunnerReply("ok", {"kind": "done", "index": index, "status": "raised"}, cpu_seconds=25.0)

    def memory(index):
        return RunnerReply("died", reason="went over the memory limit")

    script = [slow, slow, slow, timeout, timeout, memory, memory]
    _, answers, _, _ = scripted(monkeypatch, tmp_path, [True] * 6, script)
    simplest, full = answers["custom_conv_2d_simplest_case"].outputs, answers["custom_conv_2d_full"].outputs
    assert simplest[3] == "used up the 60 CPU-s its cases may take together"
    assert simplest[4] == "not run: an earlier case did not return"
    assert full[0] == "stopped its process by going over the memory limit of 2 GiB"
    assert full[1] == "not run: an earlier case stopped its process"


def test_a_name_that_is_not_a_function_is_its_problem(monkeypatch, tmp_path):
    def not_callable(index):
        return RunnerReply("ok", {"kind": "done", "index": index, "status": "not_callable", "tampered": True})

    _, answers, _, log = scripted(monkeypatch, tmp_path, [True], [not_callable] + [done] * 40)
    simplest = answers["custom_conv_2d_simplest_case"]
    assert simplest.problem == "`custom_conv_2d_simplest_case` is not a function" and simplest.outputs == []
    assert simplest.forbidden == ["numpy's convolve or correlate, put back by the notebook's code"]
    assert log[1]["function"] == "custom_conv_2d_full"  # its other cases were not sent
