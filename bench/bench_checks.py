"""Where the time of a notebook's model checks goes: worker start-up, loading, evaluation, the extra
evaluations, the grader's comparison.

    python bench/bench_checks.py [--repeat 2] [--no-sandbox] [--graded OUT]

Saves two files like the reference notebooks' (the reference CNN's architecture, and ResNet-18
with the kit's stand-in weights behind `ImageNetInput`; untrained: an evaluation costs the same
whatever the weights), then verifies each as the grader does (`grader.evidence.artifacts.verify_saved_model`,
a fresh confined worker) and prints, as medians over ``--repeat`` runs:

* **start-up**: the worker's wall time minus its own measured time (a fresh confined Python that
  imports torch, and reading its answers back): the other part of the 10-second goal;
* the worker's own steps: ``import`` (torch and ``src`` imported by the fresh Python: start-up
  too, measured inside), ``load`` (archive checks, the graph, what it holds), ``describe``
  (structure, weight digests; for Task 2 the grader's own ResNet-18 built and loaded),
  ``evaluate`` (the 10,000 test images), ``validation`` (a Trainer's 6,000 validation images),
  ``without_convolutions`` (the test set again, convolutions zeroed);
* **comparison**: the grader's own work on the answers (the training tie, for 1 Trainer).

With ``--graded OUT`` (a folder written by ``python -m grader grade``), it also prints each
graded notebook's "checked in" time from its ``result.json``, and the load average.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def cnn():
    """The reference solution's CustomCNN, as a Sequential (same layers, same cost)."""
    from torch import nn

    def block(c_in, c_out, pool):
        layers = [nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU()]
        return layers + ([nn.MaxPool2d(2)] if pool else [])

    return nn.Sequential(*block(1, 16, True), *block(16, 32, True), *block(32, 64, False),
                         nn.Flatten(), nn.Dropout(0.3), nn.Linear(64 * 7 * 7, 10))


def save_files(folder: Path) -> dict[str, Path]:
    import torch
    from torch import nn

    from src.data import ImageNetInput
    from src.export import save_model
    from src.models import WEIGHTS_ENV, load_resnet18, make_standin_weights

    torch.manual_seed(0)
    weights = make_standin_weights(folder / "resnet18-standin.pth").path
    os.environ[WEIGHTS_ENV] = str(weights)
    resnet, _ = load_resnet18()
    resnet.fc = nn.Linear(512, 10)
    return {
        "cnn": save_model(cnn(), folder / "cnn_fashion_mnist.pt2"),
        "transfer": save_model(resnet, folder / "resnet18_fashion_mnist.pt2", preprocess=ImageNetInput()),
    }


def measure(path: Path, kind: str, sandbox, repeat: int) -> dict[str, float]:
    from grader.evidence.artifacts import verify_saved_model
    from grader.evidence.training import tie_trainers
    from grader.options import Limits

    validation = [{"split": "train", "indices": list(range(54_000, 60_000))}] if kind == "cnn" else None
    runs: dict[str, list[float]] = {}
    for _ in range(repeat):
        started = time.perf_counter()
        evidence = verify_saved_model(path, kind=kind, sandbox=sandbox, limits=Limits(), validation=validation)
        wall = time.perf_counter() - started
        if evidence.error:
            raise SystemExit(f"{path.name}: {evidence.error}")
        own = sum(evidence.seconds_by_step.values())
        started = time.perf_counter()
        trainer = {"name": "trainer", "trained": {k: v for k, v in evidence.digests.items() if "running" not in k},
                   "epochs": 1, "steps": 1, "steps_per_epoch": 1, "optimizer_covers_model": True,
                   "history": {"train_loss": [1.0], "lr": [0.1], "val_loss": [], "val_acc": []}}
        tie_trainers([trainer], evidence, path.name, whole=kind == "cnn")
        comparison = time.perf_counter() - started
        figures = {"start-up": wall - own, **evidence.seconds_by_step, "comparison": comparison, "total": wall + comparison}
        for name, seconds in figures.items():
            runs.setdefault(name, []).append(seconds)
    return {name: statistics.median(values) for name, values in runs.items()}


def graded_times(out: Path) -> list[tuple[str, float]]:
    found = []
    for result in sorted(out.glob("*/result.json")):
        data = json.loads(result.read_text())
        for notebook in data.get("notebooks", []):
            found.append((f"{data['name']}/{notebook['name']}", float(notebook.get("checks_elapsed") or 0)))
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--no-sandbox", action="store_true", help="run the worker unconfined")
    parser.add_argument("--graded", type=Path, help="an OUT folder of `python -m grader grade`")
    args = parser.parse_args()

    from grader.confine.sandbox import sandbox_info

    sandbox = sandbox_info(False if args.no_sandbox else None)
    print(f"confinement: {sandbox.detail if hasattr(sandbox, 'detail') else sandbox}; load average {os.getloadavg()}")
    with tempfile.TemporaryDirectory() as folder:
        files = save_files(Path(folder))
        table = {kind: measure(path, kind, sandbox, args.repeat) for kind, path in files.items()}
    names = ["start-up", "import", "load", "describe", "evaluate", "validation", "without_convolutions", "comparison", "total"]
    print(f"\n{'seconds (median of ' + str(args.repeat) + ')':<28}" + "".join(f"{kind:>12}" for kind in table))
    for name in names:
        print(f"{name:<28}" + "".join(f"{table[kind].get(name, 0.0):>12.2f}" for kind in table))
    if args.graded:
        print(f"\nchecked in, per notebook ({args.graded}):")
        for name, seconds in graded_times(args.graded):
            print(f"{seconds:8.1f} s  {name}")
    print(f"\nload average {os.getloadavg()}")


if __name__ == "__main__":
    main()
