"""Session-wide fixtures: each solution notebook is executed once per test session.

A notebook runs the way the grader runs it (`grader.run.execute.execute_notebook` in a
`grader.run.kernel.KernelSession`: confined where bubblewrap works, seeded, figures described), in a
temporary copy of ``solutions/`` (so the repository gets no ``runs/`` or ``.pt2`` files), and
its kernel stays alive until the session ends: tests read the artifacts it wrote and ask the
kernel for what only the kernel has (``run.ask(code)``), the way the grader probes a submission.
``02`` runs before ``03`` in the same folder, because ``03`` compares itself with the model that
``02`` saved.

ResNet-18's ImageNet weights cannot be downloaded here, so the kernel of ``03`` gets
``KIT_RESNET18_WEIGHTS`` pointing at a stand-in checkpoint made by
``src.models.make_standin_weights`` (a random initialisation, labelled as such), bound into its
sandbox with the checked Fashion-MNIST files.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from grader.confine.sandbox import sandbox_info
from grader.options import Limits
from grader.paths import KIT_ROOT
from grader.run.execute import execute_notebook
from grader.run.kernel import KernelSession

SOLUTIONS = KIT_ROOT / "solutions"
ASSIGNMENTS = KIT_ROOT / "assignments"
# Generous: on a CPU shared with other jobs, training can take many times its usual 3 minutes.
CELL_TIMEOUT_S = int(os.environ.get("KIT_TEST_CELL_TIMEOUT", "3600"))

# Wall time of every notebook executed in this session, printed at the end.
NOTEBOOK_TIMES: dict[str, float] = {}


@dataclass
class CellError:
    """The first cell that failed: like nbclient's ``CellExecutionError``, as data."""

    ename: str
    evalue: str

    def __str__(self) -> str:
        return f"{self.ename}: {self.evalue}"


class KernelError(RuntimeError):
    """Code given to `LiveNotebook.ask` raised in the kernel."""


@dataclass(frozen=True)
class Prepared:
    """What a notebook's kernel may read besides Python and src/: files and the variables naming them."""

    readonly: tuple[Path, ...] = ()
    env: tuple[tuple[str, str], ...] = ()


class LiveNotebook:
    """A notebook executed top to bottom by the grader's run stage, its kernel alive for questions.

    Attributes:
        name: the notebook's file name.
        workdir: the folder it ran in (its working directory; its files are written there).
        notebook: the executed notebook, with outputs (also written to ``<stem>.executed.ipynb``).
        result: the grader's `ExecutionResult` of the run.
        kernel: the live `KernelSession`.
        error: the first cell's failure, or None.
        error_cell: index of that cell, or None.
        wall_s: seconds from the first cell to the end of the last one executed.
    """

    def __init__(self, source: Path, *, workdir: Path, prepared: Prepared = Prepared(), timeout: int = CELL_TIMEOUT_S) -> None:
        self.name = source.name
        self.workdir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        shutil.copy(source, workdir / source.name)
        self.prepared = prepared
        self.limits = Limits(cell_timeout=timeout, timeout=2 * timeout, memory_gib=6)
        self.notebook = self.result = self.kernel = None
        self.error: CellError | None = None
        self.error_cell: int | None = None
        self.wall_s = 0.0

    def start(self) -> LiveNotebook:
        """Start the kernel and execute every cell."""
        kernel = KernelSession(
            workdir=self.workdir, limits=self.limits, sandbox=sandbox_info(None),
            readonly=self.prepared.readonly, env=dict(self.prepared.env),
        )
        kernel.start()
        start = time.perf_counter()
        run = execute_notebook(self.workdir / self.name, workdir=self.workdir, limits=self.limits, kernel=kernel)
        self.wall_s = time.perf_counter() - start
        NOTEBOOK_TIMES[f"{self.workdir.name}/{self.name}"] = self.wall_s
        self.result, self.kernel, self.notebook = run.result, run.kernel, run.result.notebook
        failed = [cell for cell in run.result.cells if cell.status not in ("ok", "not_run")]
        if failed:
            self.error = CellError(failed[0].error_name, failed[0].error_message)
            self.error_cell = failed[0].index
        import nbformat

        nbformat.write(self.notebook, self.workdir / f"{Path(self.name).stem}.executed.ipynb")
        return self

    def ask(self, code: str) -> str:
        """Run ``code`` in the notebook's kernel and return what it printed to stdout."""
        outcome = self.kernel.run_code(code, timeout=600)
        if outcome.status != "ok":
            raise KernelError(f"{outcome.status}: {outcome.error_name}: {outcome.error_message}")
        return outcome.stdout

    def ask_json(self, expression: str) -> object:
        """Evaluate ``expression`` in the kernel and return it through JSON."""
        return json.loads(self.ask(f"import json as _json\nprint(_json.dumps({expression}))"))

    def outputs(self, mime: str) -> list:
        """Every ``mime`` output (e.g. ``"image/png"``, ``"text/markdown"``) of the executed cells."""
        return [
            output["data"][mime]
            for cell in self.notebook.cells if cell.cell_type == "code"
            for output in cell.outputs if mime in output.get("data", {})
        ]

    def close(self) -> None:
        if self.kernel is not None:
            self.kernel.close()
            self.kernel = None


