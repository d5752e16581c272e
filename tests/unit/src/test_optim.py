"""Tests for src.optim: exact warmup schedules, chaining, state round trips, error messages."""

import io
import math

import pytest
import torch
from torch.optim.lr_scheduler import (
    ChainedScheduler,
    ExponentialLR,
    LinearLR,
    MultiStepLR,
    SequentialLR,
)

from src.optim import WarmupScheduler, chain_schedulers


def make_optimizer(lrs=(1.0, 0.5)) -> torch.optim.SGD:
    """SGD with one parameter group per learning rate (two groups check per-group scaling)."""
    groups = [{"params": [torch.nn.Parameter(torch.zeros(2))], "lr": lr} for lr in lrs]
    return torch.optim.SGD(groups)


def lr_sequence(optimizer, scheduler, steps: int) -> list[list[float]]:
    """Learning rates of every group used by each of `steps` optimizer steps."""
    lrs = []
    for _ in range(steps):
        lrs.append([group["lr"] for group in optimizer.param_groups])
        optimizer.step()
        scheduler.step()
    return lrs


def flat(lrs: list[list[float]]) -> list[float]:
    return [lr for step in lrs for lr in step]


def assert_lrs(actual: list[list[float]], expected_group0: list[float], scales=(1.0, 0.5)) -> None:
    """Group 0 follows `expected_group0` to float precision; the other groups scale with it."""
    expected = [lr * scale for lr in expected_group0 for scale in scales]
    assert flat(actual) == pytest.approx(expected, rel=1e-12, abs=1e-15)


def test_warmup_alone_is_linear_then_flat():
    optimizer = make_optimizer()
    scheduler = WarmupScheduler(optimizer, warmup_steps=4, start_factor=0.2)
    assert_lrs(lr_sequence(optimizer, scheduler, 7), [0.2, 0.4, 0.6, 0.8, 1.0, 1.0, 1.0])


def test_factor_is_pure_and_bounded():
    scheduler = WarmupScheduler(make_optimizer(), warmup_steps=5, start_factor=0.5)
    assert [scheduler.factor(s) for s in (0, 1, 5, 6, 1000)] == pytest.approx([0.5, 0.6, 1.0, 1.0, 1.0])
    assert scheduler.factor(2) == scheduler.factor(2)  # no hidden state
    assert scheduler.last_epoch == 0  # factor() did not step


def test_warmup_matches_torch_linear_lr():
    """LinearLR(end_factor=1) is the oracle; the two must agree step by step."""
    ours_opt, torch_opt = make_optimizer(), make_optimizer()
    ours = WarmupScheduler(ours_opt, warmup_steps=7, start_factor=0.05)
    oracle = LinearLR(torch_opt, start_factor=0.05, end_factor=1.0, total_iters=7)
    expected = flat(lr_sequence(torch_opt, oracle, 12))
    assert flat(lr_sequence(ours_opt, ours, 12)) == pytest.approx(expected, rel=1e-12)


def test_chained_with_multistep_exact_sequence():
    optimizer = make_optimizer()
    scheduler = ChainedScheduler([
        WarmupScheduler(optimizer, warmup_steps=4, start_factor=0.2),
        MultiStepLR(optimizer, milestones=[2, 6], gamma=0.1),
    ])
    # step:        0    1    2     3     4    5    6     7
    # warmup:     0.2  0.4  0.6   0.8   1.0  1.0  1.0   1.0
    # multistep:  1    1    0.1   0.1   0.1  0.1  0.01  0.01
    expected = [0.2, 0.4, 0.06, 0.08, 0.1, 0.1, 0.01, 0.01]
    assert_lrs(lr_sequence(optimizer, scheduler, 8), expected)


def test_chained_order_does_not_matter():
    optimizer = make_optimizer()
    scheduler = ChainedScheduler([
        MultiStepLR(optimizer, milestones=[2, 6], gamma=0.1),
        WarmupScheduler(optimizer, warmup_steps=4, start_factor=0.2),
    ])
    assert_lrs(lr_sequence(optimizer, scheduler, 8), [0.2, 0.4, 0.06, 0.08, 0.1, 0.1, 0.01, 0.01])


def test_sequential_lr_warmup_then_multistep_exact_sequence():
    optimizer = make_optimizer()
    scheduler = SequentialLR(
        optimizer,
        schedulers=[
            WarmupScheduler(optimizer, warmup_steps=4, start_factor=0.2),
            MultiStepLR(optimizer, milestones=[2], gamma=0.1),  # counted from the switch at step 4
        ],
        milestones=[4],
    )
    expected = [0.2, 0.4, 0.6, 0.8, 1.0, 1.0, 0.1, 0.1]
    assert_lrs(lr_sequence(optimizer, scheduler, 8), expected)


def test_sequential_lr_switching_into_warmup_uses_closed_form():
    optimizer = make_optimizer()
    scheduler = SequentialLR(
        optimizer,
        schedulers=[
            ExponentialLR(optimizer, gamma=0.5),
            WarmupScheduler(optimizer, warmup_steps=2, start_factor=0.5),
        ],
        milestones=[2],
    )
    # ExponentialLR: 1.0, 0.5; then warmup restarts from base_lr: 0.5, 0.75, 1.0, 1.0
    assert_lrs(lr_sequence(optimizer, scheduler, 6), [1.0, 0.5, 0.5, 0.75, 1.0, 1.0])


