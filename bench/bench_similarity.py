"""The similarity report of a generated class: how long `python -m grader similarity OUT` takes.

    python bench/bench_similarity.py [--sizes 30 300] [--notebooks 01 02 03]

For each size, writes a graded report folder of that many submissions without grading them
(``tests/similarity_notebooks.generated_class``: the reference solutions, each submission with
lines of its own added to about half of the lines it wrote, two of them near copies of others),
then runs the real command once and prints its wall time (interpreter start and imports
included), the comparison's own time (from ``summary.json``), the pairs compared, and whether
exactly the planted copies were listed (else the figure is void). Every pair of such a class
shares code, so every pair goes through copydetect's full comparison: the slowest case.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))
sys.path.insert(0, str(REPO))

from similarity_notebooks import generated_class  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[30], help="submissions in the class")
    parser.add_argument("--notebooks", nargs="+", default=["01", "02", "03"], help="number prefixes")
    args = parser.parse_args()

    print(f"{os.cpu_count()} cores; load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    for size in args.sizes:
        with tempfile.TemporaryDirectory(prefix="bench-similarity-") as scratch:
            out = Path(scratch) / "out"
            planted = generated_class(out, size, prefixes=tuple(args.notebooks))
            started = time.perf_counter()
            done = subprocess.run(
                [sys.executable, "-m", "grader", "similarity", str(out)], cwd=REPO, capture_output=True, text=True
            )
            wall = time.perf_counter() - started
            if done.returncode != 0:
                raise SystemExit(f"the command failed ({done.returncode}):\n{done.stderr[-3000:]}")
            summary = json.loads((out / "similarity" / "summary.json").read_text(encoding="utf-8"))
            listed = {(p["notebook"], p["a"], p["b"]) for p in summary["pairs"]}
            pairs = sum(n["pairs"] for n in summary["notebooks"])
            print(
                f"{size} submissions x {len(args.notebooks)} notebooks: {wall:.1f} s for the whole command, "
                f"{summary['elapsed']:.1f} s comparing; {pairs} pairs; "
                f"listed {len(listed)} pairs, "
                + ("exactly the planted copies" if listed == planted else f"NOT the {len(planted)} planted copies")
            )
    print(f"load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
