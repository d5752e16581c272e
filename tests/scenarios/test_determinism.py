"""Same notebook, same grade: a busy machine may make grading slower, never different.

The reference convolutions (01) and a quicker transfer notebook (03 on a tenth of the training
images, the stand-in weights) are graded through the command line: once on a quiet machine, once
while ``2 x cores`` busy loops run, and as a class of two copies with ``--jobs 2`` under the same
load. Every check must get the same points and the same message each time. Each kernel gets one
CPU thread in every run (``OMP_NUM_THREADS=1``, what ``--jobs 2`` gives on two cores): a different
number of threads sums floating-point numbers in another order, which may change the last digits
of a measured metric in a message, though not its points.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path

import nbformat
import pytest

from grader.paths import KIT_ROOT, SOLUTIONS_DIR

pytestmark = pytest.mark.slow

HIDDEN_SEED = "20261203"
SPLIT = "train_dataset, valid_dataset = train_val_split(train_dataset, val_ratio=valid_ratio, seed=SEED)"


def quick_transfer(path: Path) -> None:
    """The reference 03 on 6,000 training and 1,000 validation images (the test set is whole)."""
    notebook = nbformat.read(SOLUTIONS_DIR / "03_transfer_resnet18.ipynb", as_version=4)
    [cell] = [cell for cell in notebook.cells if SPLIT in cell.source]
    cell.source = cell.source.replace(
        SPLIT,
        SPLIT + "\ntrain_dataset = torch.utils.data.Subset(train_dataset, range(6_000))"
        "\nvalid_dataset = torch.utils.data.Subset(valid_dataset, range(1_000))",
    )
    nbformat.write(notebook, path)


@contextmanager
def busy(processes: int):
    """``processes`` busy loops on the machine while the block runs."""
    loops = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(processes)]
    try:
        yield
    finally:
        for loop in loops:
            loop.kill()
            loop.wait()


def grade(target: Path, out: Path, weights: Path, *extra: str) -> None:
    env = {**os.environ, "KIT_RESNET18_WEIGHTS": str(weights), "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    done = subprocess.run(
        [sys.executable, "-m", "grader", "grade", str(target), "--out", str(out), "--hidden-seed", HIDDEN_SEED,
         "--no-progress", "--require-sandbox", *extra],
        cwd=KIT_ROOT, env=env, capture_output=True, text=True, timeout=3600, check=False,
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]


def checks(result: Path, submission: Path) -> dict[str, tuple[float, str, str]]:
    """{notebook/check: (points, status, message)} of a result.json, written answers left out (they
    quote the notebook's own output, which holds its training time), the submission's folder
    written as SUBMISSION (a missing notebook's message names where it was looked for)."""
    data = json.loads(result.read_text())
    return {
        f"{notebook['name']}/{check['name']}": (
            check["points"], check["status"], check["message"].replace(str(submission), "SUBMISSION")
        )
        for notebook in data["notebooks"]
        for check in notebook["checks"]
        if not check["manual_max"]
    }


@pytest.fixture(scope="module")
def gradings(tmp_path_factory, standin_weights, fashion_mnist_ready):
    """{run: checks}: quiet, loaded, and two copies in a loaded class with --jobs 2."""
    root = tmp_path_factory.mktemp("determinism")
    submission = root / "submission"
    submission.mkdir()
    shutil.copy(SOLUTIONS_DIR / "01_convolution.ipynb", submission)
    quick_transfer(submission / "03_transfer_resnet18.ipynb")
    classroom = root / "class"
    for name in ("copy-a", "copy-b"):
        shutil.copytree(submission, classroom / name)
    cores = len(os.sched_getaffinity(0))
    grade(submission, root / "quiet", standin_weights)
    with busy(2 * cores):
        grade(submission, root / "loaded", standin_weights)
        grade(classroom, root / "class-out", standin_weights, "--jobs", "2")
    return {
        "quiet": checks(root / "quiet" / "submission" / "result.json", submission),
        "loaded": checks(root / "loaded" / "submission" / "result.json", submission),
        "class copy a": checks(root / "class-out" / "copy-a" / "result.json", classroom / "copy-a"),
        "class copy b": checks(root / "class-out" / "copy-b" / "result.json", classroom / "copy-b"),
    }


def test_the_reference_keeps_every_point_on_a_quiet_machine(gradings):
    quiet = gradings["quiet"]
    graded = {name: value for name, value in quiet.items() if name.split("/")[0] != "02_cnn_fashion_mnist.ipynb"}
    lost = {name: value for name, value in graded.items() if value[1] == "failed" and name.split("/")[1] != "runs"}
    assert not lost, lost


@pytest.mark.parametrize("run", ["loaded", "class copy a", "class copy b"])
def test_a_busy_machine_and_other_submissions_change_no_point_and_no_message(gradings, run):
    quiet = gradings["quiet"]
    other = gradings[run]
    assert other.keys() == quiet.keys()
    differences = {name: (quiet[name], other[name]) for name in quiet if quiet[name] != other[name]}
    assert not differences, differences