def run_notebook(source: Path, *, workdir: Path, prepared: Prepared = Prepared()) -> LiveNotebook:
    """Execute ``source`` in ``workdir`` in a fresh kernel and shut the kernel down."""
    run = LiveNotebook(source, workdir=workdir, prepared=prepared)
    try:
        return run.start()
    finally:
        run.close()


@pytest.fixture(scope="session")
def notebook_runner():
    """``run_notebook``, for tests that execute notebooks of their own (templates, broken ones)."""
    return run_notebook


@pytest.fixture(scope="session")
def fashion_mnist_ready() -> Path:
    """Fashion-MNIST in place before any kernel starts (kernels must not race to unpack it)."""
    from src.data import verify_fashion_mnist

    return verify_fashion_mnist()


@pytest.fixture(scope="session")
def standin_weights(tmp_path_factory) -> Path:
    """A stand-in ResNet-18 checkpoint (random init, seed not recorded, NOT ImageNet) with its JSON sidecar."""
    from src.models import make_standin_weights

    return make_standin_weights(tmp_path_factory.mktemp("weights") / "resnet18-standin.pth").path


@pytest.fixture(scope="session")
def kernel_env(standin_weights, fashion_mnist_ready) -> Prepared:
    """What the solutions' kernels may read: the checked Fashion-MNIST and the stand-in weights."""
    raw = fashion_mnist_ready / "FashionMNIST" / "raw"
    sidecar = standin_weights.with_name(standin_weights.name + ".json")
    return Prepared(
        readonly=(raw, standin_weights, sidecar),
        env=(("KIT_DATA_DIR", str(fashion_mnist_ready)), ("KIT_RESNET18_WEIGHTS", str(standin_weights))),
    )


@pytest.fixture(scope="session")
def solutions_workdir(tmp_path_factory) -> Path:
    """One folder where the solution notebooks run, in order, like a student's folder."""
    return tmp_path_factory.mktemp("solutions-run")


def _live_run(name: str, workdir: Path, prepared: Prepared) -> Iterator[LiveNotebook]:
    run = LiveNotebook(SOLUTIONS / name, workdir=workdir, prepared=prepared)
    try:
        yield run.start()
    finally:
        run.close()


@pytest.fixture(scope="session")
def convolution_run(solutions_workdir, kernel_env) -> Iterator[LiveNotebook]:
    """``solutions/01_convolution.ipynb`` executed; its kernel answers ``ask``."""
    yield from _live_run("01_convolution.ipynb", solutions_workdir, kernel_env)


@pytest.fixture(scope="session")
def cnn_run(solutions_workdir, kernel_env) -> Iterator[LiveNotebook]:
    """``solutions/02_cnn_fashion_mnist.ipynb`` executed; it saved ``cnn_fashion_mnist.pt2``."""
    yield from _live_run("02_cnn_fashion_mnist.ipynb", solutions_workdir, kernel_env)


@pytest.fixture(scope="session")
def transfer_run(cnn_run, solutions_workdir, kernel_env) -> Iterator[LiveNotebook]:
    """``solutions/03_transfer_resnet18.ipynb`` executed after ``02``, with the stand-in weights."""
    yield from _live_run("03_transfer_resnet18.ipynb", solutions_workdir, kernel_env)


@pytest.fixture(scope="session")
def fashion_mnist_test(fashion_mnist_ready):
    """The canonical Fashion-MNIST test set, (1, 28, 28) images in [0, 1]."""
    from src.data import fashion_mnist_tensors

    return fashion_mnist_tensors("test")


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    if NOTEBOOK_TIMES:
        terminalreporter.section("notebook wall times")
        for name, seconds in NOTEBOOK_TIMES.items():
            terminalreporter.write_line(f"{seconds:7.1f} s  {name}")
