"""How to grade: the options of one grading, and the policies that fill them in. Stage 0.

One place for each policy a command applies:

- `Limits`: what a kernel or a worker may use (CPU seconds, memory, processes, disk, output);
- `hidden_seed`: which seed the hidden convolution cases get, per kind of grading (a class needs
  the instructor's seed, the demo the public one, a single submission or a pull request a random
  one when none is configured);
- `confinement`: whether a kernel must be confined (grading student work: yes; the demo and a
  student's self-check: when bubblewrap works);
- `GradeOptions`: everything above, as `grader.grade` receives it.

Imports only `grader.paths`; the commands (`grader.cli`, `grader.pytest_plugin`) pass in what
they probe (bubblewrap) and print what they are told.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from grader.paths import HIDDEN_SEED_FILE

__all__ = [
    "DEMO_SEED_SOURCE",
    "HIDDEN_SEED_ENV",
    "PUBLIC_SEED",
    "WALL_FACTOR",
    "Confinement",
    "GradeOptions",
    "Limits",
    "OptionError",
    "configured_hidden_seed",
    "confinement",
    "hidden_seed",
]

PUBLIC_SEED = 20240901  # the visible convolution cases, the same for everyone
HIDDEN_SEED_ENV = "GRADER_HIDDEN_SEED"
DEMO_SEED_SOURCE = "the public demo seed (no hidden seed configured)"

# A CPU budget's wall-clock backstop: it stops a process that sleeps or waits instead of computing,
# and is never what decides a point (a busy machine stretches wall time, not CPU time).
WALL_FACTOR = 2.0


@dataclass(frozen=True)
class Limits:
    """Resource limits for one notebook (and for each verification process).

    Attributes:
        cell_timeout: CPU seconds one cell may use (all its threads and processes together); a
            cell that waits instead of computing is stopped after `WALL_FACTOR` times as many
            seconds on the wall clock.
        timeout: CPU seconds the whole notebook may use (kernel start excluded); wall-clock
            backstop as for a cell.
        memory_gib: memory of the kernel and everything it starts, in GiB.
        startup_timeout: seconds a kernel may take to start.
        processes: processes and threads the kernel may have at once (torch starts a thread per
            core, DataLoader workers are processes).
        disk_gib: what the notebook may write in its scratch folder, and the largest file.
        output_mib: outputs kept in the executed notebook, all cells together (a cell keeps at
            most a third of it).
    """

    # The reference CNN trains in one cell: 188 CPU-s on a quiet 2-core machine, 493 CPU-s with 4
    # busy loops beside it (OpenMP threads spin while they wait for a core): generous on purpose.
    cell_timeout: float = 1800.0
    timeout: float = 3600.0
    memory_gib: float = 6.0
    startup_timeout: float = 60.0
    processes: int = 512
    disk_gib: float = 4.0
    output_mib: float = 32.0

    def __post_init__(self) -> None:
        for name in ("cell_timeout", "timeout", "memory_gib", "startup_timeout", "processes", "disk_gib", "output_mib"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or isinstance(value, bool) or value <= 0:
                raise ValueError(f"Limits.{name} must be a positive number, got {value!r}")

    @property
    def cpu_seconds(self) -> int:
        """RLIMIT_CPU of any one process, a last resort under the notebook's own CPU budget."""
        return int(self.timeout) + 120



class OptionError(ValueError):
    """The options cannot be honoured; the message says what to do."""


def configured_hidden_seed(value: int | None = None) -> tuple[int | None, str]:
    """The instructor's hidden-case seed and where it came from.

    Order: ``value`` (the ``--hidden-seed`` flag), ``$GRADER_HIDDEN_SEED``, the instructor's
    file ``grader/hidden_seed.txt``.

    Returns:
        ``(seed, source)``, or ``(None, "")`` when none is configured.
    """
    if value is not None:
        return int(value), "--hidden-seed"
    if os.environ.get(HIDDEN_SEED_ENV):
        return int(os.environ[HIDDEN_SEED_ENV]), f"${HIDDEN_SEED_ENV}"
    if HIDDEN_SEED_FILE.is_file():
        text = HIDDEN_SEED_FILE.read_text().strip()
        if text:
            return int(text.split()[0]), str(HIDDEN_SEED_FILE.name)
    return None, ""


