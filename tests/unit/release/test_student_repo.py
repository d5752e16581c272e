"""The student repository (`nox -s release`) and the pull-request grading its workflow runs.

The pull-request tests build a real git repository from the released tree: a base commit (the
templates), a pull request that only fills in a notebook (graded), and one that also edits
``grader/`` (refused). They run ``python -m grader pr`` from inside the student repository, as
the workflow does with the base branch's checkout.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from grader.paths import KIT_ROOT
from grader.release import student_repo
from grader.release.student_repo import MARKER, ReleaseError, leaks, write_student_repo
from grader.release.templates import render_template

SOLUTIONS = KIT_ROOT / "solutions"


@pytest.fixture(scope="module")
def released(tmp_path_factory) -> Path:
    return _release(tmp_path_factory.mktemp("student") / "repo")


def _release(target: Path) -> Path:
    write_student_repo(target)
    return target


def test_student_repo_has_what_students_need_and_nothing_else(released):
    top = sorted(p.name for p in released.iterdir())
    assert top == sorted(
        [
            ".github",
            ".gitignore",
            MARKER,
            "README.md",
            "assignments",
            "data",
            "grader",
            "noxfile.py",
            "pyproject.toml",
            "src",
        ]
    )
    assert (released / ".github" / "workflows" / "autograde.yml").is_file()
    assert not list(released.rglob("hidden_seed.txt")) and not list(released.rglob("__pycache__"))
    assert leaks(released, SOLUTIONS) == []
    for solution in SOLUTIONS.glob("*.ipynb"):  # fresh templates, byte for byte
        assert (released / "assignments" / solution.name).read_text(encoding="utf-8") == render_template(solution)
    assert "pull request" in (released / "README.md").read_text()
    manifest = json.loads((released / MARKER).read_text())
    assert "assignments/01_convolution.ipynb" in manifest["files"]


def test_hidden_seed_and_solutions_never_reach_the_student_repo(tmp_path, monkeypatch):
    kit = tmp_path / "kit"
    for name in ("src", "grader"):
        shutil.copytree(KIT_ROOT / name, kit / name, ignore=shutil.ignore_patterns("__pycache__"))
    (kit / "grader" / "hidden_seed.txt").write_text("123456789\n")
    (kit / "pyproject.toml").write_text("[project]\nname = 'x'\n")
    monkeypatch.setattr(student_repo, "KIT_ROOT", kit)
    target = _release(tmp_path / "student")
    assert (target / "grader" / "cli.py").is_file()
    assert not (target / "grader" / "hidden_seed.txt").exists()
    assert not (target / "solutions").exists()


def test_leaks_are_found(tmp_path):
    tree = tmp_path / "tree"
    (tree / "solutions").mkdir(parents=True)
    (tree / "grader").mkdir()
    (tree / "grader" / "hidden_seed.txt").write_text("1")
    shutil.copy(SOLUTIONS / "01_convolution.ipynb", tree / "copied.ipynb")
    (tree / "edited.ipynb").write_text('{"cells": [{"source": "### BEGIN SOLUTION"}]}')
    found = leaks(tree, SOLUTIONS)
    assert len(found) == 4
    assert any("solutions/" in f for f in found) and any("hidden-case seed" in f for f in found)
    assert any("copy of a solution notebook" in f for f in found) and any("edited.ipynb" in f for f in found)


def test_release_refuses_to_overwrite_a_folder_it_did_not_write(tmp_path):
    target = tmp_path / "mine"
    target.mkdir()
    (target / "thesis.tex").write_text("precious")
    with pytest.raises(ReleaseError, match="not a student repository written by this command"):
        write_student_repo(target)
    assert (target / "thesis.tex").read_text() == "precious"
    with pytest.raises(ReleaseError, match="inside the instructor repository"):
        write_student_repo(KIT_ROOT / "student-copy")


def test_second_release_replaces_the_first_and_keeps_git(tmp_path):
    target = _release(tmp_path / "repo")
    (target / ".git").mkdir()
    (target / "assignments" / "stale.ipynb").write_text("{}")
    _release(target)
    assert (target / ".git").is_dir() and not (target / "assignments" / "stale.ipynb").exists()
