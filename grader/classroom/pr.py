"""Grade a pull request in a student repository: what the student template's workflow runs.

    python -m grader pr --repo PR_CHECKOUT --base BASE_SHA --head HEAD_SHA --out out/pr

The workflow installs the grader from the pull request's *base* commit and runs this against the
pull request's head, so a pull request cannot change how it is graded. Here:

1. The files the pull request changes (``git diff BASE...HEAD``, from where it branched) must all
   be under ``assignments/``. Otherwise nothing is graded: the message lists the other files and
   how to take them out of the pull request (exit 1).
2. All three assignment notebooks are taken from the head commit (``git archive``, so the
   checkout's state does not matter) and graded like ``python -m grader grade``: reports,
   executed notebooks, the JUnit file. The points are always out of the whole assignment (34),
   so a pull request that fills in one notebook is not reported as complete; the report says
   which notebooks this pull request changed.
3. For GitHub: the Markdown report is appended to ``$GITHUB_STEP_SUMMARY``; ``result`` in
   ``$GITHUB_OUTPUT`` holds the points in the form GitHub Classroom's grading reporter reads
   (base64 JSON, one test per check); the log ends with ``Points X/Y``.

The hidden convolution cases in a student repository come from ``$GRADER_HIDDEN_SEED`` if the
workflow sets it, else they are drawn afresh on each run: a secret readable by the student's
workflows would not stay secret, so the instructor's own grading of the class is the one that uses
the instructor's seed.
"""

from __future__ import annotations

import base64
import io
import json
import os
import subprocess
import tarfile
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from grader.assignments import find_assignment
from grader.report.formats import to_markdown, write_reports
from grader.results import SubmissionResult

__all__ = ["ALLOWED", "PullRequest", "changed_files", "classroom_result", "grade_pull_request", "inspect"]

ALLOWED = "assignments/"


class GitError(RuntimeError):
    """A git command failed: the repository or a commit is not what the caller said."""


def _git(repo: Path, *args: str, binary: bool = False) -> str | bytes:
    done = subprocess.run(["git", "-C", str(repo), *args], capture_output=True, check=False)
    if done.returncode != 0:
        raise GitError(f"git {' '.join(args)} failed in {repo}: {done.stderr.decode(errors='replace').strip()}")
    return done.stdout if binary else done.stdout.decode()


def changed_files(repo: Path, base: str, head: str) -> list[str]:
    """Paths the pull request changes, from where it branched off ``base`` (renames as two paths)."""
    out = _git(repo, "diff", "--name-only", "-z", "--no-renames", f"{base}...{head}")
    return sorted(path for path in out.split("\0") if path)


@dataclass
class PullRequest:
    """What a pull request changes, sorted into what is graded and what is refused."""

    changed: list[str]
    outside: list[str] = field(default_factory=list)
    notebooks: list[str] = field(default_factory=list)
    ungraded: list[str] = field(default_factory=list)


def inspect(repo: Path, base: str, head: str) -> PullRequest:
    """Sort the changed files: outside ``assignments/`` (refused) and notebooks to grade."""
    for commit in (base, head):
        _git(repo, "rev-parse", "--verify", "--quiet", f"{commit}^{{commit}}")
    changed = changed_files(repo, base, head)
    present = set(_git(repo, "ls-tree", "-r", "--name-only", head, "--", ALLOWED).splitlines())
    pull = PullRequest(changed=changed, outside=[path for path in changed if not path.startswith(ALLOWED)])
    for path in changed:
        if path in present and path.endswith(".ipynb"):
            top_level = "/" not in path[len(ALLOWED) :]
            (pull.notebooks if top_level and find_assignment(Path(path)) else pull.ungraded).append(path)
    return pull


def _export(repo: Path, head: str, target: Path) -> Path:
    """The head commit's ``assignments/`` (as committed) into ``target``; returns the folder."""
    archive = _git(repo, "archive", "--format=tar", head, "--", ALLOWED, binary=True)
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(target, filter="data")
    return target / ALLOWED.rstrip("/")


