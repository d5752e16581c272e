"""Verify a saved model, in a fresh confined process: load, check what it holds, evaluate, describe.

    python -I model_worker.py REQUEST.json

Run by `grader.evidence.artifacts` through `grader.confine.worker` (never imported by the grader). The request
names the model file (a copy in this worker's folder), the Fashion-MNIST folder (checked against
its published checksums by the grader before), the kind of task (``cnn`` or ``transfer``), for ``transfer`` the pretrained ResNet-18 weights, and for ``cnn`` the validation
images of the notebook's Trainers (indices into the grader's own copy of a split). Loading goes
through `src.export.load_model`, which refuses any graph operation outside its allow-list before
anything runs.

1. **A model carries weights, not data.** Tensors that are neither parameters nor BatchNorm's
   statistics (plain tensor attributes, which ``torch.export`` lifts as constants, and other
   buffers) may hold a small fraction of the parameters' bytes; the preprocessing, a few numbers.
   A file over the bound is refused: it could hold a lookup table of the public test set.
2. **Metrics.** ``cnn``: the file's own graph on the whole test set; then again with the weights
   feeding every convolution zeroed (where the answers come from), and on each Trainer's
   validation images (is the history the file's?). ``transfer``: the grader's own network,
   torchvision's ResNet-18 loaded strictly with the file's weights, after the file's saved
   preprocessing, on the whole test set; the file's own forward is not run.

Writes ``answers.json`` (metrics, predictions, what the file holds, the seconds of each step).
Nothing here trusts the file: a failure at any step is an answer with the step and the reason.
"""

import json
import sys
import time
from pathlib import Path

CONV_OPS = {"aten::conv1d", "aten::conv2d", "aten::conv3d", "aten::convolution", "aten::_convolution"}
STATISTICS = ("running_mean", "running_var", "num_batches_tracked")  # BatchNorm's usual buffers
DATA_FRACTION = 0.01  # of the parameters' bytes, for tensors that are not weights
DATA_ALLOWANCE = 16 * 1024  # bytes, on top: a few small buffers (a fixed filter, a grid)
PREPROCESS_ALLOWANCE = 4 * 1024  # bytes: a mean and a std, a resize; no table
BATCH = 500  # test images per batch: a few MB of activations, suits a 2-core CPU


def _module_path(node):
    """The innermost module a graph node belongs to (``model.inner.0``), from export's metadata."""
    stack = node.meta.get("nn_module_stack") or {}
    paths = [value[0] for value in stack.values() if isinstance(value, tuple) and value]
    return paths[-1] if paths else ""


def _in_preprocess(where):
    return where == "preprocess" or where.startswith("preprocess.")


def _megabytes(count):
    return f"{count / 1e6:.1f} MB" if count >= 100_000 else f"{count / 1e3:.1f} KB"


def _holdings(program):
    """What the file holds besides its weights, and the refusal when it is over the bound.

    Parameters and BatchNorm's running statistics are weights; every other tensor (persistent
    and non-persistent buffers, plain tensor attributes lifted as constants) is data.
    """
    tensors = dict(program.state_dict)
    tensors.update(program.constants)
    parameters = set(program.graph_signature.parameters)
    parameter_bytes = sum(t.numel() * t.element_size() for k, t in tensors.items() if k in parameters)
    data, preprocess_bytes = [], 0
    for name, tensor in tensors.items():
        if name in parameters or name.endswith(STATISTICS) or not hasattr(tensor, "numel"):
            continue
        size = tensor.numel() * tensor.element_size()
        data.append((size, name, list(tensor.shape)))
        if name.startswith("preprocess."):
            preprocess_bytes += size
    data.sort(reverse=True)
    data_bytes = sum(size for size, _, _ in data)
    bound = DATA_FRACTION * parameter_bytes + DATA_ALLOWANCE
    out = {"parameter_bytes": parameter_bytes, "data_bytes": data_bytes, "bound": bound,
           "largest": [[name, shape, size] for size, name, shape in data[:3]]}
    named = ", ".join(f"{name} {tuple(shape)}" for size, name, shape in data[:3])
    if data_bytes > bound:
        out["refused"] = (
            f"it holds {_megabytes(data_bytes)} of constants beside {_megabytes(parameter_bytes)} of parameters "
            f"({named}). A saved model carries weights, not data: tensors that are neither parameters nor "
            f"BatchNorm statistics may hold at most {_megabytes(bound)} here. Keep data out of the model "
            "(no tensors stored as attributes or buffers)"
        )
    elif preprocess_bytes > PREPROCESS_ALLOWANCE:
        out["refused"] = (
            f"its preprocessing holds {_megabytes(preprocess_bytes)} of constants ({named}); a preprocessing "
            f"needs a few numbers (a mean, a std), at most {_megabytes(PREPROCESS_ALLOWANCE)}"
        )
    return out


