"""Which Trainer trained the saved file (`grader.evidence.training`), on described Trainers and a described
file: no kernel, no worker."""

from __future__ import annotations

import math

import torch

from grader.evidence.artifacts import ModelEvidence
from grader.evidence.training import tie_trainers
from grader.run.kernel_side import _digest
from src.export import weights_digest

WEIGHT, BIAS = torch.rand(10, 512), torch.rand(10)
FILE = ModelEvidence(
    path=None,
    digests={"conv1.weight": weights_digest(torch.rand(64, 3, 7, 7)), "fc.weight": weights_digest(WEIGHT),
             "fc.bias": weights_digest(BIAS)},
)


def trainer(name="trainer", **changes):
    facts = {
        "name": name, "epochs": 3, "steps": 30, "steps_per_epoch": 10, "best_epoch": 2,
        "trained": {"weight": weights_digest(WEIGHT), "bias": weights_digest(BIAS)},
        "optimizer_covers_model": True, "criterion": {"plain_cross_entropy": True},
        "history": {"train_loss": [0.9, 0.6, 0.5], "lr": [0.1] * 3, "val_loss": [0.7, 0.5, 0.55], "val_acc": [0.7, 0.8, 0.79]},
    }
    return {**facts, **changes}


def test_the_kernels_digest_is_the_workers():
    for tensor in (torch.rand(3, 4), torch.rand(2, 3, 4, 5).to(memory_format=torch.channels_last), torch.tensor(7),
                   torch.zeros(0), torch.rand(3, dtype=torch.bfloat16)):
        assert _digest(tensor) == weights_digest(tensor)
    assert weights_digest(torch.zeros(2, 3)) != weights_digest(torch.zeros(3, 2))


def test_the_head_trainer_is_tied_under_its_prefix_and_the_whole_model_is_required_for_task_1():
    tie = tie_trainers([trainer()], FILE, "m.pt2", whole=False)
    assert [t["prefix"] for t in tie.trained] == ["fc."] and not tie.trained[0]["validated"]
    tie = tie_trainers([trainer()], FILE, "m.pt2", whole=True)
    assert not tie.trained and "not the whole of m.pt2" in tie.reasons[0]


def test_a_trainer_of_other_weights_or_that_did_not_train_does_not_count():
    other = trainer("decoy", trained={"weight": weights_digest(torch.rand(10, 512))})
    typed = trainer("typed", steps=7)
    idle = trainer("idle", epochs=0, steps=0)
    elsewhere = trainer("aside", optimizer_covers_model=False)
    short = trainer("short", history={"train_loss": [0.5], "lr": [0.1], "val_loss": [0.5], "val_acc": [0.8]})
    tie = tie_trainers([other, typed, idle, elsewhere, short], FILE, "m.pt2", whole=False)
    assert not tie.trained
    reasons = " | ".join(tie.reasons)
    assert "`decoy` trains are not in m.pt2" in reasons and "7 optimizer steps for 3 epochs" in reasons
    assert "`idle` never trained" in reasons and "`aside`'s optimizer does not update" in reasons
    assert "a history of 1" in reasons


def test_the_history_must_be_the_files_on_its_validation_images():
    last = {"loss": 0.5502, "acc": 0.7901, "n": 6000}
    best = {"loss": 0.4999, "acc": 0.8, "n": 6000}  # after load_best(): epoch 2's weights
    typed = {"loss": 0.4321, "acc": 0.8765, "n": 6000}
    for measured, counts in ((last, True), (best, True), (typed, False)):
        evidence = ModelEvidence(path=None, digests=FILE.digests, validation=[measured])
        tie = tie_trainers([trainer()], evidence, "m.pt2", whole=False)
        assert bool(tie.trained) is counts, tie.reasons
    assert "not the training of the saved model" in tie.reasons[0] and "0.4321" in tie.reasons[0]
    # another criterion than plain cross-entropy: only the accuracy is compared
    evidence = ModelEvidence(path=None, digests=FILE.digests, validation=[{"loss": 9.0, "acc": 0.79, "n": 6000}])
    assert tie_trainers([trainer(criterion={"plain_cross_entropy": False})], evidence, "m.pt2", whole=False).trained


def test_a_non_finite_training_loss_is_not_a_training():
    tie = tie_trainers([trainer(history={"train_loss": [math.nan] * 3, "lr": [0.1] * 3})], FILE, "m.pt2", whole=False)
    assert not tie.trained and "not finite" in tie.reasons[0]
