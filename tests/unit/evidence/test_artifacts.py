"""Saved models verified outside the kernel, in the grader's confined worker: an untrained model
behind good printed numbers, and a transfer model whose backbone was left trainable and changed.
Both notebooks are tiny stand-ins for the real ones (no training), so they run in seconds."""

from __future__ import annotations

import pytest
from grader_notebooks import write_notebook

from grader.grade import grade_submission
from grader.options import GradeOptions, Limits

pytestmark = pytest.mark.slow

LIMITS = Limits(cell_timeout=300, timeout=600, memory_gib=6)


def checks_of(result, notebook):
    [graded] = [n for n in result.notebooks if n.name == notebook]
    return {check.name: check for check in graded.checks}


UNTRAINED_CNN = """
import torch
from torch import nn
from src.export import save_model

torch.manual_seed(0)
model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 26 * 26, 10))
n_params = sum(p.numel() for p in model.parameters())
save_model(model, "cnn_fashion_mnist.pt2")
test_result = {"acc": 0.9312, "f1": 0.9290}  # as if evaluate_loader had said so
print(f"test accuracy {test_result['acc']:.4f}, macro-F1 {test_result['f1']:.4f}")
"""


def test_untrained_saved_model_fails_the_metrics_and_the_printed_numbers_are_flagged(tmp_path):
    folder = tmp_path / "sub"
    write_notebook(folder / "02_cnn_fashion_mnist.ipynb", UNTRAINED_CNN)
    (folder / "cnn_fashion_mnist.pt2").write_bytes(b"a stale file from an earlier run")  # ignored
    result = grade_submission(folder, options=GradeOptions(limits=LIMITS, only=("02_cnn_fashion_mnist.ipynb",)))
    checks = checks_of(result, "02_cnn_fashion_mnist.ipynb")
    assert checks["n_params"].status == "passed"
    accuracy = checks["accuracy"]
    assert accuracy.status == "failed" and "below 0.7" in accuracy.message and accuracy.points == 0
    assert checks["f1"].status == "failed"
    printed = checks["printed_metrics"]
    assert printed.status == "failed"
    assert "accuracy 0.9312 in `test_result`, but the saved model scores" in printed.message
    assert "F1 0.9290" in printed.message


TRANSFER = """
import torch
from torch import nn
from src.data import ImageNetInput
from src.export import save_model
from src.models import load_resnet18

model, weights_info = load_resnet18(num_classes=10)
for name, parameter in model.named_parameters():
    parameter.requires_grad = name.startswith("fc.") or name.startswith("layer4.")  # backbone left trainable
with torch.no_grad():
    model.layer4[1].conv2.weight.add_(0.01)  # as if training had moved it
n_frozen = sum(p.numel() for p in model.parameters() if not p.requires_grad)
n_trainable = 11_000_000
transform = ImageNetInput()
save_model(model, "resnet18_fashion_mnist.pt2", preprocess=ImageNetInput())
"""


@pytest.fixture
def standin_weights(tmp_path, monkeypatch):
    from grader.evidence.artifacts import grading_weights
    from src.models import WEIGHTS_ENV, make_standin_weights

    path = tmp_path / "weights" / "resnet18-standin.pth"
    make_standin_weights(path)
    monkeypatch.setenv(WEIGHTS_ENV, str(path))
    grading_weights.cache_clear()
    yield path
    grading_weights.cache_clear()


def test_trainable_backbone_is_caught_by_requires_grad_and_by_the_saved_weights(tmp_path, standin_weights):
    folder = tmp_path / "sub"
    write_notebook(folder / "03_transfer_resnet18.ipynb", TRANSFER)
    result = grade_submission(folder, options=GradeOptions(limits=LIMITS, only=("03_transfer_resnet18.ipynb",)))
    checks = checks_of(result, "03_transfer_resnet18.ipynb")
    assert checks["runs"].status == "passed", checks["runs"].message
    assert checks["head"].status == "passed"
    frozen = checks["frozen"]
    assert frozen.status == "failed" and "layer4" in frozen.message and "requires_grad=False" in frozen.message
    pretrained = checks["pretrained"]
    assert pretrained.status == "failed"
    assert "1 of" in pretrained.message and "layer4.1.conv2.weight" in pretrained.message
    counts = checks["param_counts"]
    assert counts.status == "failed" and "`n_trainable` is 11,000,000" in counts.message
    assert checks["transform"].status == "passed" and "3, 28, 28)" in checks["transform"].message
    assert checks["scheduler"].status == "failed" and "No cell defines `scheduler`" in checks["scheduler"].message
    assert result.weights["official"] is False and result.weights["sha256"]
