"""Figures judged by what they show: real matplotlib figures, described as a kernel describes
them (`grader.run.kernel_side.describe_figure`), against the grader's own numbers."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import nbformat
import numpy as np
import pytest
from sklearn.metrics import ConfusionMatrixDisplay

from grader.evidence import figures
from grader.run.kernel_side import FIGURE_MIME, describe_figure


def notebook_of(*shown) -> nbformat.NotebookNode:
    """A notebook whose cells each show one figure (or print one text)."""
    cells = []
    for item in shown:
        cell = nbformat.v4.new_code_cell("...")
        if isinstance(item, str):
            cell.outputs = [nbformat.v4.new_output("stream", name="stdout", text=item)]
        elif item is None:  # a picture without a description: display(Image(...))
            cell.outputs = [nbformat.v4.new_output("display_data", data={"image/png": "iVBORw0KGgo="})]
        else:
            data = {"image/png": "iVBORw0KGgo=", FIGURE_MIME: describe_figure(item)}
            cell.outputs = [nbformat.v4.new_output("display_data", data=data)]
            plt.close(item)
        cells.append(cell)
    return nbformat.v4.new_notebook(cells=cells)


HISTORY = {"train_loss": [0.9, 0.6, 0.45, 0.41], "val_loss": [0.7, 0.55, 0.5, 0.49], "lr": [0.1] * 4}


def test_a_loss_curve_is_recognised_by_its_values_however_it_is_drawn():
    fig, ax = plt.subplots()
    ax.plot(range(1, 5), HISTORY["val_loss"], "o--")
    ok, message = figures.loss_verdict(figures.shown_figures(notebook_of(fig)), [HISTORY])
    assert ok and "val loss of 4 epochs" in message
    fig = plt.figure()
    plt.plot(HISTORY["train_loss"])  # plain pyplot, x = 0..3
    assert figures.loss_verdict(figures.shown_figures(notebook_of(fig)), [HISTORY])[0]


def test_a_line_that_is_not_the_history_is_not_a_loss_plot():
    fig = plt.figure()
    plt.plot([0.9, 0.6, 0.45])  # three points, four epochs trained
    plt.grid()
    ok, message = figures.loss_verdict(figures.shown_figures(notebook_of(fig)), [HISTORY])
    assert not ok and "none has one point per trained epoch" in message
    assert not figures.loss_verdict(figures.shown_figures(notebook_of(fig)), [])[0]


MATRIX = (np.eye(10, dtype=int) * 900 + 10).tolist()


def test_the_confusion_matrix_is_found_as_a_display_a_heatmap_or_a_printed_table():
    fig, ax = plt.subplots()
    ConfusionMatrixDisplay(np.array(MATRIX), display_labels=[str(i) for i in range(10)]).plot(ax=ax)
    assert figures.confusion_verdict(figures.shown_figures(notebook_of(fig)), notebook_of(fig), MATRIX)[0]
    heat = plt.figure()
    plt.pcolormesh(np.array(MATRIX).T)  # transposed: rows are predictions
    nb = notebook_of(heat)
    assert figures.confusion_verdict(figures.shown_figures(nb), nb, MATRIX)[0]
    normalised = plt.figure()
    counts = np.array(MATRIX, dtype=float)
    plt.imshow(counts / counts.sum(axis=1, keepdims=True))
    nb = notebook_of(normalised)
    assert figures.confusion_verdict(figures.shown_figures(nb), nb, MATRIX)[0]
    printed = notebook_of(str(np.array(MATRIX)))
    assert figures.confusion_verdict([], printed, MATRIX)[0]


def test_a_matrix_that_is_not_the_models_is_refused():
    other = np.array(MATRIX)
    other[0, 0], other[0, 1] = 800, 110  # 100 images moved
    fig = plt.figure()
    plt.imshow(other)
    nb = notebook_of(fig)
    ok, message = figures.confusion_verdict(figures.shown_figures(nb), nb, MATRIX)
    assert not ok and "not the confusion matrix the grader computed" in message
    assert not figures.confusion_verdict([], notebook_of("no table here"), MATRIX)[0]


class TinyTest:
    """A stand-in for the grader's test set: six images, their classes."""

    classes = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]

    def __init__(self) -> None:
        import torch
        import torch.nn.functional as F

        coarse = torch.rand(6, 1, 7, 7, generator=torch.Generator().manual_seed(0))
        self.images = F.interpolate(coarse, size=(28, 28), mode="bilinear")  # smooth, like clothes
        self.targets = torch.tensor([0, 6, 1, 9, 3, 0])


