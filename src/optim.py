"""Learning-rate warmup that chains with torch's schedulers.

`WarmupScheduler` raises the learning rate linearly from ``start_factor * lr`` to ``lr`` over the
first ``warmup_steps`` optimizer steps, then leaves it alone. It is a pure ``factor(step)`` plus
the small stateful shell that `torch.optim.lr_scheduler.LRScheduler` provides, so it works with
`ChainedScheduler` (both schedules apply at once: warmup and `MultiStepLR` decay multiply) and
`SequentialLR` (one schedule after the other), and it saves and restores through
``state_dict()`` / ``load_state_dict()``.

Steps, not epochs. `src.engine.Trainer` calls ``scheduler.step()`` after *every optimizer step*,
that is after every batch. Every count you give a scheduler used with the Trainer is therefore a
number of batches: ``warmup_steps``, and also ``MultiStepLR``'s ``milestones``. To decay at the
start of epochs 5 and 8 (0-based), with ``steps_per_epoch = ceil(len(train_dataset) / batch_size)``
(the number of batches per epoch, ``len(trainer.train_loader)``)::

    import math
    from torch.optim.lr_scheduler import ChainedScheduler, MultiStepLR
    from src.optim import WarmupScheduler

    steps_per_epoch = math.ceil(len(train_dataset) / batch_size)
    scheduler = ChainedScheduler([
        WarmupScheduler(optimizer, warmup_steps=steps_per_epoch),  # first epoch warms up
        MultiStepLR(optimizer, milestones=[5 * steps_per_epoch, 8 * steps_per_epoch], gamma=0.1),
    ])
"""

from __future__ import annotations

import numbers

from torch.optim import Optimizer
from torch.optim.lr_scheduler import ChainedScheduler, LRScheduler

__all__ = ["WarmupScheduler", "chain_schedulers"]


