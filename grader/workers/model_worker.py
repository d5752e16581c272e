"""Verify a saved model, in a fresh confined process: load, check the graph, evaluate, describe.

    python -I model_worker.py REQUEST.json

Run by `grader.artifacts` through `grader.confined` (never imported by the grader). The request
names the model file (a copy in this worker's folder), the Fashion-MNIST folder (checked against
its published checksums by the grader before), the kind of task (``cnn`` or ``transfer``) and, for
``transfer``, the pretrained ResNet-18 weights. Loading goes through `src.export.load_model`, which
refuses any graph operation outside its allow-list before anything runs.

Writes ``answers.json`` (metrics, predictions, what the file holds) and ``tensors.pt`` (the model's
own weights, for the grader to compare with the notebook's ``model``). Nothing here trusts the
file: a failure at any step is an answer with the step and the reason.
"""

import json
import sys
import time
from pathlib import Path

CONV_OPS = {"aten::conv1d", "aten::conv2d", "aten::conv3d", "aten::convolution", "aten::_convolution"}
WEIGHTED_OPS = CONV_OPS | {"aten::linear", "aten::matmul", "aten::mm", "aten::bmm", "aten::addmm", "aten::einsum"}


def _module_path(node):
    """The innermost module a graph node belongs to (``model.inner.0``), from export's metadata."""
    stack = node.meta.get("nn_module_stack") or {}
    paths = [value[0] for value in stack.values() if isinstance(value, tuple) and value]
    return paths[-1] if paths else ""


def _describe_graph(program):
    """Convolutions of the model part and operations of the preprocessing part."""
    import torch

    convolutions, preprocess_ops = [], set()
    for node in program.graph.nodes:
        if node.op != "call_function" or not isinstance(node.target, torch._ops.OpOverload):
            continue
        name = node.target._schema.name
        where = _module_path(node)
        if where == "preprocess" or where.startswith("preprocess."):
            preprocess_ops.add(name)
        elif name in CONV_OPS and len(node.args) > 1:
            weight = node.args[1].meta.get("val") if hasattr(node.args[1], "meta") else None
            shape = list(weight.shape) if weight is not None else []
            convolutions.append({"module": where, "weight": shape})
    return convolutions, sorted(preprocess_ops)


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
        statistic = name.endswith(("running_mean", "running_var", "num_batches_tracked"))
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


def _transfer(program, module, state, images, request):
    """Is the file torchvision's ResNet-18 with a new 10-class head, answering from that backbone?"""
    import torch
    import torchvision

    head = request.get("head", "fc")
    out = {"is_resnet18": False, "problem": ""}
    extra = sorted(k for k in program.state_dict if not k.startswith(("model.", "preprocess.")))
    preprocess_weights = sorted(k for k in program.state_dict if k.startswith("preprocess."))
    reference = torchvision.models.resnet18(num_classes=10)
    try:
        reference.load_state_dict(state, strict=True)
    except RuntimeError as error:
        first = str(error).strip().splitlines()
        out["problem"] = "its weights are not those of a ResNet-18 with a 10-class head: " + " ".join(first[1:3])[:400]
        return out
    if extra or preprocess_weights:
        out["problem"] = f"it holds weights outside the model: {', '.join((extra + preprocess_weights)[:3])}"
        return out
    reference.eval()
    try:
        unflat = torch.export.unflatten(program)
        preprocess = getattr(unflat, "preprocess", None)
        x = images[:64].clone()
        with torch.inference_mode():
            ready = preprocess(x.clone()) if preprocess is not None else x.clone()
            expected = reference(ready.float())
            actual = module(x.clone())
    except Exception as error:
        out["problem"] = f"the grader could not run it piece by piece ({type(error).__name__}: {str(error)[:200]})"
        return out
    out["preprocess_shape"] = list(ready.shape)
    difference = float((actual - expected).abs().max())
    scale = float(expected.abs().max()) + 1e-6
    out["recompute_difference"] = difference
    out["is_resnet18"] = difference <= 1e-3 * max(1.0, scale)
    if not out["is_resnet18"]:
        out["problem"] = (
            f"its answers are not ResNet-18's: torchvision's ResNet-18 built from its own weights gives "
            f"logits up to {difference:.3g} away from the file's on the same images"
        )
    if request.get("weights"):
        out["backbone"] = _backbone(state, request["weights"], head)
    return out


def main(request_path):
    started = time.perf_counter()
    request = json.loads(Path(request_path).read_text())
    folder = Path(request_path).parent
    sys.path.insert(0, request["kit_root"])  # `src`: the engine's loading and data code
    answers = {"step": "load"}

    def finish():
        answers["seconds"] = time.perf_counter() - started
        (folder / "answers.json").write_text(json.dumps(answers))

    try:
        import torch
        from torch.utils.data import DataLoader

        from src.data import fashion_mnist_tensors
        from src.engine import evaluate_loader
        from src.export import load_model

        torch.set_num_threads(max(1, torch.get_num_threads()))
        path = request["inputs"]["model.pt2"]
        try:
            module, metadata = load_model(path, device="cpu")
        except Exception as error:
            answers["error"] = f"{type(error).__name__}: {error}"
            return finish()
        program = torch.export.load(path)  # the same graph, for its structure (load_model checked it)
        answers["metadata_class"] = str(metadata.get("model_class", ""))[:100]

        answers["step"] = "evaluate"
        test = fashion_mnist_tensors("test", root=request["data_root"])
        try:
            metrics = evaluate_loader(DataLoader(test, batch_size=500), module, device="cpu")
        except Exception as error:
            answers["error"] = f"{type(error).__name__}: {str(error)[:300]}"
            return finish()
        answers.update(
            acc=float(metrics["acc"]),
            f1=float(metrics["f1"]),
            confusion_matrix=metrics["confusion_matrix"].tolist(),
            predictions=[int(p) for p in metrics["predictions"]],
        )

        answers["step"] = "describe"
        state = {k[len("model."):]: v.detach() for k, v in program.state_dict.items() if k.startswith("model.")}
        answers["parameters"] = int(sum(p.numel() for p in program.parameters()))
        answers["state_shapes"] = {k: list(v.shape) for k, v in program.state_dict.items()}
        answers["convolutions"], answers["preprocess_ops"] = _describe_graph(program)
        if request["kind"] == "transfer":
            answers["transfer"] = _transfer(program, module, state, test.images, request)
        else:
            torch.save({"state": state}, folder / "tensors.pt")
        answers["step"] = "done"
    except Exception as error:  # the grader reads the step and the reason
        answers["error"] = f"{type(error).__name__}: {str(error)[:300]}"
    return finish()


if __name__ == "__main__":
    main(sys.argv[1])
