"""Benchmark of src.engine: prints figures, asserts nothing.

    python bench/bench_engine.py [--repeats 15] [--train-size 4000] [--threads 1] ...

(a) epoch time of `Trainer` against a minimal hand-written loop (same model, data, batch size,
    optimizer), interleaved repeats, median and ratio; the target is a ratio <= 1.05;
(b) `evaluate_loader` over the 10,000 test images on the CPU at batch size 256 (fastest of 3
    interleaved rounds), next to a hand loop over the same DataLoader and a bare forward pass,
    then once at the seed notebook's batch size 1;
(c) input pipeline: samples/s of a DataLoader over in-memory tensors (src.data) against
    torchvision's FashionMNIST with ToTensor (a PIL image per sample), with 0 and 2 workers.

Fashion-MNIST comes through src.data (Debian's files or data/); without it the script falls back
to random images of the same shape and says so. Everything runs on the CPU.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import io
import math
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import DataLoader, Subset, TensorDataset

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from anywhere
from src.engine import Trainer, evaluate_loader  # noqa: E402


def small_cnn() -> nn.Module:
    """The kind of CNN students write for task 1: two conv blocks and a linear head."""
    return nn.Sequential(
        nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),   # (N, 8, 14, 14)
        nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),  # (N, 16, 7, 7)
        nn.Flatten(), nn.Linear(16 * 7 * 7, 10),                     # (N, 10)
    )


def load_data(root: Path) -> tuple[object, object, object | None, str]:
    """(train, test, torchvision test-style dataset or None, source note)."""
    try:
        from torchvision import transforms

        from src import data

        train = data.fashion_mnist_tensors("train", root=root)
        test = data.fashion_mnist_tensors("test", root=root)
        pil = data.load_fashion_mnist("train", root=root, transform=transforms.ToTensor())
        return train, test, pil, "Fashion-MNIST via src.data"
    except (ImportError, FileNotFoundError, AttributeError) as err:
        g = torch.Generator().manual_seed(0)
        make = lambda n: TensorDataset(torch.rand(n, 1, 28, 28, generator=g),  # noqa: E731
                                       torch.randint(0, 10, (n,), generator=g))
        return make(60_000), make(10_000), None, f"SYNTHETIC random images ({err})"


def hand_epoch(model: nn.Module, optimizer, criterion, loader: DataLoader) -> float:
    """The minimal loop a student would write; returns the mean loss."""
    model.train()
    total, seen = 0.0, 0
    for x, y in loader:
        optimizer.zero_grad()
        loss = criterion(model(x), y)
        loss.backward()
        optimizer.step()
        total += loss.item() * len(y)
        seen += len(y)
    return total / seen


def bench_trainer(train_set, *, repeats: int, batch_size: int, log_dir: Path) -> dict:
    """(a) epoch seconds of the hand loop and of Trainer (bare, and with bars + TensorBoard).

    The loops take turns in a rotating order, so drift in machine load hits all of them alike;
    each repeat also gives a ratio of neighbouring measurements, whose median resists outliers.
    """
    torch.manual_seed(0)
    initial = small_cnn()
    criterion = nn.CrossEntropyLoss()

    def make_trainer(**options) -> Trainer:
        model = copy.deepcopy(initial)
        return Trainer(model, optimizer=torch.optim.Adam(model.parameters(), 1e-3),
                       criterion=criterion, train_dataset=train_set, batch_size=batch_size,
                       device="cpu", seed=0, **options)

    bare = make_trainer(progress=False, log_dir=None)
    full = make_trainer(progress=True, log_dir=log_dir)  # the defaults students get
    hand_model = copy.deepcopy(initial)
    hand_optimizer = torch.optim.Adam(hand_model.parameters(), 1e-3)
    hand_loader = DataLoader(train_set, batch_size=batch_size, shuffle=True)

    def timed(fn) -> tuple[float, float]:
        """Wall seconds and CPU seconds of this process (the latter ignores other processes)."""
        wall, cpu = time.perf_counter(), time.process_time()
        with contextlib.redirect_stderr(io.StringIO()):  # progress bars, kept out of the table
            fn()
        return time.perf_counter() - wall, time.process_time() - cpu

    loops = {
        "hand": lambda: hand_epoch(hand_model, hand_optimizer, criterion, hand_loader),
        "trainer": lambda: bare.train(bare.epoch + 1),
        "trainer_full": lambda: full.train(full.epoch + 1),
    }
    for fn in loops.values():  # warm-up: first-call imports and allocations
        timed(fn)
    times = {name: [] for name in loops}
    names = list(loops)
    for r in range(repeats):
        for name in names[r % 3:] + names[:r % 3]:
            times[name].append(timed(loops[name]))
    wall = {name: [t[0] for t in values] for name, values in times.items()}
    cpu = {name: [t[1] for t in values] for name, values in times.items()}
    return {
        "wall_median": {name: statistics.median(v) for name, v in wall.items()},
        "cpu_min": {name: min(v) for name, v in cpu.items()},  # noise only ever adds time
        "cpu_median": {name: statistics.median(v) for name, v in cpu.items()},
        "raw_wall": wall,
    }


def bench_evaluate(model: nn.Module, test_set, batch_sizes: list[int], batch1_size: int,
                   rounds: int = 3) -> list[tuple[str, int, int, float]]:
    """(b) evaluate_loader seconds at batch 256 next to hand-written references, then others."""
    model.eval()
    loader = DataLoader(test_set, batch_size=256, shuffle=False)
    images = torch.cat([x for x, _ in loader])  # (N, 1, 28, 28), gathered outside the timing
    with torch.inference_mode():
        model(images[:256])  # warm-up

    def hand_loop() -> None:  # what evaluate_loader does, minus its checks and metrics
        correct = 0
        with torch.inference_mode():
            for x, y in loader:
                correct += (model(x).argmax(dim=1) == y).sum().item()

    def bare_forward() -> None:  # no DataLoader at all: the floor
        with torch.inference_mode():
            for chunk in images.split(256):
                model(chunk).argmax(dim=1)

    def evaluate() -> None:
        evaluate_loader(loader, model, device="cpu")

    # Interleaved rounds, fastest of each: noise from other processes only ever adds time.
    best: dict[str, float] = {}
    for _ in range(rounds):
        for how, fn in (("forward only, no loader", bare_forward),
                        ("hand loop, same loader", hand_loop), ("evaluate_loader", evaluate)):
            start = time.perf_counter()
            fn()
            best[how] = min(best.get(how, math.inf), time.perf_counter() - start)
    results = [(how, 256, len(test_set), seconds) for how, seconds in best.items()]
    for batch_size in batch_sizes:
        if batch_size == 256:
            continue
        subset = test_set if batch_size > 1 else Subset(test_set, range(batch1_size))
        start = time.perf_counter()
        evaluate_loader(DataLoader(subset, batch_size=batch_size), model, device="cpu")
        results.append(("evaluate_loader", batch_size, len(subset), time.perf_counter() - start))
    return results


def iterate(loader: DataLoader) -> float:
    start = time.perf_counter()
    for _ in loader:
        pass
    return time.perf_counter() - start


def bench_pipeline(datasets: dict, *, size: int, batch_size: int) -> list[tuple[str, int, float]]:
    """(c) samples/s of one shuffled pass; with workers, the second pass (workers already up)."""
    rows = []
    for name, dataset in datasets.items():
        subset = Subset(dataset, range(min(size, len(dataset))))
        for workers in (0, 2):
            loader = DataLoader(subset, batch_size=batch_size, shuffle=True, num_workers=workers,
                                persistent_workers=workers > 0)
            seconds = iterate(loader)
            if workers:
                seconds = iterate(loader)  # steady state, the best case for workers
            rows.append((name, workers, len(subset) / seconds))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=15, help="timed epochs per loop in (a)")
    parser.add_argument("--train-size", type=int, default=4000, help="training images in (a)")
    parser.add_argument("--batch-size", type=int, default=64, help="batch size in (a) and (c)")
    parser.add_argument("--eval-batch-sizes", type=int, nargs="+", default=[1],
                        help="batch sizes for (b) besides 256; 1 is what the seed notebook uses")
    parser.add_argument("--batch1-size", type=int, default=10000,
                        help="images evaluated at batch size 1 in (b)")
    parser.add_argument("--pipeline-size", type=int, default=20000, help="samples per pass in (c)")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch.set_num_threads; 1 (default) keeps a shared machine's noise "
                             "down, 0 leaves torch's default")
    parser.add_argument("--data-root", type=Path, default=None,
                        help="Fashion-MNIST root for src.data (default: a temporary folder)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    total_start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        root = args.data_root or Path(tmp) / "data"
        train, test, pil_train, source = load_data(root)
        train_subset = Subset(train, range(args.train_size))
        print(f"data: {source}; torch {torch.__version__}, {torch.get_num_threads()} threads, CPU")

        a = bench_trainer(train_subset, repeats=args.repeats, batch_size=args.batch_size,
                          log_dir=Path(tmp) / "runs")
        print(f"\n(a) one epoch, {args.train_size} images, batch {args.batch_size}, "
              f"{args.repeats} interleaved repeats")
        header = f"{'wall med':>9}{'CPU min':>9}{'ratio':>7}{'CPU med':>9}{'ratio':>7}"
        print(f"    {'loop':<34}{header}")
        for name, label in (("hand", "hand-written loop"),
                            ("trainer", "Trainer (no bars, no TensorBoard)"),
                            ("trainer_full", "Trainer (bars + TensorBoard)")):
            print(f"    {label:<34}{a['wall_median'][name]:>9.3f}"
                  f"{a['cpu_min'][name]:>9.3f}{a['cpu_min'][name] / a['cpu_min']['hand']:>7.3f}"
                  f"{a['cpu_median'][name]:>9.3f}"
                  f"{a['cpu_median'][name] / a['cpu_median']['hand']:>7.3f}")
        print("    seconds per epoch; CPU = this process's CPU time, less sensitive to other "
              "processes; ratio to the hand loop, target <= 1.05")
        for name, values in a["raw_wall"].items():
            print(f"    raw wall {name:<13}{[round(t, 2) for t in values]}")

        torch.manual_seed(0)
        model = small_cnn()
        print(f"\n(b) evaluation of the {len(test)} test images, CPU")
        print(f"    {'how':<26}{'batch':>6}{'images':>8}{'seconds':>9}{'images/s':>11}")
        for how, batch_size, n, seconds in bench_evaluate(model, test, args.eval_batch_sizes,
                                                          args.batch1_size):
            print(f"    {how:<26}{batch_size:>6}{n:>8}{seconds:>9.3f}{n / seconds:>11,.0f}")

        print(f"\n(c) input pipeline, {args.pipeline_size} samples, batch {args.batch_size}, "
              "shuffled")
        candidates = {"in-memory tensors": train}
        if pil_train is not None:
            candidates["torchvision FashionMNIST + ToTensor"] = pil_train
        print(f"    {'dataset':<38}{'workers':>8}{'samples/s':>12}")
        for name, workers, rate in bench_pipeline(candidates, size=args.pipeline_size,
                                                  batch_size=args.batch_size):
            print(f"    {name:<38}{workers:>8}{rate:>12,.0f}")
    print(f"\ntotal {time.perf_counter() - total_start:.0f} s")


if __name__ == "__main__":
    main()
