"""Tests for src.plots: what each figure contains, and the errors for mismatched inputs."""

import matplotlib

matplotlib.use("Agg")  # no display in tests

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from matplotlib.colors import to_rgba  # noqa: E402

from src.data import FASHION_MNIST_CLASSES  # noqa: E402
from src.plots import plot_confusion_matrix, plot_history, plot_predictions  # noqa: E402

NAMES = list(FASHION_MNIST_CLASSES)


@pytest.fixture(autouse=True)
def close_figures():
    yield
    plt.close("all")


# ------------------------------------------------------------------ history


def test_history_with_validation():
    history = {"train_loss": [1.0, 0.6, 0.4], "val_loss": [0.9, 0.7, 0.5], "val_acc": [0.6, 0.7, 0.8], "lr": [0.1] * 3}
    fig = plot_history(history)

    loss_ax, acc_ax = fig.axes
    assert loss_ax.get_title() == "Loss by epoch" and acc_ax.get_title() == "Validation accuracy"
    train, val = loss_ax.get_lines()
    assert list(train.get_xdata()) == [1, 2, 3] and list(train.get_ydata()) == [1.0, 0.6, 0.4]
    assert list(val.get_ydata()) == [0.9, 0.7, 0.5]
    assert [t.get_text() for t in loss_ax.get_legend().get_texts()] == ["train", "validation"]
    assert list(acc_ax.get_lines()[0].get_ydata()) == [0.6, 0.7, 0.8]
    ticks = [t for t in loss_ax.get_xticks() if 1 <= t <= 3]
    assert ticks and all(float(t).is_integer() for t in ticks)


@pytest.mark.parametrize("history", [{"train_loss": [0.5, 0.4]}, {"train_loss": [0.5, 0.4], "val_loss": [], "val_acc": []}])
def test_history_without_validation(history):
    fig = plot_history(history)
    assert len(fig.axes) == 1 and len(fig.axes[0].get_lines()) == 1


@pytest.mark.parametrize(
    ("history", "error", "match"),
    [
        ([0.5, 0.4], TypeError, "history must be a dict of per-epoch lists .*got list"),
        ({"val_loss": [0.5]}, ValueError, r"history\['train_loss'\] must be a non-empty list; history has keys \['val_loss'\]"),
        ({"train_loss": [1, 2], "val_loss": [1]}, ValueError, r"history\['val_loss'\] has 1 values, expected 2"),
    ],
)
def test_history_errors(history, error, match):
    with pytest.raises(error, match=match):
        plot_history(history)


# ------------------------------------------------------------------ confusion matrix


def test_confusion_matrix_counts_labels_and_rotation():
    cm = np.arange(100).reshape(10, 10)
    fig = plot_confusion_matrix(cm, NAMES)

    ax = fig.axes[0]
    assert ax.get_title() == "Confusion matrix"
    assert [t.get_text() for t in ax.get_xticklabels()] == NAMES
    assert [t.get_text() for t in ax.get_yticklabels()] == NAMES
    assert all(t.get_rotation() == 45 for t in ax.get_xticklabels())
    assert ax.get_xlabel() == "Predicted label" and ax.get_ylabel() == "True label"
    cell_texts = [t.get_text() for t in ax.texts]
    assert len(cell_texts) == 100 and cell_texts[:3] == ["0", "1", "2"]


def test_confusion_matrix_normalized_over_true_class():
    cm = torch.tensor([[3, 1], [0, 0]])  # a tensor, and a row with no samples
    fig = plot_confusion_matrix(cm, ["a", "b"], normalize="true")
    ax = fig.axes[0]
    assert ax.get_title() == "Confusion matrix (normalized over true)"
    assert [t.get_text() for t in ax.texts] == ["0.75", "0.25", "0.00", "0.00"]


@pytest.mark.parametrize(
    ("cm", "names", "kwargs", "match"),
    [
        (np.zeros((2, 3)), ["a", "b"], {}, r"square \(K, K\) matrix, got shape \(2, 3\)"),
        (np.zeros((3, 3)), ["a", "b"], {}, "cm is 3x3 but 2 class_names were given"),
        (-np.ones((2, 2)), ["a", "b"], {}, "non-negative"),
        (np.zeros((2, 2)), ["a", "b"], {"normalize": "rows"}, "normalize must be None, 'true', 'pred' or 'all', got 'rows'"),
    ],
)
def test_confusion_matrix_errors(cm, names, kwargs, match):
    with pytest.raises(ValueError, match=match):
        plot_confusion_matrix(cm, names, **kwargs)


# ------------------------------------------------------------------ predictions


def test_predictions_titles_and_mistakes_in_red():
    images = torch.rand(10, 1, 28, 28)
    targets = torch.arange(10)
    predictions = targets.clone()
    predictions[[2, 7]] = torch.tensor([3, 0])

    fig = plot_predictions(images, targets, predictions, NAMES, n=16, ncols=4)

    assert len(fig.axes) == 10  # n is capped by the number of images; no empty axes
    titles = [ax.title for ax in fig.axes]
    assert titles[0].get_text() == "T-shirt/top / T-shirt/top"
    assert titles[2].get_text() == "Pullover / Dress"
    red = to_rgba("red")
    assert [i for i, t in enumerate(titles) if to_rgba(t.get_color()) == red] == [2, 7]
    framed = [i for i, ax in enumerate(fig.axes) if ax.spines["left"].get_visible()]
    assert framed == [2, 7] and to_rgba(fig.axes[2].spines["left"].get_edgecolor()) == red
    assert np.allclose(fig.axes[0].get_images()[0].get_array(), images[0, 0].numpy())


def test_predictions_shows_first_n():
    fig = plot_predictions(np.zeros((20, 1, 28, 28)), [1] * 20, [1] * 20, NAMES, n=8, ncols=8)
    assert len(fig.axes) == 8


@pytest.mark.parametrize(
    ("images", "targets", "predictions", "kwargs", "match"),
    [
        (torch.rand(4, 1, 28, 28), [0, 1, 2], [0, 1, 2, 3], {}, "same length, got 4, 3 and 4"),
        (torch.rand(4, 3, 28, 28), [0] * 4, [0] * 4, {}, r"\(N, 1, H, W\) grey images in \[0, 1\], got shape \(4, 3, 28, 28\)"),
        (torch.rand(2, 1, 28, 28), [0, 10], [0, 1], {}, r"targets must be class indices in \[0, 9\], got 0..10"),
        (torch.rand(2, 1, 28, 28), [0, 1], [0, 1], {"n": 0}, "n must be a positive int, got 0"),
    ],
)
def test_predictions_errors(images, targets, predictions, kwargs, match):
    with pytest.raises(ValueError, match=match):
        plot_predictions(images, targets, predictions, NAMES, **kwargs)


def test_plots_do_not_show(monkeypatch):
    monkeypatch.setattr(plt, "show", lambda *a, **k: pytest.fail("plt.show() was called"))
    plot_history({"train_loss": [1.0]})
    plot_confusion_matrix(np.eye(2, dtype=int), ["a", "b"])
    plot_predictions(torch.rand(1, 1, 28, 28), [0], [1], ["a", "b"])
