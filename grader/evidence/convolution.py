"""Convolution cases: what each student function must support, the cases drawn from a seed,
the reference answer (``torch.nn.functional.conv2d`` in float64, in the grader's process) and
a message that names the failing case.

Cases come in two sets. The *visible* ones come from a fixed public seed: ``python -m grader
check`` uses only those, so a student sees the same feedback the grader gives. The *hidden* ones
come from a seed only the instructor knows (`grader.options.hidden_seed`); ``grade`` uses both. The
first cases of each set change one thing at a time from the simplest case (batch, input
channels, output channels, kernel shape, stride, padding), so a bug that shows only for
stride 2 or only for several input channels is named as such.

The student's functions are not called in the student's kernel: `verify_convolutions` re-creates
them from the notebook's source (`grader.evidence.recreate`) and calls them in a fresh confined process
(`grader.evidence.workers.conv_worker`) where no library convolution exists and no thread or process can
be started. The cases are sent one at a time, the public ones first; each call has a CPU budget
the grader measures from outside, and a runner that overran one is never used again (the case is
tried once more in a fresh one before it counts as "did not return"). The outputs are compared
here, in the grader's process, which runs no student code. A message about a hidden case says
which case (its shapes) and one of a fixed set of outcomes, never a number or a text the
student's code produced: a function could otherwise spell its hidden inputs into the report.

The function that must use ``unfold`` (`ConvSpec.vectorized`) also gets one large public case
that it must answer within `LARGE_CASE_CPU_S`: one matrix product over the unfolded windows takes
a tenth of that, a Python loop over the output positions several times more.
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from grader.options import PUBLIC_SEED

if TYPE_CHECKING:  # torch is imported where it is used: `grader` must start fast without it
    import torch

__all__ = [
    "CONV_SPECS",
    "ConvAnswer",
    "ConvCase",
    "ConvSpec",
    "cases_for",
    "compare",
    "diagnose",
    "large_case",
    "make_cases",
    "reference",
    "verify_convolutions",
]


# CPU-second budgets, measured by the grader from outside the runner (`grader.confine.worker.Runner`).
START_CPU_S = 120.0  # the runner's start: Python, torch, the warm-up
LOAD_CPU_S = 60.0  # the notebook's definitions (module-level code)
CALL_CPU_S = 10.0  # one call on one case; the reference solutions need milliseconds
FUNCTION_CPU_S = 60.0  # one function on all its cases
LARGE_CASE_CPU_S = 1.0  # the large case of a function that must compute every window at once
LARGE_CASE = {"batch": 1, "cin": 3, "cout": 2, "kh": 3, "kw": 3, "stride": 1, "padding": 1, "side": 512}
# What a library convolution raises in the runner: every convolution operator raises it there.
BLOCKED_MESSAGE = "a library convolution is not available to your function: compute it yourself"
# Libraries a hand-written convolution must not have: absent from the runner's filesystem.
MASKED_MODULES = ("scipy", "cv2", "skimage", "astropy")

ATOL = 1e-4
RTOL = 1e-4


@dataclass(frozen=True)
class ConvSpec:
    """What one convolution function must support.

    Attributes:
        name: the function's name in the notebook.
        numpy_inputs: the function takes numpy arrays ``x (H, W)``, ``kernel (kh, kw)`` and a
            float bias, and returns ``(H', W')``; otherwise torch tensors ``x (N, C_in, H, W)``,
            ``kernel (C_out, C_in, kh, kw)``, ``bias (C_out,)`` and returns ``(N, C_out, H', W')``.
        batch, in_channels, out_channels, kernel_size, stride, padding: inclusive ranges.
        square_kernels: only ``kh == kw`` is required.
        takes_stride: the function has ``stride`` and ``padding`` keyword arguments.
        needs_windows: the task asks for ``unfold`` (im2col): every window at once, then one
            matrix product. Checked by a large case (`LARGE_CASE`) it must answer within
            `LARGE_CASE_CPU_S`, which no Python loop over the output positions does.
    """

    name: str
    numpy_inputs: bool = False
    batch: tuple[int, int] = (1, 1)
    in_channels: tuple[int, int] = (1, 1)
    out_channels: tuple[int, int] = (1, 1)
    kernel_size: tuple[int, int] = (1, 5)
    square_kernels: bool = False
    stride: tuple[int, int] = (1, 1)
    padding: tuple[int, int] = (0, 0)
    takes_stride: bool = False
    needs_windows: bool = False
    max_side: int = 11


# What each convolution of 01_convolution.ipynb must support (the notebook says the same).
SIMPLEST = ConvSpec("custom_conv_2d_simplest_case", numpy_inputs=True, kernel_size=(1, 5))
BATCHED = ConvSpec("custom_conv_2d", batch=(1, 3), in_channels=(1, 3), out_channels=(1, 4), kernel_size=(1, 5))
FULL = ConvSpec(
    "custom_conv_2d_full",
    batch=(1, 3),
    in_channels=(1, 3),
    out_channels=(1, 4),
    kernel_size=(1, 5),
    stride=(1, 3),
    padding=(0, 2),
    takes_stride=True,
    needs_windows=True,
)
CONV_SPECS = (SIMPLEST, BATCHED, FULL)
VISIBLE_CASES, HIDDEN_CASES = 10, 20


def cases_for(spec: ConvSpec, hidden_seed: int | None) -> list[ConvCase]:
    """The visible cases (with the large one, for a function that must use ``unfold``), then
    (when grading) the hidden ones."""
    cases = make_cases(spec, seed=PUBLIC_SEED, count=VISIBLE_CASES)
    if spec.needs_windows:
        cases.append(large_case(spec))
    if hidden_seed is not None:
        cases += make_cases(spec, seed=hidden_seed, count=HIDDEN_CASES, hidden=True)
    return cases


@dataclass
class ConvCase:
    """One call: inputs, options and what makes it special (for messages)."""

    x: torch.Tensor
    kernel: torch.Tensor
    bias: torch.Tensor
    stride: int | None
    padding: int | None
    hidden: bool = False
    large: bool = False

    @property
    def features(self) -> dict[str, bool]:
        kh, kw = self.kernel.shape[-2:]
        batched = self.x.dim() == 4
        return {
            "batch > 1": batched and self.x.shape[0] > 1,
            "several input channels": batched and self.x.shape[1] > 1,
            "several output channels": batched and self.kernel.shape[0] > 1,
            "a non-square kernel": kh != kw,
            "a non-square input": self.x.shape[-2] != self.x.shape[-1],
            "a 1x1 kernel": kh == kw == 1,
            "stride > 1": (self.stride or 1) > 1,
            "stride 2": self.stride == 2,
            "stride 3": self.stride == 3,
            "padding > 0": (self.padding or 0) > 0,
            "padding 1": self.padding == 1,
            "padding 2": self.padding == 2,
        }

    def describe(self) -> str:
        """The case's shapes and options: all a report may say of a hidden case."""
        text = f"x {tuple(self.x.shape)}, kernel {tuple(self.kernel.shape)}"
        if self.stride is not None:
            text += f", stride {self.stride}, padding {self.padding}"
        return text

    def as_inputs(self) -> dict:
        """What the runner gets: the inputs and options, nothing about the case's role."""
        return {
            "x": self.x, "kernel": self.kernel, "bias": self.bias, "stride": self.stride,
            "padding": self.padding, "numpy": self.x.dim() == 2,
        }


