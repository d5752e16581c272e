"""The figures a training notebook shows, checked by what they show, not by the words near them.

Each matplotlib figure a notebook displays carries its description next to its PNG
(`grader.run.kernel_side.describe_figure`: per axes the lines' data, the images' pixels, the titles
and texts). The checks compare those with what the grader knows on its own:

* the loss plot: a line with one point per trained epoch whose values are the loss in a
  `src.engine.Trainer`'s history;
* the confusion matrix: a 10 x 10 image or heatmap (or a printed table) equal to the confusion
  matrix the grader computed for the saved model on the test set (counts, or normalised by row,
  column or total; either orientation);
* the image grid: at least `MIN_IMAGES` panels, each showing a Fashion-MNIST test image (found by
  correlation with the grader's copy of the test set), titled with its true class and the class
  the saved model predicts for it.

The description is produced in the student's kernel, so it can be forged; a forgery passes only by
holding the grader's own numbers (the model's confusion matrix, the right test images with the
right classes), which is the work the task asks for. A picture without a description (an image
file displayed with ``IPython.display.Image``) cannot be read: it is left for the instructor,
with no automatic points.

The grader reads these descriptions in its own process, so it reads only what fits the bounds of
an honest one (`bounded`: so many figures, axes, lines, points, pixels; anything else is
dropped, never an error), and only the end of long printed outputs.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from grader.run.kernel_side import FIGURE_MIME

__all__ = ["MIN_IMAGES", "Shown", "confusion_verdict", "grid_verdict", "loss_verdict", "shown_figures", "unreadable"]

MIN_IMAGES = 4
# What the grader reads of a notebook's figures (kernel_side describes no more than this).
MAX_FIGURES = 200
MAX_AXES = 64
MAX_LINES = 16
MAX_POINTS = 5000
MAX_IMAGES = 4
MAX_SIDE = 32
MAX_MESH = 10_000
MAX_TEXTS = 300
MAX_TEXT = 200
MAX_NUMBERS = 1_000_000  # over all the figures of a notebook (an honest one shows about 30,000)
MAX_PRINTED_CHARS = 200_000  # of each printed output scanned for a table
MAX_TABLES = 2000  # candidate 10 x 10 tables compared with the confusion matrix
MAX_PANELS = 256  # images matched against the 10,000 test images, over all figures
MATCH = 0.7  # correlation with the test image it shows: 1.0 shown as is, less when clipped or resized
AGREEMENT = 0.75  # predicted classes in the titles that must agree with the saved model's


@dataclass
class Shown:
    """One figure in the executed notebook: the cell that showed it and its description (None
    when it is a picture the grader cannot read)."""

    cell: int
    description: dict[str, Any] | None


def shown_figures(notebook: Any) -> list[Shown]:
    """Every picture the notebook's outputs hold, in order (at most `MAX_FIGURES`), each
    description cut to the bounds of an honest one (`bounded`)."""
    found: list[Shown] = []
    budget = [MAX_NUMBERS]
    for index, cell in enumerate(getattr(notebook, "cells", [])):
        if cell.get("cell_type") != "code":
            continue
        for output in cell.get("outputs", []):
            data = output.get("data", {}) if isinstance(output, dict) else {}
            if not isinstance(data, dict) or not ("image/png" in data or FIGURE_MIME in data):
                continue
            description = data.get(FIGURE_MIME)
            found.append(Shown(index, bounded(description, budget) if isinstance(description, dict) else None))
            if len(found) >= MAX_FIGURES:
                return found
    return found


def _text(value: Any) -> str:
    return value[:MAX_TEXT] if isinstance(value, str) else ""


def _numbers(values: Any, limit: int, budget: list[int]) -> list[Any]:
    if not isinstance(values, list):
        return []
    limit = max(0, min(limit, budget[0]))
    budget[0] -= min(limit, len(values))
    return [v if isinstance(v, (int, float)) and not isinstance(v, bool) else None for v in values[:limit]]


def _grid(data: Any, side: int, budget: list[int]) -> list[list[Any]] | None:
    if not isinstance(data, list) or not data or len(data) > side:
        return None
    rows = [_numbers(row, side + 1, budget) for row in data]
    return rows if all(0 < len(row) <= side for row in rows) else None


def bounded(description: dict[str, Any], budget: list[int] | None = None) -> dict[str, Any]:
    """A figure's description (`grader.run.kernel_side.describe_figure`) with only what an honest one
    holds: well-typed fields, at most `MAX_AXES` axes of `MAX_LINES` lines of `MAX_POINTS` points,
    `MAX_IMAGES` images of `MAX_SIDE` x `MAX_SIDE` pixels, meshes of `MAX_MESH` values, and
    ``budget`` numbers in all (shared by a notebook's figures). The rest is dropped: reading it
    costs the grader bounded time whatever the kernel sent."""
    budget = budget if budget is not None else [MAX_NUMBERS]
    axes = []
    for ax in (description.get("axes") if isinstance(description.get("axes"), list) else [])[:MAX_AXES]:
        if not isinstance(ax, dict):
            continue
        lines = [
            {"x": _numbers(line.get("x"), MAX_POINTS, budget), "y": _numbers(line.get("y"), MAX_POINTS, budget)}
            for line in (ax.get("lines") if isinstance(ax.get("lines"), list) else [])[:MAX_LINES]
            if isinstance(line, dict)
        ]
        images = [
            {"shape": _numbers(image.get("shape"), 4, budget), "data": _grid(image.get("data"), MAX_SIDE, budget)}
            for image in (ax.get("images") if isinstance(ax.get("images"), list) else [])[:MAX_IMAGES]
            if isinstance(image, dict)
        ]
        meshes = [
            {"shape": _numbers(mesh.get("shape"), 4, budget), "data": _numbers(mesh.get("data"), MAX_MESH, budget)}
            for mesh in (ax.get("meshes") if isinstance(ax.get("meshes"), list) else [])[:MAX_IMAGES]
            if isinstance(mesh, dict)
        ]
        texts = ax.get("texts") if isinstance(ax.get("texts"), list) else []
        axes.append({
            **{key: _text(ax.get(key)) for key in ("title", "xlabel", "ylabel")},
            "texts": [_text(t) for t in texts[:MAX_TEXTS]],
            "lines": lines,
            "images": images,
            "meshes": meshes,
        })
    return {"axes": axes, "suptitle": _text(description.get("suptitle"))}


def _axes(figures: list[Shown]):
    for figure in figures:
        for ax in (figure.description or {}).get("axes", []) or []:
            if isinstance(ax, dict):
                yield figure.cell, ax


def unreadable(figures: list[Shown]) -> list[int]:
    """Cells that show a picture without a description (not a matplotlib figure)."""
    return sorted({f.cell for f in figures if f.description is None})


# ----------------------------------------------------------------------------- loss by epoch


def _close(values: list[Any], expected: list[float]) -> bool:
    if len(values) != len(expected) or not expected:
        return False
    for value, wanted in zip(values, expected):
        if value is None or abs(float(value) - wanted) > 1e-4 * max(1.0, abs(wanted)):
            return False
    return True


def loss_verdict(figures: list[Shown], histories: list[dict[str, list[float]]]) -> tuple[bool, str]:
    """Is a per-epoch loss curve of a Trainer's history shown?"""
    if not histories:
        return False, (
            "no src.engine.Trainer in the notebook has a training history to compare the plot with: "
            "train with the Trainer and plot trainer.history (or the history train() returns)"
        )
    lengths = sorted({len(h.get("train_loss", [])) for h in histories})
    lines = 0
    for cell, ax in _axes(figures):
        for line in ax.get("lines", []) or []:
            lines += 1
            y = line.get("y", []) if isinstance(line, dict) else []
            for history in histories:
                for key in ("train_loss", "val_loss"):
                    if _close(y, history.get(key, [])):
                        return True, f"cell {cell} plots the {key.replace('_', ' ')} of {len(y)} epochs from the training history"
    if lines:
        return False, (
            f"the notebook shows {lines} line(s), but none has one point per trained epoch "
            f"({', '.join(map(str, lengths))}) with the loss values of the Trainer's history"
        )
    return False, "the executed notebook shows no line plot of the loss by epoch"


# ----------------------------------------------------------------------------- confusion matrix


def _matrices(figures: list[Shown], notebook: Any, size: int) -> list[tuple[int, list[list[float]]]]:
    """Every size x size grid of numbers the notebook shows: images, heatmaps, printed tables."""
    found = []
    for cell, ax in _axes(figures):
        for image in ax.get("images", []) or []:
            data = image.get("data") if isinstance(image, dict) else None
            if isinstance(data, list) and len(data) == size and all(isinstance(r, list) and len(r) == size for r in data):
                found.append((cell, data))
        for mesh in ax.get("meshes", []) or []:
            values = mesh.get("data") if isinstance(mesh, dict) else None
            if isinstance(values, list) and len(values) == size * size:
                found.append((cell, [values[i * size : (i + 1) * size] for i in range(size)]))
    for index, cell in enumerate(getattr(notebook, "cells", [])):
        for output in cell.get("outputs", []) if cell.get("cell_type") == "code" else []:
            text = output.get("text") or output.get("data", {}).get("text/plain") or ""
            text = "".join(str(part) for part in text) if isinstance(text, list) else text
            if not isinstance(text, str):
                continue
            text = text[-MAX_PRINTED_CHARS:]
            rows = [
                [float(v) for v in re.findall(r"-?\d+(?:\.\d+)?(?:e-?\d+)?", line)]
                for line in text.splitlines()
            ]
            rows = [row[-size:] for row in rows if len(row) >= size]
            for start in range(0, len(rows) - size + 1):
                found.append((index, rows[start : start + size]))
    return found[-MAX_TABLES:]  # the last ones: a confusion matrix is shown after training


def _same_matrix(shown: list[list[float]], counts: list[list[int]]) -> bool:
    import numpy as np

    try:
        candidate = np.array(shown, dtype=float)
    except (TypeError, ValueError):
        return False
    if not np.isfinite(candidate).all():
        return False
    truth = np.array(counts, dtype=float)
    total = truth.sum()
    # Up to 10 images predicted differently (the kernel and the grader may differ in the last
    # digits of a logit near a tie): each moves one count between two cells.
    if min(np.abs(candidate - truth).sum(), np.abs(candidate - truth.T).sum()) <= 20:
        return True
    rows = truth / np.maximum(truth.sum(axis=1, keepdims=True), 1)
    cols = truth / np.maximum(truth.sum(axis=0, keepdims=True), 1)
    for normalised in (rows, cols, truth / max(total, 1)):
        for form in (normalised, normalised.T):
            if np.abs(candidate - form).max() <= 0.01 or np.abs(candidate - 100 * form).max() <= 1.0:
                return True
    return False


def confusion_verdict(figures: list[Shown], notebook: Any, counts: list[list[int]]) -> tuple[bool, str]:
    """Is the saved model's confusion matrix on the test set shown (or printed)?"""
    candidates = _matrices(figures, notebook, len(counts))
    for cell, matrix in candidates:
        if _same_matrix(matrix, counts):
            return True, f"cell {cell} shows the confusion matrix of the saved model on the test set"
    if candidates:
        return False, (
            f"cell {candidates[0][0]} shows a {len(counts)} x {len(counts)} table, but not the confusion matrix "
            "the grader computed for your saved model on the test set (rows: true class, columns: predicted); "
            "compute it from the test predictions of the model you saved"
        )
    return False, "the executed notebook shows no 10 x 10 confusion matrix (as a figure or printed)"


# ----------------------------------------------------------------------------- image grid


def _class_names_in(text: str, names: list[str]) -> list[int]:
    """Classes named in ``text``, in order of appearance (longest names first: "T-shirt/top" is
    not also "Shirt")."""
    lowered = text.lower()
    spans: list[tuple[int, int]] = []
    hits = []
    for index in sorted(range(len(names)), key=lambda i: -len(names[i])):
        name = names[index].lower()
        start = lowered.find(name)
        while start >= 0:
            end = start + len(name)
            if not any(s < end and start < e for s, e in spans):
                spans.append((start, end))
                hits.append((start, index))
            start = lowered.find(name, end)
    return [index for _, index in sorted(hits)]


def _best_match(image: list[list[Any]], flat_test: Any) -> tuple[int, float]:
    """The test image most correlated with a shown one, and the correlation."""
    import torch
    import torch.nn.functional as F

    try:
        shown = torch.tensor([[float("nan") if v is None else float(v) for v in row] for row in image])
    except (TypeError, ValueError):
        return -1, 0.0
    if shown.dim() != 2 or not torch.isfinite(shown).all() or shown.numel() < 16:
        return -1, 0.0
    if tuple(shown.shape) != (28, 28):
        shown = F.interpolate(shown[None, None], size=(28, 28), mode="bilinear", align_corners=True)[0, 0]
    vector = shown.flatten()
    vector = vector - vector.mean()
    norm = vector.norm()
    if norm == 0:
        return -1, 0.0
    scores = flat_test @ (vector / norm)  # (10000,)
    best = int(scores.argmax())
    return best, float(scores[best])


def grid_verdict(figures: list[Shown], test: Any, predictions: list[int] | None) -> tuple[bool, str]:
    """Are several test images shown, each titled with its true and its predicted class?

    Args:
        figures: the notebook's figures.
        test: the grader's test set (``images`` (N, 1, 28, 28), ``targets``, ``classes``).
        predictions: the saved model's prediction for each test image (None: no saved model).
    """
    flat = test.images.flatten(1)
    flat = flat - flat.mean(dim=1, keepdim=True)
    flat = flat / flat.norm(dim=1, keepdim=True).clamp_min(1e-8)
    names = list(test.classes)
    best_figure = (0, 0, 0, 0, None)  # (titled, matched, panels, agreeing, cell)
    examined = 0
    for figure in figures:
        panels = [
            ax for ax in (figure.description or {}).get("axes", []) or []
            if isinstance(ax, dict) and any(isinstance(i, dict) and i.get("data") for i in ax.get("images", []) or [])
        ]
        matched = titled = agreeing = 0
        panels = panels[: max(0, MAX_PANELS - examined)]
        examined += len(panels)
        for ax in panels:
            image = next(i["data"] for i in ax["images"] if isinstance(i, dict) and i.get("data"))
            index, score = _best_match(image, flat)
            if index < 0 or score < MATCH:
                continue
            matched += 1
            text = " ".join(str(ax.get(key, "")) for key in ("title", "xlabel", "ylabel"))
            text += " " + " ".join(str(t) for t in ax.get("texts", []) or [])
            mentioned = _class_names_in(text, names)
            truth = int(test.targets[index])
            if truth not in mentioned or len(mentioned) < 2:
                continue
            rest = list(mentioned)
            rest.remove(truth)
            titled += 1
            if predictions is None or predictions[index] in rest:
                agreeing += 1
        if (titled, matched) > best_figure[:2]:
            best_figure = (titled, matched, len(panels), agreeing, figure.cell)
    titled, matched, panels, agreeing, cell = best_figure
    if titled >= MIN_IMAGES and agreeing >= AGREEMENT * titled:
        return True, f"cell {cell} shows {titled} test images, each titled with its true and predicted class"
    if titled >= MIN_IMAGES:
        return False, (
            f"cell {cell} shows {titled} test images with two class names each, but only {agreeing} of the "
            "predicted classes are what your saved model predicts for them: title each image with the "
            "model's prediction"
        )
    if matched:
        return False, (
            f"cell {cell} shows {matched} test image(s) but only {titled} with both its true and its predicted "
            f"class in the title (use the names in test_dataset.classes); at least {MIN_IMAGES} are needed"
        )
    return False, (
        f"the executed notebook shows no grid of test images (at least {MIN_IMAGES} images from the test set, "
        "each titled with its true and predicted class)"
    )
