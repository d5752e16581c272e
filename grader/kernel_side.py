"""Questions the grader asks inside a student's kernel. Shipped as source text by `grader.probe`.

This file is not imported by the kernel (a submission could shadow the ``grader`` package);
`grader.probe` sends its text. Each public function takes the kernel's namespace ``ns`` and
keyword inputs, and returns only what ``torch.load(weights_only=True)`` can read back: dicts,
lists, str, int, float, bool, None and tensors. No student object ever leaves the kernel.

Rules for this file: no ``from __future__`` (the text runs inside a function), imports inside
the functions, and nothing that trusts the student's objects to behave.
"""

import math


def _describe_error(error):
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0] if text else ''}".rstrip(": ")


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


def _type_name(value):
    kind = type(value)
    return kind.__qualname__ if kind.__module__ == "builtins" else f"{kind.__module__}.{kind.__qualname__}"


def call_conv(ns, name, cases, numpy_inputs):
    """Call the student's convolution ``name`` on each case.

    Returns:
        ``{"defined": bool, "type": str, "results": [float64 tensor | "error text"]}``.
    """
    import numpy as np
    import torch

    function = ns.get(name)
    if function is None:
        return {"defined": False, "type": "", "results": []}
    if not callable(function):
        return {"defined": True, "type": _type_name(function), "results": []}
    results = []
    for case in cases:
        x, kernel, bias = case["x"], case["kernel"], case["bias"]
        kwargs = {}
        if case.get("stride") is not None:
            kwargs = {"stride": case["stride"], "padding": case["padding"]}
        if numpy_inputs:
            x, kernel, bias = x.numpy(), kernel.numpy(), float(bias)
        try:
            output = function(x, kernel, bias, **kwargs)
        except (Exception, SystemExit) as error:
            results.append(_describe_error(error))
            continue
        try:
            if isinstance(output, torch.Tensor):
                output = output.detach().cpu().to(torch.float64)
            elif isinstance(output, (np.ndarray, np.generic, list, tuple, float, int)):
                output = torch.from_numpy(np.asarray(output, dtype=np.float64))
            else:
                results.append(f"returned a {_type_name(output)}, expected an array or tensor")
                continue
        except Exception as error:
            results.append(f"returned something that is not an array of numbers ({_describe_error(error)})")
            continue
        results.append(output.clone())
    return {"defined": True, "type": _type_name(function), "results": results}


def _count(parameters):
    return int(sum(p.numel() for p in parameters))


def _model(ns, name):
    from torch import nn

    model = ns.get(name)
    if model is None:
        return None, {"defined": False}
    if not isinstance(model, nn.Module):
        return None, {"defined": True, "is_module": False, "type": _type_name(model)}
    return model, {"defined": True, "is_module": True, "type": _type_name(model)}


def model_facts(ns, model_name, count_names):
    """Real parameter counts of ``ns[model_name]`` and the values of the notebook's counts.

    Returns:
        ``{"model": {...}, "counts": {name: {"defined", "value", "type", "repr"}}}`` where
        ``model`` holds ``total``, ``trainable``, ``frozen`` when it is an ``nn.Module``.
    """
    model, facts = _model(ns, model_name)
    if model is not None:
        parameters = list(model.parameters())
        facts["total"] = _count(parameters)
        facts["trainable"] = _count(p for p in parameters if p.requires_grad)
        facts["frozen"] = _count(p for p in parameters if not p.requires_grad)
    counts = {}
    for name in count_names:
        if name not in ns:
            counts[name] = {"defined": False}
            continue
        value = ns[name]
        counts[name] = {
            "defined": True,
            "value": _as_int(value),
            "type": _type_name(value),
            "repr": repr(value)[:80],
        }
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
        head_facts = {"name": name, "type": _type_name(head), "is_linear": isinstance(head, nn.Linear)}
        if isinstance(head, nn.Linear):
            head_facts.update(in_features=int(head.in_features), out_features=int(head.out_features))
        out["head"] = head_facts
    prefix = f"{name}." if name else None
    for parameter_name, parameter in model.named_parameters():
        in_head = prefix is not None and parameter_name.startswith(prefix)
        if in_head and not parameter.requires_grad:
            out["frozen_in_head"].append(parameter_name)
        if not in_head and parameter.requires_grad:
            out["trainable_outside_head"].append(parameter_name)
    return out


def scheduler_facts(ns, name):
    """The scheduler's type and, for a chain, the types of its parts.

    Returns:
        ``{"defined", "type", "is_chain", "parts": [type names], "has_warmup", "has_multistep"}``.
    """
    from torch.optim import lr_scheduler

    if name not in ns:
        return {"defined": False}
    scheduler = ns[name]
    chains = tuple(
        getattr(lr_scheduler, kind) for kind in ("ChainedScheduler", "SequentialLR") if hasattr(lr_scheduler, kind)
    )
    parts = list(getattr(scheduler, "_schedulers", []) or []) if isinstance(scheduler, chains) else [scheduler]
    try:
        from src.optim import WarmupScheduler
    except Exception:
        WarmupScheduler = None
    return {
        "defined": True,
        "type": _type_name(scheduler),
        "repr": repr(scheduler)[:80],
        "is_scheduler": isinstance(scheduler, (lr_scheduler.LRScheduler, *chains)),
        "is_chain": isinstance(scheduler, chains),
        "parts": [_type_name(part) for part in parts],
        "has_warmup": WarmupScheduler is not None and any(isinstance(p, WarmupScheduler) for p in parts),
        "has_multistep": any(isinstance(p, lr_scheduler.MultiStepLR) for p in parts),
    }


def transform_facts(ns, names):
    """Apply the notebook's transform to a grey image and report the output's shape.

    Looks at ``names`` in order, then at any ``src.data.ImageNetInput`` in the namespace.

    Returns:
        ``{"name": str | None, "type": str, "shape": [ints] | None, "error": str}``.
    """
    import torch

    try:
        from src.data import ImageNetInput
    except Exception:
        ImageNetInput = None
    candidates = [n for n in names if n in ns and callable(ns[n])]
    if ImageNetInput is not None:
        candidates += [n for n, v in ns.items() if isinstance(v, ImageNetInput) and not n.startswith("_")]
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
            error = _describe_error(failure)
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
