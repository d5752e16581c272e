"""What the grader runs inside a student's kernel: seeding, figure capture, and the probes.

The grader copies this file into the kernel's private runtime folder and the kernel loads it by
path at start-up (`grader.run.kernel`), before the notebook's first cell; the ``grader`` package itself
is not visible there. Standard library at the top; numpy, torch and matplotlib are imported
inside the functions, when the notebook has imported them anyway.

The kernel is the student's: anything computed here can be forged by the notebook's code. So
nothing here decides a grade. Probes return what the notebook *claims* (``n_params``, its
scheduler's settings, its training history, the figures it showed) and the grader checks those
claims against evidence it computes itself (`grader.checks`). Answers cross back only as data
``torch.load(weights_only=True)`` can read: dicts, lists, str, numbers, None and tensors.
"""

import math

FIGURE_MIME = "application/vnd.cnn-course-kit.figure+json"

# Bounds of a figure's description (a notebook could draw a million points).
_MAX_AXES = 64
_MAX_POINTS = 5000
_MAX_LINES = 16
_MAX_TEXTS = 300
_IMAGE_SIDE = 32  # images larger than this are sampled down to it


# ------------------------------------------------------------------------------ start-up


def setup(value):
    """Describe figures, and seed ``random``, ``numpy`` and ``torch`` (`seed`, which the grader
    runs again just before the first cell, so that nothing run before it changes the streams)."""
    _capture_figures()
    seed(value)


_SEEDERS = {}  # module name -> function seeding it, for those not imported yet


def seed(value):
    """Seed ``random``, and ``numpy`` and ``torch``: now where they are imported, else when the
    notebook imports them (before any of its code runs). The grader calls this last before the
    first cell, so the first cell sees exactly the streams of ``seed(value)`` on any install."""
    import importlib.abc
    import importlib.util
    import random
    import sys

    def seed_numpy(numpy):
        numpy.random.seed(value)

    def seed_torch(torch):
        torch.manual_seed(value)
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False

    random.seed(value)
    _SEEDERS.clear()
    _SEEDERS.update(numpy=seed_numpy, torch=seed_torch)
    for name in list(_SEEDERS):
        if name in sys.modules:
            _SEEDERS.pop(name)(sys.modules[name])

    class SeedOnImport(importlib.abc.MetaPathFinder):
        # numpy and torch take seconds to import: seed them when the notebook imports them
        # (before any of its code runs) instead of importing them for every notebook.
        def find_spec(self, name, path=None, target=None):
            seeder = _SEEDERS.pop(name, None)
            if seeder is None:
                return None
            if not _SEEDERS:
                sys.meta_path.remove(self)
            spec = importlib.util.find_spec(name)
            if spec is None or spec.loader is None:
                return spec
            exec_module = spec.loader.exec_module

            def exec_and_seed(module):
                exec_module(module)
                seeder(module)

            spec.loader.exec_module = exec_and_seed
            return spec

    sys.meta_path[:] = [finder for finder in sys.meta_path if type(finder).__name__ != "SeedOnImport"]
    if _SEEDERS:
        sys.meta_path.insert(0, SeedOnImport())


def _capture_figures():
    """Every matplotlib figure the notebook shows also carries its description (`describe_figure`)
    in its output, under `FIGURE_MIME`, next to the PNG."""
    import sys

    from IPython import get_ipython
    from IPython.core.formatters import JSONFormatter
    from traitlets import Unicode

    shell = get_ipython()
    if shell is None:
        return

    class FigureFormatter(JSONFormatter):
        # Not registered by type: matplotlib's inline backend clears every formatter's Figure
        # entry when it starts, so the type is checked here, on each call.
        format_type = Unicode(FIGURE_MIME)

        def __call__(self, obj):
            figure_module = sys.modules.get("matplotlib.figure")
            if figure_module is None or not isinstance(obj, figure_module.Figure):
                return None
            try:
                return describe_figure(obj)
            except Exception:  # a figure the description cannot read is shown anyway, undescribed
                return None

    shell.display_formatter.formatters[FIGURE_MIME] = FigureFormatter(parent=shell.display_formatter)


