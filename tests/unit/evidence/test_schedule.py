"""The warmup + MultiStepLR check, by behaviour: real schedulers and a real (tiny) Trainer, read
the way the kernel reads them (`grader.run.kernel_side.scheduler_facts`), replayed by the grader."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn
from torch.optim.lr_scheduler import ChainedScheduler, MultiStepLR, SequentialLR
from torch.utils.data import TensorDataset

from grader.evidence.schedule import scheduler_verdict
from grader.run.kernel_side import scheduler_facts
from src.engine import Trainer
from src.optim import WarmupScheduler

SAMPLES, BATCH, EPOCHS = 200, 20, 4
STEPS = math.ceil(SAMPLES / BATCH)  # per epoch


def namespace(make_scheduler, *, give_to_trainer: bool = True) -> dict:
    """A notebook's namespace after training a tiny head: ``scheduler`` and ``trainer``."""
    torch.manual_seed(0)
    data = TensorDataset(torch.randn(SAMPLES, 8), torch.randint(0, 3, (SAMPLES,)))
    head = nn.Linear(8, 3)
    optimizer = torch.optim.SGD(head.parameters(), lr=0.1)
    scheduler = make_scheduler(optimizer)
    trainer = Trainer(
        head, optimizer=optimizer, criterion=nn.CrossEntropyLoss(), train_dataset=data, batch_size=BATCH,
        scheduler=scheduler if give_to_trainer else None, seed=0, progress=False, log_dir=None,
    )
    trainer.train(EPOCHS)
    return {"scheduler": scheduler, "trainer": trainer}


def verdict(make_scheduler, **kwargs) -> tuple[bool, str]:
    return scheduler_verdict(scheduler_facts(namespace(make_scheduler, **kwargs), "scheduler"), "scheduler")


def in_steps(optimizer):
    return ChainedScheduler([
        WarmupScheduler(optimizer, warmup_steps=STEPS),
        MultiStepLR(optimizer, milestones=[2 * STEPS, 3 * STEPS], gamma=0.1),
    ])


def test_warmup_then_milestones_in_steps_used_by_the_trainer_passes():
    ok, message = verdict(in_steps)
    assert ok, message
    assert f"warms up over {STEPS} steps" in message and "the Trainer's history follows it" in message


@pytest.mark.parametrize(
    "make",
    [
        # Another correct schedule: a short warmup, one late milestone, another gamma.
        lambda o: ChainedScheduler([WarmupScheduler(o, warmup_steps=3, start_factor=0.5),
                                    MultiStepLR(o, milestones=[35], gamma=0.5)]),
        # One after the other instead of together.
        lambda o: SequentialLR(o, [WarmupScheduler(o, warmup_steps=STEPS), MultiStepLR(o, milestones=[STEPS], gamma=0.1)],
                               milestones=[STEPS]),
    ],
    ids=["other-milestones", "sequential"],
)
def test_other_correct_schedules_pass(make):
    ok, message = verdict(make)
    assert ok, message


def test_milestones_in_epochs_are_caught_with_the_reason():
    def in_epochs(optimizer):
        return ChainedScheduler([WarmupScheduler(optimizer, warmup_steps=STEPS), MultiStepLR(optimizer, milestones=[2, 3])])

    ok, message = verdict(in_epochs)
    assert not ok and "[2, 3]" in message and "look like epochs" in message and f"e * {STEPS} steps" in message


def test_a_scheduler_the_trainer_never_stepped_fails():
    ok, message = verdict(in_steps, give_to_trainer=False)
    assert not ok and "no src.engine.Trainer was given `scheduler`" in message


def test_a_chain_without_warmup_or_whose_history_differs_fails():
    ok, message = verdict(lambda o: ChainedScheduler([MultiStepLR(o, milestones=[5])]))
    assert not ok and "needs WarmupScheduler" in message
    ns = namespace(in_steps)
    facts = scheduler_facts(ns, "scheduler")
    facts["trainers"][0]["history"]["lr"][-1] = 0.123  # a history that is not this schedule's
    ok, message = scheduler_verdict(facts, "scheduler")
    assert not ok and "do not follow `scheduler`" in message
