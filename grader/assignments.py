"""The three assignments: which notebook, which checks, and what each check is worth.

This is the one place where points live. Each `Assignment` lists its checks in the order the
report shows them; a check is a function of `grader.checks` with its options bound. To change a
threshold or a point value, edit the table below; the total per notebook is the sum.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

from grader import checks
from grader.checks import Context, Outcome
from grader.convolution import ConvSpec

__all__ = ["ASSIGNMENTS", "GENERIC", "REPO_ROOT", "Assignment", "CheckDef", "find_assignment"]

REPO_ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class CheckDef:
    """A check as graded: stable name, one-line title, points, and the function that decides."""

    name: str
    title: str
    points: float
    run: Callable[[Context], Outcome]


@dataclass(frozen=True)
class Assignment:
    """One notebook of the kit.

    Attributes:
        notebook: file name in a submission folder.
        title: for reports.
        checks: in report order.
        artifacts: files the notebook must write in its folder; left out of the scratch copy so a
            stale file in the submission cannot pass for this run's output.
        needs_data: the grader prepares Fashion-MNIST before the run (the kernel cannot write
            the data folder in the sandbox) and evaluates saved models on it.
        needs_weights: the grader resolves the ResNet-18 weights before the run.
    """

    notebook: str
    title: str
    checks: tuple[CheckDef, ...]
    artifacts: tuple[str, ...] = ()
    needs_data: bool = False
    needs_weights: bool = False
    template: Path | None = field(default=None, compare=False)

    @property
    def max_points(self) -> float:
        return sum(check.points for check in self.checks)

    @property
    def stem(self) -> str:
        return Path(self.notebook).stem


ACC_THRESHOLD = 0.7
F1_THRESHOLD = 0.7

RUNS = CheckDef("runs", "The notebook runs top to bottom without errors", 0, checks.runs)


def _shown_and_measured(artifact: str, *, metric_points: float) -> tuple[CheckDef, ...]:
    """The figures a training notebook must show, then the metrics of its saved model."""
    return (
        CheckDef("loss_plot", "A plot of the loss by epoch is shown", 1, partial(checks.figure, kind="loss")),
        CheckDef(
            "image_grid", "Test images with true and predicted class are shown", 1, partial(checks.figure, kind="grid")
        ),
        CheckDef("confusion_matrix", "The confusion matrix is shown", 1, partial(checks.figure, kind="confusion")),
        CheckDef(
            "accuracy",
            f"Saved model: test accuracy >= {ACC_THRESHOLD}",
            metric_points,
            partial(checks.metric, artifact=artifact, name="acc", threshold=ACC_THRESHOLD),
        ),
        CheckDef(
            "f1",
            f"Saved model: test macro-F1 >= {F1_THRESHOLD}",
            metric_points,
            partial(checks.metric, artifact=artifact, name="f1", threshold=F1_THRESHOLD),
        ),
        CheckDef("printed_metrics", "Printed metrics agree with the saved model", 0,
                 partial(checks.printed_matches, artifact=artifact)),
    )

# What each convolution must support (the notebook states the same to the student).
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
)

CONVOLUTION = Assignment(
    notebook="01_convolution.ipynb",
    title="Convolution, three ways",
    checks=(
        RUNS,
        CheckDef(
            "conv_simplest",
            "custom_conv_2d_simplest_case matches conv2d (numpy, one channel)",
            3,
            partial(checks.convolution, spec=SIMPLEST),
        ),
        CheckDef(
            "conv_batched",
            "custom_conv_2d matches conv2d (batches, channels)",
            3,
            partial(checks.convolution, spec=BATCHED),
        ),
        CheckDef(
            "conv_full",
            "custom_conv_2d_full matches conv2d (stride, padding)",
            4,
            partial(checks.convolution, spec=FULL),
        ),
    ),
)

CNN_MODEL = "cnn_fashion_mnist.pt2"
CNN = Assignment(
    notebook="02_cnn_fashion_mnist.ipynb",
    title="A CNN for Fashion-MNIST",
    artifacts=(CNN_MODEL,),
    needs_data=True,
    checks=(
        RUNS,
        CheckDef(
            "n_params",
            "n_params is the model's real parameter count",
            1,
            partial(checks.parameter_counts, model="model", counts={"n_params": "total"}),
        ),
        *_shown_and_measured(CNN_MODEL, metric_points=3),
    ),
)

RESNET_MODEL = "resnet18_fashion_mnist.pt2"
TRANSFER = Assignment(
    notebook="03_transfer_resnet18.ipynb",
    title="Transfer learning with ResNet-18",
    artifacts=(RESNET_MODEL,),
    needs_data=True,
    needs_weights=True,
    template=REPO_ROOT / "assignments" / "03_transfer_resnet18.ipynb",
    checks=(
        RUNS,
        CheckDef(
            "head",
            "The final layer is a trainable nn.Linear with 10 outputs",
            1,
            partial(checks.head, model="model", head_name="fc", classes=10),
        ),
        CheckDef("frozen", "Every other parameter is frozen", 1, partial(checks.frozen, model="model", head_name="fc")),
        CheckDef(
            "param_counts",
            "n_frozen and n_trainable are the model's real counts",
            1,
            partial(checks.parameter_counts, model="model", counts={"n_frozen": "frozen", "n_trainable": "trainable"}),
        ),
        CheckDef(
            "scheduler",
            "The scheduler chains WarmupScheduler and MultiStepLR",
            1,
            partial(checks.scheduler, name="scheduler"),
        ),
        CheckDef(
            "transform",
            "The transform gives 3 channels",
            1,
            partial(checks.transform, names=("rgb_transform", "transform", "preprocess"), channels=3),
        ),
        CheckDef(
            "pretrained",
            "Saved model: the frozen weights equal the pretrained ones",
            2,
            partial(checks.backbone_pretrained, artifact=RESNET_MODEL, head_name="fc"),
        ),
        *_shown_and_measured(RESNET_MODEL, metric_points=2),
        CheckDef(
            "comparison",
            "Written comparison of the two models (read by the instructor)",
            0,
            partial(checks.written_answer, template=REPO_ROOT / "assignments" / "03_transfer_resnet18.ipynb"),
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
