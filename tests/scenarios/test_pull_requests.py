"""`python -m grader pr` on a real student repository (released by `grader.release.student_repo`):
a pull request that fills in a notebook is graded, one that edits the grader is refused, commits
without notebooks or that do not exist say so (`grader.classroom.pr`)."""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from grader.paths import SOLUTIONS_DIR as SOLUTIONS
from grader.release.student_repo import write_student_repo


@pytest.fixture(scope="module")
def released(tmp_path_factory) -> Path:
    target = tmp_path_factory.mktemp("student") / "repo"
    write_student_repo(target)
    return target


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