def _floats(values, limit):
    import numpy as np

    array = np.asarray(values, dtype=float).ravel()[:limit]
    return [v if math.isfinite(v) else None for v in array.tolist()]


def _image(array):
    import numpy as np

    data = np.ma.filled(np.ma.asarray(array).astype(float), np.nan)
    shape = list(data.shape)
    if data.ndim == 3 and data.shape[-1] in (3, 4):
        data = data[..., :3].mean(axis=-1)  # grey is what the grader compares
    if data.ndim != 2:
        return {"shape": shape, "data": None}
    if max(data.shape) > _IMAGE_SIDE:
        rows = np.linspace(0, data.shape[0] - 1, min(data.shape[0], _IMAGE_SIDE)).round().astype(int)
        cols = np.linspace(0, data.shape[1] - 1, min(data.shape[1], _IMAGE_SIDE)).round().astype(int)
        data = data[np.ix_(rows, cols)]
    return {"shape": shape, "data": [_floats(row, _IMAGE_SIDE) for row in data]}


def describe_figure(figure):
    """What a figure shows, as JSON: per axes its title, labels, tick labels, texts, the lines'
    data, the images' pixels (at most 32 x 32) and the colour meshes' values (a heatmap)."""
    axes = []
    for ax in figure.get_axes()[:_MAX_AXES]:
        texts = [t.get_text() for t in ax.texts[:_MAX_TEXTS]]
        meshes = []
        for collection in ax.collections[:4]:
            values = collection.get_array() if hasattr(collection, "get_array") else None
            if values is not None and getattr(values, "size", 0) and values.size <= 10_000:
                meshes.append({"shape": list(values.shape), "data": _floats(values, 10_000)})
        axes.append(
            {
                "title": ax.get_title(),
                "xlabel": ax.get_xlabel(),
                "ylabel": ax.get_ylabel(),
                "xticklabels": [t.get_text() for t in ax.get_xticklabels()][:50],
                "yticklabels": [t.get_text() for t in ax.get_yticklabels()][:50],
                "texts": [t[:100] for t in texts],
                "lines": [
                    {"x": _floats(line.get_xdata(), _MAX_POINTS), "y": _floats(line.get_ydata(), _MAX_POINTS)}
                    for line in ax.get_lines()[:_MAX_LINES]
                ],
                "images": [_image(image.get_array()) for image in ax.get_images()[:4]],
                "meshes": meshes,
            }
        )
    suptitle = getattr(figure, "_suptitle", None)
    return {"axes": axes, "suptitle": suptitle.get_text() if suptitle is not None else ""}


# ------------------------------------------------------------------------------ answering


def answer(function, in_path, out_path):
    """Run probe ``function`` on the notebook's namespace with the inputs saved at ``in_path``."""
    import torch
    from IPython import get_ipython

    inputs = torch.load(in_path, weights_only=True)
    result = PROBES[function](get_ipython().user_ns, **inputs)
    torch.save(result, out_path)


def _type_name(value):
    kind = type(value)
    return kind.__qualname__ if kind.__module__ == "builtins" else f"{kind.__module__}.{kind.__qualname__}"


def _as_int(value):
    """An int from an int-like value (int, numpy integer, integral float, 0-d tensor), else None."""
    import numbers

    try:
        import torch

        if isinstance(value, torch.Tensor) and value.numel() == 1:
            value = value.item()
    except Exception:
        pass
    if isinstance(value, bool):
        return None
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, numbers.Real) and math.isfinite(float(value)) and float(value).is_integer():
        return int(value)
    return None


def _count(parameters):
    return int(sum(p.numel() for p in parameters))


