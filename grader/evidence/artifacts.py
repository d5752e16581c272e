"""Verify stage: what a saved model is and how well it does, measured outside the student's kernel.

Metrics are never taken from what a notebook printed. A saved model (a ``torch.export`` archive,
`src.export`) is copied out of the scratch folder (a link or anything but a plain file is
refused) and verified by `grader.evidence.workers.model_worker` in a fresh confined process with a time
and memory limit: the graph is refused before anything runs if it calls an operation outside
`src.export.ALLOWED_OPS`, or if it holds more than a little data beside its weights (a lookup
table of the public test set, say); then it is evaluated on the grader's copy of the Fashion-MNIST
test set, checked against the dataset's checksums first. For the CNN task the file's own graph is
evaluated, again with its convolutions' weights zeroed (do its answers come from them?), and on
the validation images of the notebook's Trainers (is their history this file's?); for the
transfer task the grader's own network, torchvision's ResNet-18 loaded strictly with the file's
weights, is evaluated after the file's saved preprocessing, and its backbone compared with the
pretrained file. A model that hangs, crashes or exhausts memory there is a `ModelEvidence` with an
error, and grading goes on.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from grader.confine.worker import run_worker
from grader.options import Limits
from grader.paths import MODEL_WORKER
from grader.results import SandboxInfo

__all__ = ["ModelEvidence", "grading_data", "grading_weights", "printed_metrics", "test_set", "verify_saved_model"]

MAX_MODEL_BYTES = 1 << 30
MODEL_TIMEOUT_S = 600.0


@dataclass
class ModelEvidence:
    """What the grader measured on a saved model (``error`` set when it could not).

    Attributes:
        path: the file in the scratch folder.
        error: why there is no measurement (missing, a link, refused graph, crash, ...).
        grader_fault: True when the error is the grading machine's, not the submission's.
        acc, f1, confusion_matrix, predictions: on the 10,000 test images (rows: true class).
        parameters: the file's parameter count.
        state_shapes: every tensor of the file's state, by name.
        convolutions: the model part's convolutions (module, weight shape).
        preprocess_ops: ATen operations of the preprocessing part.
        transfer: for the transfer task, see `grader.evidence.workers.model_worker._grader_network`.
        digests: `src.export.weights_digest` of each of the model's tensors, keys without the
            ``model.`` prefix (compared with the notebook's ``model`` and its Trainers' models).
        holdings: bytes of parameters and of other tensors (`model_worker._holdings`).
        without_convolutions: test accuracy with every convolution's weights zeroed (CNN task).
        validation: the file's ``loss`` and ``acc`` on each requested validation set (CNN task),
            None where the indices could not be used.
        seconds_by_step: where the worker's time went (import, load, describe, evaluate, ...).
    """

    path: Path
    error: str = ""
    grader_fault: bool = False
    acc: float | None = None
    f1: float | None = None
    confusion_matrix: list[list[int]] | None = None
    predictions: list[int] = field(default_factory=list, repr=False)
    parameters: int = 0
    state_shapes: dict[str, list[int]] = field(default_factory=dict, repr=False)
    convolutions: list[dict[str, Any]] = field(default_factory=list)
    preprocess_ops: list[str] = field(default_factory=list)
    transfer: dict[str, Any] = field(default_factory=dict)
    digests: dict[str, str] = field(default_factory=dict, repr=False)
    holdings: dict[str, Any] = field(default_factory=dict)
    without_convolutions: dict[str, Any] = field(default_factory=dict)
    validation: list[dict[str, Any] | None] = field(default_factory=list)
    seconds: float = 0.0
    seconds_by_step: dict[str, float] = field(default_factory=dict)


@functools.lru_cache(maxsize=1)
def grading_data() -> Path:
    """The Fashion-MNIST folder the grader evaluates on, its files checked against the dataset's
    checksums (`src.data.verify_fashion_mnist`). Raises ValueError or FileNotFoundError."""
    from src.data import verify_fashion_mnist

    return verify_fashion_mnist()


@functools.lru_cache(maxsize=1)
def test_set() -> Any:
    """The checked test set in memory (the figure checks compare shown images with it)."""
    from src.data import fashion_mnist_tensors

    return fashion_mnist_tensors("test", root=grading_data())


@functools.lru_cache(maxsize=1)
def grading_weights() -> dict[str, Any]:
    """The pretrained ResNet-18 this machine has (`src.models.load_resnet18`), described.

    Returns:
        ``official``, ``sha256``, ``source``, ``path``, ``description``, or ``error`` when no
        weights could be loaded.
    """
    try:
        from src.models import load_resnet18

        _, info = load_resnet18()
    except Exception as error:
        return {"official": False, "sha256": None, "path": None, "error": f"{type(error).__name__}: {error}"}
    return {
        "official": bool(info.official),
        "sha256": info.sha256,
        "source": info.source,
        "path": str(info.path),
        "description": info.description,
    }


def _plain_file(path: Path) -> str:
    """Why ``path`` cannot be read as a file the notebook wrote ("" when it can)."""
    name = path.name
    if path.is_symlink():
        return f"{name} is a symbolic link; the grader reads only files the notebook wrote itself"
    if not path.exists():
        return f"{name} was not written by the notebook"
    if not path.is_file():
        return f"{name} is not a regular file"
    if path.stat().st_size > MAX_MODEL_BYTES:
        return f"{name} is larger than {MAX_MODEL_BYTES >> 30} GiB"
    return ""


MAX_VALIDATION_SETS = 4
MAX_VALIDATION_IMAGES = 60_000


def verify_saved_model(
    path: Path,
    *,
    kind: str,
    sandbox: SandboxInfo,
    limits: Limits,
    validation: list[dict[str, Any]] | None = None,
) -> ModelEvidence:
    """Verify ``path`` in a confined worker.

    Args:
        path: the ``.pt2`` file the notebook wrote, in its scratch folder.
        kind: ``"cnn"`` (Task 1) or ``"transfer"`` (Task 2: compared with the pretrained weights).
        sandbox: confinement for the worker.
        limits: the notebook's limits (the worker gets its memory and time, at most 10 minutes).
        validation: for ``cnn``, validation sets to evaluate the file on, each ``{"split":
            "train" | "test", "indices": [...]}`` (the kernel's claim of which images; the images
            are the grader's). At most 4 sets of at most 60,000 indices are used.

    Returns:
        `ModelEvidence`; never raises for what the file is or does.
    """
    evidence = ModelEvidence(Path(path))
    problem = _plain_file(Path(path))
    if problem:
        evidence.error = problem
        return evidence
    try:
        data = grading_data()
    except (OSError, ValueError) as error:
        evidence.error, evidence.grader_fault = f"the grading machine has no usable Fashion-MNIST ({error})", True
        return evidence
    sets = []
    for wanted in (validation or [])[:MAX_VALIDATION_SETS]:
        indices = wanted.get("indices") if isinstance(wanted, dict) else None
        if wanted.get("split") in ("train", "test") and isinstance(indices, list) and 0 < len(indices) <= MAX_VALIDATION_IMAGES:
            sets.append({"split": wanted["split"], "indices": [int(i) for i in indices]})
        else:
            sets.append({"split": None, "indices": []})
    request: dict[str, Any] = {
        "kind": kind, "data_root": str(data), "weights": None, "validation": sets,
    }
    readonly = [data / "FashionMNIST" / "raw"]
    if kind == "transfer":
        weights = grading_weights()
        if weights.get("error"):
            evidence.error = f"the grading machine has no ResNet-18 weights to compare with ({weights['error']})"
            evidence.grader_fault = True
            return evidence
        request["weights"] = weights["path"]
        readonly.append(Path(weights["path"]))
    worker_limits = Limits(
        memory_gib=max(3.0, limits.memory_gib), processes=min(limits.processes, 256), disk_gib=2.0
    )
    result = run_worker(
        MODEL_WORKER, request, name="model", limits=worker_limits, sandbox=sandbox,
        timeout=min(MODEL_TIMEOUT_S, limits.timeout), inputs={"model.pt2": Path(path)}, readonly=tuple(readonly),
    )
    answers = result.answers
    evidence.seconds = result.elapsed
    evidence.seconds_by_step = {str(k): float(v) for k, v in (answers.get("seconds_by_step") or {}).items()}
    if answers.get("error") or result.status != "ok" or answers.get("step") != "done":
        step = {"load": "loading it", "evaluate": "evaluating it on the test images", "describe": "reading its structure"}
        where = step.get(str(answers.get("step")), "verifying it")
        reason = answers.get("error") or result.reason or "no answer"
        evidence.error = f"{path.name} failed while the grader was {where}: {reason}"
        return evidence
    try:
        if "acc" in answers:  # none when the transfer file is not a ResNet-18 (`transfer["problem"]` says why)
            evidence.acc, evidence.f1 = float(answers["acc"]), float(answers["f1"])
            evidence.confusion_matrix = [[int(v) for v in row] for row in answers["confusion_matrix"]]
            evidence.predictions = [int(p) for p in answers["predictions"]]
        evidence.parameters = int(answers["parameters"])
        evidence.state_shapes = {str(k): [int(d) for d in v] for k, v in answers["state_shapes"].items()}
        evidence.convolutions = list(answers.get("convolutions", []))
        evidence.preprocess_ops = [str(op) for op in answers.get("preprocess_ops", [])]
        evidence.transfer = dict(answers.get("transfer") or {})
        evidence.digests = {str(k): str(v) for k, v in (answers.get("digests") or {}).items()}
        evidence.holdings = dict(answers.get("holdings") or {})
        evidence.without_convolutions = dict(answers.get("without_convolutions") or {})
        evidence.validation = [dict(v) if isinstance(v, dict) else None for v in answers.get("validation") or []]
    except (KeyError, TypeError, ValueError) as error:
        evidence.error, evidence.grader_fault = f"the grader could not read its own worker's answer ({error})", True
    return evidence


# A metric's value printed after its label: a number, then maybe a percent sign (group 2).
METRIC_VALUE = r"([0-9]*\.?[0-9]+)\s*(%?)"
_PATTERNS = {
    "acc": re.compile(r"acc(?:uracy)?[^0-9\n]{0,20}?[:=]?\s*" + METRIC_VALUE, re.IGNORECASE),
    "f1": re.compile(r"f1(?:[-_ ]?score)?(?:[-_ ]?macro)?[^0-9\n]{0,20}?[:=]?\s*" + METRIC_VALUE, re.IGNORECASE),
}


MAX_SCANNED_CHARS = 200_000  # of each output: the regular expressions' time stays bounded


def printed_metrics(notebook: Any) -> dict[str, float]:
    """The last accuracy and F1 the notebook printed (stream and text outputs), as fractions.

    Deliberately simple: ``accuracy: 0.91``, ``acc = 91.2%``, ``{'acc': 0.91, 'f1': 0.90}``.
    Only the last `MAX_SCANNED_CHARS` of each output are read.
    """
    found: dict[str, float] = {}
    for cell in getattr(notebook, "cells", []):
        for output in cell.get("outputs", []):
            text = output.get("text") or output.get("data", {}).get("text/plain") or ""
            if isinstance(text, list):
                text = "".join(str(part) for part in text)
            if not isinstance(text, str):
                continue
            text = text[-MAX_SCANNED_CHARS:]
            for name, pattern in _PATTERNS.items():
                for match in pattern.finditer(text):
                    value = float(match.group(1))
                    if match.group(2) == "%" or 1 < value <= 100:
                        value /= 100
                    if 0 <= value <= 1:
                        found[name] = value
    return found
