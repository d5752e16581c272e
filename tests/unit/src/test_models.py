"""Tests for src.models: where ResNet-18's weights come from, the stand-in, head, freezing, counts.

No test touches the network: torchvision's path reads a checkpoint the test writes into a
temporary TORCH_HOME, and downloads are replaced by functions that fail like an offline machine.
"""

import functools
import json
import pickle
import socket
import time
from pathlib import Path
from urllib.error import URLError

import pytest
import torch
from torch import nn
from torchvision.models import ResNet18_Weights, resnet18

from src import models
from src.models import (
    DOWNLOAD_TIMEOUT_S,
    OFFICIAL_FILENAME,
    OFFICIAL_SHA256_PREFIX,
    ParamCounts,
    WeightsNotFoundError,
    count_parameters,
    describe_weights,
    freeze_all_but_head,
    load_resnet18,
    make_standin_weights,
    replace_head,
)

RESNET18_TOTAL = 11_689_512  # torchvision's resnet18, 1000 classes
HEAD_10 = 512 * 10 + 10


# ------------------------------------------------------------------ fixtures


@pytest.fixture
def torch_home(tmp_path, monkeypatch):
    """An empty TORCH_HOME, no KIT_RESNET18_WEIGHTS, and a download that fails like offline."""
    home = tmp_path / "torch-home"
    monkeypatch.setenv("TORCH_HOME", str(home))
    monkeypatch.setattr(torch.hub, "_hub_dir", None)  # in case something called torch.hub.set_dir
    monkeypatch.delenv("KIT_RESNET18_WEIGHTS", raising=False)
    attempts = []

    def offline(url, dst, hash_prefix=None, progress=True):
        attempts.append({"url": url, "socket_timeout": socket.getdefaulttimeout()})
        raise URLError("[Errno -2] Name or service not known")

    monkeypatch.setattr(torch.hub, "download_url_to_file", offline)
    return home, attempts


@functools.lru_cache(maxsize=None)  # building a ResNet-18 costs ~0.3 s; tests only read these
def seeded_state_dict(seed: int) -> dict[str, torch.Tensor]:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return resnet18(weights=None).state_dict()


def assert_weights_equal(model: nn.Module, state_dict: dict[str, torch.Tensor]) -> None:
    actual = model.state_dict()
    assert actual.keys() == state_dict.keys()
    assert all(torch.equal(actual[key], state_dict[key]) for key in state_dict)


# ------------------------------------------------------------------ loading


def test_official_name_matches_torchvision():
    assert ResNet18_Weights.IMAGENET1K_V1.url.endswith("/" + OFFICIAL_FILENAME)
    assert OFFICIAL_FILENAME == f"resnet18-{OFFICIAL_SHA256_PREFIX}.pth"


def test_hub_cache_goes_through_torchvision_and_is_reported_not_official(torch_home):
    home, attempts = torch_home
    cached = home / "hub" / "checkpoints" / OFFICIAL_FILENAME
    cached.parent.mkdir(parents=True)
    state_dict = seeded_state_dict(1)
    torch.save(state_dict, cached)

    model, info = load_resnet18()

    assert attempts == []  # read from the cache, no download
    assert info.source == "torchvision-hub-cache" and info.path == cached
    assert len(info.sha256) == 64 and not info.sha256.startswith(OFFICIAL_SHA256_PREFIX)
    assert info.official is False
    assert info.description.startswith("NOT the official ImageNet weights: unknown file")
    assert_weights_equal(model, state_dict)


class _RunsCodeWhenUnpickled:
    def __reduce__(self):
        return (Path.touch, (Path(self.marker),))


def test_unsafe_hub_cache_is_refused_before_torchvision_unpickles_it(torch_home):
    home, _ = torch_home
    cached = home / "hub" / "checkpoints" / OFFICIAL_FILENAME
    cached.parent.mkdir(parents=True)
    payload = _RunsCodeWhenUnpickled()
    payload.marker = str(home / "code-ran")
    torch.save({"conv1.weight": payload}, cached)

    with pytest.raises(pickle.UnpicklingError, match="Weights only load failed"):
        load_resnet18()
    assert not (home / "code-ran").exists()


