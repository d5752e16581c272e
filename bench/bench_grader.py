"""Grader overhead on trivial notebooks: everything but the cells' own run time.

    python bench/bench_grader.py [--repeat 3] [--notebooks 10] [--before REF] [--no-sandbox]

Runs the real command line (``python -m grader.cli grade ...``) in a subprocess on notebooks with
one cell (``x = 1``) and prints, as medians over ``--repeat`` runs:

* one notebook: wall time of the whole command (interpreter start, imports, confinement, kernel
  start, run, checks, reports), which is the overhead, the cell taking microseconds;
* N notebooks in one command: wall time, and the extra time per notebook after the first,
  ``(T(N) - T(1)) / (N - 1)``;
* with ``--before REF`` (a git commit of this repository, e.g. the one before a change to the
  confinement), the same figures for that version's grader, measured in the same run, one command
  after the other, so that both see the same machine load; and their ratio;
* for scale, one kernel's start-up alone (launch to ready), and the load average.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import nbformat

REPO = Path(__file__).resolve().parents[1]


def make_notebooks(folder: Path, count: int) -> list[Path]:
    paths = []
    for index in range(count):
        path = folder / f"trivial_{index}.ipynb"
        nbformat.write(nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("x = 1")]), path)
        paths.append(path)
    return paths


def time_command(paths: list[Path], out: Path, extra: list[str], *, kit: Path) -> float:
    """Wall time of one grading command run by the grader in ``kit`` (this checkout or another)."""
    command = [sys.executable, "-m", "grader.cli", "grade", *map(str, paths), "--out", str(out), *extra]
    command += ["--jobs", "1", "--force", "--no-progress", "--hidden-seed", "1"]
    started = time.perf_counter()
    done = subprocess.run(command, cwd=kit, check=False, capture_output=True, text=True)
    elapsed = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"grader in {kit} failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
    return elapsed


def time_kernel_start(folder: Path, sandbox: bool | None) -> float:
    """Launch-to-ready time of one confined kernel, for scale: the floor under the one-notebook figure."""
    from grader.kernel import KernelSession
    from grader.sandbox import sandbox_info

    started = time.perf_counter()
    session = KernelSession(workdir=folder / f"kernel{time.perf_counter_ns()}" / "work", sandbox=sandbox_info(sandbox))
    try:
        session.start()
        session.wait_ready()
        return time.perf_counter() - started
    finally:
        session.close()


def checkout(ref: str, folder: Path) -> Path:
    """The repository at ``ref``, as a worktree in ``folder``."""
    target = folder / "before"
    subprocess.run(["git", "-C", str(REPO), "worktree", "add", "--detach", "-q", str(target), ref], check=True)
    return target


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--notebooks", type=int, default=10)
    parser.add_argument("--before", metavar="REF", default=None, help="also time the grader of this git commit")
    parser.add_argument("--no-sandbox", action="store_true")
    args = parser.parse_args(argv)
    extra = ["--no-sandbox"] if args.no_sandbox else []
    kits = {"now": REPO}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        try:
            if args.before:
                kits[args.before] = checkout(args.before, folder)
            paths = make_notebooks(folder, args.notebooks)
            for label, kit in kits.items():  # first runs build caches (matplotlib fonts)
                time_command(paths[:1], folder / f"warmup-{label}", extra, kit=kit)
            one: dict[str, list[float]] = {label: [] for label in kits}
            many: dict[str, list[float]] = {label: [] for label in kits}
            for r in range(args.repeat):
                for label, kit in kits.items():  # interleaved: both versions see the same load
                    one[label].append(time_command(paths[:1], folder / f"one-{label}-{r}", extra, kit=kit))
                for label, kit in kits.items():
                    many[label].append(time_command(paths, folder / f"many-{label}-{r}", extra, kit=kit))
            boot = [time_kernel_start(folder, False if args.no_sandbox else None) for _ in range(args.repeat)]
        finally:
            if args.before:
                subprocess.run(["git", "-C", str(REPO), "worktree", "remove", "--force", str(folder / "before")],
                               check=False, capture_output=True)
    mode = "no sandbox" if args.no_sandbox else "confined (bubblewrap) where it works"
    print(f"grader overhead on trivial notebooks ({mode}; median of {args.repeat})")
    for label in kits:
        t1, tn = statistics.median(one[label]), statistics.median(many[label])
        further = (tn - t1) / (args.notebooks - 1)
        name = "this checkout" if label == "now" else f"grader at {label}"
        print(f"  {name}:")
        print(f"    1 notebook, whole command:   {t1:5.2f} s   runs: {', '.join(f'{t:.2f}' for t in one[label])}")
        print(f"    {args.notebooks} notebooks, whole command: {tn:5.2f} s")
        print(f"    each further notebook:        {further:5.2f} s")
    if args.before:
        ratio = statistics.median(one["now"]) / statistics.median(one[args.before])
        extra_s = statistics.median(one["now"]) - statistics.median(one[args.before])
        print(f"  one notebook, this checkout vs {args.before}: ratio {ratio:.2f} ({extra_s:+.2f} s)")
    from grader.limits import probe_enforcement

    print(f"  for scale, one kernel's start-up: {statistics.median(boot):5.2f} s   (launch to ready, in-process)")
    print(f"  {probe_enforcement().describe()}")
    print(f"  load average: {', '.join(f'{x:.1f}' for x in os.getloadavg())} on {os.cpu_count()} CPUs")
    return 0


if __name__ == "__main__":
    sys.exit(main())