class WarmupScheduler(LRScheduler):
    r"""Linear learning-rate warmup over the first ``warmup_steps`` optimizer steps.

    With ``base_lr`` the learning rate the optimizer was created with and ``s`` the number of
    ``step()`` calls made so far (0 before the first optimizer step), the optimizer step number
    ``s`` runs with::

        lr(s) = base_lr * factor(s)
        factor(s) = start_factor + (1 - start_factor) * min(s, warmup_steps) / warmup_steps

    so the first step uses ``start_factor * base_lr``, the factor grows by the same amount after
    every step, and steps ``warmup_steps, warmup_steps + 1, ...`` use ``base_lr``. Example with
    ``base_lr=1.0, warmup_steps=4, start_factor=0.2``: 0.2, 0.4, 0.6, 0.8, 1.0, 1.0, ...
    This is `torch.optim.lr_scheduler.LinearLR` with ``end_factor=1``; the name and the steps-first
    documentation are what this class adds.

    ``get_lr`` is *chainable*: each step multiplies the optimizer's current ``lr`` by
    ``factor(s) / factor(s - 1)`` instead of overwriting it, so inside a
    `torch.optim.lr_scheduler.ChainedScheduler` another scheduler's changes (``MultiStepLR``'s
    decay) are kept and the two factors multiply.

    Steps vs epochs: `src.engine.Trainer` steps the scheduler after every batch, so
    ``warmup_steps`` counts batches; one epoch is ``ceil(len(train_dataset) / batch_size)`` steps.

    Args:
        optimizer: the optimizer whose learning rates to warm up (every parameter group).
        warmup_steps: number of optimizer steps until the full learning rate, a positive int.
        start_factor: fraction of the learning rate used on the first step, in ``(0, 1]``. The
            default 0.1 starts ten times lower: small enough that the first large gradients of a
            new head do not wreck pretrained weights. ``1.0`` disables warmup.
        last_epoch: index of the last step taken; leave at -1 except when rebuilding a scheduler
            by hand (prefer ``load_state_dict``).

    Raises:
        TypeError: ``optimizer`` is not a `torch.optim.Optimizer`, or ``warmup_steps`` is not an
            int, or ``start_factor`` is not a real number.
        ValueError: ``warmup_steps < 1`` or ``start_factor`` outside ``(0, 1]``.
    """

    def __init__(
        self,
        optimizer: Optimizer,
        warmup_steps: int,
        *,
        start_factor: float = 0.1,
        last_epoch: int = -1,
    ) -> None:
        if not isinstance(optimizer, Optimizer):
            raise TypeError(
                "optimizer must be a torch.optim.Optimizer (e.g. torch.optim.SGD(params, lr=0.1)), "
                f"got {type(optimizer).__name__}"
            )
        if isinstance(warmup_steps, bool) or not isinstance(warmup_steps, numbers.Integral):
            raise TypeError(
                f"warmup_steps must be an int (a number of optimizer steps), "
                f"got {type(warmup_steps).__name__} {warmup_steps!r}"
            )
        if warmup_steps < 1:
            raise ValueError(f"warmup_steps must be >= 1, got {warmup_steps}")
        if isinstance(start_factor, bool) or not isinstance(start_factor, numbers.Real):
            raise TypeError(
                f"start_factor must be a float in (0, 1], got {type(start_factor).__name__} "
                f"{start_factor!r}"
            )
        if not 0.0 < start_factor <= 1.0:  # also rejects NaN
            raise ValueError(f"start_factor must be in (0, 1], got {start_factor}")
        self.warmup_steps = int(warmup_steps)
        self.start_factor = float(start_factor)
        super().__init__(optimizer, last_epoch)

    def factor(self, step: int) -> float:
        """The multiplier of the base learning rate at optimizer step ``step`` (0-based); pure."""
        progress = min(step, self.warmup_steps) / self.warmup_steps  # 0 -> 1, then stays 1
        return self.start_factor + (1.0 - self.start_factor) * progress

    def get_lr(self) -> list[float]:
        """Next learning rates, multiplicative on each group's current ``lr`` (chainable form)."""
        s = self.last_epoch
        if s == 0:
            return [group["lr"] * self.factor(0) for group in self.optimizer.param_groups]
        if self._is_initial or s > self.warmup_steps:
            # Rebuilt with last_epoch >= 0 (the optimizer already holds the lr), or warmup is over.
            return [group["lr"] for group in self.optimizer.param_groups]
        ratio = self.factor(s) / self.factor(s - 1)
        return [group["lr"] * ratio for group in self.optimizer.param_groups]

    def _get_closed_form_lr(self) -> list[float]:
        """Learning rates at ``last_epoch`` from ``base_lrs``; SequentialLR switches in with it."""
        return [base_lr * self.factor(max(self.last_epoch, 0)) for base_lr in self.base_lrs]


def chain_schedulers(*schedulers: LRScheduler) -> ChainedScheduler:
    """`torch.optim.lr_scheduler.ChainedScheduler` over ``schedulers``, with a clearer error.

    torch checks that all schedulers drive the same optimizer, but its message prints the whole
    optimizer and then "which is different from SGD" even when both are SGD. This checks first and
    names the culprit; the result is a plain ``ChainedScheduler``.

    Args:
        *schedulers: schedulers built on one and the same optimizer object, applied in order.

    Returns:
        ``ChainedScheduler(list(schedulers))``.

    Raises:
        TypeError: an argument is not an LRScheduler.
        ValueError: no schedulers, or two of them were built on different optimizers.
    """
    if not schedulers:
        raise ValueError("chain_schedulers needs at least one scheduler, got none")
    for i, scheduler in enumerate(schedulers):
        if not isinstance(scheduler, LRScheduler):
            raise TypeError(
                f"scheduler {i} must be a torch.optim.lr_scheduler.LRScheduler, "
                f"got {type(scheduler).__name__}"
            )
    first = schedulers[0].optimizer
    for i, scheduler in enumerate(schedulers[1:], start=1):
        if scheduler.optimizer is not first:
            raise ValueError(
                "all chained schedulers must be built on the same optimizer object, but "
                f"scheduler {i} ({type(scheduler).__name__}) uses {_describe(scheduler.optimizer)} "
                f"while scheduler 0 ({type(schedulers[0]).__name__}) uses {_describe(first)}: "
                "create every scheduler from the optimizer you train with"
            )
    return ChainedScheduler(list(schedulers))


def _describe(optimizer: Optimizer) -> str:
    """A one-line name for an optimizer: its class and identity (the repr spans many lines)."""
    return f"{type(optimizer).__name__} at {id(optimizer):#x}"