def test_official_flag_follows_the_hash(tmp_path, monkeypatch):
    path = tmp_path / "weights.pth"
    torch.save(seeded_state_dict(0), path)
    monkeypatch.setattr(models, "_sha256", lambda _: OFFICIAL_SHA256_PREFIX + "0" * 56)
    info = describe_weights(path, source="local-file")
    assert info.official is True
    assert info.description == "official torchvision IMAGENET1K_V1"


def test_local_file_by_argument_and_by_env(torch_home, tmp_path, monkeypatch):
    from_arg, from_env = tmp_path / "arg.pth", tmp_path / "env.pth"
    torch.save(seeded_state_dict(2), from_arg)
    torch.save(seeded_state_dict(3), from_env)
    monkeypatch.setenv("KIT_RESNET18_WEIGHTS", str(from_env))

    model, info = load_resnet18()
    assert info.source == "local-file" and info.path == from_env and not info.official
    assert_weights_equal(model, seeded_state_dict(3))

    model, info = load_resnet18(from_arg)  # the argument wins over the environment
    assert info.path == from_arg
    assert_weights_equal(model, seeded_state_dict(2))


def test_num_classes_replaces_the_head(torch_home, tmp_path):
    path = tmp_path / "w.pth"
    torch.save(seeded_state_dict(0), path)
    model, _ = load_resnet18(path, num_classes=10)
    assert model.fc.out_features == 10 and model.fc.in_features == 512
    assert model(torch.rand(2, 3, 32, 32)).shape == (2, 10)


def test_missing_local_file_names_it_and_the_fixes(torch_home, tmp_path, monkeypatch):
    monkeypatch.setenv("KIT_RESNET18_WEIGHTS", str(tmp_path / "nowhere.pth"))
    with pytest.raises(WeightsNotFoundError, match=r"nowhere\.pth \(from \$KIT_RESNET18_WEIGHTS\) does not exist"):
        load_resnet18()


def test_wrong_checkpoint_is_a_clear_error(torch_home, tmp_path):
    path = tmp_path / "other.pth"
    torch.save(nn.Linear(2, 2).state_dict(), path)
    with pytest.raises(ValueError, match="is not a torchvision ResNet-18 state_dict"):
        load_resnet18(path)


def test_nothing_anywhere_fails_fast_and_names_the_fixes(torch_home):
    home, attempts = torch_home
    before = socket.getdefaulttimeout()
    start = time.perf_counter()

    with pytest.raises(WeightsNotFoundError) as info:
        load_resnet18()

    assert time.perf_counter() - start < 5
    assert isinstance(info.value, FileNotFoundError)
    assert [a["url"] for a in attempts] == [ResNet18_Weights.IMAGENET1K_V1.url]
    assert attempts[0]["socket_timeout"] == DOWNLOAD_TIMEOUT_S  # the download could not hang
    assert socket.getdefaulttimeout() == before  # and the timeout was restored
    message = str(info.value)
    assert str(home / "hub" / "checkpoints" / OFFICIAL_FILENAME) in message
    assert "Name or service not known" in message
    assert "KIT_RESNET18_WEIGHTS" in message and "weights_path" in message
    assert "python -m src.models make-standin PATH" in message


# ------------------------------------------------------------------ stand-in


def test_standin_is_labelled_deterministic_and_leaves_the_rng_alone(torch_home, tmp_path, monkeypatch):
    state = torch.get_rng_state()
    info = make_standin_weights(tmp_path / "a" / "standin.pth", seed=0)
    assert torch.equal(state, torch.get_rng_state())

    sidecar = json.loads((tmp_path / "a" / "standin.pth.json").read_text())
    assert sidecar["kind"] == "stand-in" and sidecar["not"] == "ImageNet-pretrained"
    assert sidecar["sha256"] == info.sha256
    assert info.official is False and info.source == "local-file"
    assert info.description.startswith("NOT the official ImageNet weights: stand-in")
    assert "torch.manual_seed(0)" in info.description and "not ImageNet-pretrained" in info.description

    # what load_resnet18 reports through the environment variable, with the seed's weights
    monkeypatch.setenv("KIT_RESNET18_WEIGHTS", str(info.path))
    model, loaded = load_resnet18()
    assert loaded == info
    assert_weights_equal(model, seeded_state_dict(0))
    other = make_standin_weights(tmp_path / "b.pth", seed=1)
    assert other.sha256 != info.sha256


