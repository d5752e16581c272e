"""The three assignments: which notebook, which checks, and what each check is worth.

This is the one place where points live. Each `Assignment` lists its checks in the order the
report shows them; a check is a function of `grader.checks` with its options bound. To change a
threshold or a point value, edit the table below; the total per notebook is the sum.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path

from grader import checks
from grader.checks import Context, Outcome
from grader.evidence.convolution import BATCHED, FULL, SIMPLEST
from grader.paths import ASSIGNMENTS_DIR

__all__ = ["ASSIGNMENTS", "GENERIC", "Assignment", "CheckDef", "find_assignment"]


@dataclass(frozen=True)
class CheckDef:
    """A check as graded: stable name, one-line title, points, and the function that decides.

    ``manual_points``: points an instructor gives by reading the answer (`grader.report.marking`), on
    top of the automatic ``points``; for written answers.
    """

    name: str
    title: str
    points: float
    run: Callable[[Context], Outcome]
    manual_points: float = 0


@dataclass(frozen=True)
class Assignment:
    """One notebook of the kit.

    Attributes:
        notebook: file name in a submission folder.
        title: for reports.
        checks: in report order.
        needs_data: the grader prepares Fashion-MNIST before the run (the kernel cannot write
            the data folder in the sandbox) and evaluates saved models on it.
        needs_weights: the grader resolves the ResNet-18 weights before the run.
    """

    notebook: str
    title: str
    checks: tuple[CheckDef, ...]
    needs_data: bool = False
    needs_weights: bool = False

    @property
    def max_points(self) -> float:
        return sum(check.points for check in self.checks)


ACC_THRESHOLD = 0.7
F1_THRESHOLD = 0.7

RUNS = CheckDef("runs", "The notebook runs top to bottom without errors", 0, checks.runs)


def _shown_and_measured(artifact: str, *, kind: str, metric_points: float) -> tuple[CheckDef, ...]:
    """The figures a training notebook must show, then the metrics of its saved model."""
    return (
        CheckDef(
            "loss_plot",
            "The loss by epoch of the training that produced the saved model is plotted",
            1,
            partial(checks.loss_plot, artifact=artifact, kind=kind),
        ),
        CheckDef(
            "image_grid",
            "Test images are shown with their true and predicted class",
            1,
            partial(checks.image_grid, artifact=artifact, kind=kind),
        ),
        CheckDef(
            "confusion_matrix",
            "The saved model's confusion matrix on the test set is shown",
            1,
            partial(checks.confusion_figure, artifact=artifact, kind=kind),
        ),
        CheckDef(
            "accuracy",
            f"Saved model: test accuracy >= {ACC_THRESHOLD}",
            metric_points,
            partial(checks.metric, artifact=artifact, name="acc", threshold=ACC_THRESHOLD, kind=kind),
        ),
        CheckDef(
            "f1",
            f"Saved model: test macro-F1 >= {F1_THRESHOLD}",
            metric_points,
            partial(checks.metric, artifact=artifact, name="f1", threshold=F1_THRESHOLD, kind=kind),
        ),
        CheckDef(
            "printed_metrics",
            "Printed metrics agree with the saved model",
            0,
            partial(checks.printed_matches, artifact=artifact, kind=kind),
        ),
    )


CONVOLUTION = Assignment(
    notebook="01_convolution.ipynb",
    title="Convolution, three ways",
    checks=(
        RUNS,
        CheckDef(
            "conv_simplest",
            "custom_conv_2d_simplest_case matches conv2d (numpy, one channel), without a library convolution",
            3,
            partial(checks.convolution, spec=SIMPLEST),
        ),
        CheckDef(
            "conv_batched",
            "custom_conv_2d matches conv2d (batches, channels), without a library convolution",
            3,
            partial(checks.convolution, spec=BATCHED),
        ),
        CheckDef(
            "conv_full",
            "custom_conv_2d_full matches conv2d (stride, padding), with unfold",
            4,
            partial(checks.convolution, spec=FULL),
        ),
    ),
)

CNN_MODEL = "cnn_fashion_mnist.pt2"
CNN = Assignment(
    notebook="02_cnn_fashion_mnist.ipynb",
    title="A CNN for Fashion-MNIST",
    needs_data=True,
    checks=(
        RUNS,
        CheckDef(
            "n_params",
            "n_params is the saved model's parameter count",
            1,
            partial(checks.parameter_count, artifact=CNN_MODEL),
        ),
        *_shown_and_measured(CNN_MODEL, kind="cnn", metric_points=3),
    ),
)

RESNET_MODEL = "resnet18_fashion_mnist.pt2"
TRANSFER = Assignment(
    notebook="03_transfer_resnet18.ipynb",
    title="Transfer learning with ResNet-18",
    needs_data=True,
    needs_weights=True,
    checks=(
        RUNS,
        CheckDef(
            "head",
            "The final layer is a new nn.Linear(512, 10)",
            1,
            partial(checks.head, artifact=RESNET_MODEL, classes=10),
        ),
        CheckDef("frozen", "Every other parameter is frozen", 1, partial(checks.frozen, artifact=RESNET_MODEL)),
        CheckDef(
            "param_counts",
            "n_frozen and n_trainable are the saved model's counts",
            1,
            partial(checks.parameter_split, artifact=RESNET_MODEL),
        ),
        CheckDef(
            "scheduler",
            "Warmup then MultiStepLR, in steps, used by the Trainer that trained the saved model",
            1,
            partial(checks.scheduler, name="scheduler", artifact=RESNET_MODEL, kind="transfer"),
        ),
        CheckDef(
            "transform",
            "The saved preprocessing gives 3 channels",
            1,
            partial(checks.transform, artifact=RESNET_MODEL, names=("rgb_transform", "transform", "preprocess")),
        ),
        CheckDef(
            "pretrained",
            "Saved model: answers from the pretrained ResNet-18 backbone",
            2,
            partial(checks.backbone_pretrained, artifact=RESNET_MODEL),
        ),
        *_shown_and_measured(RESNET_MODEL, kind="transfer", metric_points=2),
        # 2.6, the seed's written question: 3 points the instructor gives by reading it (one for
        # comparing the numbers correctly, one for a cause of the difference, one for a fix).
        CheckDef(
            "comparison",
            "Written comparison of the two models (read by the instructor)",
            0,
            partial(checks.written_answer, template=ASSIGNMENTS_DIR / "03_transfer_resnet18.ipynb"),
            manual_points=3,
        ),
    ),
)

ASSIGNMENTS: tuple[Assignment, ...] = (CONVOLUTION, CNN, TRANSFER)

# A notebook that is none of the three (e.g. a benchmark's trivial notebook): only the run is graded.
GENERIC = Assignment(notebook="", title="Notebook", checks=(RUNS,))


def find_assignment(notebook: Path) -> Assignment | None:
    """The assignment a notebook file belongs to, by name (``01_convolution.ipynb``), else by
    its number prefix (``01_...``); None when it matches none."""
    name = Path(notebook).name
    for assignment in ASSIGNMENTS:
        if name == assignment.notebook:
            return assignment
    for assignment in ASSIGNMENTS:
        if name.split("_", 1)[0] == assignment.notebook.split("_", 1)[0]:
            return assignment
    return None