def build_chained(optimizer):
    return ChainedScheduler([
        WarmupScheduler(optimizer, warmup_steps=5, start_factor=0.1),
        MultiStepLR(optimizer, milestones=[3, 7], gamma=0.5),
    ])


def test_state_dict_round_trip_mid_warmup_continues_identically():
    optimizer = make_optimizer()
    scheduler = build_chained(optimizer)
    lr_sequence(optimizer, scheduler, 3)  # stop in the middle of warmup
    buffer = io.BytesIO()
    torch.save({"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict()}, buffer)
    expected = lr_sequence(optimizer, scheduler, 8)

    buffer.seek(0)
    state = torch.load(buffer, weights_only=True)
    fresh_optimizer = make_optimizer(lrs=(3.0, 3.0))  # wrong lrs on purpose: the state must win
    fresh_scheduler = build_chained(fresh_optimizer)
    fresh_optimizer.load_state_dict(state["optimizer"])
    fresh_scheduler.load_state_dict(state["scheduler"])
    assert lr_sequence(fresh_optimizer, fresh_scheduler, 8) == expected
    assert fresh_scheduler._schedulers[0].last_epoch == scheduler._schedulers[0].last_epoch


def test_state_dict_holds_configuration():
    state = WarmupScheduler(make_optimizer(), warmup_steps=3, start_factor=0.25).state_dict()
    assert (state["warmup_steps"], state["start_factor"], state["last_epoch"]) == (3, 0.25, 0)
    assert "optimizer" not in state


IN_0_1 = r"start_factor must be in \(0, 1\]"


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"warmup_steps": 0}, ValueError, r"warmup_steps must be >= 1, got 0"),
        ({"warmup_steps": -3}, ValueError, r"warmup_steps must be >= 1, got -3"),
        ({"warmup_steps": 2.5}, TypeError, r"warmup_steps must be an int .* got float 2\.5"),
        ({"warmup_steps": True}, TypeError, r"warmup_steps must be an int .* got bool True"),
        ({"warmup_steps": 3, "start_factor": 0.0}, ValueError, IN_0_1 + r", got 0\.0"),
        ({"warmup_steps": 3, "start_factor": 1.5}, ValueError, IN_0_1 + r", got 1\.5"),
        ({"warmup_steps": 3, "start_factor": math.nan}, ValueError, IN_0_1 + r", got nan"),
        ({"warmup_steps": 3, "start_factor": "0.1"}, TypeError, r"start_factor must be a float .* got str"),
    ],
)
def test_invalid_arguments_are_named(kwargs, error, message):
    with pytest.raises(error, match=message):
        WarmupScheduler(make_optimizer(), **kwargs)


def test_non_optimizer_is_named():
    model = torch.nn.Linear(2, 2)
    with pytest.raises(TypeError, match=r"optimizer must be a torch.optim.Optimizer .* got generator"):
        WarmupScheduler(model.parameters(), warmup_steps=3)


def test_start_factor_one_disables_warmup():
    optimizer = make_optimizer()
    scheduler = WarmupScheduler(optimizer, warmup_steps=3, start_factor=1.0)
    assert_lrs(lr_sequence(optimizer, scheduler, 4), [1.0, 1.0, 1.0, 1.0])


def test_torch_chained_scheduler_rejects_different_optimizers():
    """torch's own check fires; its message is noisy (whole optimizer repr) but says what is wrong."""
    first, second = make_optimizer(), make_optimizer()
    expected = r"expects all schedulers to belong to the same optimizer.*index 1"
    with pytest.raises(ValueError, match=expected):
        ChainedScheduler([
            WarmupScheduler(first, warmup_steps=3),
            MultiStepLR(second, milestones=[5]),
        ])


def test_chain_schedulers_names_the_mismatch():
    first, second = make_optimizer(), make_optimizer()
    warmup = WarmupScheduler(first, warmup_steps=3)
    decay = MultiStepLR(second, milestones=[5])
    with pytest.raises(ValueError) as info:
        chain_schedulers(warmup, decay)
    message = str(info.value)
    assert "same optimizer object" in message
    assert f"scheduler 1 (MultiStepLR) uses SGD at {id(second):#x}" in message
    assert f"scheduler 0 (WarmupScheduler) uses SGD at {id(first):#x}" in message
    assert "\n" not in message


def test_chain_schedulers_builds_a_working_chain():
    optimizer = make_optimizer()
    scheduler = chain_schedulers(
        WarmupScheduler(optimizer, warmup_steps=4, start_factor=0.2),
        MultiStepLR(optimizer, milestones=[2, 6], gamma=0.1),
    )
    assert isinstance(scheduler, ChainedScheduler)
    assert_lrs(lr_sequence(optimizer, scheduler, 8), [0.2, 0.4, 0.06, 0.08, 0.1, 0.1, 0.01, 0.01])


def test_chain_schedulers_rejects_bad_arguments():
    with pytest.raises(ValueError, match="at least one scheduler, got none"):
        chain_schedulers()
    expected = r"scheduler 0 must be a torch.optim.lr_scheduler.LRScheduler, got str"
    with pytest.raises(TypeError, match=expected):
        chain_schedulers("warmup")
