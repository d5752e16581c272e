"""Session-wide fixtures: each solution notebook is executed once per test session.

A notebook runs with nbclient in a fresh kernel, in a temporary copy of ``solutions/`` (so the
repository gets no ``runs/`` or ``.pt2`` files), and its kernel stays alive until the session
ends: tests read the artifacts it wrote and ask the kernel for what only the kernel has
(``run.ask(code)``), the way the grader probes a submission. ``02`` runs before ``03`` in the same
folder, because ``03`` compares itself with the model that ``02`` saved.

ResNet-18's ImageNet weights cannot be downloaded here, so the kernel of ``03`` gets
``KIT_RESNET18_WEIGHTS`` pointing at a stand-in checkpoint made by
``src.models.make_standin_weights`` (a seeded random initialisation, labelled as such).
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError
from nbformat.v4 import new_code_cell

REPO_ROOT = Path(__file__).resolve().parents[1]
SOLUTIONS = REPO_ROOT / "solutions"
ASSIGNMENTS = REPO_ROOT / "assignments"
# Generous: on a CPU shared with other jobs, training can take many times its usual 3 minutes.
CELL_TIMEOUT_S = int(os.environ.get("KIT_TEST_CELL_TIMEOUT", "3600"))

# Wall time of every notebook executed in this session, printed at the end.
NOTEBOOK_TIMES: dict[str, float] = {}


class NotebookRun:
    """A notebook executed top to bottom in a kernel that stays alive for questions.

    Attributes:
        name: the notebook's file name.
        workdir: the folder it ran in (its working directory; its files are written there).
        notebook: the executed notebook, with outputs (also written to ``<stem>.executed.ipynb``).
        error: the ``CellExecutionError`` that stopped it, or None.
        error_cell: index of the cell that failed, or None.
        wall_s: seconds from the first cell to the end of the last one executed.
    """

    def __init__(self, source: Path, *, workdir: Path, env: dict[str, str] | None = None,
                 timeout: int = CELL_TIMEOUT_S) -> None:
        self.name = source.name
        self.workdir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        shutil.copy(source, workdir / source.name)
        self.notebook = nbformat.read(workdir / source.name, as_version=4)
        self._client = NotebookClient(
            self.notebook, timeout=timeout, kernel_name="python3",
            resources={"metadata": {"path": str(workdir)}},
        )
        self._env = env
        self._context = None
        self.error: CellExecutionError | None = None
        self.error_cell: int | None = None
        self.wall_s = 0.0

    def start(self) -> NotebookRun:
        """Start the kernel and execute every cell, stopping at the first error."""
        self._context = self._client.setup_kernel(env={**os.environ, **(self._env or {})})
        self._context.__enter__()
        self._client.reset_execution_trackers()
        start = time.perf_counter()
        try:
            for index, cell in enumerate(self.notebook.cells):
                self.error_cell = index
                self._client.execute_cell(cell, index)
            self.error_cell = None
        except CellExecutionError as error:
            self.error = error
        finally:
            self.wall_s = time.perf_counter() - start
            NOTEBOOK_TIMES[f"{self.workdir.name}/{self.name}"] = self.wall_s
            nbformat.write(self.notebook, self.workdir / f"{Path(self.name).stem}.executed.ipynb")
        return self

    def ask(self, code: str) -> str:
        """Run ``code`` in the notebook's kernel and return what it printed to stdout."""
        cell = new_code_cell(code)
        self.notebook.cells.append(cell)  # nbclient stores the executed cell at its index
        try:
            self._client.execute_cell(cell, len(self.notebook.cells) - 1)
        finally:
            self.notebook.cells.pop()
        return "".join(o.get("text", "") for o in cell.outputs if o.get("name") == "stdout")

    def ask_json(self, expression: str) -> object:
        """Evaluate ``expression`` in the kernel and return it through JSON."""
        return json.loads(self.ask(f"import json as _json\nprint(_json.dumps({expression}))"))

    def outputs(self, mime: str) -> list[str]:
        """Every ``mime`` output (e.g. ``"image/png"``, ``"text/markdown"``) of the executed cells."""
        return [
            output["data"][mime]
            for cell in self.notebook.cells if cell.cell_type == "code"
            for output in cell.outputs if mime in output.get("data", {})
        ]

    def close(self) -> None:
        if self._context is not None:
            self._context.__exit__(None, None, None)
            self._context = None


def run_notebook(source: Path, *, workdir: Path, env: dict[str, str] | None = None) -> NotebookRun:
    """Execute ``source`` in ``workdir`` in a fresh kernel and shut the kernel down."""
    run = NotebookRun(source, workdir=workdir, env=env)
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
    from src.data import ensure_fashion_mnist

    return ensure_fashion_mnist()


@pytest.fixture(scope="session")
def standin_weights(tmp_path_factory) -> Path:
    """A stand-in ResNet-18 checkpoint (seeded random init, NOT ImageNet) with its JSON sidecar."""
    from src.models import make_standin_weights

    return make_standin_weights(tmp_path_factory.mktemp("weights") / "resnet18-standin.pth", seed=0).path


@pytest.fixture(scope="session")
def kernel_env(standin_weights, fashion_mnist_ready) -> dict[str, str]:
    """Environment additions for notebook kernels: the stand-in weights."""
    return {"KIT_RESNET18_WEIGHTS": str(standin_weights)}


@pytest.fixture(scope="session")
def solutions_workdir(tmp_path_factory) -> Path:
    """One folder where the solution notebooks run, in order, like a student's folder."""
    return tmp_path_factory.mktemp("solutions-run")


def _live_run(name: str, workdir: Path, env: dict[str, str]) -> Iterator[NotebookRun]:
    run = NotebookRun(SOLUTIONS / name, workdir=workdir, env=env)
    try:
        yield run.start()
    finally:
        run.close()


@pytest.fixture(scope="session")
def convolution_run(solutions_workdir, kernel_env) -> Iterator[NotebookRun]:
    """``solutions/01_convolution.ipynb`` executed; its kernel answers ``ask``."""
    yield from _live_run("01_convolution.ipynb", solutions_workdir, kernel_env)


@pytest.fixture(scope="session")
def cnn_run(solutions_workdir, kernel_env) -> Iterator[NotebookRun]:
    """``solutions/02_cnn_fashion_mnist.ipynb`` executed; it saved ``cnn_fashion_mnist.pt2``."""
    yield from _live_run("02_cnn_fashion_mnist.ipynb", solutions_workdir, kernel_env)


@pytest.fixture(scope="session")
def transfer_run(cnn_run, solutions_workdir, kernel_env) -> Iterator[NotebookRun]:
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