def _model(ns, name):
    from torch import nn

    model = ns.get(name)
    if model is None:
        return None, {"defined": name in ns}
    if not isinstance(model, nn.Module):
        return None, {"defined": True, "is_module": False, "type": _type_name(model)}
    return model, {"defined": True, "is_module": True, "type": _type_name(model)}


def _digest(tensor):
    """sha256 of a tensor's dtype, shape and values: `src.export.weights_digest`, which the
    grader's model worker computes for the saved file (a test keeps the two equal)."""
    import hashlib

    import torch

    flat = tensor.detach().to("cpu").contiguous().reshape(-1)
    digest = hashlib.sha256(f"{flat.dtype}{tuple(tensor.shape)}".encode())
    if flat.numel():
        digest.update(flat.view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


_MAX_TENSORS = 5000


def model_facts(ns, model_name, count_names, with_digests=False):
    """The model's parameter counts (and, if asked, its tensors' digests) and the notebook's count
    variables.

    Returns:
        ``{"model": {defined, is_module, type, total, trainable, frozen, digests?},
        "counts": {name: {defined, value, type, repr}}}``.
    """
    model, facts = _model(ns, model_name)
    if model is not None:
        parameters = list(model.parameters())
        facts["total"] = _count(parameters)
        facts["trainable"] = _count(p for p in parameters if p.requires_grad)
        facts["frozen"] = _count(p for p in parameters if not p.requires_grad)
        if with_digests:
            state = list(model.state_dict().items())[:_MAX_TENSORS]
            facts["digests"] = {k: _digest(v) for k, v in state}
    counts = {}
    for name in count_names:
        if name not in ns:
            counts[name] = {"defined": False}
            continue
        value = ns[name]
        counts[name] = {"defined": True, "value": _as_int(value), "type": _type_name(value), "repr": repr(value)[:80]}
    return {"model": facts, "counts": counts}


def head_facts(ns, model_name, head_name):
    """Which parameters of the model are trainable, and what its final layer is.

    Returns:
        ``{"model": {...}, "head": {...} | None, "trainable_outside_head": [names],
        "frozen_in_head": [names]}``.
    """
    from torch import nn

    model, facts = _model(ns, model_name)
    out = {"model": facts, "head": None, "trainable_outside_head": [], "frozen_in_head": []}
    if model is None:
        return out
    modules = dict(model.named_modules())
    name = head_name if isinstance(modules.get(head_name), nn.Module) else None
    if name is None:  # no attribute by that name: the last linear layer is the head
        linears = [n for n, m in modules.items() if isinstance(m, nn.Linear)]
        name = linears[-1] if linears else None
    if name is not None:
        head = modules[name]
        described = {"name": name, "type": _type_name(head), "is_linear": isinstance(head, nn.Linear)}
        if isinstance(head, nn.Linear):
            described.update(in_features=int(head.in_features), out_features=int(head.out_features))
        out["head"] = described
    prefix = f"{name}." if name else None
    for parameter_name, parameter in model.named_parameters():
        in_head = prefix is not None and parameter_name.startswith(prefix)
        if in_head and not parameter.requires_grad:
            out["frozen_in_head"].append(parameter_name)
        if not in_head and parameter.requires_grad:
            out["trainable_outside_head"].append(parameter_name)
    return out


def _trainers(ns):
    try:
        from src.engine import Trainer
    except Exception:
        return []
    return [(name, value) for name, value in ns.items() if isinstance(value, Trainer) and not name.startswith("_")]


def _history(trainer):
    history = getattr(trainer, "history", {}) or {}
    out = {}
    for key in ("train_loss", "val_loss", "val_acc", "lr"):
        try:
            out[key] = [float(v) for v in history.get(key, [])][:10_000]
        except Exception:
            out[key] = []
    return out


def _trained_digests(trainer):
    """Digests of the parameters the Trainer trains (``requires_grad``), by name in its model."""
    from torch import nn

    model = getattr(trainer, "model", None)
    if not isinstance(model, nn.Module):
        return {}
    return {k: _digest(p) for k, p in list(model.named_parameters())[:_MAX_TENSORS] if p.requires_grad}


def _optimizer_covers(trainer):
    """Whether the Trainer's optimizer updates every parameter its model trains."""
    try:
        held = {id(p) for group in trainer.optimizer.param_groups for p in group["params"]}
        trained = [p for p in trainer.model.parameters() if p.requires_grad]
        scheduler = getattr(trainer, "scheduler", None)
        on_optimizer = scheduler is None or getattr(scheduler, "optimizer", None) is trainer.optimizer
        return bool(trained) and all(id(p) in held for p in trained) and on_optimizer
    except Exception:
        return False


def _validation_images(trainer):
    """Which Fashion-MNIST images the Trainer validates on: ``{"split", "indices"}`` when its
    validation set is a split of Fashion-MNIST or a `Subset` (of a `Subset`...) of one."""
    try:
        dataset = trainer.val_loader.dataset
    except Exception:
        return None
    indices = None
    for _ in range(8):
        inner = getattr(dataset, "indices", None)
        if inner is None or not hasattr(dataset, "dataset"):
            break
        inner = [int(i) for i in list(inner)[:60_000]]
        indices = inner if indices is None else [inner[i] for i in indices]
        dataset = dataset.dataset
    try:
        size = len(dataset)
    except Exception:
        return None
    split = {60_000: "train", 10_000: "test"}.get(size)
    if split is None or not (hasattr(dataset, "targets") or hasattr(dataset, "images")):
        return None  # features computed by the notebook, or a dataset of its own
    return {"split": split, "indices": indices if indices is not None else list(range(size))}


def _criterion(trainer):
    """Whether the Trainer's loss is plain cross-entropy (the grader computes the same)."""
    from torch import nn

    criterion = getattr(trainer, "criterion", None)
    plain = (
        type(criterion) is nn.CrossEntropyLoss
        and criterion.weight is None
        and float(getattr(criterion, "label_smoothing", 0.0)) == 0.0
        and criterion.reduction == "mean"
    )
    return {"type": _type_name(criterion), "plain_cross_entropy": plain}


def _trainer_facts(name, trainer, ns=None):
    """What a Trainer did: its optimizer steps, epochs, batches per epoch, per-epoch history, the
    weights it trained, and the images it validated on."""
    try:
        steps_per_epoch = len(trainer.train_loader)
    except Exception:
        steps_per_epoch = None
    best = getattr(trainer, "best_epoch", None)
    return {
        "name": name,
        "epochs": _as_int(getattr(trainer, "epoch", None)),
        "steps": _as_int(getattr(trainer, "step", None)),
        "steps_per_epoch": steps_per_epoch,
        "best_epoch": _as_int(best) if best is not None else None,
        "history": _history(trainer),
        "trained": _trained_digests(trainer),
        "optimizer_covers_model": _optimizer_covers(trainer),
        "validation": _validation_images(trainer),
        "criterion": _criterion(trainer),
        "model_name": next((k for k, v in (ns or {}).items() if v is getattr(trainer, "model", None) and not k.startswith("_")), None),
    }


def training_facts(ns):
    """The notebook's `src.engine.Trainer` objects and what each did (`_trainer_facts`)."""
    return {"trainers": [_trainer_facts(name, trainer, ns) for name, trainer in _trainers(ns)[:8]]}


def _scheduler_part(part):
    """A scheduler's settings as plain data, enough to rebuild it in the grader's process."""
    state = {"type": _type_name(part)}
    for key in ("warmup_steps", "start_factor", "gamma", "last_epoch"):
        value = getattr(part, key, None)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            state[key] = value
    milestones = getattr(part, "milestones", None)
    if milestones is not None:
        try:
            state["milestones"] = sorted(int(m) for m in milestones.elements())  # a Counter in torch
        except AttributeError:
            state["milestones"] = sorted(int(m) for m in milestones)
    try:
        state["base_lrs"] = [float(lr) for lr in part.base_lrs]
    except Exception:
        state["base_lrs"] = []
    return state


def scheduler_facts(ns, name):
    """The scheduler's settings (each part of a chain) and which Trainer stepped it.

    Returns:
        ``{"defined", "type", "repr", "is_scheduler", "is_chain", "parts": [settings],
        "trainers": [{name, steps, steps_per_epoch, epochs, history}]}`` (the trainers whose
        ``scheduler`` is this object; `training_facts` says which of them trained the file).
    """
    from torch.optim import lr_scheduler

    if name not in ns:
        return {"defined": False}
    scheduler = ns[name]
    chains = tuple(
        getattr(lr_scheduler, kind) for kind in ("ChainedScheduler", "SequentialLR") if hasattr(lr_scheduler, kind)
    )
    is_chain = isinstance(scheduler, chains)
    parts = list(getattr(scheduler, "_schedulers", []) or []) if is_chain else [scheduler]
    users = [
        {**_trainer_facts(trainer_name, trainer), "trained": {}, "validation": None}
        for trainer_name, trainer in _trainers(ns)[:8]
        if getattr(trainer, "scheduler", None) is scheduler
    ]
    sequential = getattr(scheduler, "_milestones", None)
    return {
        "defined": True,
        "type": _type_name(scheduler),
        "repr": repr(scheduler)[:80],
        "sequential_milestones": [int(m) for m in sequential] if isinstance(sequential, (list, tuple)) else [],
        "is_scheduler": isinstance(scheduler, (lr_scheduler.LRScheduler, *chains)),
        "is_chain": is_chain,
        "parts": [_scheduler_part(part) for part in parts],
        "trainers": users,
    }


def transform_facts(ns, names):
    """Apply the notebook's transform to a grey image and report the output's shape (a hint for
    messages; the grade looks at the saved model's own preprocessing).

    Returns:
        ``{"name": str | None, "type": str, "shape": [ints] | None, "error": str}``.
    """
    import torch

    candidates = [n for n in names if n in ns and callable(ns[n])]
    if not candidates:
        return {"name": None, "type": "", "shape": None, "error": ""}
    name = candidates[0]
    transform = ns[name]
    image = torch.rand(1, 28, 28)
    error = ""
    for attempt in ("tensor", "pil"):
        try:
            if attempt == "pil":
                from torchvision.transforms.functional import to_pil_image

                output = transform(to_pil_image(image))
            else:
                output = transform(image)
            if isinstance(output, torch.Tensor):
                return {"name": name, "type": _type_name(transform), "shape": list(output.shape), "error": ""}
            error = f"returned a {_type_name(output)}"
        except Exception as failure:
            error = f"{type(failure).__name__}: {str(failure).strip()[:200]}"
    return {"name": name, "type": _type_name(transform), "shape": None, "error": error}


def metrics_facts(ns, name):
    """The notebook's own test metrics (``evaluate_loader``'s dict): ``{"defined", "acc", "f1"}``."""
    if name not in ns:
        return {"defined": False}
    result = ns[name]
    out = {"defined": True}
    for key in ("acc", "f1"):
        try:
            value = float(result[key])
            out[key] = value if math.isfinite(value) else None
        except Exception:
            out[key] = None
    return out


def weights_facts(ns, name):
    """The notebook's ``WeightsInfo``: ``{"defined", "sha256", "official", "source"}``."""
    if name not in ns:
        return {"defined": False}
    info = ns[name]
    sha = getattr(info, "sha256", None)
    return {
        "defined": True,
        "sha256": sha if isinstance(sha, str) else None,
        "official": bool(getattr(info, "official", False)),
        "source": str(getattr(info, "source", ""))[:200],
    }


PROBES = {
    f.__name__: f
    for f in (model_facts, head_facts, training_facts, scheduler_facts, transform_facts, metrics_facts, weights_facts)
}