def _describe_graph(program):
    """Convolutions of the model part and operations of the preprocessing part."""
    import torch

    convolutions, preprocess_ops = [], set()
    for node in program.graph.nodes:
        if node.op != "call_function" or not isinstance(node.target, torch._ops.OpOverload):
            continue
        name = node.target._schema.name
        where = _module_path(node)
        if _in_preprocess(where):
            preprocess_ops.add(name)
        elif name in CONV_OPS and len(node.args) > 1:
            weight = node.args[1].meta.get("val") if hasattr(node.args[1], "meta") else None
            shape = list(weight.shape) if weight is not None else []
            convolutions.append({"module": where, "weight": shape})
    return convolutions, sorted(preprocess_ops)


def _convolution_sources(program):
    """The stored tensors (parameters, buffers, constants) that the weight argument of any
    convolution of the model part is computed from, found by walking the graph back."""
    import torch

    targets = {spec.arg.name: spec.target for spec in program.graph_signature.input_specs
               if spec.target is not None and spec.kind.name in ("PARAMETER", "BUFFER", "CONSTANT_TENSOR")}
    sources, seen = set(), set()
    stack = [node.args[1] for node in program.graph.nodes
             if node.op == "call_function" and isinstance(node.target, torch._ops.OpOverload)
             and node.target._schema.name in CONV_OPS and len(node.args) > 1
             and not _in_preprocess(_module_path(node)) and hasattr(node.args[1], "all_input_nodes")]
    while stack:
        node = stack.pop()
        if node in seen:
            continue
        seen.add(node)
        if node.op == "placeholder":
            if node.name in targets:
                sources.add(targets[node.name])
            continue
        stack.extend(node.all_input_nodes)
    return sorted(sources)


def _without_convolutions(program, test, request):
    """Test accuracy with every convolution's weights zeroed: an honest CNN falls to chance."""
    import torch
    from torch.utils.data import DataLoader

    from src.engine import evaluate_loader

    sources = _convolution_sources(program)
    module = program.module()
    del module.train, module.eval  # as src.export.load_model: the graph is in eval mode already
    with torch.no_grad():
        for target in sources:
            tensor = module
            for part in target.split("."):
                tensor = getattr(tensor, part)
            tensor.zero_()
    metrics = evaluate_loader(DataLoader(test, batch_size=BATCH), module, device="cpu")
    return {"acc": float(metrics["acc"]), "zeroed": sources[:20], "count": len(sources)}


def _validation(module, request):
    """The file's loss and accuracy on each Trainer's validation images, taken from the grader's
    own copy of the split the notebook's validation set is a subset of."""
    import torch
    from torch import nn
    from torch.utils.data import DataLoader, TensorDataset

    from src.data import fashion_mnist_tensors
    from src.engine import evaluate_loader

    out, splits = [], {}
    for wanted in request.get("validation") or []:
        split, indices = wanted.get("split"), wanted.get("indices") or []
        if split not in ("train", "test") or not indices:
            out.append(None)
            continue
        if split not in splits:
            splits[split] = fashion_mnist_tensors(split, root=request["data_root"])
        data = splits[split]
        index = torch.as_tensor(indices, dtype=torch.long)
        if index.min() < 0 or index.max() >= len(data.targets):
            out.append(None)
            continue
        subset = TensorDataset(data.images[index], data.targets[index])
        metrics = evaluate_loader(DataLoader(subset, batch_size=BATCH), module, device="cpu", criterion=nn.CrossEntropyLoss())
        out.append({"loss": float(metrics["loss"]), "acc": float(metrics["acc"]), "n": len(indices)})
    return out


def _backbone(state, pretrained_path, head):
    """Each pretrained tensor against the saved one: parameters must be equal; BatchNorm's running
    statistics may have moved (training in train mode), and are listed apart."""
    import torch

    pretrained = torch.load(pretrained_path, map_location="cpu", weights_only=True)
    compared, changed, missing, moved = 0, [], [], []
    for name, weight in pretrained.items():
        if name.startswith(f"{head}."):
            continue
        if name not in state:
            missing.append(name)
            continue
        value = state[name]
        statistic = name.endswith(STATISTICS)
        same = value.shape == weight.shape and torch.equal(value.to(weight.dtype), weight)
        if statistic:
            if not same:
                moved.append(name)
            continue
        compared += 1
        if not same:
            delta = float("inf") if value.shape != weight.shape else float((value.to(weight.dtype) - weight).abs().max())
            changed.append([name, delta])
    return {"compared": compared, "changed": changed, "missing": missing, "statistics_moved": moved}


def _head_keys(state):
    """The saved head's tensors: ``fc.weight``/``fc.bias`` (a Linear), or ``fc.1.*`` (a Linear after
    a Dropout, which has no tensors); the grader's ResNet-18 reads them as ``fc.*``."""
    head = sorted(k for k in state if k.startswith("fc."))
    for prefix in ("fc.", "fc.1."):
        if head == [f"{prefix}bias", f"{prefix}weight"]:
            return prefix
    return None


