"""Grader overhead on trivial notebooks: everything but the cells' own run time.

    python bench/bench_grader.py [--repeat 3] [--notebooks 10] [--no-sandbox]

Runs the real command line (``python -m grader.cli grade ...``) in a subprocess on notebooks with
one cell (``x = 1``) and prints, as medians over ``--repeat`` runs:

* one notebook: wall time of the whole command (interpreter start, imports, kernel start, run,
  checks, reports), which is the overhead, the cell taking microseconds;
* N notebooks in one command: wall time, and the extra time per notebook after the first,
  ``(T(N) - T(1)) / (N - 1)``;
* for scale, one kernel's start-up alone (launch to ready), and the load average: on a shared
  machine every figure moves with the load.

Targets (issue 4): <= 1.5 s for one notebook, <= 1 s for each further notebook.
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


def time_command(paths: list[Path], out: Path, extra: list[str]) -> float:
    command = [sys.executable, "-m", "grader.cli", "grade", *map(str, paths), "--out", str(out), *extra]
    command += ["--jobs", "1", "--force", "--no-progress"]  # one after the other, each graded afresh
    started = time.perf_counter()
    done = subprocess.run(command, cwd=REPO, check=False, capture_output=True, text=True)
    elapsed = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"grader failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
    return elapsed


def time_kernel_start(folder: Path, sandbox: bool | None) -> float:
    """Launch-to-ready time of one kernel, for scale: the floor under the one-notebook figure."""
    from grader.kernel import start_kernel

    started = time.perf_counter()
    kernel = start_kernel(workdir=folder / f"kernel{time.perf_counter_ns()}" / "work", sandbox=sandbox)
    try:
        kernel.wait_ready()
        return time.perf_counter() - started
    finally:
        kernel.shutdown()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--notebooks", type=int, default=10)
    parser.add_argument("--no-sandbox", action="store_true")
    args = parser.parse_args(argv)
    extra = ["--no-sandbox"] if args.no_sandbox else []
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        paths = make_notebooks(folder, args.notebooks)
        time_command(paths[:1], folder / "warmup", extra)  # first run builds caches (matplotlib fonts)
        one = [time_command(paths[:1], folder / f"one{r}", extra) for r in range(args.repeat)]
        many = [time_command(paths, folder / f"many{r}", extra) for r in range(args.repeat)]
        boot = [time_kernel_start(folder, False if args.no_sandbox else None) for _ in range(args.repeat)]
    t1, tn = statistics.median(one), statistics.median(many)
    further = (tn - t1) / (args.notebooks - 1)
    mode = "no sandbox" if args.no_sandbox else "sandbox: bubblewrap if it works"
    print(f"grader overhead on trivial notebooks ({mode}; median of {args.repeat})")
    print(
        f"  1 notebook, whole command:       {t1:5.2f} s   (target <= 1.5 s)   "
        f"runs: {', '.join(f'{t:.2f}' for t in one)}"
    )
    print(f"  {args.notebooks} notebooks, whole command:      {tn:5.2f} s")
    print(f"  each further notebook:            {further:5.2f} s   (target <= 1.0 s)")
    print(f"  for scale, one kernel's start-up: {statistics.median(boot):5.2f} s   (launch to ready, in-process)")
    print(f"  load average: {', '.join(f'{x:.1f}' for x in os.getloadavg())} on {os.cpu_count()} CPUs")
    return 0


if __name__ == "__main__":
    sys.exit(main())
