"""Write the student repository: what students clone, without the solutions or the hidden seed.

    python -m grader release --student-repo out/student-repo      (nox -s release does this)

The instructor repository (this one) holds the solutions, the tests and, outside git or in a
private repository only, the hidden-case seed. The student repository, the template repository
of a GitHub Classroom assignment, gets:

* ``assignments/``: the templates, generated afresh from ``solutions/``;
* ``src/`` and ``grader/`` (without ``hidden_seed.txt``): the engine the notebooks import, and the
  grader for ``python -m grader check`` and for its own pull-request workflow;
* ``pyproject.toml``, ``noxfile.py``, ``data/README.md``, ``.gitignore``;
* ``student/``'s files at its root: the students' ``README.md`` and
  ``.github/workflows/autograde.yml``.

Nothing else is copied, and the written tree is checked before the command reports success:
no ``solutions/``, no ``hidden_seed.txt``, no solution marker in any file, no file that a solution
notebook contains verbatim.
"""

from __future__ import annotations

import fnmatch
import json
import shutil
import subprocess
from pathlib import Path

from grader.paths import HIDDEN_SEED_FILE, KIT_ROOT, SOLUTIONS_DIR, STUDENT_DIR
from grader.release.templates import BEGIN_SOLUTION, release

__all__ = ["MARKER", "SHIPPED", "ReleaseError", "leaks", "write_student_repo"]

SHIPPED = ["src", "grader", "pyproject.toml", "noxfile.py", "data/README.md", ".gitignore"]
MARKER = ".kit-release.json"
_SKIPPED = ["__pycache__", "*.pyc", "*.egg-info", HIDDEN_SEED_FILE.name, ".ipynb_checkpoints"]


class ReleaseError(RuntimeError):
    """The student repository could not be written safely; the message says what to do."""


def _ignore(folder: str, names: list[str]) -> list[str]:
    return [name for name in names if any(fnmatch.fnmatch(name, pattern) for pattern in _SKIPPED)]


def _copy(source: Path, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    if source.is_dir():
        shutil.copytree(source, target, ignore=_ignore)
    else:
        shutil.copy2(source, target)


def _empty(target: Path) -> None:
    """Remove everything in ``target`` but its ``.git``."""
    for child in target.iterdir():
        if child.name != ".git":
            shutil.rmtree(child) if child.is_dir() and not child.is_symlink() else child.unlink()


def _prepare(target: Path) -> None:
    """Empty ``target`` (keeping ``.git``), refusing a folder that is not an earlier release."""
    if target.exists() and any(target.iterdir()):
        if not (target / MARKER).is_file():
            raise ReleaseError(
                f"{target} exists and is not a student repository written by this command (no {MARKER}); "
                "name an empty or new folder, or a clone of the student repository written before"
            )
        _empty(target)
    target.mkdir(parents=True, exist_ok=True)


def leaks(target: Path, solutions_dir: Path) -> list[str]:
    """What in ``target`` a student must not see; empty when the tree is safe to publish."""
    found = []
    if (target / "solutions").exists():
        found.append("a solutions/ folder")
    solution_texts = {p.read_bytes() for p in solutions_dir.glob("*.ipynb")}
    for path in sorted(p for p in target.rglob("*") if p.is_file() and ".git" not in p.relative_to(target).parts):
        relative = path.relative_to(target)
        if path.name == HIDDEN_SEED_FILE.name:
            found.append(f"{relative}: the hidden-case seed")
            continue
        data = path.read_bytes()
        if data in solution_texts:
            found.append(f"{relative}: a copy of a solution notebook")
        elif path.suffix == ".ipynb" and BEGIN_SOLUTION.encode() in data:
            found.append(f"{relative}: a solution region ({BEGIN_SOLUTION})")
    return found


def _kit_commit() -> str | None:
    done = subprocess.run(
        ["git", "-C", str(KIT_ROOT), "rev-parse", "HEAD"], capture_output=True, text=True, check=False
    )
    return done.stdout.strip() if done.returncode == 0 else None


def write_student_repo(target: Path, *, solutions_dir: Path = SOLUTIONS_DIR) -> list[Path]:
    """Write the student repository tree into ``target``; returns the files written.

    Raises:
        ReleaseError: ``target`` holds something else, or the written tree would leak a solution
            or the seed (it is then removed again).
        MarkerError: a solution notebook's markers are malformed (see `grader.release.templates`).
    """
    target, root = Path(target).resolve(), KIT_ROOT.resolve()
    if (target == root or root in target.parents) and target.relative_to(root).parts[:1] != ("out",):
        raise ReleaseError(
            f"{target} is inside the instructor repository; write the student repository elsewhere or under out/"
        )
    _prepare(target)
    for name in SHIPPED:
        source = KIT_ROOT / name
        if source.exists():
            _copy(source, target / name)
    for source in sorted(STUDENT_DIR.rglob("*")):
        if source.is_file():
            _copy(source, target / source.relative_to(STUDENT_DIR))
    release(solutions_dir=solutions_dir, assignments_dir=target / "assignments")
    problems = leaks(target, solutions_dir)
    if problems:
        _empty(target)
        raise ReleaseError("the student repository would contain: " + "; ".join(problems) + ". Nothing was kept.")
    files = sorted(p for p in target.rglob("*") if p.is_file() and ".git" not in p.relative_to(target).parts)
    manifest = {"kit_commit": _kit_commit(), "files": [str(p.relative_to(target)) for p in files]}
    (target / MARKER).write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    return files
