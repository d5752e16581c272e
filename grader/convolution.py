"""Convolution cases: what each student function must support, the cases drawn from a seed,
the reference answer (``torch.nn.functional.conv2d`` in float64, in the grader's process) and
a message that names the failing case.

Cases come in two sets. The *visible* ones come from a fixed public seed: ``python -m grader
check`` uses only those, so a student sees the same feedback the grader gives. The *hidden* ones
come from a seed only the instructor knows (`resolve_hidden_seed`); ``grade`` uses both. The
first cases of each set change one thing at a time from the simplest case (batch, input
channels, output channels, kernel shape, stride, padding), so a bug that shows only for
stride 2 or only for several input channels is named as such.

The student's functions are not called in the student's kernel: `verify_convolutions` re-creates
them from the notebook's source (`grader.recreate`) and calls them in a fresh confined process
(`grader.workers.conv_worker`), under a guard that records what they reach. Their outputs are
compared here, in the grader's process. A message about a hidden case says which case (shapes,
stride, padding) and the kind of failure, never a number or a text the student's code produced:
a function could otherwise spell its hidden inputs into the report.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from grader.paths import CONV_WORKER, HIDDEN_SEED_FILE

if TYPE_CHECKING:  # torch is imported where it is used: `grader` must start fast without it
    import torch

__all__ = [
    "HIDDEN_SEED_ENV",
    "HIDDEN_SEED_FILE",
    "PUBLIC_SEED",
    "CONV_SPECS",
    "ConvAnswer",
    "ConvCase",
    "ConvSpec",
    "cases_for",
    "compare",
    "diagnose",
    "make_cases",
    "reference",
    "resolve_hidden_seed",
    "verify_convolutions",
]

PUBLIC_SEED = 20240901
HIDDEN_SEED_ENV = "GRADER_HIDDEN_SEED"
FUNCTION_BUDGET_S = 60.0  # one function on all its cases, in the worker

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
        needs_windows: the task asks for ``unfold`` (im2col): windows must be built with it.
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
    """The visible cases, then (when grading) the hidden ones."""
    cases = make_cases(spec, seed=PUBLIC_SEED, count=VISIBLE_CASES)
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
        text = f"x {tuple(self.x.shape)}, kernel {tuple(self.kernel.shape)}"
        if self.x.dim() == 2:
            text += f", bias {float(self.bias):.3f}"
        if self.stride is not None:
            text += f", stride {self.stride}, padding {self.padding}"
        return text

    def as_inputs(self) -> dict:
        return {
            "x": self.x, "kernel": self.kernel, "bias": self.bias, "stride": self.stride,
            "padding": self.padding, "hidden": self.hidden,
        }


def resolve_hidden_seed(value: int | None = None) -> tuple[int | None, str]:
    """The instructor's hidden-case seed and where it came from.

    Order: ``value`` (the ``--hidden-seed`` flag), ``$GRADER_HIDDEN_SEED``, the instructor's
    file ``grader/hidden_seed.txt``.

    Returns:
        ``(seed, source)``, or ``(None, "")`` when none is configured.
    """
    if value is not None:
        return int(value), "--hidden-seed"
    if os.environ.get(HIDDEN_SEED_ENV):
        return int(os.environ[HIDDEN_SEED_ENV]), f"${HIDDEN_SEED_ENV}"
    if HIDDEN_SEED_FILE.is_file():
        text = HIDDEN_SEED_FILE.read_text().strip()
        if text:
            return int(text.split()[0]), str(HIDDEN_SEED_FILE.name)
    return None, ""


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
    """What one function did in the worker.

    Attributes:
        name: the function.
        cell: the cell whose definition was run, or None when no cell that ran defines it.
        findings: what its source uses that a hand-written convolution must not.
        forbidden: what it reached at run time (library convolutions, a removed guard).
        windows: for a function that must use ``unfold``: whether every call did.
        outputs: per case, the output (float64 tensor) or a description of the failure.
        problem: why there are no outputs (the definitions failed to run, the function hung or
            crashed the worker, it is not a function).
    """

    name: str
    cell: int | None = None
    findings: list[str] = field(default_factory=list)
    forbidden: list[str] = field(default_factory=list)
    windows: bool = True
    outputs: list[Any] = field(default_factory=list)
    problem: str = ""


def _outputs(answer: dict[str, Any], tensors: list[Any], cases: list[ConvCase]) -> list[Any]:
    outputs: list[Any] = []
    for case, result in zip(cases, answer.get("results", [])):
        status = result.get("status")
        if status == "ok" and isinstance(result.get("index"), int) and result["index"] < len(tensors):
            outputs.append(tensors[result["index"]])
        elif status == "raised":
            message = "" if case.hidden else str(result.get("message", ""))[:200]
            outputs.append(f"raised {result.get('error_type', 'an exception')}" + (f": {message}" if message else ""))
        elif status == "timeout":
            outputs.append("did not return within 5 s (an endless loop?)")
        else:
            outputs.append(
                "returned something that is not an array of numbers" if case.hidden else str(result.get("message", "?"))
            )
    return outputs


def verify_convolutions(
    notebook: Any,
    ran: set[int],
    cases: dict[str, list[ConvCase]],
    specs: list[ConvSpec],
    *,
    sandbox: Any,
    limits: Any,
) -> dict[str, ConvAnswer]:
    """Re-create the functions from ``notebook`` and run them on ``cases`` in a confined worker.

    Args:
        notebook: the executed notebook.
        ran: indices of the cells that ran.
        cases: function name -> its cases.
        specs: the functions.
        sandbox: `grader.results.SandboxInfo` for the worker.
        limits: `grader.limits.Limits` (memory, processes) for the worker.

    Returns:
        One `ConvAnswer` per spec. A function that hangs or crashes the worker gets a problem;
        the functions after it are run again in a fresh worker.
    """
    import torch

    from grader.confined import run_worker
    from grader.recreate import recreate

    made = recreate(notebook, ran, [spec.name for spec in specs])
    answers = {
        spec.name: ConvAnswer(spec.name, made.cells.get(spec.name), made.findings.get(spec.name, []))
        for spec in specs
    }
    todo = [spec for spec in specs if spec.name in made.cells]
    with tempfile.TemporaryDirectory(prefix="conv-") as folder:
        module, case_file = Path(folder) / "module.py", Path(folder) / "cases.pt"
        module.write_text(made.source)
        torch.save({name: [case.as_inputs() for case in listed] for name, listed in cases.items()}, case_file)
        while todo:
            def overran(worker_folder: Path) -> str | None:
                try:
                    current = json.loads((worker_folder / "current.json").read_text())
                except (OSError, ValueError):
                    return None
                if time.time() - float(current.get("since", time.time())) > FUNCTION_BUDGET_S:
                    return f"`{current.get('function')}` ran longer than {FUNCTION_BUDGET_S:g} s on its test cases"
                return None

            request = {
                "functions": [
                    {"name": spec.name, "numpy_inputs": spec.numpy_inputs, "needs_windows": spec.needs_windows}
                    for spec in todo
                ]
            }
            result = run_worker(
                CONV_WORKER, request, name="conv", limits=limits, sandbox=sandbox,
                timeout=30 + FUNCTION_BUDGET_S * len(todo), inputs={"module.py": module, "cases.pt": case_file},
                stop=overran,
            )
            done = {item.get("name"): item for item in result.answers.get("functions", []) if isinstance(item, dict)}
            module_error = str(result.answers.get("module_error", ""))
            for spec in list(todo):
                item = done.get(spec.name)
                if item is None:
                    break
                todo.remove(spec)
                answer = answers[spec.name]
                answer.forbidden = [str(f) for f in item.get("forbidden", [])][:10]
                answer.windows = bool(item.get("windows", True))
                if not item.get("defined"):
                    answer.problem = (
                        f"running the notebook's definitions for it failed first ({module_error})"
                        if module_error else "its definition did not run"
                    )
                elif item.get("not_callable"):
                    answer.problem = f"`{spec.name}` is a {item['not_callable']}, not a function"
                else:
                    answer.outputs = _outputs(item, result.tensors.get(spec.name, []), cases[spec.name])
            if todo:  # the worker stopped during todo[0]: that function gets the blame, the rest a new worker
                spec = todo.pop(0)
                why = result.reason or "the grader's worker stopped without answering"
                answers[spec.name].problem = (
                    why if "ran longer" in why else f"calling `{spec.name}` on the test cases stopped its process: {why}"
                )
    return answers
