"""Self-contained saved models: ``torch.export`` archives that load without the model's code.

:func:`save_model` traces ``preprocess`` followed by ``model`` (in eval mode, on the CPU) into a
graph of ATen operations with ``torch.export``, and writes it with the weights and a metadata
JSON to one ``.pt2`` file. The input is the kit's canonical ``(N, 1, 28, 28)`` float in
``[0, 1]``, with any batch size ``N``. State-dict keys are the model's own prefixed with
``model.`` (and ``preprocess.`` for a preprocessing module with state).

:func:`load_model` returns a callable module and the metadata. What loading does, in torch
2.14.1 (read from ``torch/export/pt2_archive/_package.py`` and ``torch/_export/serde``): the
graph is rebuilt from JSON (``models/model.json``) out of registered operators, and plain tensors
are read as raw bytes described by JSON configs. Nothing imports or runs the Python code (the
class, the notebook) that defined the model. ``torch.export.load`` itself *can* unpickle, though:
tensor subclasses, script or opaque objects, legacy-format archives, and the saved example
inputs when ``weights_only=True`` fails on them (it then retries with ``weights_only=False``).
So :func:`load_model` first checks the archive's file list and JSON configs and refuses any
archive that would reach one of those paths; an archive written by :func:`save_model` never does.

Running the graph must not reach past tensors either: an ATen operator such as
``aten::from_file`` creates files, and a graph is only JSON that anyone can edit. So
:func:`load_model` also refuses, before anything runs, a graph with any operation outside
:data:`ALLOWED_OPS`, a list of pure tensor operations (arithmetic, shapes, convolutions, norms,
pooling, activations), naming the operation.
"""

from __future__ import annotations

import copy
import io
import json
import operator
import os
import warnings
import zipfile
from collections.abc import Callable, Mapping, Sequence
from importlib import metadata as importlib_metadata
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.export.passes import move_to_device_pass
from torch.export.pt2_archive import constants as pt2

from src.data import FASHION_MNIST_CLASSES
from src.engine import pick_device

METADATA_FILE = "kit_metadata.json"
FORMAT_NAME = "cnn-course-kit/saved-model"
FORMAT_VERSION = 1


class InvalidSavedModelError(ValueError):
    """The file is not a saved model written by :func:`save_model`."""


class PreprocessedModel(nn.Module):
    """``model(preprocess(x))``; the attribute names make the state-dict keys ``model.*`` and ``preprocess.*``."""

    def __init__(self, preprocess: nn.Module | None, model: nn.Module) -> None:
        super().__init__()
        self.preprocess = preprocess if preprocess is not None else nn.Identity()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(self.preprocess(x))  # (N, 1, H, W) -> (N, num_classes)


# Pure tensor operations a saved image classifier may use (``namespace::name``, any overload but
# ``out``): nothing that reads or writes files, shares storage, views raw memory or runs code.
ALLOWED_OPS: frozenset[str] = frozenset(
    f"aten::{name}"
    for name in """
    conv1d conv2d conv3d convolution _convolution conv_transpose1d conv_transpose2d conv_transpose3d
    linear matmul mm bmm addmm baddbmm addmv mv einsum dot t
    batch_norm _native_batch_norm_legit_no_training _native_batch_norm_legit native_batch_norm
    layer_norm native_layer_norm group_norm native_group_norm instance_norm
    relu relu_ relu6 hardtanh hardtanh_ leaky_relu leaky_relu_ elu elu_ selu celu gelu silu silu_ mish
    sigmoid sigmoid_ tanh tanh_ hardswish hardswish_ hardsigmoid hardsigmoid_ softplus prelu threshold
    softmax _softmax log_softmax _log_softmax
    max_pool1d max_pool2d max_pool3d max_pool2d_with_indices max_pool3d_with_indices avg_pool1d avg_pool2d
    avg_pool3d adaptive_avg_pool1d adaptive_avg_pool2d adaptive_avg_pool3d _adaptive_avg_pool2d
    adaptive_max_pool1d adaptive_max_pool2d
    dropout dropout_ feature_dropout alpha_dropout native_dropout
    add add_ sub sub_ rsub mul mul_ div div_ neg abs exp log log1p sqrt rsqrt pow square reciprocal
    clamp clamp_ clamp_min clamp_max clip maximum minimum where lerp sign floor ceil round trunc erf
    eq ne lt le gt ge logical_not logical_and logical_or
    mean sum amax amin max min var std var_mean argmax argmin norm linalg_vector_norm logsumexp prod
    view _unsafe_view reshape flatten unflatten permute transpose t squeeze unsqueeze expand expand_as
    repeat cat concat stack split split_with_sizes chunk slice select narrow contiguous clone alias
    detach unbind flip index_select gather index pad constant_pad_nd reflection_pad2d replication_pad2d
    upsample_nearest2d upsample_bilinear2d _upsample_bilinear2d_aa upsample_bicubic2d _upsample_bicubic2d_aa
    pixel_shuffle movedim view_as type_as to _to_copy
    zeros zeros_like ones ones_like full full_like empty empty_like arange scalar_tensor lift_fresh_copy
    new_zeros new_ones new_full new_empty
    sym_size sym_numel sym_stride _assert_scalar _assert_tensor_metadata sym_constrain_range
    sym_constrain_range_for_size
    """.split()
)
# Python functions torch.export puts in graphs: picking outputs, arithmetic on symbolic sizes.
_ALLOWED_FUNCTIONS = (
    operator.getitem, operator.add, operator.sub, operator.mul, operator.floordiv, operator.truediv,
    operator.mod, operator.neg, operator.eq, operator.ne, operator.lt, operator.le, operator.gt, operator.ge,
)


