"""Convolution cases: what each student function must support, the cases drawn from a seed,
the reference answer (``torch.nn.functional.conv2d`` in float64, in the grader's process) and
a message that names the failing case.

Cases come in two sets. The *visible* ones come from a fixed public seed: ``python -m grader
check`` uses only those, so a student sees the same feedback the grader gives. The *hidden* ones
come from a seed only the instructor knows (`resolve_hidden_seed`); ``grade`` uses both. The
first cases of each set change one thing at a time from the simplest case (batch, input
channels, output channels, kernel shape, stride, padding), so a bug that shows only for
stride 2 or only for several input channels is named as such.
"""

from __future__ import annotations

import os
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # torch is imported where it is used: `grader` must start fast without it
    import torch

__all__ = [
    "HIDDEN_SEED_ENV",
    "HIDDEN_SEED_FILE",
    "PUBLIC_SEED",
    "ConvCase",
    "ConvSpec",
    "compare",
    "diagnose",
    "make_cases",
    "reference",
    "resolve_hidden_seed",
]

PUBLIC_SEED = 20240901
HIDDEN_SEED_ENV = "GRADER_HIDDEN_SEED"
# Instructor-only: lives in the instructor's repository, never in the student release.
HIDDEN_SEED_FILE = Path(__file__).resolve().parent / "hidden_seed.txt"

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
    max_side: int = 11


@dataclass
class ConvCase:
    """One call: inputs, options and what makes it special (for messages)."""

    x: torch.Tensor
    kernel: torch.Tensor
    bias: torch.Tensor
    stride: int | None
    padding: int | None

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
        return {"x": self.x, "kernel": self.kernel, "bias": self.bias, "stride": self.stride, "padding": self.padding}


def resolve_hidden_seed(value: int | None = None) -> tuple[int, str]:
    """The hidden-case seed and where it came from.

    Order: ``value`` (the ``--hidden-seed`` flag), ``$GRADER_HIDDEN_SEED``, the instructor's
    file ``grader/hidden_seed.txt``, else a random seed for this run.

    Returns:
        ``(seed, source)``.
    """
    if value is not None:
        return int(value), "--hidden-seed"
    if os.environ.get(HIDDEN_SEED_ENV):
        return int(os.environ[HIDDEN_SEED_ENV]), f"${HIDDEN_SEED_ENV}"
    if HIDDEN_SEED_FILE.is_file():
        text = HIDDEN_SEED_FILE.read_text().strip()
        if text:
            return int(text.split()[0]), str(HIDDEN_SEED_FILE.name)
    return secrets.randbelow(2**31), "random for this run"


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


def make_cases(spec: ConvSpec, *, seed: int, count: int = 12) -> list[ConvCase]:
    """Deterministic cases for ``spec``: the one-change-at-a-time ones, then random ones.

    Args:
        spec: what the function must support.
        seed: the public or the hidden seed.
        count: total number of cases (at least the number of variations).

    Returns:
        The cases, float32 (torch functions) or float64 (numpy function).
    """
    import torch

    generator = torch.Generator().manual_seed(seed)
    shapes = _variations(spec)
    while len(shapes) < count:
        shapes.append(_random_shape(spec, generator))
    return [_build(spec, shape, generator) for shape in shapes]


def reference(case: ConvCase) -> torch.Tensor:
    """``torch.nn.functional.conv2d`` on the case, in float64."""
    import torch.nn.functional as F

    x, kernel, bias = case.x.double(), case.kernel.double(), case.bias.double()
    if x.dim() == 2:
        return F.conv2d(x[None, None], kernel[None, None])[0, 0] + bias  # (H', W')
    return F.conv2d(x, kernel, bias, stride=case.stride or 1, padding=case.padding or 0)  # (N, C_out, H', W')


def compare(case: ConvCase, output: torch.Tensor | str) -> str | None:
    """None when ``output`` matches the reference within tolerance, else what is wrong."""
    import torch

    if isinstance(output, str):
        return f"raised {output}" if not output.startswith("returned") else output
    expected = reference(case)
    if tuple(output.shape) != tuple(expected.shape):
        return f"returned shape {tuple(output.shape)}, expected {tuple(expected.shape)}"
    if not torch.isfinite(output).all():
        return "returned NaN or infinite values"
    error = (output - expected).abs().max().item()
    if not torch.allclose(output, expected, rtol=RTOL, atol=ATOL):
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