def test_changed_standin_is_no_longer_described_by_its_sidecar(tmp_path):
    path = make_standin_weights(tmp_path / "standin.pth").path
    torch.save(seeded_state_dict(5), path)
    info = describe_weights(path, source="local-file")
    assert "unknown file" in info.description and "does not describe this file" in info.description


def test_cli_makes_a_standin(tmp_path, capsys):
    path = tmp_path / "cli.pth"
    assert models.main(["make-standin", str(path), "--seed", "4"]) == 0
    out = capsys.readouterr().out
    assert path.is_file() and "NOT the official ImageNet weights" in out
    assert f"KIT_RESNET18_WEIGHTS={path.resolve()}" in out
    assert "manual_seed(4)" in describe_weights(path, source="local-file").description


# ------------------------------------------------------------------ head, freezing, counts


def test_counts_replace_head_and_freeze():
    model = resnet18(weights=None)
    assert count_parameters(model) == ParamCounts(total=RESNET18_TOTAL, trainable=RESNET18_TOTAL, frozen=0)

    head = replace_head(model, 10)
    assert head is model.fc and (head.in_features, head.out_features) == (512, 10)
    total = RESNET18_TOTAL - (512 * 1000 + 1000) + HEAD_10
    assert count_parameters(model) == ParamCounts(total=total, trainable=total, frozen=0)

    freeze_all_but_head(model)
    counts = count_parameters(model)
    assert counts == ParamCounts(total=11_181_642, trainable=5_130, frozen=11_176_512)
    assert all(p.requires_grad == name.startswith("fc.") for name, p in model.named_parameters())


def test_replace_head_keeps_device_dtype_and_bias():
    model = nn.Sequential()
    model.classifier = nn.Linear(8, 3, bias=False).double()
    head = replace_head(model, 5, head_name="classifier")
    assert head.bias is None and head.weight.dtype == torch.float64 and head.weight.shape == (5, 8)


@pytest.mark.parametrize("num_classes", [0, -1, 2.5, True, "10"])
def test_replace_head_checks_num_classes(num_classes):
    with pytest.raises(ValueError, match=f"num_classes must be a positive int, got {num_classes!r}"):
        replace_head(resnet18(num_classes=4), num_classes)


def test_head_errors_name_what_is_wrong():
    with pytest.raises(ValueError, match="model.fc must be an nn.Linear .*got no such attribute"):
        freeze_all_but_head(nn.Sequential(nn.Linear(2, 2)))
    with pytest.raises(ValueError, match="model.fc must be an nn.Linear .*got Sequential"):
        replace_head(_with_fc(nn.Sequential()), 3)
    with pytest.raises(TypeError, match="model must be an nn.Module, got dict"):
        count_parameters({})
    with pytest.raises(TypeError, match="model must be an nn.Module, got str"):
        replace_head("resnet18", 10)


def _with_fc(fc: nn.Module) -> nn.Module:
    model = nn.Module()
    model.fc = fc
    return model


def test_shared_parameters_are_counted_once():
    layer = nn.Linear(3, 3)
    model = nn.Sequential(layer, layer)
    layer.bias.requires_grad_(False)
    assert count_parameters(model) == ParamCounts(total=12, trainable=9, frozen=3)


def test_weights_not_found_error_is_a_file_not_found_error():
    assert issubclass(WeightsNotFoundError, FileNotFoundError)
    assert Path(models.hub_checkpoint_path()).name == OFFICIAL_FILENAME