class UnsafeGraphError(InvalidSavedModelError):
    """The saved graph uses an operation outside :data:`ALLOWED_OPS`; the message names it."""


def operation_name(target: Any) -> str:
    """``aten::conv2d`` for an ATen operator overload, else the target's dotted name."""
    if isinstance(target, torch._ops.OpOverload):
        return target.name()
    module = getattr(target, "__module__", None) or type(target).__module__
    return f"{module}.{getattr(target, '__qualname__', getattr(target, '__name__', type(target).__name__))}"


def check_graph(program: torch.export.ExportedProgram) -> None:
    """Refuse a graph that could do anything but compute on tensors.

    Raises:
        UnsafeGraphError: a node calls an operation outside :data:`ALLOWED_OPS`, an ``out=``
            variant, a higher-order operator or a submodule; the message names the first one.
    """
    for node in program.graph.nodes:
        if node.op in ("placeholder", "output"):
            continue
        if node.op != "call_function":
            raise UnsafeGraphError(f"the graph has a {node.op} node ({node.target}); saved models may only call operations")
        target = node.target
        if isinstance(target, torch._ops.OpOverload):
            overload = target._overloadname
            if target._schema.name in ALLOWED_OPS and overload != "out" and not overload.endswith("_out"):
                continue
        elif any(target is allowed for allowed in _ALLOWED_FUNCTIONS):
            continue
        raise UnsafeGraphError(
            f"the graph calls {operation_name(target)}, which is not a pure tensor operation the grader "
            "runs (only arithmetic, shapes, convolutions, norms, pooling and activations are)"
        )


