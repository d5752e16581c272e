"""Which of a notebook's Trainers trained the saved file, and whether it really trained.

The loss plot, the schedule and the training history count only for the `src.engine.Trainer`
whose model *is* the saved model and which trained it. The kernel describes its Trainers
(`grader.run.kernel_side.training_facts`: claims, forgeable); the grader ties them to the file it
verified itself (`grader.evidence.artifacts.ModelEvidence`):

1. **Same weights.** The digests of the parameters the Trainer trains (``requires_grad``) equal
   the file's tensors under one prefix: the whole model for Task 1, the head (``fc.``) for Task 2.
2. **It trained.** At least one epoch; one history entry per epoch; its optimizer steps are its
   epochs times its batches per epoch; its optimizer updates every parameter it trains, and its
   scheduler (if any) is on that optimizer.
3. **Its history is the file's.** Where the Trainer validated on Fashion-MNIST images the grader
   can find (a split, or a `Subset` of one), the grader evaluates the file on its own copy of
   those images: the loss and accuracy must be the history's at the last epoch or at the best
   one (``load_best``). A history typed in by hand does not match.

What the kernel can still forge, and what it costs, is in ``docs/threat-model.md``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from grader.evidence.artifacts import ModelEvidence

__all__ = ["Tie", "LOSS_TOLERANCE", "ACC_TOLERANCE", "tie_trainers"]

LOSS_TOLERANCE = 0.01  # relative, plus 1e-3: a GPU's last digits, batch sums in another order
ACC_TOLERANCE = 0.003  # a few images near a tie, predicted differently on another device


@dataclass
class Tie:
    """The notebook's Trainers against the saved file.

    Attributes:
        trained: the Trainers that trained the file (their facts, each with ``prefix``, where
            in the file their model's weights are, and ``validated``, whether its history was
            checked against the file on its validation images).
        reasons: for every other Trainer, why it does not count (a sentence naming it).
    """

    trained: list[dict[str, Any]] = field(default_factory=list)
    reasons: list[str] = field(default_factory=list)

    @property
    def names(self) -> set[str]:
        return {str(t.get("name")) for t in self.trained}

    def explain(self, artifact: str) -> str:
        if not self.reasons:
            return (
                f"no src.engine.Trainer in the notebook trained {artifact}: train your model with "
                "Trainer(model, ...).train(num_epochs), then save that model"
            )
        return "; ".join(self.reasons)


def _prefix(trained: dict[str, str], digests: dict[str, str]) -> str | None:
    """Where in the file the Trainer's trained tensors are ("" for the whole model, "fc." for the
    head), or None when they are not all there with the same values."""
    if not trained:
        return None
    first = next(iter(trained))
    candidates = {key[: len(key) - len(first)] for key in digests if key == first or key.endswith("." + first)}
    for prefix in sorted(candidates, key=len):
        if all(digests.get(prefix + name) == digest for name, digest in trained.items()):
            return prefix
    return None


def _close(claimed: float, measured: float, tolerance: float, relative: bool) -> bool:
    if not math.isfinite(claimed):
        return False
    allowed = tolerance * abs(measured) + 1e-3 if relative else tolerance
    return abs(claimed - measured) <= allowed


def _history_matches(trainer: dict[str, Any], measured: dict[str, Any]) -> tuple[bool, str]:
    """The history's validation loss and accuracy at the last or the best epoch against the
    file's on the same images."""
    history = trainer.get("history") or {}
    losses, accuracies = history.get("val_loss") or [], history.get("val_acc") or []
    epochs = [len(losses)]
    best = trainer.get("best_epoch")
    if isinstance(best, int) and 1 <= best <= len(losses):
        epochs.append(best)
    plain = bool((trainer.get("criterion") or {}).get("plain_cross_entropy"))
    for epoch in epochs:
        if epoch < 1 or epoch > len(accuracies):
            continue
        loss, acc = float(losses[epoch - 1]), float(accuracies[epoch - 1])
        if _close(acc, measured["acc"], ACC_TOLERANCE, False) and (not plain or _close(loss, measured["loss"], LOSS_TOLERANCE, True)):
            return True, ""
    last = len(losses)
    claimed = f"validation loss {float(losses[-1]):.4f}, accuracy {float(accuracies[-1]):.4f}" if losses and accuracies else "no validation"
    return False, (
        f"the history of `{trainer.get('name')}` says {claimed} at epoch {last}, but the grader measures "
        f"loss {measured['loss']:.4f}, accuracy {measured['acc']:.4f} for the saved file on the same "
        f"{measured.get('n', 0)} validation images: that history is not the training of the saved model"
    )


def _trained_consistently(trainer: dict[str, Any]) -> str:
    """Why the Trainer's counters and history do not show a training ("" when they do)."""
    name = trainer.get("name")
    epochs, steps, per_epoch = trainer.get("epochs") or 0, trainer.get("steps") or 0, trainer.get("steps_per_epoch") or 0
    history = trainer.get("history") or {}
    if epochs < 1 or steps < 1:
        return f"`{name}` never trained (its train() did not complete an epoch)"
    lengths = {key: len(history.get(key) or []) for key in ("train_loss", "lr")}
    if any(length != epochs for length in lengths.values()):
        return f"`{name}` reports {epochs} epochs but a history of {max(lengths.values())}: its history was not written by train()"
    if per_epoch < 1 or abs(steps - epochs * per_epoch) >= per_epoch:
        return (
            f"`{name}` reports {steps} optimizer steps for {epochs} epochs of {per_epoch} batches: its counters "
            "were not written by train()"
        )
    if not trainer.get("optimizer_covers_model"):
        return (
            f"`{name}`'s optimizer does not update the parameters its model trains (or its scheduler is on "
            "another optimizer): it did not train that model"
        )
    if not all(math.isfinite(v) for v in history.get("train_loss") or []):
        return f"`{name}`'s training loss is not finite"
    return ""


def tie_trainers(trainers: list[dict[str, Any]], evidence: ModelEvidence, artifact: str, *, whole: bool) -> Tie:
    """Which of ``trainers`` (`grader.run.kernel_side.training_facts`, in order) trained the file.

    Args:
        trainers: the kernel's description of each Trainer.
        evidence: the saved file, verified (its ``digests``; ``validation`` in the same order
            as ``trainers``).
        artifact: the file's name, for messages.
        whole: the Trainer's model must be the whole saved model (Task 1), not a part (Task 2's head).
    """
    tie = Tie()
    for index, trainer in enumerate(trainers):
        name = trainer.get("name")
        prefix = _prefix(trainer.get("trained") or {}, evidence.digests)
        if prefix is None or (whole and prefix != ""):
            what = "the whole of" if whole and prefix else "in"
            tie.reasons.append(f"the weights `{name}` trains are not {what} {artifact}")
            continue
        problem = _trained_consistently(trainer)
        if problem:
            tie.reasons.append(problem)
            continue
        measured = evidence.validation[index] if index < len(evidence.validation) else None
        validated = bool(measured) and bool((trainer.get("history") or {}).get("val_loss"))
        if validated:
            ok, problem = _history_matches(trainer, measured)
            if not ok:
                tie.reasons.append(problem)
                continue
        tie.trained.append({**trainer, "prefix": prefix, "validated": validated})
    return tie
