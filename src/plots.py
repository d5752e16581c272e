"""Plots for the notebooks: loss by epoch, confusion matrix, test images with predictions.

Each function draws a new pyplot figure and returns it; none calls ``plt.show()``. In Jupyter
the figure appears once at the end of the cell: write ``fig = plot_history(history)`` (or end
the line with ``;``), because a ``Figure`` left as the cell's last value is shown a second
time. In a script, call ``plt.show()`` or ``fig.savefig(path)``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Literal

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator
from sklearn.metrics import ConfusionMatrixDisplay

MISTAKE_COLOR = "red"


def _as_numpy(values: Any, name: str) -> np.ndarray:
    if hasattr(values, "detach"):  # torch.Tensor, without importing torch here
        values = values.detach().cpu().numpy()
    try:
        return np.asarray(values)
    except (TypeError, ValueError) as err:
        raise TypeError(
            f"{name} must be array-like (list, numpy array or tensor), got {type(values).__name__}"
        ) from err


def plot_history(history: Mapping[str, Sequence[float]]) -> Figure:
    """Plot train and validation loss by epoch, and validation accuracy when there is one.

    Args:
        history: the Trainer's ``history`` dict of per-epoch lists: ``train_loss`` (required),
            ``val_loss`` and ``val_acc`` (optional, may be empty); other keys (``lr``,
            ``epoch_time``) are not drawn.

    Returns:
        The figure: one axes "Loss by epoch", plus "Validation accuracy" if ``val_acc`` is not empty.
    """
    if not isinstance(history, Mapping):
        raise TypeError(f"history must be a dict of per-epoch lists (trainer.history), got {type(history).__name__}")
    train_loss = list(history.get("train_loss") or [])
    if not train_loss:
        raise ValueError(f"history['train_loss'] must be a non-empty list; history has keys {sorted(history)}")
    n = len(train_loss)
    series = {}
    for key in ("val_loss", "val_acc"):
        values = list(history.get(key) or [])
        if values and len(values) != n:
            raise ValueError(f"history[{key!r}] has {len(values)} values, expected {n} (one per epoch like train_loss)")
        series[key] = values

    epochs = np.arange(1, n + 1)
    ncols = 2 if series["val_acc"] else 1
    fig, axes = plt.subplots(1, ncols, figsize=(6 * ncols, 4), squeeze=False, layout="constrained")
    ax = axes[0, 0]
    ax.plot(epochs, train_loss, marker="o", label="train")
    if series["val_loss"]:
        ax.plot(epochs, series["val_loss"], marker="o", label="validation")
    ax.set(title="Loss by epoch", xlabel="epoch", ylabel="loss")
    ax.legend()
    if series["val_acc"]:
        acc_ax = axes[0, 1]
        acc_ax.plot(epochs, series["val_acc"], marker="o", color="tab:green", label="validation")
        acc_ax.set(title="Validation accuracy", xlabel="epoch", ylabel="accuracy")
        acc_ax.legend()
    for a in axes.flat:
        a.xaxis.set_major_locator(MaxNLocator(integer=True))
        a.grid(alpha=0.3)
    return fig


def plot_confusion_matrix(
    cm: Any,
    class_names: Sequence[str],
    *,
    normalize: Literal["true", "pred", "all"] | None = None,
) -> Figure:
    """Draw a confusion matrix with sklearn's ``ConfusionMatrixDisplay``.

    Args:
        cm: ``(K, K)`` counts, rows = true class, columns = predicted class (as returned by
            ``evaluate_loader(...)["confusion_matrix"]``).
        class_names: the ``K`` class names.
        normalize: ``None`` (counts), ``"true"`` (each row sums to 1, i.e. recall on the
            diagonal), ``"pred"`` (each column sums to 1) or ``"all"``.

    Returns:
        The figure.
    """
    matrix = _as_numpy(cm, "cm")
    names = list(class_names)
    if matrix.ndim != 2 or matrix.shape[0] != matrix.shape[1]:
        raise ValueError(f"cm must be a square (K, K) matrix, got shape {matrix.shape}")
    if matrix.shape[0] != len(names):
        raise ValueError(f"cm is {matrix.shape[0]}x{matrix.shape[1]} but {len(names)} class_names were given")
    if np.any(matrix < 0):
        raise ValueError("cm must hold non-negative counts")
    if normalize not in (None, "true", "pred", "all"):
        raise ValueError(f"normalize must be None, 'true', 'pred' or 'all', got {normalize!r}")

    if normalize is not None:
        matrix = matrix.astype(float)
        sums = {
            "true": matrix.sum(axis=1, keepdims=True),  # (K, 1): each true class's row sums to 1
            "pred": matrix.sum(axis=0, keepdims=True),  # (1, K)
            "all": matrix.sum(),
        }[normalize]
        matrix = np.divide(matrix, sums, out=np.zeros_like(matrix), where=sums != 0)  # empty rows stay 0

    fig, ax = plt.subplots(figsize=(max(6, 0.8 * len(names)), max(5, 0.7 * len(names))), layout="constrained")
    ConfusionMatrixDisplay(matrix, display_labels=names).plot(
        ax=ax,
        cmap="Blues",
        xticks_rotation=45,
        values_format=".2f" if normalize else "d",
        colorbar=False,
    )
    plt.setp(ax.get_xticklabels(), ha="right", rotation_mode="anchor")
    ax.set_title("Confusion matrix" + (f" (normalized over {normalize})" if normalize else ""))
    return fig


def plot_predictions(
    images: Any,
    targets: Any,
    predictions: Any,
    class_names: Sequence[str],
    *,
    n: int = 16,
    ncols: int = 8,
) -> Figure:
    """Show test images titled ``"true / pred"``; wrong predictions have red titles.

    Args:
        images: ``(N, 1, H, W)`` grey images in ``[0, 1]`` (the kit's canonical input, before
            any ``ImageNetInput``), tensor or array.
        targets: ``N`` true class indices.
        predictions: ``N`` predicted class indices.
        class_names: names indexed by class.
        n: how many of the first images to show.
        ncols: images per row.

    Returns:
        The figure, one axes per image shown.
    """
    images = _as_numpy(images, "images")
    targets = _as_numpy(targets, "targets").reshape(-1)
    predictions = _as_numpy(predictions, "predictions").reshape(-1)
    names = list(class_names)
    if images.ndim != 4 or images.shape[1] != 1:
        raise ValueError(
            f"images must be (N, 1, H, W) grey images in [0, 1], got shape {images.shape}; "
            "pass the canonical images, not the 3-channel normalised ResNet input"
        )
    if not len(images) == len(targets) == len(predictions):
        raise ValueError(
            f"images, targets and predictions must have the same length, "
            f"got {len(images)}, {len(targets)} and {len(predictions)}"
        )
    for label_name, labels in (("targets", targets), ("predictions", predictions)):
        if labels.size and (labels.min() < 0 or labels.max() >= len(names)):
            raise ValueError(
                f"{label_name} must be class indices in [0, {len(names) - 1}], got {labels.min()}..{labels.max()}"
            )
    for option, value in (("n", n), ("ncols", ncols)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{option} must be a positive int, got {value!r}")

    count = min(n, len(images))
    if count == 0:
        raise ValueError("no images to show (got 0)")
    ncols = min(ncols, count)
    nrows = -(-count // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(1.7 * ncols, 2.0 * nrows), squeeze=False, layout="constrained")
    for i, ax in enumerate(axes.flat):
        if i >= count:
            ax.remove()  # the last row may be short
            continue
        true, pred = int(targets[i]), int(predictions[i])
        mistake = true != pred
        ax.imshow(images[i, 0], cmap="gray", vmin=0, vmax=1)
        ax.set_title(f"{names[true]} / {names[pred]}", fontsize=8, color=MISTAKE_COLOR if mistake else "black")
        ax.set_xticks([])
        ax.set_yticks([])
        for spine in ax.spines.values():  # a red frame around mistakes, no frame otherwise
            spine.set_visible(mistake)
            spine.set_color(MISTAKE_COLOR)
            spine.set_linewidth(2)
    fig.suptitle("true / predicted (mistakes in red)", fontsize=10)
    return fig