def _draw(generator: torch.Generator, low: int, high: int) -> int:
    import torch

    return int(torch.randint(low, high + 1, (1,), generator=generator))


def _variations(spec: ConvSpec) -> list[dict]:
    """One change at a time from the simplest case, for each option the spec allows."""
    base = {"batch": 1, "cin": 1, "cout": 1, "kh": 3, "kw": 3, "stride": 1, "padding": 0, "square_x": True}
    variations = [dict(base)]

    def add(**change) -> None:
        variations.append({**base, **change})

    if not spec.numpy_inputs:
        if spec.batch[1] > 1:
            add(batch=min(3, spec.batch[1]))
        if spec.in_channels[1] > 1:
            add(cin=min(3, spec.in_channels[1]))
        if spec.out_channels[1] > 1:
            add(cout=min(4, spec.out_channels[1]))
    if spec.kernel_size[0] <= 1:
        add(kh=1, kw=1)
    if spec.kernel_size[1] >= 5:
        add(kh=5, kw=5)
    if not spec.square_kernels:
        add(kh=2, kw=3)
    add(square_x=False)
    for stride in range(max(2, spec.stride[0]), spec.stride[1] + 1):
        add(stride=stride)
    for padding in range(max(1, spec.padding[0]), spec.padding[1] + 1):
        add(padding=padding)
    return variations


