"""Grader overhead on trivial notebooks: everything but the cells' own run time.

    python bench/bench_grader.py [--repeat 3] [--notebooks 10] [--before REF] [--no-sandbox]
    python bench/bench_grader.py --load [--repeat 3]

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

``--load`` measures instead what a busy machine does to a grade: the reference convolutions
(``solutions/01_convolution.ipynb``) graded ``--repeat`` times quiet and ``--repeat`` times while
``2 x cores`` busy loops run, interleaved; it prints the points of every run (they must all be
10 / 10), the wall time of the whole command and the time of the checks, quiet vs loaded.
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
    from grader.confine.sandbox import sandbox_info
    from grader.run.kernel import KernelSession

    started = time.perf_counter()
    session = KernelSession(workdir=folder / f"kernel{time.perf_counter_ns()}" / "work", sandbox=sandbox_info(sandbox))
    try:
        session.start()
        session.wait_ready()
        return time.perf_counter() - started
    finally:
        session.close()


def grade_once(notebook: Path, out: Path) -> tuple[float, float, float]:
    """Grade ``notebook``: (points, seconds of the whole command, seconds of its checks)."""
    import json

    command = [sys.executable, "-m", "grader.cli", "grade", str(notebook), "--out", str(out), "--force",
               "--no-progress", "--hidden-seed", "1"]
    started = time.perf_counter()
    done = subprocess.run(command, cwd=REPO, check=False, capture_output=True, text=True)
    elapsed = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"grading failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
    [result] = out.glob("*/result.json")
    data = json.loads(result.read_text())
    notebook_result = next(n for n in data["notebooks"] if n["name"] == notebook.name)
    return sum(c["points"] for c in notebook_result["checks"]), elapsed, notebook_result["checks_elapsed"]


def load_comparison(folder: Path, repeat: int) -> None:
    """The reference convolutions graded quiet and under load, interleaved (see the docstring)."""
    notebook = REPO / "solutions" / "01_convolution.ipynb"
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    runs: dict[str, list[tuple[float, float, float]]] = {"quiet": [], "loaded": []}
    grade_once(notebook, folder / "warm-up")
    for r in range(repeat):
        runs["quiet"].append(grade_once(notebook, folder / f"quiet-{r}"))
        loops = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(2 * cores)]
        try:
            time.sleep(1)
            runs["loaded"].append(grade_once(notebook, folder / f"loaded-{r}"))
            load = os.getloadavg()[0]
        finally:
            for loop in loops:
                loop.kill()
                loop.wait()
    print(f"the reference 01 graded quiet and with {2 * cores} busy loops on {cores} cores ({repeat} runs each)")
    for label, results in runs.items():
        points = ", ".join(f"{p:g}" for p, _, _ in results)
        wall = statistics.median(w for _, w, _ in results)
        checks = statistics.median(c for _, _, c in results)
        print(f"  {label:6}: points {points}; whole command {wall:5.1f} s, checks {checks:4.1f} s (medians)")
    ratio = statistics.median(w for _, w, _ in runs["loaded"]) / statistics.median(w for _, w, _ in runs["quiet"])
    print(f"  loaded / quiet, whole command: {ratio:.2f}; load average under load: {load:.1f}")


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
    parser.add_argument("--load", action="store_true", help="points and time of the reference 01, quiet vs loaded")
    args = parser.parse_args(argv)
    if args.load:
        with tempfile.TemporaryDirectory() as tmp:
            load_comparison(Path(tmp), args.repeat)
        return 0
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
    from grader.confine.limits import probe_enforcement

    print(f"  for scale, one kernel's start-up: {statistics.median(boot):5.2f} s   (launch to ready, in-process)")
    print(f"  {probe_enforcement().describe()}")
    print(f"  load average: {', '.join(f'{x:.1f}' for x in os.getloadavg())} on {os.cpu_count()} CPUs")
    return 0


if __name__ == "__main__":
    sys.exit(main())
