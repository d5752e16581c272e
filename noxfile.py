"""Sessions for students, instructors and CI.

Every session runs in the Python environment that runs nox (``venv_backend="none"``) and
installs the kit into it first. Why not one virtualenv per session, nox's default: torch is a
5 GB install, and copying it into a fresh environment per session costs minutes and disk for
nothing. Use a virtualenv of your own around nox if you want isolation.

    nox -s grade                  # grade the reference solutions (the main job)
    nox -s grade -- PATH...       # grade submissions (folders or notebooks)
    nox -s tests                  # the full test suite, slow tests included
    nox -s tests -- -m "not slow" # the quick part only
    nox -s release                # regenerate assignments/ and write out/student-repo
    nox -s check                  # a student's self-check of assignments/*.ipynb
    nox -s bench                  # benchmarks that print their figures
"""

from __future__ import annotations

from pathlib import Path

import nox

nox.options.default_venv_backend = "none"
nox.options.sessions = ["tests"]


def _install(session: nox.Session) -> None:
    session.run("python", "-m", "pip", "install", "--quiet", "-e", ".[test]", external=True)


@nox.session
def tests(session: nox.Session) -> None:
    """Run the test suite (pytest); extra arguments go to pytest."""
    if not Path("tests").is_dir():
        session.skip("no tests/ here (a student repository): use `nox -s check`")
    _install(session)
    session.run("python", "-m", "pytest", *session.posargs, external=True)


@nox.session
def check(session: nox.Session) -> None:
    """A student's self-check of each notebook in assignments/ (or of the notebooks named)."""
    _install(session)
    for notebook in session.posargs or sorted(str(p) for p in Path("assignments").glob("*.ipynb")):
        session.run("python", "-m", "grader", "check", notebook, external=True)


@nox.session
def grade(session: nox.Session) -> None:
    """Grade submissions; with no arguments, grade the reference solutions.

    Grading the reference solutions is also the kit's demo, so on a machine that cannot get the
    official ResNet-18 weights it falls back to a stand-in (and the reports say so). Real
    submissions are graded only with the weights the machine has.
    """
    _install(session)
    args = session.posargs or ["--standin-weights-if-missing", "out/weights/resnet18-standin.pth"]
    session.run("python", "-m", "grader", "grade", *args, external=True)


@nox.session
def release(session: nox.Session) -> None:
    """Write assignments/ from solutions/ and the student repository into out/student-repo."""
    _install(session)
    args = session.posargs or ["--student-repo", "out/student-repo"]
    session.run("python", "-m", "grader", "release", *args, external=True)


@nox.session
def bench(session: nox.Session) -> None:
    """Run the benchmarks; each prints its figures."""
    _install(session)
    session.run("python", "bench/bench_engine.py", *session.posargs, external=True)
