"""Probe stage: ask the live kernel for what only it has, exchanging data, never objects.

The grader writes a question's inputs with ``torch.save`` into the kernel's runtime folder,
sends code that loads them, calls one function of `grader.kernel_side` on the kernel's
namespace and ``torch.save``-s the answer; the grader reads it back with
``torch.load(weights_only=True)``, which can rebuild tensors, numbers, strings and containers
but cannot run code. Nothing the student defined is ever unpickled in the grader's process.
"""

from __future__ import annotations

import itertools
import textwrap
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from grader import kernel_side
from grader.kernel import Kernel

__all__ = ["PROBE_TIMEOUT_S", "ProbeAnswer", "ask"]

PROBE_TIMEOUT_S = 120.0

_KERNEL_SIDE = (Path(__file__).parent / "kernel_side.py").read_text(encoding="utf-8")
_counter = itertools.count()


@dataclass
class ProbeAnswer:
    """The answer to one question.

    Attributes:
        ok: the question was answered.
        value: the answer (a dict of plain data) when ``ok``.
        error: why there is no answer (the kernel died, timed out, the grader code failed).
    """

    ok: bool
    value: dict[str, Any] = field(default_factory=dict)
    error: str = ""


def ask(
    kernel: Kernel | None,
    function: str,
    *,
    inputs: dict[str, Any] | None = None,
    timeout: float = PROBE_TIMEOUT_S,
) -> ProbeAnswer:
    """Call ``grader.kernel_side.<function>(ns, **inputs)`` inside the kernel.

    Args:
        kernel: the notebook's live kernel, or None when none survived the run.
        function: name of a function in `grader.kernel_side`.
        inputs: keyword arguments, any data ``torch.save`` can write (tensors, numbers, ...).
        timeout: seconds for the whole call (the student's code it calls included).

    Returns:
        A `ProbeAnswer`; never raises for what happens in the kernel.
    """
    if not callable(getattr(kernel_side, function, None)):
        raise ValueError(f"grader.kernel_side has no function {function!r}")
    if kernel is None:
        return ProbeAnswer(False, error="no kernel survived the run")
    import torch  # here, not at the top: a notebook without probes grades without torch

    number = next(_counter)
    in_path = kernel.runtime_dir / f"probe-{number}-in.pt"
    out_path = kernel.runtime_dir / f"probe-{number}-out.pt"
    torch.save(inputs or {}, in_path)
    code = (
        "def __grader_probe():\n"
        "    import torch\n"
        + textwrap.indent(_KERNEL_SIDE, "    ")
        + f"\n    inputs = torch.load({str(in_path)!r}, weights_only=True)\n"
        f"    answer = {function}(get_ipython().user_ns, **inputs)\n"
        f"    torch.save(answer, {str(out_path)!r})\n"
        "try:\n"
        "    __grader_probe()\n"
        "finally:\n"
        "    del __grader_probe\n"
    )
    outcome = kernel.run_code(code, timeout=timeout)
    try:
        if outcome.status != "ok":
            detail = outcome.error_message
            if outcome.status == "error":
                detail = f"{outcome.error_name}: {outcome.error_message}"
            elif outcome.status == "timeout":
                detail = f"no answer within {timeout:g} s (the kernel was interrupted)"
            return ProbeAnswer(False, error=detail)
        try:
            value = torch.load(out_path, weights_only=True)
        except Exception as error:
            return ProbeAnswer(False, error=f"the kernel's answer could not be read safely ({error})")
        if not isinstance(value, dict):
            return ProbeAnswer(False, error=f"the kernel's answer is a {type(value).__name__}, not a dict")
        return ProbeAnswer(True, value)
    finally:
        in_path.unlink(missing_ok=True)
        out_path.unlink(missing_ok=True)