def grid(test, titles, images=None):
    fig, axes = plt.subplots(2, 3)
    for i, ax in enumerate(axes.flat):
        picture = test.images[i, 0].numpy() if images is None else images[i]
        ax.imshow(picture, cmap="gray")
        ax.set_title(titles[i])
    return fig


def test_an_image_grid_needs_test_images_titled_with_true_and_predicted_classes():
    test = TinyTest()
    predictions = [0, 0, 1, 7, 3, 6]
    titles = [f"{test.classes[t]} / {test.classes[p]}" for t, p in zip(test.targets.tolist(), predictions)]
    ok, message = figures.grid_verdict(figures.shown_figures(notebook_of(grid(test, titles))), test, predictions)
    assert ok and "6 test images" in message
    # T-shirt/top and Shirt: one name inside the other, told apart.
    assert figures._class_names_in("T-shirt/top / Shirt", test.classes) == [0, 6]
    # Three channels and another size (a ResNet input shown as it is) still match.
    rgb = [np.repeat(np.kron(test.images[i, 0].numpy(), np.ones((2, 2)))[..., None], 3, axis=2) for i in range(6)]
    assert figures.grid_verdict(figures.shown_figures(notebook_of(grid(test, titles, rgb))), test, predictions)[0]


def test_a_grid_without_classes_or_of_other_images_or_with_wrong_predictions_fails():
    test = TinyTest()
    predictions = [0, 0, 1, 7, 3, 6]
    no_prediction = [test.classes[t] for t in test.targets.tolist()]
    assert not figures.grid_verdict(figures.shown_figures(notebook_of(grid(test, no_prediction))), test, predictions)[0]
    noise = [np.random.default_rng(i).random((28, 28)) for i in range(6)]
    titles = [f"{test.classes[t]} / {test.classes[p]}" for t, p in zip(test.targets.tolist(), predictions)]
    ok, message = figures.grid_verdict(figures.shown_figures(notebook_of(grid(test, titles, noise))), test, predictions)
    assert not ok and "no grid of test images" in message
    invented = [f"{test.classes[t]} / Bag" for t in test.targets.tolist()]
    ok, message = figures.grid_verdict(figures.shown_figures(notebook_of(grid(test, invented))), test, predictions)
    assert not ok and "what your saved model predicts" in message


def test_a_picture_without_a_description_is_unreadable():
    nb = notebook_of(None)
    assert figures.unreadable(figures.shown_figures(nb)) == [0]


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


def test_descriptions_are_read_within_bounds_whatever_the_kernel_sent():
    """A forged description of a million points, axes or pixels, or of the wrong types, costs the
    grader the bounds of an honest one, and is never an error."""
    huge = {
        "axes": [{"lines": [{"x": list(range(10**6)), "y": [0.5] * 10**6}] * 100, "images": [{"data": [[0.0] * 1000] * 1000}],
                  "meshes": [{"data": "not numbers"}], "title": "x" * 10**6, "texts": [{"a": 1}] * 10**4}] * 1000,
        "suptitle": ["not", "text"],
    }
    cell = nbformat.v4.new_code_cell("...")
    output = {"output_type": "display_data", "metadata": {}, "data": {"image/png": "iVBORw0KGgo=", FIGURE_MIME: huge}}
    cell.outputs = [output] * 500  # not through new_output: its validation would read it all
    shown = figures.shown_figures(nbformat.v4.new_notebook(cells=[cell]))
    assert len(shown) == figures.MAX_FIGURES
    ax = shown[0].description["axes"]
    assert len(ax) == figures.MAX_AXES and len(ax[0]["lines"]) == figures.MAX_LINES
    assert len(ax[0]["lines"][0]["y"]) == figures.MAX_POINTS and len(ax[0]["title"]) == figures.MAX_TEXT
    assert ax[0]["images"][0]["data"] is None and ax[0]["meshes"][0]["data"] == [] and ax[0]["texts"][0] == ""
    assert shown[0].description["suptitle"] == ""
    assert sum(len(line["y"]) + len(line["x"]) for s in shown for a in s.description["axes"] for line in a["lines"]) <= figures.MAX_NUMBERS
    ok, message = figures.loss_verdict(shown, [HISTORY])
    assert not ok and "none has one point per trained epoch" in message


def test_long_printed_output_is_scanned_only_at_its_end():
    rows = "\n".join(" ".join(str(v) for v in row) for row in MATRIX)
    text = ("1 2 3 4 5 6 7 8 9 10\n" * 100_000) + rows  # 2 MB of tables before the real one
    ok, _ = figures.confusion_verdict([], notebook_of(text), MATRIX)
    assert ok
    assert len(figures._matrices([], notebook_of(text), 10)) <= figures.MAX_TABLES
