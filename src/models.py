"""ResNet-18 for transfer learning: load the weights, replace the head, freeze, count.

Where :func:`load_resnet18` finds the ImageNet weights, in order:

1. a local file: the ``weights_path`` argument, else ``$KIT_RESNET18_WEIGHTS`` (air-gapped rooms);
2. torchvision's own path, ``resnet18(weights=ResNet18_Weights.IMAGENET1K_V1)``, which reads the
   torch hub cache ``<torch.hub.get_dir()>/checkpoints/resnet18-f37072fd.pth`` and downloads
   the file there when it is absent;
3. otherwise :class:`WeightsNotFoundError`, naming the fixes.

Every load reports a :class:`WeightsInfo`: official means the file's sha256 starts with
``f37072fd``, the hash torchvision puts in the official file's name. A stand-in made by
:func:`make_standin_weights` (a seeded random initialisation, for tests and offline demos) is
labelled as such through a JSON sidecar next to it.

BatchNorm and frozen layers: ``requires_grad=False`` stops the weights from changing, but a
BatchNorm layer in train mode still updates its running mean and variance. The transfer
notebook avoids this by computing the frozen backbone's features once, in ``eval()`` mode.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path

import torch
import torchvision
from torch import nn
from torchvision.models import ResNet18_Weights, resnet18

from src.data import network_timeout

WEIGHTS_ENV = "KIT_RESNET18_WEIGHTS"
OFFICIAL_FILENAME = "resnet18-f37072fd.pth"  # basename of ResNet18_Weights.IMAGENET1K_V1.url
OFFICIAL_SHA256_PREFIX = "f37072fd"
DOWNLOAD_TIMEOUT_S = 30.0  # per network operation: fail fast on networks that drop packets


class WeightsNotFoundError(FileNotFoundError):
    """The ResNet-18 weights are neither local nor downloadable; the message names the fixes."""


@dataclass(frozen=True)
class WeightsInfo:
    """Where a ResNet-18's weights came from.

    Attributes:
        source: ``"torchvision-hub-cache"`` or ``"local-file"``.
        path: the file the weights were read from.
        sha256: full hex digest of that file.
        official: whether ``sha256`` starts with ``f37072fd`` (torchvision's IMAGENET1K_V1).
        description: one line for people, e.g. ``"NOT the official ImageNet weights: ..."``.
    """

    source: str
    path: Path
    sha256: str
    official: bool
    description: str


@dataclass(frozen=True)
class ParamCounts:
    """Parameter counts of a model; ``frozen`` means ``requires_grad=False``."""

    total: int
    trainable: int
    frozen: int


def hub_checkpoint_path() -> Path:
    """Return where torchvision caches the official weights: ``<hub dir>/checkpoints/resnet18-f37072fd.pth``."""
    return Path(torch.hub.get_dir()) / "checkpoints" / OFFICIAL_FILENAME


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _sidecar_path(path: Path) -> Path:
    return path.with_name(path.name + ".json")


def describe_weights(path: str | os.PathLike[str], *, source: str) -> WeightsInfo:
    """Hash a weights file and say what it is.

    Args:
        path: the checkpoint file.
        source: ``"torchvision-hub-cache"`` or ``"local-file"``.

    Returns:
        Its :class:`WeightsInfo`; a stand-in is recognised by its JSON sidecar
        (``<file>.json``) when the sidecar's sha256 matches the file.
    """
    path = Path(path)
    sha256 = _sha256(path)
    if sha256.startswith(OFFICIAL_SHA256_PREFIX):
        return WeightsInfo(source, path, sha256, True, "official torchvision IMAGENET1K_V1")
    what = f"unknown file (sha256 {sha256[:12]}...)"
    sidecar = _sidecar_path(path)
    if sidecar.is_file():
        try:
            meta = json.loads(sidecar.read_text())
        except (OSError, ValueError):
            meta = {}
        if meta.get("sha256") == sha256 and meta.get("kind") == "stand-in":
            how, not_ = meta.get("how", "provenance not recorded"), meta.get("not", "ImageNet-pretrained")
            what = f"stand-in, {how}; not {not_}"
        else:
            what += f"; its sidecar {sidecar.name} does not describe this file"
    return WeightsInfo(source, path, sha256, False, f"NOT the official ImageNet weights: {what}")


def _fixes() -> str:
    return (
        "Provide the weights in one of three ways:\n"
        f"  1. copy the official file to {hub_checkpoint_path()} "
        f"(from {ResNet18_Weights.IMAGENET1K_V1.url})\n"
        f"  2. set {WEIGHTS_ENV}=/path/to/weights.pth, or pass load_resnet18(weights_path=...)\n"
        "  3. for tests or offline demos only (NOT ImageNet weights): "
        f"python -m src.models make-standin PATH, then set {WEIGHTS_ENV}=PATH"
    )


def _load_local(path: Path, origin: str) -> nn.Module:
    if not path.is_file():
        raise WeightsNotFoundError(f"ResNet-18 weights file {path} (from {origin}) does not exist.\n{_fixes()}")
    state_dict = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(state_dict, dict):
        raise ValueError(f"{path} must hold a state_dict (dict of tensors), got {type(state_dict).__name__}")
    model = resnet18(weights=None)
    try:
        model.load_state_dict(state_dict)
    except RuntimeError as err:
        raise ValueError(f"{path} is not a torchvision ResNet-18 state_dict: {err}") from err
    return model


def load_resnet18(
    weights_path: str | os.PathLike[str] | None = None,
    *,
    num_classes: int | None = None,
    progress: bool = False,
) -> tuple[nn.Module, WeightsInfo]:
    """Return torchvision's ResNet-18 with ImageNet weights, and where the weights came from.

    Args:
        weights_path: a local state_dict file; ``None`` means ``$KIT_RESNET18_WEIGHTS`` if set,
            else torchvision's ``ResNet18_Weights.IMAGENET1K_V1`` (hub cache, then download).
        num_classes: if given, the 1000-class ``fc`` is replaced by a new ``num_classes`` one.
        progress: show torchvision's download progress bar.

    Returns:
        ``(model, info)``: the model (train mode, on CPU) and its :class:`WeightsInfo`.

    Raises:
        WeightsNotFoundError: no local file and the download failed; the message names the fixes.
    """
    if weights_path is None and os.environ.get(WEIGHTS_ENV):
        weights_path, origin = os.environ[WEIGHTS_ENV], f"${WEIGHTS_ENV}"
    else:
        origin = "the weights_path argument"

    if weights_path is not None:
        path = Path(weights_path).expanduser()
        model = _load_local(path, origin)
        info = describe_weights(path, source="local-file")
    else:
        cached = hub_checkpoint_path()
        if cached.is_file():
            info = describe_weights(cached, source="torchvision-hub-cache")
            if not info.official:
                # torchvision unpickles its cache with weights_only=False: check unknown files safely first.
                torch.load(cached, map_location="cpu", weights_only=True)
            try:
                model = resnet18(weights=ResNet18_Weights.IMAGENET1K_V1)  # reads the cache, no network
            except RuntimeError as err:
                raise ValueError(f"{cached} is not a torchvision ResNet-18 state_dict: {err}") from err
        else:
            try:
                with network_timeout(DOWNLOAD_TIMEOUT_S):
                    model = resnet18(weights=ResNet18_Weights.IMAGENET1K_V1, progress=progress)
            except (OSError, RuntimeError) as err:  # URLError/timeouts are OSError; a bad hash is RuntimeError
                raise WeightsNotFoundError(
                    f"ResNet-18 ImageNet weights are not in the torch hub cache ({cached}) "
                    f"and could not be downloaded: {type(err).__name__}: {err}\n{_fixes()}"
                ) from err
            info = describe_weights(cached, source="torchvision-hub-cache")

    if num_classes is not None:
        replace_head(model, num_classes)
    return model, info


def make_standin_weights(path: str | os.PathLike[str], *, seed: int | None = None) -> WeightsInfo:
    """Write a stand-in ResNet-18 checkpoint: a random initialisation, NOT ImageNet weights.

    The file is a plain state_dict (so every loader accepts it); ``<path>.json`` next to it
    records what it is, so :func:`describe_weights` can say so. For tests and offline demos,
    where the official weights cannot be downloaded.

    By default the seed is drawn at random and not recorded: a notebook that builds
    ``resnet18(weights=None)`` after some public seed must not be able to reproduce the stand-in
    and pass for "started from the pretrained weights" without loading them.

    Args:
        path: where to write the checkpoint (parent folders are created).
        seed: the ``torch.manual_seed`` used for the initialisation (the global RNG is restored);
            None (the default) draws a secret one.

    Returns:
        The stand-in's :class:`WeightsInfo` (``official=False``).
    """
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
        raise TypeError(f"seed must be an int or None, got {type(seed).__name__}")
    recorded = seed is not None
    if seed is None:
        import secrets

        seed = secrets.randbits(63)
    path = Path(path).expanduser()
    path.parent.mkdir(parents=True, exist_ok=True)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = resnet18(weights=None)
    torch.save(model.state_dict(), path)
    sidecar = {
        "kind": "stand-in",
        "how": (
            "torchvision resnet18(weights=None) initialised with "
            + (f"torch.manual_seed({seed})" if recorded else "a random seed that was not recorded")
            + f", torch {torch.__version__}, torchvision {torchvision.__version__}"
        ),
        "not": "ImageNet-pretrained",
        "sha256": _sha256(path),
    }
    _sidecar_path(path).write_text(json.dumps(sidecar, indent=2) + "\n")
    return describe_weights(path, source="local-file")


def _head(model: nn.Module, head_name: str) -> nn.Linear:
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
    head = getattr(model, head_name, None)
    if not isinstance(head, nn.Linear):
        raise ValueError(
            f"model.{head_name} must be an nn.Linear (the classification head), "
            f"got {type(head).__name__ if head is not None else 'no such attribute'}"
        )
    return head


def replace_head(model: nn.Module, num_classes: int, *, head_name: str = "fc") -> nn.Linear:
    """Replace the model's final linear layer by a new, trainable ``num_classes`` one.

    Args:
        model: a model whose head is the ``nn.Linear`` attribute ``head_name``.
        num_classes: number of outputs of the new head.
        head_name: attribute name of the head (``"fc"`` in torchvision's ResNets).

    Returns:
        The new head, ``nn.Linear(old.in_features, num_classes)`` on the old head's device and dtype.
    """
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise ValueError(f"num_classes must be a positive int, got {num_classes!r}")
    old = _head(model, head_name)
    new = nn.Linear(
        old.in_features,
        num_classes,
        bias=old.bias is not None,
        device=old.weight.device,
        dtype=old.weight.dtype,
    )
    setattr(model, head_name, new)
    return new


def freeze_all_but_head(model: nn.Module, head_name: str = "fc") -> None:
    """Set ``requires_grad=False`` on every parameter except the head's (which stay trainable).

    BatchNorm running statistics are buffers, not parameters: they still change when the
    model runs in train mode. Run the frozen part in ``eval()`` mode to keep them fixed.

    Args:
        model: a model whose head is the ``nn.Linear`` attribute ``head_name``.
        head_name: attribute name of the head.
    """
    head = _head(model, head_name)
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    for parameter in head.parameters():
        parameter.requires_grad_(True)


def count_parameters(model: nn.Module) -> ParamCounts:
    """Count a model's parameters (shared ones once).

    Args:
        model: any module.

    Returns:
        :class:`ParamCounts` with ``total``, ``trainable`` (``requires_grad``) and ``frozen``.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
    total = trainable = 0
    for parameter in model.parameters():
        total += parameter.numel()
        trainable += parameter.numel() if parameter.requires_grad else 0
    return ParamCounts(total=total, trainable=trainable, frozen=total - trainable)


def main(argv: list[str] | None = None) -> int:
    """Command line: ``python -m src.models make-standin PATH [--seed N]``."""
    parser = argparse.ArgumentParser(prog="python -m src.models", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    standin = commands.add_parser(
        "make-standin",
        help="write a seeded random ResNet-18 checkpoint (NOT ImageNet weights) for tests and offline demos",
    )
    standin.add_argument("path", type=Path)
    standin.add_argument("--seed", type=int, default=None, help="default: a random seed, not recorded")
    args = parser.parse_args(argv)

    info = make_standin_weights(args.path, seed=args.seed)
    print(f"wrote {info.path} (sha256 {info.sha256})")
    print(info.description)
    print(f"use it with: export {WEIGHTS_ENV}={info.path.resolve()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
