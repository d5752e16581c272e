"""The student repository (`nox -s release`) and the pull-request grading its workflow runs.

The pull-request tests build a real git repository from the released tree: a base commit (the
templates), a pull request that only fills in a notebook (graded), and one that also edits
``grader/`` (refused). They run ``python -m grader pr`` from inside the student repository, as
the workflow does with the base branch's checkout.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import sys
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


# ----------------------------------------------------------------------------- pull requests


def _git(repo: Path, *args: str) -> str:
    env = {
        **os.environ,
        "GIT_AUTHOR_NAME": "s",
        "GIT_AUTHOR_EMAIL": "s@x",
        "GIT_COMMITTER_NAME": "s",
        "GIT_COMMITTER_EMAIL": "s@x",
    }
    return subprocess.run(
        ["git", "-C", str(repo), *args], check=True, capture_output=True, text=True, env=env
    ).stdout.strip()


@pytest.fixture(scope="module")
def student_git(released, tmp_path_factory) -> tuple[Path, dict[str, str]]:
    """The released tree as a git repository: base, a good pull request, a bad one."""
    repo = tmp_path_factory.mktemp("git") / "student"
    shutil.copytree(released, repo)
    _git(repo, "init", "-q", "-b", "main")
    _git(repo, "add", "-A")
    _git(repo, "commit", "-q", "-m", "template")
    commits = {"base": _git(repo, "rev-parse", "HEAD")}
    _git(repo, "checkout", "-q", "-b", "good")
    shutil.copy(SOLUTIONS / "01_convolution.ipynb", repo / "assignments" / "01_convolution.ipynb")
    _git(repo, "commit", "-q", "-am", "my convolutions")
    commits["good"] = _git(repo, "rev-parse", "HEAD")
    _git(repo, "checkout", "-q", "-b", "bad")
    checks = repo / "grader" / "checks.py"
    checks.write_text(checks.read_text() + "\n# everything passes\n")
    _git(repo, "commit", "-q", "-am", "make the grader kinder")
    commits["bad"] = _git(repo, "rev-parse", "HEAD")
    _git(repo, "checkout", "-q", "-b", "notes", commits["base"])
    shutil.copy(repo / "assignments" / "01_convolution.ipynb", repo / "assignments" / "my_notes.ipynb")
    _git(repo, "add", "-A")
    _git(repo, "commit", "-q", "-m", "a notebook of my own")
    commits["notes"] = _git(repo, "rev-parse", "HEAD")
    _git(repo, "checkout", "-q", "main")  # the checkout's state must not matter
    return repo, commits


def _run_pr(repo: Path, base: str, head: str, tmp_path: Path) -> tuple[subprocess.CompletedProcess, str, str]:
    tmp_path.mkdir(parents=True, exist_ok=True)
    summary, output = tmp_path / "summary.md", tmp_path / "output.txt"
    env = {**os.environ, "GITHUB_STEP_SUMMARY": str(summary), "GITHUB_OUTPUT": str(output), "GRADER_HIDDEN_SEED": "5"}
    env["PYTHONPATH"] = str(repo)  # the student repository's own (base) grader, as in the workflow
    command = [sys.executable, "-m", "grader", "pr", "--repo", str(repo), "--base", base, "--head", head]
    command += ["--out", str(tmp_path / "out"), "--cell-timeout", "120", "--timeout", "300"]
    done = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    read = lambda p: p.read_text() if p.exists() else ""  # noqa: E731
    return done, read(summary), read(output)


@pytest.mark.slow
def test_pull_request_that_fills_in_a_notebook_is_graded(student_git, tmp_path):
    repo, commits = student_git
    done, summary, output = _run_pr(repo, commits["base"], commits["good"], tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    # Points out of the whole assignment: one notebook filled in is not reported as complete.
    assert "Points 10/34" in done.stdout
    assert "## 01_convolution.ipynb: 10 / 10" in summary and "## 02_cnn_fashion_mnist.ipynb: 0 / 10" in summary
    assert "It changes:\n- `assignments/01_convolution.ipynb`" in summary
    assert output.startswith("result=")
    classroom = json.loads(base64.b64decode(output.strip().split("=", 1)[1]))
    assert classroom["version"] == 1 and classroom["status"] == "fail" and classroom["max_score"] == 34
    assert sum(test["score"] for test in classroom["tests"]) == 10
    assert (tmp_path / "out" / "01_convolution.ipynb").is_file() and (tmp_path / "out" / "junit.xml").is_file()


def test_pull_request_that_edits_the_grader_is_refused(student_git, tmp_path):
    repo, commits = student_git
    done, summary, output = _run_pr(repo, commits["base"], commits["bad"], tmp_path)
    assert done.returncode == 1
    assert "Not graded" in summary and "`grader/checks.py`" in summary and "git checkout" in summary
    assert "01_convolution" not in summary.split("also changes:")[1]
    classroom = json.loads(base64.b64decode(output.strip().split("=", 1)[1]))
    assert classroom["status"] == "fail" and classroom["max_score"] == 0
    assert not (tmp_path / "out").exists()  # nothing was run


def test_pull_request_without_notebooks_and_bad_commits(student_git, tmp_path):
    repo, commits = student_git
    done, summary, _ = _run_pr(repo, commits["base"], commits["base"], tmp_path)
    assert done.returncode == 0 and "Nothing to grade" in summary
    done, summary, _ = _run_pr(repo, commits["base"], commits["notes"], tmp_path / "notes")
    assert done.returncode == 0 and "Nothing to grade" in summary
    assert "`assignments/my_notes.ipynb` is not one of the assignment notebooks" in summary
    done, _, _ = _run_pr(repo, commits["base"], "0" * 40, tmp_path)
    assert done.returncode == 2 and "error: git" in done.stderr
