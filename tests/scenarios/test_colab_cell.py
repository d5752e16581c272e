"""The Colab cell at the top of each student notebook: nothing outside Colab; in Colab (simulated
here: a ``google.colab`` module and a local git repository as the student's), it clones the
repository, goes to its ``assignments/`` folder and makes ``src`` importable, without pip."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

from grader.paths import ASSIGNMENTS_DIR
from grader.release.student_repo import write_student_repo

NOTEBOOKS = ["01_convolution.ipynb", "02_cnn_fashion_mnist.ipynb", "03_transfer_resnet18.ipynb"]

PROBE = """
import json, os, sys
print(json.dumps({"cwd": os.getcwd(), "path0": sys.path[0], "listing": sorted(os.listdir(START))}))
"""

FAKE_COLAB = """
import sys, types
colab = types.ModuleType("google.colab")
colab.userdata = types.SimpleNamespace(get=lambda name: None)
sys.modules["google"] = types.ModuleType("google")
sys.modules["google.colab"] = colab
"""


def colab_cell(name: str) -> str:
    notebook = nbformat.read(ASSIGNMENTS_DIR / name, as_version=4)
    first = next(cell for cell in notebook.cells if cell.cell_type == "code")
    assert "google.colab" in first.source, f"{name} does not start with the Colab cell"
    return first.source


def run(code: str, cwd: Path) -> dict:
    import json

    done = subprocess.run([sys.executable, "-c", code], cwd=cwd, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_the_colab_cell_does_nothing_outside_colab(name, tmp_path):
    code = f"START = {str(tmp_path)!r}\n" + colab_cell(name) + PROBE
    seen = run(code, tmp_path)
    assert seen["cwd"] == str(tmp_path) and seen["listing"] == [] and "cnn-course-kit" not in seen["path0"]


def test_in_colab_it_clones_the_repository_and_works_in_assignments(tmp_path):
    repo = tmp_path / "student"
    write_student_repo(repo)
    for command in (["init", "-q", "-b", "main"], ["add", "-A"], ["-c", "user.name=s", "-c", "user.email=s@x", "commit", "-qm", "hw"]):
        subprocess.run(["git", "-C", str(repo), *command], check=True)
    colab = tmp_path / "content"  # Colab's working folder
    colab.mkdir()
    cell = colab_cell("02_cnn_fashion_mnist.ipynb").replace('REPOSITORY = ""', f'REPOSITORY = "file://{repo}"', 1)
    code = FAKE_COLAB + f"START = {str(colab)!r}\n" + cell + "\nimport src.engine\n" + PROBE
    seen = run(code, colab)
    kit = colab / "cnn-course-kit"
    assert seen["cwd"] == str(kit / "assignments") and seen["path0"] == str(kit)
    assert seen["listing"] == ["cnn-course-kit"] and (kit / "src" / "engine.py").is_file()
    again = run(code, colab)  # run twice (Colab's "Run all" again): no second clone, same place
    assert again["cwd"] == str(kit / "assignments")
    empty = colab_cell("01_convolution.ipynb")
    done = subprocess.run([sys.executable, "-c", FAKE_COLAB + empty], cwd=tmp_path, capture_output=True, text=True)
    assert done.returncode != 0 and "set REPOSITORY above" in done.stderr
