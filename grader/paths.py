"""Where the kit's own files are: one place, so the sandbox knows exactly what it exposes.

A kernel sees ``src/`` (the engine the notebooks import) and nothing else of the kit; the
grader's other files (this package, ``solutions/``, ``tests/``, the hidden seed) stay outside.
"""

from __future__ import annotations

import functools
import hashlib
from pathlib import Path

__all__ = [
    "ASSIGNMENTS_DIR",
    "CONV_WORKER",
    "GRADER_DIR",
    "HIDDEN_SEED_FILE",
    "KERNEL_SIDE",
    "KIT_ROOT",
    "LAUNCHER",
    "MODEL_WORKER",
    "SOLUTIONS_DIR",
    "SRC_DIR",
    "STUDENT_DIR",
    "code_version",
]

GRADER_DIR = Path(__file__).resolve().parent
KIT_ROOT = GRADER_DIR.parent
SRC_DIR = KIT_ROOT / "src"
SOLUTIONS_DIR = KIT_ROOT / "solutions"
ASSIGNMENTS_DIR = KIT_ROOT / "assignments"
STUDENT_DIR = KIT_ROOT / "student"

# Instructor-only: lives in the instructor's repository, never in the student release.
HIDDEN_SEED_FILE = GRADER_DIR / "hidden_seed.txt"

# Files that run outside the grader's process, copied (never the whole package) where they run.
KERNEL_SIDE = GRADER_DIR / "run" / "kernel_side.py"  # loaded into each notebook kernel
LAUNCHER = GRADER_DIR / "confine" / "launch.py"  # joins the process limits, then execs the sandbox
CONV_WORKER = GRADER_DIR / "evidence" / "workers" / "conv_worker.py"
MODEL_WORKER = GRADER_DIR / "evidence" / "workers" / "model_worker.py"


@functools.cache
def code_version() -> str:
    """sha256 over the grader's and the engine's Python sources: a grade depends on both.

    The hidden seed file is not a source and is left out.
    """
    digest = hashlib.sha256()
    for folder in (GRADER_DIR, SRC_DIR):
        for path in sorted(folder.rglob("*.py")):
            digest.update(str(path.relative_to(KIT_ROOT)).encode() + b"\0")
            digest.update(path.read_bytes())
    return digest.hexdigest()