def weights_digest(tensor: torch.Tensor) -> str:
    """sha256 of a tensor's dtype, shape and values: the grader compares the weights of a saved
    file with a notebook's model by these (exact values: `save_model` copies them unchanged)."""
    import hashlib

    flat = tensor.detach().to("cpu").contiguous().reshape(-1)
    digest = hashlib.sha256(f"{flat.dtype}{tuple(tensor.shape)}".encode())
    if flat.numel():
        digest.update(flat.view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def _kit_version() -> str:
    try:
        return importlib_metadata.version("cnn-course-kit")
    except importlib_metadata.PackageNotFoundError:
        return "unknown"


class _Channels(nn.Module):
    """``transforms.Grayscale(n)`` for a batch ``(N, C, H, W)``: grey, then copied to ``n`` channels
    (torchvision's tensor version keeps one channel for a one-channel input; its PIL version,
    which the dataset used, gives ``n``)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.channels = int(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-3] == 3:  # ITU-R 601-2 luma, as PIL and torchvision compute it
            x = 0.2989 * x[:, 0:1] + 0.587 * x[:, 1:2] + 0.114 * x[:, 2:3]
        return x.expand(-1, self.channels, -1, -1)  # (N, channels, H, W)


class _Normalize(nn.Module):
    """``transforms.Normalize`` without its data-dependent check (which ``torch.export`` refuses)."""

    def __init__(self, mean: Sequence[float], std: Sequence[float]) -> None:
        super().__init__()
        self.register_buffer("mean", torch.as_tensor(mean, dtype=torch.float32).view(-1, 1, 1), persistent=False)
        self.register_buffer("std", torch.as_tensor(std, dtype=torch.float32).view(-1, 1, 1), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


class _Call(nn.Module):
    """A plain callable (``transforms.Lambda``, a function) as a module.

    ``per_image``: the callable is a dataset transform, written for one image ``(C, H, W)``
    (``lambda x: x.repeat(3, 1, 1)``), so it is applied to each image of the batch, as the
    dataset did (``torch.vmap``; `save_model` lowers that to ordinary batched operations).
    """

    def __init__(self, function: Callable[[torch.Tensor], torch.Tensor], *, per_image: bool = False) -> None:
        super().__init__()
        self.function = function
        self.per_image = per_image

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.per_image:
            return torch.vmap(self.function)(x)  # (N, C, H, W) -> (N, C', H', W'), image by image
        return self.function(x)


# Steps that turn a PIL image into a [0, 1] float tensor: the saved model's input already is one.
_TO_TENSOR = {"ToTensor", "PILToTensor", "ToImage", "ToImageTensor", "ToDtype", "ConvertImageDtype", "ToPureTensor"}


def batch_preprocess(transform: Any) -> nn.Module | None:
    """The dataset transform you trained with, as a module for batches ``(N, 1, 28, 28)`` in ``[0, 1]``.

    ``Compose`` steps are taken in order: ``ToTensor``-like steps are dropped (the input is a
    tensor in ``[0, 1]`` already), ``Random*`` augmentations are dropped (they apply in training),
    ``Grayscale(n)`` copies the grey channel ``n`` times, ``Normalize`` subtracts and divides,
    other modules (``Resize``) are kept, and plain callables (``transforms.Lambda``) are applied
    to each image, as the dataset applied them (``Lambda(lambda x: x.repeat(3, 1, 1))`` gets one
    ``(1, H, W)`` image, never the batch).

    Args:
        transform: None, an ``nn.Module`` (kept as it is), a torchvision ``Compose``, a
            ``transforms.Lambda`` (per image), or a function (given the batch when it accepts
            one, else each image).

    Returns:
        The module, or None for None.
    """
    if transform is None or (isinstance(transform, nn.Module) and type(transform).__name__ not in ("Grayscale", "Normalize")):
        return transform
    steps = getattr(transform, "transforms", None)
    if not isinstance(steps, (list, tuple)):
        if _is_plain_function(transform):
            return _Call(transform, per_image=not _takes_batches(transform))
        steps = [transform]
    modules: list[nn.Module] = []
    for step in steps:
        name = type(step).__name__
        if name in _TO_TENSOR or name.startswith("Random"):
            continue
        if name == "Grayscale":
            modules.append(_Channels(step.num_output_channels))
        elif name == "Normalize":
            modules.append(_Normalize(step.mean, step.std))
        elif isinstance(step, nn.Module):
            modules.append(step)
        elif callable(getattr(step, "lambd", None)):
            modules.append(_Call(step.lambd, per_image=True))
        elif callable(step):
            modules.append(_Call(step, per_image=True))
        else:
            raise TypeError(f"preprocess: cannot apply a {name} to a batch of images; pass an nn.Module or a Compose")
    return nn.Sequential(*modules)


def _is_plain_function(transform: Any) -> bool:
    return callable(transform) and not isinstance(transform, nn.Module) and not callable(getattr(transform, "lambd", None))


def _takes_batches(function: Callable[[torch.Tensor], torch.Tensor]) -> bool:
    """Whether a function given as ``preprocess`` maps a batch to a batch (else it is per image)."""
    example = torch.rand(2, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    try:
        out = function(example)
    except Exception:  # written for one image: (1, 28, 28)
        return False
    return isinstance(out, torch.Tensor) and out.dim() == 4 and out.shape[0] == 2


def _lower_per_image_steps(program: torch.export.ExportedProgram) -> torch.export.ExportedProgram:
    """``torch.vmap`` (a per-image step) leaves functorch calls in the graph; lowering them gives
    the same computation as ordinary batched ATen operations, which `check_graph` accepts."""
    if any(
        node.op == "call_function" and str(getattr(node.target, "__module__", "")).startswith("torch._functorch")
        for node in program.graph.nodes
    ):
        program = program.run_decompositions({})
    return program


def save_model(
    model: nn.Module,
    path: str | os.PathLike[str],
    *,
    preprocess: nn.Module | Callable[[torch.Tensor], torch.Tensor] | None = None,
    class_names: Sequence[str] = FASHION_MNIST_CLASSES,
    metadata: Mapping[str, Any] | None = None,
    input_shape: tuple[int, int, int] = (1, 28, 28),
) -> Path:
    """Export ``preprocess`` then ``model`` to a self-contained ``.pt2`` file.

    The model is copied to the CPU and put in eval mode for the export; the model you pass
    keeps its device and train/eval mode.

    Args:
        model: the classifier; must return logits ``(N, len(class_names))``.
        path: where to write; must end with ``.pt2``. Parent folders are created.
        preprocess: applied first, e.g. ``src.data.ImageNetInput(resize=...)`` for ResNet-18, or
            the torchvision transform you trained with (``transforms.Compose([Grayscale(3),
            ToTensor(), Normalize(...)])``): it is turned into a module for batches of tensors
            (see :func:`batch_preprocess`).
        class_names: the class names, index = class.
        metadata: your own JSON-serialisable values, stored under ``"user"``.
        input_shape: ``(C, H, W)`` of one input image, without the batch dimension.

    Returns:
        The path written.

    Raises:
        TypeError: an argument has the wrong type.
        ValueError: the model's output does not have one column per class.
        RuntimeError: ``torch.export`` cannot trace the model.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
    preprocess = batch_preprocess(preprocess)
    class_names = _checked_class_names(class_names)
    _check_save_options(path, input_shape=input_shape, metadata=metadata)
    info_json = _metadata_json(model, preprocess, class_names, input_shape, metadata)
    wrapper = _cpu_eval_wrapper(preprocess, model)
    program = _export_program(wrapper, input_shape, num_classes=len(class_names))
    return _write_archive(program, path, info_json)


def _checked_class_names(class_names: Any) -> list[str]:
    """``class_names`` as a list, after checking it is a non-empty sequence of str."""
    if isinstance(class_names, str) or not all(isinstance(name, str) for name in class_names):
        raise TypeError(f"class_names must be a sequence of str, got {class_names!r}")
    class_names = list(class_names)
    if not class_names:
        raise ValueError("class_names must not be empty")
    return class_names


def _check_save_options(path: Any, *, input_shape: Any, metadata: Any) -> None:
    """Check `save_model`'s ``input_shape``, ``path`` and ``metadata``, in that order."""
    if (
        not isinstance(input_shape, (tuple, list))
        or len(input_shape) != 3
        or not all(isinstance(d, int) and not isinstance(d, bool) and d > 0 for d in input_shape)
    ):
        raise ValueError(f"input_shape must be (C, H, W) with positive ints, got {input_shape!r}")
    if Path(path).suffix != ".pt2":
        raise ValueError(f"path must end with .pt2 (a torch.export archive), got {os.fspath(path)!r}")
    if metadata is not None and not isinstance(metadata, Mapping):
        raise TypeError(f"metadata must be a dict or None, got {type(metadata).__name__}")


def _metadata_json(
    model: nn.Module,
    preprocess: nn.Module | None,
    class_names: list[str],
    input_shape: Sequence[int],
    metadata: Mapping[str, Any] | None,
) -> str:
    """The kit's metadata (:data:`METADATA_FILE`) as JSON text.

    Raises:
        TypeError: ``metadata`` is not JSON-serialisable.
    """
    info = {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "class_names": class_names,
        "num_classes": len(class_names),
        "input_shape": ["N", *input_shape],
        "input_dtype": "float32",
        "input_range": [0.0, 1.0],
        "output": "logits",
        "model_class": type(model).__qualname__,
        "preprocess": repr(preprocess) if preprocess is not None else None,
        "kit_version": _kit_version(),
        "torch_version": torch.__version__,
        "user": dict(metadata or {}),
    }
    try:
        return json.dumps(info, indent=2)
    except (TypeError, ValueError) as err:
        raise TypeError(f"metadata must be JSON-serialisable: {err}") from err


def _cpu_eval_wrapper(preprocess: nn.Module | None, model: nn.Module) -> PreprocessedModel:
    """``model(preprocess(x))`` on copies, on the CPU, in eval mode: the file does not depend on
    where the model trained, and the caller's modules keep their device and mode."""
    return PreprocessedModel(copy.deepcopy(preprocess), copy.deepcopy(model)).cpu().eval()


def _export_program(
    wrapper: nn.Module, input_shape: Sequence[int], *, num_classes: int
) -> torch.export.ExportedProgram:
    """Trace ``wrapper`` with ``torch.export`` for any batch size, per-image steps lowered.

    Raises:
        ValueError: the output is not logits ``(N, num_classes)``.
        RuntimeError: ``torch.export`` cannot trace the model.
    """
    # batch 2: export would specialise a batch of 1; own generator: the caller's RNG stays as it was
    example = torch.rand(2, *input_shape, generator=torch.Generator().manual_seed(0))
    _check_logits(wrapper, example, num_classes)
    try:
        program = torch.export.export(
            wrapper, (example,), dynamic_shapes={"x": {0: torch.export.Dim("batch", min=1)}}
        )
    except Exception as err:  # torch.export raises many types; all mean "cannot trace this model"
        raise RuntimeError(
            f"torch.export could not trace the model ({type(err).__name__}: {err}). The forward "
            "must not branch on tensor values or on the batch size."
        ) from err
    return _lower_per_image_steps(program)


def _check_logits(wrapper: nn.Module, example: torch.Tensor, num_classes: int) -> None:
    """Raise ValueError unless ``wrapper(example)`` is logits ``(batch, num_classes)``."""
    with torch.no_grad():
        logits = wrapper(example)
    if not isinstance(logits, torch.Tensor) or logits.shape != (example.shape[0], num_classes):
        shape = tuple(logits.shape) if isinstance(logits, torch.Tensor) else type(logits).__name__
        raise ValueError(
            f"model must return logits (N, {num_classes}) for {num_classes} classes, "
            f"got {shape} for an input ({', '.join(map(str, example.shape))})"
        )


def _write_archive(program: torch.export.ExportedProgram, path: str | os.PathLike[str], info_json: str) -> Path:
    """Write ``program`` and the metadata to the ``.pt2`` file ``path``, creating its folders."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.export.save(program, path, extra_files={METADATA_FILE: info_json})
    return path


def _read_zip_member(archive: zipfile.ZipFile, name: str) -> bytes:
    try:
        return archive.read(name)
    except KeyError:
        raise InvalidSavedModelError(f"missing {name}") from None


def _check_archive(path: Path) -> dict[str, Any]:
    """Check that loading ``path`` will not unpickle anything; return its kit metadata."""
    try:
        archive = zipfile.ZipFile(path)
    except zipfile.BadZipFile:
        raise InvalidSavedModelError("not a zip archive") from None
    with archive:
        names = archive.namelist()
        roots = {name.split("/", 1)[0] for name in names}
        if len(roots) != 1 or any("/" not in name for name in names):
            raise InvalidSavedModelError("not a torch.export archive (files outside one root folder)")
        root = roots.pop() + "/"
        members = {name[len(root):] for name in names}
        if _read_zip_member(archive, root + pt2.ARCHIVE_FORMAT_PATH) != pt2.ARCHIVE_FORMAT_VALUE.encode():
            raise InvalidSavedModelError("not a torch.export .pt2 archive")

        weights_config = pt2.WEIGHTS_CONFIG_FILENAME_FORMAT.format("model")
        constants_config = pt2.CONSTANTS_CONFIG_FILENAME_FORMAT.format("model")
        sample_inputs = pt2.SAMPLE_INPUTS_FILENAME_FORMAT.format("model")
        expected = {
            pt2.ARCHIVE_FORMAT_PATH,
            pt2.ARCHIVE_VERSION_PATH,
            pt2.MODELS_FILENAME_FORMAT.format("model"),
            weights_config,
            constants_config,
            sample_inputs,
            pt2.EXTRA_DIR + METADATA_FILE,
        }
        missing = sorted(expected - members)
        if missing:
            raise InvalidSavedModelError(f"missing {', '.join(missing)}")
        allowed_prefixes = (
            pt2.WEIGHTS_DIR + pt2.WEIGHT_FILENAME_PREFIX,
            pt2.CONSTANTS_DIR + pt2.TENSOR_CONSTANT_FILENAME_PREFIX,
            pt2.EXTRA_DIR,
            ".data/",
        )
        unexpected = sorted(m for m in members - expected if m != "byteorder" and not m.startswith(allowed_prefixes))
        if unexpected:
            raise InvalidSavedModelError(f"unexpected entries {', '.join(unexpected[:5])}")

        for config_name in (weights_config, constants_config):
            try:
                entries = json.loads(_read_zip_member(archive, root + config_name))["config"].items()
                plain = {fqn: entry["use_pickle"] is False and entry["path_name"].startswith(
                    (pt2.WEIGHT_FILENAME_PREFIX, pt2.TENSOR_CONSTANT_FILENAME_PREFIX)) for fqn, entry in entries}
            except (ValueError, KeyError, TypeError, AttributeError) as err:
                raise InvalidSavedModelError(f"{config_name} is malformed ({err!r})") from None
            pickled = [fqn for fqn, ok in plain.items() if not ok]
            if pickled:
                raise InvalidSavedModelError(f"{', '.join(pickled[:3])} stored as pickled objects, not plain tensors")
        try:  # torch.export.load retries this one with weights_only=False when this fails
            torch.load(io.BytesIO(_read_zip_member(archive, root + sample_inputs)), weights_only=True)
        except Exception as err:
            raise InvalidSavedModelError(f"example inputs are not plain tensors ({err})") from None

        try:
            info = json.loads(_read_zip_member(archive, root + pt2.EXTRA_DIR + METADATA_FILE))
        except ValueError as err:
            raise InvalidSavedModelError(f"{METADATA_FILE} is not valid JSON ({err})") from None
    if not isinstance(info, dict) or info.get("format") != FORMAT_NAME:
        raise InvalidSavedModelError(f"{METADATA_FILE} is not the kit's metadata")
    return info


def read_metadata(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Return a saved model's metadata without loading the model.

    Args:
        path: a file written by :func:`save_model`.

    Returns:
        The metadata dict (``class_names``, ``input_shape``, ``torch_version``, ``user``, ...).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no saved model at {path}")
    try:
        return _check_archive(path)
    except InvalidSavedModelError as err:
        raise InvalidSavedModelError(
            f"{path} is not a model saved by src.export.save_model: {err}. "
            "Re-save it with src.export.save_model(model, path)."
        ) from None


def load_model(
    path: str | os.PathLike[str],
    *,
    device: str | torch.device | None = None,
) -> tuple[nn.Module, dict[str, Any]]:
    """Load a model written by :func:`save_model`, without running the code that defined it.

    The returned module computes what the model computed in eval mode (BatchNorm with its
    running statistics, no dropout), whatever ``train()``/``eval()`` say: those only set the
    ``training`` flag, so code that switches modes (like ``evaluate_loader``) works.

    Args:
        path: a ``.pt2`` file written by :func:`save_model`.
        device: where to put the module; ``None`` picks CUDA, else MPS, else CPU
            (``src.engine.pick_device``).

    Returns:
        ``(module, metadata)``: ``module(x)`` maps ``(N, 1, 28, 28)`` floats in ``[0, 1]`` to
        logits ``(N, num_classes)``; ``metadata`` is the dict :func:`save_model` stored.

    Raises:
        FileNotFoundError: there is no file at ``path``.
        InvalidSavedModelError: the file is not a torch.export archive from :func:`save_model`.
    """
    info = read_metadata(path)
    device = pick_device(device)
    if info.get("torch_version") != torch.__version__:
        warnings.warn(
            f"{path} was saved with torch {info.get('torch_version')} and is loaded with torch "
            f"{torch.__version__}; torch.export archives are not guaranteed to load across versions",
            stacklevel=2,
        )
    program = torch.export.load(path)
    check_graph(program)  # before anything of the graph runs
    if device.type != "cpu":
        program = move_to_device_pass(program, device)  # also rewrites devices baked into the graph
    module = program.module()
    # torch makes train()/eval() raise on exported modules, to say they change nothing.
    del module.train, module.eval
    module.eval()
    return module, info
