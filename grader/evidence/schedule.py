"""The warmup + MultiStepLR schedule, checked by its behaviour over the notebook's own training.

The kernel reports the scheduler's settings (each part's type, ``warmup_steps``, ``milestones``,
``gamma``, base learning rates) and the `src.engine.Trainer` that stepped it (its number of
optimizer steps and, per epoch, the learning rate it used). The grader rebuilds the same chain
here, on a copy of an optimizer, steps it as many times as the Trainer did, and checks:

1. the learning rate rises during the warmup and reaches the base rate before training ends;
2. it drops at a milestone that falls after the warmup and inside the training: milestones given
   in epochs while the Trainer steps per batch (the pitfall the notebook warns about) all fall
   inside the first epoch;
3. the Trainer used this scheduler: the learning rates in its history are the replay's.
"""

from __future__ import annotations

from typing import Any

__all__ = ["replay", "scheduler_verdict"]


def replay(facts: dict[str, Any], steps: int) -> list[float]:
    """The learning rate of each of ``steps`` optimizer steps under the reported chain.

    Raises:
        ValueError: a part the grader cannot rebuild (not a WarmupScheduler or a MultiStepLR).
    """
    import torch
    from torch.optim.lr_scheduler import ChainedScheduler, MultiStepLR, SequentialLR

    from src.optim import WarmupScheduler

    parts = facts.get("parts") or []
    base = next((p["base_lrs"][0] for p in parts if p.get("base_lrs")), None)
    if base is None:
        raise ValueError("the scheduler reports no base learning rate")
    optimizer = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=float(base))
    schedulers = []
    for part in parts:
        kind = str(part.get("type", "")).rsplit(".", 1)[-1]
        if kind == "WarmupScheduler":
            schedulers.append(
                WarmupScheduler(
                    optimizer, warmup_steps=int(part["warmup_steps"]), start_factor=float(part.get("start_factor", 0.1))
                )
            )
        elif kind == "MultiStepLR":
            schedulers.append(MultiStepLR(optimizer, milestones=list(part["milestones"]), gamma=float(part["gamma"])))
        else:
            raise ValueError(f"a {kind} in the chain (the task chains WarmupScheduler and MultiStepLR)")
    if str(facts.get("type", "")).endswith("SequentialLR"):
        chain: Any = SequentialLR(optimizer, schedulers, milestones=list(facts.get("sequential_milestones", [])))
    else:
        chain = ChainedScheduler(schedulers)
    rates = []
    for _ in range(steps):
        rates.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        chain.step()
    return rates


def scheduler_verdict(facts: dict[str, Any], name: str) -> tuple[bool, str]:
    """Whether ``facts`` (`grader.run.kernel_side.scheduler_facts`) show a warmup then step decay that
    the Trainer used; the message says what was found or what to fix."""
    parts = facts.get("parts") or []
    kinds = [str(p.get("type", "")).rsplit(".", 1)[-1] for p in parts]
    missing = [k for k in ("WarmupScheduler", "MultiStepLR") if k not in kinds]
    if not facts.get("is_chain") or missing:
        what = ", ".join(kinds) or "nothing"
        needs = ", ".join(missing) or "a ChainedScheduler around both"
        return False, f"`{name}` is a {str(facts.get('type')).rsplit('.', 1)[-1]} of [{what}]; it needs {needs}."
    users = facts.get("trainers") or []
    if not users:
        return False, (
            f"no src.engine.Trainer was given `{name}` (Trainer(..., scheduler={name})): a scheduler "
            "that nobody steps changes nothing"
        )
    trainer = max(users, key=lambda t: t.get("steps") or 0)
    steps, per_epoch = int(trainer.get("steps") or 0), int(trainer.get("steps_per_epoch") or 0)
    if steps < 1 or per_epoch < 1:
        return False, f"the Trainer that holds `{name}` never trained (0 optimizer steps)"
    try:
        rates = replay(facts, steps)
    except (ValueError, KeyError, TypeError) as error:
        return False, f"the grader could not rebuild `{name}`: {error}."
    warmup = int(next(p for p, k in zip(parts, kinds) if k == "WarmupScheduler").get("warmup_steps", 0))
    milestones = sorted(next(p for p, k in zip(parts, kinds) if k == "MultiStepLR").get("milestones", []))
    base = max(rates)
    epochs = steps / per_epoch
    where = f"{steps} optimizer steps ({epochs:g} epochs of {per_epoch} steps)"
    if warmup >= steps:
        return False, f"the warmup of {warmup} steps does not finish within the training's {where}."
    # Where the learning rate drops after the warmup, as replayed (a SequentialLR counts its
    # MultiStepLR's milestones from its own switch: the replay knows).
    inside = [t for t in range(warmup + 1, steps) if rates[t] < rates[t - 1] * (1 - 1e-9)]
    if not inside:
        hint = ""
        if milestones and max(milestones) <= max(epochs, warmup):
            hint = (
                f" They look like epochs: the Trainer steps the scheduler after every batch, so a milestone "
                f"at epoch e is e * {per_epoch} steps."
            )
        return False, (
            f"MultiStepLR's milestones {milestones} never lower the learning rate after the warmup "
            f"({warmup} steps) and within the training's {where}.{hint}"
        )
    if not rates[0] < max(rates[: warmup + 1]):
        return False, f"the learning rate does not rise during the first {warmup} steps: is it a warmup?"
    history = trainer.get("history", {}).get("lr") or []
    expected = [rates[min((epoch + 1) * per_epoch, steps) - 1] for epoch in range(len(history))]
    if not history or any(abs(a - b) > 1e-6 * max(abs(b), 1e-12) + 1e-12 for a, b in zip(history, expected)):
        return False, (
            f"the learning rates in the Trainer's history do not follow `{name}`: was `{name}` created "
            "on the optimizer the Trainer steps, and not stepped anywhere else?"
        )
    return True, (
        f"`{name}` warms up over {warmup} steps to {base:.3g}, then drops at step(s) "
        f"{', '.join(map(str, inside))} of {steps}, and the Trainer's history follows it."
    )