def _random_shape(spec: ConvSpec, generator: torch.Generator) -> dict:
    kh = _draw(generator, *spec.kernel_size)
    kw = kh if spec.square_kernels else _draw(generator, *spec.kernel_size)
    return {
        "batch": _draw(generator, *spec.batch),
        "cin": _draw(generator, *spec.in_channels),
        "cout": _draw(generator, *spec.out_channels),
        "kh": kh,
        "kw": kw,
        "stride": _draw(generator, *spec.stride),
        "padding": _draw(generator, *spec.padding),
        "square_x": bool(_draw(generator, 0, 1)),
    }


def _build(spec: ConvSpec, shape: dict, generator: torch.Generator) -> ConvCase:
    import torch

    kh, kw, padding = shape["kh"], shape["kw"], shape["padding"]
    if shape["square_x"]:
        height = width = _draw(generator, max(kh, kw, 3), spec.max_side)
    else:
        height = _draw(generator, max(kh, 3), spec.max_side)
        width = _draw(generator, max(kw, 3), spec.max_side - 1)
        width += width >= height  # any size from the range but the height
    stride = shape["stride"] if spec.takes_stride else None
    if spec.numpy_inputs:
        x = torch.randn(height, width, generator=generator, dtype=torch.float64)
        kernel = torch.randn(kh, kw, generator=generator, dtype=torch.float64)
        bias = torch.randn((), generator=generator, dtype=torch.float64)
        return ConvCase(x, kernel, bias, None, None)
    x = torch.randn(shape["batch"], shape["cin"], height, width, generator=generator)
    kernel = torch.randn(shape["cout"], shape["cin"], kh, kw, generator=generator)
    bias = torch.randn(shape["cout"], generator=generator)
    return ConvCase(x, kernel, bias, stride, padding if stride is not None else None)


def make_cases(spec: ConvSpec, *, seed: int, count: int = 12, hidden: bool = False) -> list[ConvCase]:
    """Deterministic cases for ``spec``: the one-change-at-a-time ones, then random ones.

    Args:
        spec: what the function must support.
        seed: the public or the hidden seed.
        count: total number of cases (at least the number of variations).
        hidden: mark them hidden (their messages then say nothing the student's code produced).

    Returns:
        The cases, float32 (torch functions) or float64 (numpy function).
    """
    import torch

    generator = torch.Generator().manual_seed(seed)
    shapes = _variations(spec)
    while len(shapes) < count:
        shapes.append(_random_shape(spec, generator))
    cases = [_build(spec, shape, generator) for shape in shapes]
    for case in cases:
        case.hidden = hidden
    return cases


def large_case(spec: ConvSpec) -> ConvCase:
    """The public large case of `LARGE_CASE`, drawn from the public seed."""
    import torch

    generator = torch.Generator().manual_seed(PUBLIC_SEED + 1)
    shape = LARGE_CASE
    x = torch.randn(shape["batch"], shape["cin"], shape["side"], shape["side"], generator=generator)
    kernel = torch.randn(shape["cout"], shape["cin"], shape["kh"], shape["kw"], generator=generator)
    bias = torch.randn(shape["cout"], generator=generator)
    stride, padding = (shape["stride"], shape["padding"]) if spec.takes_stride else (None, None)
    return ConvCase(x, kernel, bias, stride, padding, large=True)


def reference(case: ConvCase) -> torch.Tensor:
    """``torch.nn.functional.conv2d`` on the case, in float64."""
    import torch.nn.functional as F

    x, kernel, bias = case.x.double(), case.kernel.double(), case.bias.double()
    if x.dim() == 2:
        return F.conv2d(x[None, None], kernel[None, None])[0, 0] + bias  # (H', W')
    return F.conv2d(x, kernel, bias, stride=case.stride or 1, padding=case.padding or 0)  # (N, C_out, H', W')