Grading = Literal["demo", "class", "submission", "pull request", "self-check"]


def hidden_seed(grading: Grading, value: int | None = None) -> tuple[int | None, str]:
    """The hidden-case seed a kind of grading uses, and where it came from (for the report).

    A configured seed (`configured_hidden_seed`) always wins. Without one: the demo (the
    reference solutions) uses a public seed; a class is refused, since every student and every
    shard must get the same hidden cases; a single submission or a pull request gets a random
    seed for the run (a secret the student's own workflow could read would not stay secret); a
    student's self-check (``self-check``) has no hidden cases at all.

    Raises:
        OptionError: a class without a configured seed.
    """
    if grading == "self-check":
        return None, ""
    seed, source = configured_hidden_seed(value)
    if seed is not None:
        return seed, source
    if grading == "demo":
        return PUBLIC_SEED + 1, DEMO_SEED_SOURCE
    if grading == "class":
        raise OptionError(
            "grading a class needs the hidden-case seed, so that every student (and every shard) "
            "gets the same hidden cases: pass --hidden-seed N, set $GRADER_HIDDEN_SEED, or write the "
            "number into grader/hidden_seed.txt (never in the student repository)"
        )
    if grading == "pull request":
        return secrets.randbelow(2**62), "a random seed for this run"
    return secrets.randbelow(2**62), "a random seed for this run (no seed configured)"


@dataclass(frozen=True)
class Confinement:
    """Whether kernels run confined (`GradeOptions.sandbox`), and the warning to print."""

    sandbox: bool | None
    warning: str | None = None


def confinement(
    requested: bool | None, *, optional: bool, probe: Callable[[], str | None], fix: str
) -> Confinement:
    """Decide confinement: required to grade student work, optional for the demo and a
    student's self-check on their own machine.

    Args:
        requested: False (``--no-sandbox``), True (``--require-sandbox``), None (not said).
        optional: unconfined is acceptable when not requested and impossible (the demo).
        probe: says why the sandbox cannot start here, or None when it can
            (`grader.confine.sandbox.probe_bwrap`).
        fix: how to make it possible, appended to the error.

    Raises:
        OptionError: confinement is required here and impossible.
    """
    if requested is False:
        return Confinement(False, "--no-sandbox: student code runs unconfined, with your rights; every report says so")
    problem = probe()
    if problem is None:
        return Confinement(True)
    if requested is None and optional:
        return Confinement(None, f"kernels run unconfined (the reference solutions only): {problem}")
    raise OptionError(f"grading student work needs confinement, and {problem}. {fix}")


@dataclass(frozen=True)
class GradeOptions:
    """How to grade.

    Attributes:
        limits: time and memory limits per notebook.
        seed: seed for ``random`` / ``numpy`` / ``torch`` in the kernel.
        hidden_seed: seed of the hidden convolution cases; None grades on the visible cases only
            (the student's self-check).
        hidden_seed_source: where the seed came from, for the report (never the seed itself).
        sandbox: True (required: a kernel that cannot be confined is an error), False (off, said
            in every report), None (bubblewrap when it works).
        rerun: re-run the cells before a fatal one to grade what they define.
        scratch_root: where scratch copies go (default: the system's temporary folder).
        keep_scratch: leave the scratch copies (for debugging).
        only: grade only these assignments' notebooks (by file name), None for all.
    """

    limits: Limits = field(default_factory=Limits)
    seed: int = 0
    hidden_seed: int | None = None
    hidden_seed_source: str = ""
    sandbox: bool | None = None
    rerun: bool = True
    scratch_root: Path | None = None
    keep_scratch: bool = False
    only: tuple[str, ...] | None = None
