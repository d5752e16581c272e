"""A class batch: N copies of the reference submission graded with ``--jobs 1`` and ``--jobs 2``.

    python bench/bench_batch.py [--copies 10] [--jobs 1 2] [--notebooks 01 02 03]

Copies ``solutions/`` N times into a class folder, then runs the real command line once per
``--jobs`` value (``python -m grader grade CLASS --jobs J --force``) on the same machine, one
after the other, and prints each wall time, the time per submission, the ratio to the first
``--jobs`` value, and the points (every copy must get full points, or the figure is void).
``--notebooks`` limits the copies to some notebooks (a quick run: ``--notebooks 01``).
Where no official ResNet-18 weights are found, 03 runs with the stand-in (and says so).
"""

from __future__ import annotations

import argparse
import csv
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def make_class(folder: Path, copies: int, prefixes: list[str]) -> Path:
    notebooks = [p for p in sorted((REPO / "solutions").glob("*.ipynb")) if p.name[:2] in prefixes]
    for index in range(copies):
        student = folder / f"student{index:02d}"
        student.mkdir(parents=True)
        for notebook in notebooks:
            shutil.copy(notebook, student / notebook.name)
    return folder


def run(folder: Path, out: Path, jobs: int, weights: Path) -> tuple[float, list[dict[str, str]]]:
    command = [sys.executable, "-m", "grader", "grade", str(folder), "--out", str(out), "--jobs", str(jobs)]
    command += ["--force", "--no-progress", "--hidden-seed", "1", "--standin-weights-if-missing", str(weights)]
    started = time.perf_counter()
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, check=False)
    elapsed = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"the grader failed ({done.returncode}):\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    with (out / "gradebook.csv").open(newline="") as handle:
        return elapsed, list(csv.DictReader(handle))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--copies", type=int, default=10)
    parser.add_argument("--jobs", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--notebooks", nargs="+", default=["01", "02", "03"], help="number prefixes to copy")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="bench-batch-") as scratch:
        root = Path(scratch)
        folder = make_class(root / "class", args.copies, args.notebooks)
        print(
            f"{args.copies} copies of solutions/ ({', '.join(args.notebooks)}); {os.cpu_count()} CPUs; "
            f"load average before: {os.getloadavg()[0]:.2f}"
        )
        print(f"{'jobs':>4}  {'wall s':>8}  {'s / submission':>14}  {'ratio':>6}  points")
        first = None
        for jobs in args.jobs:
            elapsed, rows = run(folder, root / f"out-{jobs}", jobs, root / "resnet18-standin.pth")
            first = first or elapsed
            full = all(row["points"] == row["max_points"] and row["status"] == "graded" for row in rows)
            points = f"{len(rows)} rows, " + ("all full points" if full else "NOT all full points: figure void")
            print(
                f"{jobs:>4}  {elapsed:8.1f}  {elapsed / len(rows):14.1f}  {first / elapsed:6.2f}  {points}", flush=True
            )
        print(
            f"ratio: wall time of --jobs {args.jobs[0]} / wall time of --jobs J; load average after: "
            f"{os.getloadavg()[0]:.2f}"
        )


if __name__ == "__main__":
    main()