def compare(case: ConvCase, output: torch.Tensor | str) -> str | None:
    """None when ``output`` matches the reference within tolerance, else what is wrong.

    ``output`` is the function's result, or a description of its failure ("raised ValueError").
    For a hidden case the description never holds a number or a text the function produced.
    """
    import torch

    if isinstance(output, str):
        return output
    expected = reference(case)
    if tuple(output.shape) != tuple(expected.shape):
        if case.hidden:
            return f"returned the wrong shape (expected {tuple(expected.shape)})"
        return f"returned shape {tuple(output.shape)}, expected {tuple(expected.shape)}"
    if not torch.isfinite(output).all():
        return "returned NaN or infinite values"
    if not torch.allclose(output, expected, rtol=RTOL, atol=ATOL):
        if case.hidden:
            return f"returned values that differ from conv2d's beyond the tolerance ({ATOL:g} + {RTOL:g} x |expected|)"
        error = (output - expected).abs().max().item()
        return f"largest absolute error {error:.3g} (tolerance {ATOL:g} + {RTOL:g} x |expected|)"
    return None


def diagnose(cases: list[ConvCase], failed: list[bool]) -> str:
    """A pattern in the failures, e.g. "it fails exactly on the cases with stride > 1"."""
    if not any(failed) or all(failed):
        return ""
    names = list(cases[0].features)
    for name in names:
        having = [case.features[name] for case in cases]
        if having == failed:
            return f"It fails exactly on the cases with {name}."
    for name in names:
        if all(case.features[name] for case, bad in zip(cases, failed) if bad):
            return f"Every failing case has {name}."
    return ""


# ----------------------------------------------------------------------------- running them


@dataclass
class ConvAnswer:
    """What one function did in the runner.

    Attributes:
        name: the function.
        cell: the cell whose definition was run, or None when no cell that ran defines it.
        findings: what its source uses that a hand-written convolution must not.
        forbidden: what the runner saw it change (numpy's convolutions put back); the runner may
            run student code, so this can only take points away.
        windows: for a function that must use ``unfold``: whether it answered the large case
            within `LARGE_CASE_CPU_S` (measured by the grader).
        outputs: per case, the output (float64 tensor) or a description of the failure.
        problem: why there are no outputs (the definitions failed to run, it is not a function).
        grader_fault: the problem is the grading machine's (the runner could not start).
    """

    name: str
    cell: int | None = None
    findings: list[str] = field(default_factory=list)
    forbidden: list[str] = field(default_factory=list)
    windows: bool = True
    outputs: list[Any] = field(default_factory=list)
    problem: str = ""
    grader_fault: bool = False


def _outcome(case: ConvCase, message: dict[str, Any], folder: Path, index: int) -> Any:
    """The output of one call, or what went wrong, from the runner's answer. For a hidden case
    only a fixed outcome: nothing the student's code chose (a type name, a text) is kept."""
    import torch

    status = message.get("status")
    if status == "ok":
        path = folder / f"out-{index}.pt"
        try:
            if path.is_symlink() or not path.is_file() or path.stat().st_size > 2**30:
                raise ValueError("not a plain file of reasonable size")
            output = torch.load(path, weights_only=True)
            if isinstance(output, torch.Tensor) and output.dtype == torch.float64:
                return output
        except Exception:
            pass
        finally:
            path.unlink(missing_ok=True)
        return "returned something that is not an array of numbers"
    if status == "raised":
        if case.hidden:
            return "raised an exception"
        kind, text = str(message.get("error_type", ""))[:60], str(message.get("message", ""))[:200]
        return f"raised {kind or 'an exception'}" + (f": {text}" if text else "")
    if status == "bad_output" and not case.hidden:
        return str(message.get("message", ""))[:200] or "returned something that is not an array of numbers"
    return "returned something that is not an array of numbers"


