"""Verify stage: load the saved models in the grader's own process and measure them.

Metrics are never taken from what a notebook printed. A saved model is a ``torch.export``
archive that `src.export.load_model` loads without importing or running any of the student's
code; it is evaluated on the canonical Fashion-MNIST test set (`src.data`) with the engine's
`src.engine.evaluate_loader` (accuracy, macro-F1, confusion matrix). For the transfer task the
saved backbone is compared with the pretrained checkpoint this machine has: a frozen random
ResNet-18 with a trained head reaches about 0.80 here, so the metric bar alone does not prove
transfer; equal frozen weights do.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["ModelMetrics", "compare_backbone", "evaluate_saved_model", "grading_weights", "printed_metrics"]


@dataclass
class ModelMetrics:
    """What the grader measured on a saved model (``error`` set when it could not)."""

    path: Path
    acc: float | None = None
    f1: float | None = None
    confusion_matrix: list[list[int]] | None = None
    state_dict: dict[str, Any] = field(default_factory=dict, repr=False)
    error: str = ""


@functools.lru_cache(maxsize=1)
def _test_set() -> Any:
    from src.data import fashion_mnist_tensors

    return fashion_mnist_tensors("test")


def evaluate_saved_model(path: Path, *, batch_size: int = 500, device: str | None = None) -> ModelMetrics:
    """Load ``path`` with `src.export.load_model` and evaluate it on the Fashion-MNIST test set.

    Args:
        path: the ``.pt2`` file the notebook wrote.
        batch_size: evaluation batch size.
        device: where to evaluate; None lets `src.engine.pick_device` choose.

    Returns:
        `ModelMetrics`; ``error`` explains a missing or unloadable file (never raises for those).
    """
    result = ModelMetrics(Path(path))
    if not Path(path).is_file():
        result.error = f"{Path(path).name} was not written by the notebook"
        return result
    from torch.utils.data import DataLoader

    from src.engine import evaluate_loader
    from src.export import load_model

    try:
        module, _ = load_model(path, device=device)
    except Exception as error:
        result.error = f"{Path(path).name} could not be loaded: {type(error).__name__}: {error}"
        return result
    try:
        metrics = evaluate_loader(DataLoader(_test_set(), batch_size=batch_size), module)
    except Exception as error:
        result.error = f"{Path(path).name} loads but fails on the test images: {type(error).__name__}: {error}"
        return result
    result.acc = float(metrics["acc"])
    result.f1 = float(metrics["f1"])
    result.confusion_matrix = metrics["confusion_matrix"].tolist()
    result.state_dict = {name: tensor.detach().cpu() for name, tensor in module.state_dict().items()}
    return result


@functools.lru_cache(maxsize=1)
def grading_weights() -> tuple[Any, dict[str, Any]]:
    """The pretrained ResNet-18 this machine has (`src.models.load_resnet18`) and a description.

    Returns:
        ``(state_dict or None, info)``; ``info`` has ``official``, ``sha256``, ``source``,
        ``path``, ``description``, or ``error`` when no weights could be loaded.
    """
    try:
        from src.models import load_resnet18

        model, info = load_resnet18()
    except Exception as error:
        return None, {"official": False, "sha256": None, "error": f"{type(error).__name__}: {error}"}
    parameters = {name: p.detach().clone() for name, p in model.named_parameters()}
    return parameters, {
        "official": bool(info.official),
        "sha256": info.sha256,
        "source": info.source,
        "path": str(info.path),
        "description": info.description,
    }


def compare_backbone(saved: dict[str, Any], *, prefix: str = "model.", head: str = "fc") -> dict[str, Any]:
    """Compare the saved model's backbone parameters with the pretrained ones.

    Args:
        saved: the saved model's state dict (keys ``model.<name>``).
        prefix: prefix of the model's keys in ``saved``.
        head: the replaced layer, left out of the comparison.

    Returns:
        ``{"compared", "missing": [names], "changed": [(name, largest abs change)], "error"}``.
    """
    import torch

    pretrained, info = grading_weights()
    if pretrained is None:
        return {"compared": 0, "missing": [], "changed": [], "error": info["error"]}
    missing, changed, compared = [], [], 0
    for name, weight in pretrained.items():
        if name.startswith(f"{head}."):
            continue
        key = prefix + name
        if key not in saved:
            missing.append(name)
            continue
        value = saved[key]
        compared += 1
        if value.shape != weight.shape:
            changed.append((name, float("inf")))
        elif not torch.equal(value.to(weight.dtype), weight):
            changed.append((name, float((value.to(weight.dtype) - weight).abs().max())))
    return {"compared": compared, "missing": missing, "changed": changed, "error": ""}


_NUMBER = r"([0-9]*\.?[0-9]+)\s*(%?)"
_PATTERNS = {
    "acc": re.compile(r"acc(?:uracy)?[^0-9\n]{0,20}?[:=]?\s*" + _NUMBER, re.IGNORECASE),
    "f1": re.compile(r"f1(?:[-_ ]?score)?(?:[-_ ]?macro)?[^0-9\n]{0,20}?[:=]?\s*" + _NUMBER, re.IGNORECASE),
}


def printed_metrics(notebook: Any) -> dict[str, float]:
    """The last accuracy and F1 the notebook printed (stream and text outputs), as fractions.

    Deliberately simple: ``accuracy: 0.91``, ``acc = 91.2%``, ``{'acc': 0.91, 'f1': 0.90}``.
    """
    found: dict[str, float] = {}
    for cell in getattr(notebook, "cells", []):
        for output in cell.get("outputs", []):
            text = output.get("text") or output.get("data", {}).get("text/plain") or ""
            if isinstance(text, list):
                text = "".join(text)
            for name, pattern in _PATTERNS.items():
                for match in pattern.finditer(text):
                    value = float(match.group(1))
                    if match.group(2) == "%" or 1 < value <= 100:
                        value /= 100
                    if 0 <= value <= 1:
                        found[name] = value
    return found
