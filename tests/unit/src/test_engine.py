"""Tests for src.engine: device choice, the training loop, checkpoints, evaluate_loader, errors.

Unit tests run on tiny synthetic data in a second or two; the one ``slow`` test trains a small CNN
on a Fashion-MNIST subset read from Debian's ``dataset-fashion-mnist`` files.
"""

import math

import numpy as np
import pytest
import torch
from sklearn.metrics import f1_score
from torch import nn
from torch.optim.lr_scheduler import ChainedScheduler, MultiStepLR, ReduceLROnPlateau
from torch.utils.data import DataLoader, TensorDataset

from src.data import fashion_mnist_tensors
from src.engine import Trainer, evaluate_loader, loader_settings, pick_device
from src.optim import WarmupScheduler

NUM_CLASSES = 4
TRAIN_SIZE, VAL_SIZE, BATCH = 70, 30, 16  # 70 = 4 * 16 + 6: the last batch is smaller
STEPS_PER_EPOCH = math.ceil(TRAIN_SIZE / BATCH)


# ------------------------------------------------------------------ fixtures


def make_data(n: int, seed: int) -> TensorDataset:
    """Learnable toy images (N, 1, 8, 8): the class decides which quadrant is bright."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, NUM_CLASSES, (n,), generator=g)
    images = torch.rand(n, 1, 8, 8, generator=g) * 0.5
    for i, label in enumerate(labels.tolist()):
        row, col = divmod(label, 2)
        images[i, 0, row * 4:row * 4 + 4, col * 4:col * 4 + 4] += 0.5
    return TensorDataset(images, labels)


class TinyCNN(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2))
        self.dropout = nn.Dropout(0.2)  # makes runs depend on the torch RNG, as real models do
        self.head = nn.Linear(4 * 4 * 4, NUM_CLASSES)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.features(x)  # (N, 4, 4, 4)
        return self.head(self.dropout(x.flatten(1)))  # (N, NUM_CLASSES)


@pytest.fixture
def data():
    return make_data(TRAIN_SIZE, seed=1), make_data(VAL_SIZE, seed=2)


def make_trainer(data, *, model_seed=0, with_scheduler=True, **kwargs) -> Trainer:
    """A CPU Trainer with Adam and warmup chained with MultiStepLR, quiet by default."""
    torch.manual_seed(model_seed)
    model = TinyCNN()
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    scheduler = None
    if with_scheduler:
        scheduler = ChainedScheduler([
            WarmupScheduler(optimizer, warmup_steps=STEPS_PER_EPOCH, start_factor=0.2),
            MultiStepLR(optimizer, milestones=[2 * STEPS_PER_EPOCH], gamma=0.1),
        ])
    options = dict(optimizer=optimizer, criterion=nn.CrossEntropyLoss(), train_dataset=data[0],
                   val_dataset=data[1], scheduler=scheduler, batch_size=BATCH, device="cpu",
                   log_dir=None, progress=False)
    options.update(kwargs)
    return Trainer(model, **options)


def comparable(history: dict) -> dict:
    """History without wall-clock times."""
    return {key: value for key, value in history.items() if key != "epoch_time"}


def assert_same_weights(a: nn.Module, b: nn.Module) -> None:
    for (name, x), (_, y) in zip(a.state_dict().items(), b.state_dict().items(), strict=True):
        assert torch.equal(x, y), name


# --------------------------------------------------------------- pick_device


@pytest.mark.parametrize(
    ("cuda", "mps", "expected"),
    [(True, True, "cuda"), (False, True, "mps"), (False, False, "cpu")],
)
def test_pick_device_prefers_cuda_then_mps_then_cpu(monkeypatch, cuda, mps, expected):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: mps)
    assert pick_device() == torch.device(expected)


def test_pick_device_given_device_wins(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert pick_device("cpu") == torch.device("cpu")
    assert pick_device(torch.device("cpu")) == torch.device("cpu")


def test_pick_device_rejects_bad_values(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    allowed = r"device must be 'cpu', 'cuda', 'cuda:<index>' or 'mps'"
    with pytest.raises(ValueError, match=allowed + r", got 'gpu'"):
        pick_device("gpu")
    with pytest.raises(ValueError, match=r"got 'meta'"):
        pick_device("meta")
    with pytest.raises(ValueError, match=r"device 'cuda' asked for, but this machine has 0 CUDA GPU"):
        pick_device("cuda")
    with pytest.raises(ValueError, match=r"Apple MPS is not available"):
        pick_device("mps")
    with pytest.raises(TypeError, match=r"device must be None, a str or a torch.device, got int"):
        pick_device(0)


def test_loader_settings_follow_the_device(monkeypatch):
    monkeypatch.setattr("os.cpu_count", lambda: 16)
    assert loader_settings(torch.device("cpu")) == {
        "num_workers": 0, "pin_memory": False, "persistent_workers": False}
    assert loader_settings(torch.device("cuda")) == {
        "num_workers": 4, "pin_memory": True, "persistent_workers": True}
    assert loader_settings(torch.device("cpu"), num_workers=2)["persistent_workers"] is True


# ------------------------------------------------------------------ training


def test_scheduler_steps_once_after_every_optimizer_step(data):
    calls = []

    class CountingMultiStepLR(MultiStepLR):
        def step(self, *args, **kwargs):
            calls.append("scheduler")
            super().step(*args, **kwargs)

    torch.manual_seed(0)
    model = TinyCNN()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    scheduler = CountingMultiStepLR(optimizer, milestones=[STEPS_PER_EPOCH])
    optimizer.register_step_post_hook(lambda *args: calls.append("optimizer"))
    calls.clear()  # the scheduler's own initial step
    trainer = Trainer(model, optimizer=optimizer, criterion=nn.CrossEntropyLoss(),
                      train_dataset=data[0], scheduler=scheduler, batch_size=BATCH,
                      device="cpu", log_dir=None, progress=False)
    trainer.train(2)
    assert calls == ["optimizer", "scheduler"] * (2 * STEPS_PER_EPOCH)
    assert trainer.step == 2 * STEPS_PER_EPOCH == 10
    assert trainer.history["lr"] == pytest.approx([0.1, 0.01])  # milestone after epoch 1's batches


def test_history_records_warmup_lr_per_batch(data):
    trainer = make_trainer(data)
    history = trainer.train(3)
    assert set(history) == {"train_loss", "val_loss", "val_acc", "lr", "epoch_time"}
    assert all(len(values) == 3 for values in history.values())
    # lr of the last batch of each epoch: warmup step 4 of 5, then full, then decayed
    assert history["lr"] == pytest.approx([0.01 * (0.2 + 0.8 * 4 / 5), 0.01, 0.001])
    assert all(0.0 <= acc <= 1.0 for acc in history["val_acc"])
    assert all(t > 0 for t in history["epoch_time"])


def test_train_loss_is_the_sample_weighted_mean(data):
    """With lr=0 the weights never change, so the epoch loss must equal a direct computation."""
    torch.manual_seed(0)
    model = TinyCNN().eval()  # no dropout: the loss is then a fixed function of the data
    model.dropout.p = 0.0
    optimizer = torch.optim.SGD(model.parameters(), lr=0.0)
    trainer = Trainer(model, optimizer=optimizer, criterion=nn.CrossEntropyLoss(),
                      train_dataset=data[0], val_dataset=data[1], batch_size=BATCH,
                      device="cpu", log_dir=None, progress=False)
    history = trainer.train(1)
    images, labels = data[0].tensors
    with torch.no_grad():
        expected = nn.functional.cross_entropy(model(images), labels).item()
    assert history["train_loss"][0] == pytest.approx(expected, rel=1e-6)
    val_images, val_labels = data[1].tensors
    with torch.no_grad():
        val_logits = model(val_images)
    assert history["val_loss"][0] == pytest.approx(
        nn.functional.cross_entropy(val_logits, val_labels).item(), rel=1e-6)
    assert history["val_acc"][0] == (val_logits.argmax(1) == val_labels).sum().item() / VAL_SIZE


def test_loss_falls_on_learnable_data(data):
    history = make_trainer(data, with_scheduler=False).train(4)
    assert history["train_loss"][-1] < 0.7 * history["train_loss"][0]


def test_train_counts_epochs_in_total(data):
    trainer = make_trainer(data)
    trainer.train(1)
    trainer.train(2)  # one more epoch, not two
    assert trainer.epoch == 2 and len(trainer.history["train_loss"]) == 2
    with pytest.warns(UserWarning, match="2 epochs already done, nothing to train"):
        trainer.train(2)
    with pytest.raises(ValueError, match=r"2 are already done, got num_epochs=1: pass a number > 2"):
        trainer.train(1)


def test_same_seed_gives_identical_runs(data):
    first = make_trainer(data, seed=123)
    second = make_trainer(data, seed=123)
    assert comparable(first.train(2)) == comparable(second.train(2))
    assert_same_weights(first.model, second.model)
    other = make_trainer(data, seed=7)
    assert other.train(2)["train_loss"] != first.history["train_loss"]  # shuffling differs


def test_best_model_is_kept_and_checkpointed(data, tmp_path, monkeypatch):
    trainer = make_trainer(data, checkpoint_dir=tmp_path)
    snapshots = []
    val_losses = iter([0.5, 0.3, 0.4])  # epoch 2 is the best

    def fake_validate():
        snapshots.append({k: v.clone() for k, v in trainer.model.state_dict().items()})
        return next(val_losses), 0.9

    monkeypatch.setattr(trainer, "_validate", fake_validate)
    trainer.train(3)
    assert (trainer.best_epoch, trainer.best_val_loss) == (2, 0.3)

    trainer.load_best()
    for key, value in trainer.model.state_dict().items():
        assert torch.equal(value, snapshots[1][key]), key
        assert not torch.equal(value, snapshots[2][key]) or "running" in key

    best = torch.load(tmp_path / "best.pt", weights_only=True)
    last = torch.load(tmp_path / "last.pt", weights_only=True)
    assert (best["epoch"], last["epoch"]) == (2, 3)
    assert best["best_model"] is None  # its "model" already is the best
    for key, value in snapshots[1].items():
        assert torch.equal(best["model"][key], value)
        assert torch.equal(last["best_model"][key], value)
    for key, value in snapshots[2].items():
        assert torch.equal(last["model"][key], value)


def test_checkpoint_is_a_plain_dict_of_state_dicts(data, tmp_path):
    trainer = make_trainer(data, checkpoint_dir=tmp_path)
    trainer.train(1)
    checkpoint = torch.load(tmp_path / "last.pt", weights_only=True)
    assert set(checkpoint) == {"model", "optimizer", "scheduler", "epoch", "step", "best_val_loss",
                               "best_epoch", "best_model", "history", "rng"}
    assert checkpoint["epoch"] == 1 and checkpoint["step"] == STEPS_PER_EPOCH
    assert set(checkpoint["model"]) == set(trainer.model.state_dict())
    assert checkpoint["optimizer"]["param_groups"][0]["lr"] == trainer.optimizer.param_groups[0]["lr"]
    assert checkpoint["scheduler"]["_schedulers"][0]["last_epoch"] == STEPS_PER_EPOCH
    assert checkpoint["history"] == trainer.history
    assert checkpoint["best_val_loss"] == trainer.best_val_loss == trainer.history["val_loss"][0]
    assert (tmp_path / "best.pt").exists()
    assert not list(tmp_path.glob("*.tmp"))


def test_resume_after_one_epoch_equals_two_epochs_straight(data, tmp_path):
    straight = make_trainer(data, seed=0)
    straight.train(2)

    first = make_trainer(data, seed=0, checkpoint_dir=tmp_path)
    first.train(1)
    # a different initial model on purpose: everything must come from the checkpoint
    resumed = make_trainer(data, seed=0, model_seed=99, resume_from=tmp_path / "last.pt")
    assert resumed.epoch == 1
    torch.rand(1000)  # other work between loading and training must not change the run
    resumed.train(2)

    assert comparable(resumed.history) == comparable(straight.history)
    assert_same_weights(resumed.model, straight.model)
    assert resumed.optimizer.param_groups[0]["lr"] == straight.optimizer.param_groups[0]["lr"]
    assert (resumed.best_epoch, resumed.best_val_loss) == (straight.best_epoch, straight.best_val_loss)


def test_load_checkpoint_method_and_best_after_resume(data, tmp_path):
    first = make_trainer(data, seed=0, checkpoint_dir=tmp_path)
    first.train(2)
    resumed = make_trainer(data, seed=0, model_seed=5)
    resumed.load_checkpoint(tmp_path / "last.pt")
    resumed.load_best()
    first.load_best()
    assert_same_weights(resumed.model, first.model)


def test_load_checkpoint_rejects_mismatches(data, tmp_path):
    trainer = make_trainer(data, checkpoint_dir=tmp_path)
    trainer.train(1)
    no_scheduler = make_trainer(data, with_scheduler=False)
    with pytest.raises(ValueError, match="saved with a scheduler but this Trainer has no scheduler"):
        no_scheduler.load_checkpoint(tmp_path / "last.pt")
    torch.save({"model": {}}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match=r"not a Trainer checkpoint: missing keys \['optimizer'"):
        trainer.load_checkpoint(tmp_path / "other.pt")


def test_load_best_without_validation_explains(data):
    trainer = make_trainer(data, val_dataset=None)
    history = trainer.train(1)
    assert math.isnan(history["val_loss"][0]) and trainer.best_epoch is None
    with pytest.raises(RuntimeError, match="pass val_dataset to Trainer and call train"):
        trainer.load_best()


def test_tensorboard_logs_every_epoch(data, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    trainer = make_trainer(data, log_dir=tmp_path, run_name="toy", log_every=2)
    trainer.train(2)
    events = EventAccumulator(str(tmp_path / "toy")).Reload()
    tags = set(events.Tags()["scalars"])
    assert {"loss/train", "loss/val", "accuracy/val", "lr", "batch/loss", "batch/lr"} <= tags
    assert [e.value for e in events.Scalars("loss/val")] == pytest.approx(trainer.history["val_loss"])
    assert [e.step for e in events.Scalars("batch/loss")] == [2, 4, 6, 8, 10]


def test_progress_bars_do_not_break_training(data, capsys):
    trainer = make_trainer(data, progress=True, log_every=1)
    trainer.train(1)
    assert "epochs" in capsys.readouterr().err


# ------------------------------------------------------------ input checks


@pytest.mark.parametrize(
    ("change", "error", "message"),
    [
        ({"batch_size": 0}, ValueError, r"batch_size must be a positive int, got 0"),
        ({"batch_size": 2.5}, TypeError, r"batch_size must be a positive int, got float 2\.5"),
        ({"batch_size": True}, TypeError, r"batch_size must be a positive int, got bool True"),
        ({"train_dataset": TensorDataset(torch.zeros(0, 1, 8, 8), torch.zeros(0))}, ValueError,
         r"train_dataset is empty \(len 0\)"),
        ({"val_dataset": []}, ValueError, r"val_dataset is empty"),
        ({"train_dataset": iter([1, 2])}, TypeError,
         r"train_dataset must be a map-style dataset .* got list_iterator"),
        ({"criterion": nn.CrossEntropyLoss(reduction="sum")}, ValueError,
         r"criterion must average over the batch \(reduction='mean', the default\), "
         r"got reduction='sum'"),
        ({"criterion": "cross_entropy"}, TypeError, r"criterion must be callable, .* got str"),
        ({"optimizer": "adam"}, TypeError, r"optimizer must be a torch.optim.Optimizer .* got str"),
        ({"scheduler": "warmup"}, TypeError,
         r"scheduler must be a torch.optim.lr_scheduler.LRScheduler or None, got str"),
        ({"num_workers": -1}, ValueError, r"num_workers must be None or an int >= 0, got -1"),
        ({"device": "gpu"}, ValueError, r"device must be 'cpu', 'cuda'"),
        ({"seed": 1.5}, TypeError, r"seed must be None or an int, got float 1\.5"),
        ({"log_every": 0}, ValueError, r"log_every must be a positive int, got 0"),
    ],
)
def test_trainer_rejects_bad_arguments(data, change, error, message):
    with pytest.raises(error, match=message):
        make_trainer(data, with_scheduler=False, **change)


def test_trainer_rejects_non_module(data):
    optimizer = torch.optim.SGD(TinyCNN().parameters(), lr=0.1)
    with pytest.raises(TypeError, match=r"model must be a torch.nn.Module, got function"):
        Trainer(lambda x: x, optimizer=optimizer, criterion=nn.CrossEntropyLoss(),
                train_dataset=data[0], log_dir=None)


def test_trainer_rejects_optimizer_of_another_model(data):
    old_model = TinyCNN()
    optimizer = torch.optim.Adam(old_model.parameters())
    expected = r"optimizer holds none of the model's parameters \(4 tensors in the optimizer, 4 in"
    with pytest.raises(ValueError, match=expected):
        Trainer(TinyCNN(), optimizer=optimizer, criterion=nn.CrossEntropyLoss(),
                train_dataset=data[0], log_dir=None, device="cpu")


def test_trainer_warns_about_trainable_parameters_left_out(data):
    model = TinyCNN()
    optimizer = torch.optim.Adam(model.head.parameters())  # head only, but nothing frozen
    with pytest.warns(UserWarning, match=r"2 trainable parameter tensors \(40 values\) .* never change"):
        Trainer(model, optimizer=optimizer, criterion=nn.CrossEntropyLoss(),
                train_dataset=data[0], log_dir=None, device="cpu")


def test_left_out_parameters_warning_points_at_the_line_that_built_the_trainer(data):
    model = TinyCNN()
    optimizer = torch.optim.Adam(model.head.parameters())
    with pytest.warns(UserWarning, match="never change") as record:
        Trainer(model, optimizer=optimizer, criterion=nn.CrossEntropyLoss(),
                train_dataset=data[0], log_dir=None, device="cpu")
    assert record[0].filename == __file__


def test_trainer_rejects_scheduler_of_another_optimizer(data):
    model = TinyCNN()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    other = torch.optim.SGD(model.parameters(), lr=0.1)
    for scheduler in (MultiStepLR(other, milestones=[3]),
                      ChainedScheduler([WarmupScheduler(other, 3), MultiStepLR(other, [5])])):
        with pytest.raises(ValueError) as info:
            Trainer(model, optimizer=optimizer, criterion=nn.CrossEntropyLoss(),
                    train_dataset=data[0], scheduler=scheduler, log_dir=None, device="cpu")
        message = str(info.value)
        assert f"different optimizer (SGD at {id(other):#x})" in message
        assert f"the one given to Trainer (SGD at {id(optimizer):#x})" in message


def test_trainer_rejects_reduce_on_plateau(data):
    model = TinyCNN()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    with pytest.raises(TypeError, match="ReduceLROnPlateau needs a metric"):
        Trainer(model, optimizer=optimizer, criterion=nn.CrossEntropyLoss(), train_dataset=data[0],
                scheduler=ReduceLROnPlateau(optimizer), log_dir=None, device="cpu")


@pytest.mark.parametrize(("num_epochs", "error"), [(0, ValueError), (-2, ValueError), ("3", TypeError),
                                                   (1.0, TypeError)])
def test_train_rejects_bad_num_epochs(data, num_epochs, error):
    with pytest.raises(error, match=rf"num_epochs must be a positive int, got .*{num_epochs}"):
        make_trainer(data).train(num_epochs)


# ------------------------------------------------------------ evaluate_loader


class FixedLogits(nn.Module):
    """Returns its input as logits (through an identity Linear, so it has a parameter and a device),
    and records whether it was in training mode and whether autograd was off."""

    def __init__(self, num_classes: int) -> None:
        super().__init__()
        self.linear = nn.Linear(num_classes, num_classes)
        with torch.no_grad():
            self.linear.weight.copy_(torch.eye(num_classes))
            self.linear.bias.zero_()
        self.seen = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.seen.append((self.training, torch.is_inference_mode_enabled(), x.device))
        return self.linear(x)


def uneven_case():
    """10 samples, batches of 4, 4, 2: the first 8 right, the last 2 wrong; class 4 never occurs.

    Exact accuracy is 8/10 = 0.8; the mean of per-batch accuracies would be (1 + 1 + 0) / 3.
    """
    targets = torch.tensor([0, 1, 2, 3, 0, 1, 2, 3, 0, 1])
    predicted = torch.tensor([0, 1, 2, 3, 0, 1, 2, 3, 2, 3])
    logits = torch.nn.functional.one_hot(predicted, 5).float() * 3.0 + torch.rand(10, 5) * 0.1
    return logits, targets, predicted


def test_evaluate_loader_is_exact_with_a_smaller_last_batch():
    logits, targets, predicted = uneven_case()
    loader = DataLoader(TensorDataset(logits, targets), batch_size=4, shuffle=False)
    model = FixedLogits(5)
    result = evaluate_loader(loader, model, criterion=nn.CrossEntropyLoss())

    assert result["acc"] == 0.8
    assert result["acc"] != pytest.approx((1 + 1 + 0) / 3)
    np.testing.assert_array_equal(result["predictions"], predicted.numpy())
    np.testing.assert_array_equal(result["targets"], targets.numpy())
    assert result["f1"] == pytest.approx(f1_score(targets, predicted, average="macro"))
    assert result["loss"] == pytest.approx(nn.functional.cross_entropy(logits, targets).item(), rel=1e-6)
    matrix = result["confusion_matrix"]
    assert matrix.shape == (5, 5) and matrix.dtype.kind == "i"
    assert matrix.trace() == 8 and matrix[0, 2] == 1 and matrix[1, 3] == 1
    assert matrix[4].sum() == 0  # absent class still has a row
    assert isinstance(result["acc"], float) and isinstance(result["f1"], float)


@pytest.mark.parametrize("was_training", [True, False])
def test_evaluate_loader_restores_mode_and_disables_autograd(was_training):
    logits, targets, _ = uneven_case()
    model = FixedLogits(5).train(was_training)
    evaluate_loader(DataLoader(TensorDataset(logits, targets), batch_size=4), model)
    assert model.training is was_training
    assert model.seen and all(not training and inference for training, inference, _ in model.seen)


def test_evaluate_loader_restores_mode_after_an_error():
    model = FixedLogits(5).train()
    bad = DataLoader(TensorDataset(torch.zeros(4, 5), torch.zeros(4, dtype=torch.long)), batch_size=4)
    model.forward = lambda x: x.sum(dim=1)  # (N,) instead of (N, num_classes)
    expected = r"logits of shape \(N, num_classes\) = \(4, num_classes\), got \(4,\)"
    with pytest.raises(ValueError, match=expected):
        evaluate_loader(bad, model)
    assert model.training


def test_evaluate_loader_rejects_empty_loader_and_non_module():
    empty = DataLoader(TensorDataset(torch.zeros(0, 5), torch.zeros(0, dtype=torch.long)), batch_size=4)
    with pytest.raises(ValueError, match="loader yielded no batches"):
        evaluate_loader(empty, FixedLogits(5))
    with pytest.raises(TypeError, match="model must be a torch.nn.Module, got function"):
        evaluate_loader(empty, lambda x: x)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_evaluate_loader_and_trainer_move_batches_to_the_gpu(data):
    logits, targets, predicted = uneven_case()
    model = FixedLogits(5).cuda()
    loader = DataLoader(TensorDataset(logits, targets), batch_size=4, pin_memory=True)
    result = evaluate_loader(loader, model)
    assert result["acc"] == 0.8
    assert all(device.type == "cuda" for _, _, device in model.seen)
    trainer = make_trainer(data, device=None, seed=0)
    assert trainer.device.type == "cuda" and trainer.train_loader.pin_memory
    history = trainer.train(2)
    assert next(trainer.model.parameters()).is_cuda and len(history["val_acc"]) == 2


# -------------------------------------------------- integration (real data)

def fashion_mnist(split: str, limit: int, offset: int = 0) -> TensorDataset:
    """A slice of real Fashion-MNIST as plain tensors: images (N, 1, 28, 28) in [0, 1]."""
    data = fashion_mnist_tensors(split)
    return TensorDataset(data.images[offset:offset + limit], data.targets[offset:offset + limit])


def small_cnn() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),   # (N, 8, 14, 14)
        nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),  # (N, 16, 7, 7)
        nn.Flatten(), nn.Linear(16 * 7 * 7, 10),                     # (N, 10)
    )


@pytest.mark.slow
def test_fashion_mnist_end_to_end(tmp_path):
    train = fashion_mnist("train", 6000)
    val = fashion_mnist("train", 1000, offset=6000)
    test = fashion_mnist("test", 2000)
    torch.manual_seed(0)
    model = small_cnn()
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    steps_per_epoch = math.ceil(len(train) / 64)
    scheduler = ChainedScheduler([
        WarmupScheduler(optimizer, warmup_steps=steps_per_epoch // 2),
        MultiStepLR(optimizer, milestones=[steps_per_epoch], gamma=0.3),
    ])
    trainer = Trainer(model, optimizer=optimizer, criterion=nn.CrossEntropyLoss(),
                      train_dataset=train, val_dataset=val, scheduler=scheduler, batch_size=64,
                      checkpoint_dir=tmp_path / "ckpt", log_dir=tmp_path / "runs",
                      run_name="fmnist", seed=0, progress=False)
    history = trainer.train(2)

    assert all(len(values) == 2 for values in history.values())
    assert history["train_loss"][1] < history["train_loss"][0]
    assert history["val_loss"][1] < history["val_loss"][0]
    assert history["val_acc"][1] > 0.7
    assert (tmp_path / "ckpt" / "last.pt").exists() and (tmp_path / "ckpt" / "best.pt").exists()
    assert list((tmp_path / "runs" / "fmnist").glob("events.out.tfevents.*"))

    trainer.load_best()
    fresh = small_cnn()
    fresh.load_state_dict(torch.load(tmp_path / "ckpt" / "best.pt", weights_only=True)["model"])
    x_test, y_test = test.tensors
    model.eval(), fresh.eval()
    with torch.inference_mode():
        logits = model(x_test)
        assert torch.equal(fresh(x_test), logits)
    result = evaluate_loader(DataLoader(test, batch_size=300), model)  # 2000 = 6 * 300 + 200
    assert result["acc"] == (logits.argmax(1) == y_test).sum().item() / len(y_test)
    assert result["acc"] > 0.7 and result["f1"] > 0.65
    assert result["confusion_matrix"].sum() == len(test)


def test_progress_interval_follows_tqdm_mininterval(monkeypatch):
    from src.engine import _tqdm_options

    monkeypatch.setenv("TQDM_MININTERVAL", "7")
    assert _tqdm_options()["mininterval"] == 7.0
    monkeypatch.setenv("TQDM_MININTERVAL", "often")  # not a number: the default for where we run
    assert _tqdm_options()["mininterval"] in (0.1, 30.0)