def _start_runner(module: Path, *, sandbox: Any, limits: Any) -> tuple[Any, dict[str, Any], str]:
    """A fresh runner with the definitions loaded.

    Returns:
        ``(runner, loaded, problem)``: the runner (None when it could not be had), its answer
        about the definitions (``error_type``, ``message``), and why there is no runner:
        ``"grader: ..."`` for the grading machine's fault, else the definitions' (they did not
        finish loading).
    """
    from grader.confine.sandbox import installed_paths
    from grader.confine.worker import Runner
    from grader.paths import CONV_WORKER

    runner = Runner(
        CONV_WORKER, {"masked_modules": list(MASKED_MODULES), "blocked_message": BLOCKED_MESSAGE}, name="conv", limits=limits, sandbox=sandbox,
        inputs={"module.py": module}, masked=installed_paths(MASKED_MODULES) if sandbox.enabled else (), threads=1,
    )
    ready = runner.receive(cpu_budget=START_CPU_S)
    if ready.status != "ok" or ready.message.get("kind") != "ready":
        runner.close()
        return None, {}, f"grader: its convolution runner did not start ({ready.reason or 'no answer'})"
    loaded = runner.receive(cpu_budget=LOAD_CPU_S)
    if loaded.status != "ok" or loaded.message.get("kind") != "loaded":
        runner.close()
        why = {"timeout": f"did not finish within {LOAD_CPU_S:g} CPU-s"}.get(loaded.status, "stopped the process")
        return None, {}, f"running the notebook's definitions {why}"
    return runner, loaded.message, ""


@dataclass
class _Progress:
    """One function's progress through its cases."""

    outputs: list[Any]
    cpu: float = 0.0
    stopped: str = ""


class _Runners:
    """The runner in use, started afresh (`_start_runner`) whenever the last one was dropped, and
    what the first one said about the definitions."""

    def __init__(self, module: Path, *, sandbox: Any, limits: Any) -> None:
        self.module, self.sandbox, self.limits = module, sandbox, limits
        self.runner: Any = None
        self.module_error: str | None = None  # None until a runner has loaded the definitions
        self.sent = 0

    def ready(self) -> str:
        """"" when a runner is there (started now if needed), else why none could be had
        (``"grader: ..."`` for the grading machine's fault)."""
        if self.runner is not None:
            return ""
        self.runner, loaded, problem = _start_runner(self.module, sandbox=self.sandbox, limits=self.limits)
        if self.runner is not None and self.module_error is None:  # the first runner's answer: before any case was sent
            kind, text = str(loaded.get("error_type", ""))[:60], str(loaded.get("message", ""))[:200]
            self.module_error = f"{kind}: {text}" if kind else ""
        return problem

    def call(self, name: str, case: ConvCase, budget: float) -> Any:
        """Send ``case`` to function ``name``; the runner's reply (`grader.confine.worker.RunnerReply`)."""
        import torch

        self.sent += 1
        torch.save(case.as_inputs(), self.runner.folder / f"case-{self.sent}.pt")
        self.runner.send(json.dumps({"function": name, "index": self.sent}))
        return self.runner.receive(cpu_budget=budget)

    def answered(self, reply: Any) -> bool:
        """The reply is the runner's answer to the case just sent."""
        message = reply.message
        return reply.status == "ok" and message.get("kind") == "done" and message.get("index") == self.sent

    def drop(self) -> None:
        """Close the runner: one that overran or stopped is never used again."""
        if self.runner is not None:
            self.runner.close()
        self.runner = None


def _call_order(present: list[ConvSpec], cases: dict[str, list[ConvCase]]) -> list[tuple[ConvSpec, int]]:
    """Every public case before any hidden one: what a runner says before the first hidden case
    (a module error, an exception's text) cannot hold a hidden value."""
    return [
        (spec, i) for hidden in (False, True) for spec in present for i, case in enumerate(cases[spec.name])
        if case.hidden == hidden
    ]


def _take_answer(
    answer: ConvAnswer, state: _Progress, case: ConvCase, index: int, reply: Any, runners: _Runners
) -> None:
    """Record the runner's answer to one case: its outcome, or that the function is not there."""
    message = reply.message
    state.cpu += reply.cpu_seconds
    status = message.get("status")
    if status in ("undefined", "not_callable"):
        answer.problem = (
            f"`{answer.name}` is not a function" if status == "not_callable"
            else f"running the notebook's definitions for it failed first ({runners.module_error})"
            if runners.module_error else "its definition did not run"
        )
        state.stopped = "not run"
    else:
        state.outputs[index] = _outcome(case, message, runners.runner.folder, runners.sent)
    if message.get("tampered"):
        answer.forbidden.append("numpy's convolve or correlate, put back by the notebook's code")
    if case.large and reply.cpu_seconds > LARGE_CASE_CPU_S:
        answer.windows = False