def _grader_network(program, state, request):
    """torchvision's ResNet-18 with the file's weights (strict), after the file's preprocessing."""
    import torch
    import torchvision

    out = {"is_resnet18": False, "problem": "", "head_prefix": None}
    extra = sorted(k for k in program.state_dict if not k.startswith(("model.", "preprocess.")))
    preprocess_weights = sorted(k for k in program.state_dict if k.startswith("preprocess."))
    if extra or preprocess_weights:
        out["problem"] = f"it holds weights outside the model: {', '.join((extra + preprocess_weights)[:3])}"
        return out, None
    prefix = _head_keys(state)
    out["head_prefix"] = prefix
    mapped = {("fc." + k[len(prefix):] if prefix and k.startswith(prefix) else k): v for k, v in state.items()}
    reference = torchvision.models.resnet18(num_classes=10)
    try:
        reference.load_state_dict(mapped, strict=True)
    except RuntimeError as error:
        first = str(error).strip().splitlines()
        out["problem"] = "its weights are not those of a ResNet-18 with a 10-class head: " + " ".join(first[1:3])[:400]
        return out, None
    reference.eval()
    if request.get("weights"):
        out["backbone"] = _backbone(state, request["weights"], "fc")
    preprocess = getattr(torch.export.unflatten(program), "preprocess", None)
    network = torch.nn.Sequential(preprocess, reference) if preprocess is not None else reference
    try:
        with torch.inference_mode():
            ready = preprocess(torch.rand(2, 1, 28, 28)) if preprocess is not None else torch.rand(2, 1, 28, 28)
    except Exception as error:
        out["problem"] = f"the grader could not run its saved preprocessing ({type(error).__name__}: {str(error)[:200]})"
        return out, None
    out["preprocess_shape"] = list(ready.shape)
    if ready.dim() != 4 or ready.shape[1] != 3:
        out["problem"] = f"its preprocessing turns (N, 1, 28, 28) into {tuple(ready.shape)}, and ResNet-18 needs 3 channels"
        return out, None
    out["is_resnet18"] = True
    return out, network


def main(request_path):
    started = time.perf_counter()
    request = json.loads(Path(request_path).read_text())
    folder = Path(request_path).parent
    sys.path.insert(0, request["kit_root"])  # `src`: the engine's loading and data code
    answers = {"step": "load", "seconds_by_step": {}}
    clock = [started]

    def lap(name):
        now = time.perf_counter()
        answers["seconds_by_step"][name] = now - clock[0]
        clock[0] = now

    def finish():
        answers["seconds"] = time.perf_counter() - started
        (folder / "answers.json").write_text(json.dumps(answers))

    try:
        import torch
        from torch.utils.data import DataLoader

        from src.data import fashion_mnist_tensors
        from src.engine import evaluate_loader
        from src.export import load_model, weights_digest

        torch.set_num_threads(max(1, torch.get_num_threads()))
        lap("import")
        path = request["inputs"]["model.pt2"]
        try:
            module, metadata = load_model(path, device="cpu")
        except Exception as error:
            answers["error"] = f"{type(error).__name__}: {error}"
            return finish()
        program = torch.export.load(path)  # the same graph, for its structure (load_model checked it)
        answers["metadata_class"] = str(metadata.get("model_class", ""))[:100]
        answers["holdings"] = _holdings(program)
        lap("load")
        if answers["holdings"].get("refused"):
            answers["error"] = answers["holdings"]["refused"]
            return finish()

        answers["step"] = "describe"
        state = {k[len("model."):]: v.detach() for k, v in program.state_dict.items() if k.startswith("model.")}
        answers["parameters"] = int(sum(p.numel() for p in program.parameters()))
        answers["state_shapes"] = {k: list(v.shape) for k, v in program.state_dict.items()}
        answers["digests"] = {k: weights_digest(v) for k, v in state.items()}
        answers["convolutions"], answers["preprocess_ops"] = _describe_graph(program)
        network = module
        if request["kind"] == "transfer":
            answers["transfer"], network = _grader_network(program, state, request)
        lap("describe")

        answers["step"] = "evaluate"
        test = fashion_mnist_tensors("test", root=request["data_root"])
        if network is not None:
            try:
                metrics = evaluate_loader(DataLoader(test, batch_size=BATCH), network, device="cpu")
            except Exception as error:
                answers["error"] = f"{type(error).__name__}: {str(error)[:300]}"
                return finish()
            answers.update(
                acc=float(metrics["acc"]),
                f1=float(metrics["f1"]),
                confusion_matrix=metrics["confusion_matrix"].tolist(),
                predictions=[int(p) for p in metrics["predictions"]],
            )
        lap("evaluate")
        if request["kind"] == "cnn":
            answers["validation"] = _validation(module, request)
            lap("validation")
            answers["without_convolutions"] = _without_convolutions(program, test, request)
            lap("without_convolutions")
        answers["step"] = "done"
    except Exception as error:  # the grader reads the step and the reason
        answers["error"] = f"{type(error).__name__}: {str(error)[:300]}"
    return finish()


if __name__ == "__main__":
    main(sys.argv[1])