def classroom_result(result: SubmissionResult | None, *, status: str | None = None, message: str = "") -> dict:
    """The JSON GitHub Classroom's ``autograding-grading-reporter`` reads from ``<RUNNER>_RESULTS``."""
    if result is None:
        test = {"name": "pull request", "status": status or "error", "score": 0, "message": message}
        return {"version": 1, "status": status or "error", "max_score": 0, "tests": [test]}
    tests = [
        {
            "name": f"{notebook.name}: {check.title}",
            "status": "pass" if check.status == "passed" else ("error" if check.status == "error" else "fail"),
            "score": check.points,
            "message": check.message,
        }
        for notebook in result.notebooks
        for check in notebook.checks
        if check.max_points or check.status != "skipped"
    ]
    passed = all(test["status"] == "pass" for test in tests)
    return {
        "version": 1,
        "status": "error" if result.grader_error else ("pass" if passed else "fail"),
        "max_score": result.max_points,
        "tests": tests,
    }


def _append(env_name: str, text: str) -> None:
    path = os.environ.get(env_name)
    if path:
        with open(path, "a", encoding="utf-8") as handle:
            handle.write(text)


def _publish(summary: str, classroom: dict) -> None:
    _append("GITHUB_STEP_SUMMARY", summary if summary.endswith("\n") else summary + "\n")
    encoded = base64.b64encode(json.dumps(classroom).encode()).decode()
    _append("GITHUB_OUTPUT", f"result={encoded}\n")


def refusal(outside: list[str]) -> str:
    """The message for a pull request that changes files outside ``assignments/``."""
    listed = "\n".join(f"- `{path}`" for path in outside)
    return (
        "# Not graded: this pull request changes files outside `assignments/`\n\n"
        f"Only your notebooks in `assignments/` are graded, by the grader of the branch you merge into. "
        f"This pull request also changes:\n\n{listed}\n\n"
        "Take those changes out of the pull request, for example with "
        "`git checkout origin/main -- PATH` for each file (use your base branch's name), then "
        "commit and push. Nothing was graded this time.\n"
    )


def grade_pull_request(
    repo: Path, base: str, head: str, *, out: Path, options, log=None
) -> tuple[int, SubmissionResult | None, str]:
    """Check and grade a pull request; publish for GitHub when its variables are set.

    Args:
        repo: a clone holding both commits.
        base: the base branch's commit.
        head: the pull request's commit.
        out: the report folder.
        options: `grader.options.GradeOptions`.
        log: progress lines for people, or None.

    Returns:
        ``(exit code, result or None, the Markdown summary)``: 1 when the pull request is refused,
        0 when it was graded (whatever the points) or has no notebook to grade.
    """
    from grader.grade import grade_submission

    pull = inspect(repo, base, head)
    if pull.outside:
        summary = refusal(pull.outside)
        _publish(summary, classroom_result(None, status="fail", message=summary))
        return 1, None, summary
    others = "".join(
        f"\n- `{path}` is not one of the assignment notebooks, so it is not graded" for path in pull.ungraded
    )
    if not pull.notebooks:
        summary = (
            f"# Nothing to grade\n\nThis pull request changes no assignment notebook in `assignments/`.\n{others}\n"
        )
        _publish(summary, classroom_result(None, status="pass", message="no notebook changed"))
        return 0, None, summary
    with tempfile.TemporaryDirectory(prefix="grade-pr-") as scratch:
        folder = _export(repo, head, Path(scratch))
        result = grade_submission(folder, options=options, out_dir=out, log=log)
    result.name = f"pull request {head[:12]}"
    write_reports(result, out, gradebook=False)
    changed = "".join(f"\n- `{path}`" for path in pull.notebooks)
    summary = (
        to_markdown(result)
        + f"\n## This pull request\n\nIt changes:{changed}\n\nThe points above are for all three notebooks "
        "as they are in this pull request's head commit.\n"
        + (f"\n## Other notebooks\n{others}\n" if others else "")
    )
    _publish(summary, classroom_result(result))
    return 0, result, summary