def _take_failure(
    answer: ConvAnswer, state: _Progress, case: ConvCase, index: int, reply: Any, budget: float, limits: Any
) -> None:
    """Record a call that overran its budget or stopped its runner (the second time): the case
    counts, and the function's remaining cases are not run."""
    timeout = reply.status == "timeout"
    if timeout and case.large:
        answer.windows = False
    memory = "memory limit" in reply.reason  # the box's own words: never the student's
    state.outputs[index] = (
        (f"did not return within {CALL_CPU_S:g} CPU-s (an endless loop?)" if budget >= CALL_CPU_S
         else f"used up the {FUNCTION_CPU_S:g} CPU-s its cases may take together") if timeout
        else f"stopped its process by going over the memory limit of {limits.memory_gib:g} GiB" if memory
        else "stopped its process (a crash)"
    )
    state.stopped = f"not run: an earlier case {'did not return' if timeout else 'stopped its process'}"


def _run_case(runners: _Runners, answer: ConvAnswer, state: _Progress, case: ConvCase, index: int, limits: Any) -> str:
    """One case of one function, in the runner in use or a fresh one. A runner that does not
    start, and a call that overruns or stops its runner, are each tried once more in a fresh one
    (never the last word of one runner) before they count.

    Returns:
        "" when the case has its outcome, else why no runner could be had (as `_start_runner`).
    """
    start_again = call_again = True
    while True:
        problem = runners.ready()
        if problem:
            if start_again:
                start_again = False
                continue
            return problem
        budget = min(CALL_CPU_S, max(0.5, FUNCTION_CPU_S - state.cpu))
        reply = runners.call(answer.name, case, budget)
        if runners.answered(reply):
            _take_answer(answer, state, case, index, reply, runners)
            return ""
        runners.drop()
        if call_again:
            call_again = False
            continue
        _take_failure(answer, state, case, index, reply, budget, limits)
        return ""


def verify_convolutions(
    notebook: Any,
    ran: set[int],
    cases: dict[str, list[ConvCase]],
    specs: list[ConvSpec],
    *,
    sandbox: Any,
    limits: Any,
) -> dict[str, ConvAnswer]:
    """Re-create the functions from ``notebook`` and run them on ``cases`` in a confined runner.

    Args:
        notebook: the executed notebook.
        ran: indices of the cells that ran.
        cases: function name -> its cases.
        specs: the functions.
        sandbox: `grader.results.SandboxInfo` for the runner.
        limits: `grader.options.Limits` (memory, processes) for the runner.

    Returns:
        One `ConvAnswer` per spec. A call that overruns its CPU budget, or stops its runner, is
        tried once more in a fresh runner; then it counts, and that function's remaining cases
        are not run. When no runner can be had (twice in a row), every function found gets that
        problem and no outputs.
    """
    from grader.evidence.recreate import recreate

    made = recreate(notebook, ran, [spec.name for spec in specs])
    answers = {
        spec.name: ConvAnswer(spec.name, made.cells.get(spec.name), made.findings.get(spec.name, []), problem=made.problem)
        for spec in specs
    }
    present = [spec for spec in specs if spec.name in made.cells]
    progress = {spec.name: _Progress([None] * len(cases[spec.name])) for spec in present}
    with tempfile.TemporaryDirectory(prefix="conv-") as folder:
        module = Path(folder) / "module.py"
        module.write_text(made.source)
        runners = _Runners(module, sandbox=sandbox, limits=limits)
        try:
            for spec, index in _call_order(present, cases):
                state = progress[spec.name]
                if state.stopped:
                    state.outputs[index] = state.stopped
                    continue
                case = cases[spec.name][index]
                problem = _run_case(runners, answers[spec.name], state, case, index, limits)
                if problem:
                    for name in progress:
                        answers[name].problem = problem.removeprefix("grader: ")
                        answers[name].grader_fault = problem.startswith("grader: ")
                    return answers
        finally:
            runners.drop()
    for name, state in progress.items():
        if not answers[name].problem:
            answers[name].outputs = list(state.outputs)
    return answers
