"""Each check measures the skill it names: attacks get 0 for what they attack, honest alternatives
keep full marks. Through the real command line, on small notebooks (seconds of training on a
subset of Fashion-MNIST), graded once as one class.

The attacks are the ones a dishonest student would try knowing the grader's code: a convolution
that calls ``conv2d`` (however spelled), probe answers forged in the kernel, figures found by
keyword, an MLP or another file saved for Task 1, a wrapper that keeps the pretrained tensors
next to a model that ignores them for Task 2, milestones in epochs, printed numbers that are not
the model's. The honest alternatives are other architectures, ``einsum`` and other loop orders,
``sliding_window_view``, a ``transforms.Compose`` with ``Grayscale(3)``, plain matplotlib plots,
a printed confusion matrix, another correct schedule.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from grader_notebooks import FULL_OK, HONEST_CONVOLUTIONS, write_notebook

from grader.paths import KIT_ROOT

pytestmark = pytest.mark.slow

# ------------------------------------------------------------------ 01: convolutions

LIBRARY_CONVOLUTIONS = '''
import operator
import numpy as np
import torch
import torch.nn.functional as F
from scipy import signal

def custom_conv_2d_simplest_case(x, kernel, bias):
    return signal.correlate2d(x, kernel, mode="valid") + bias

def custom_conv_2d(x, kernel, bias):
    layer = torch.nn.Conv2d(kernel.shape[1], kernel.shape[0], kernel.shape[2:])
    with torch.no_grad():
        layer.weight.copy_(kernel)
        layer.bias.copy_(bias)
        return layer(x)

def custom_conv_2d_full(x, kernel, bias, stride=1, padding=0):
    convolve = operator.attrgetter("con" + "v2d")(F)  # spelled so that no name says conv2d
    torch.nn.functional.unfold(x, 1)  # and windows "built", as the task asks
    return convolve(x, kernel, bias, stride=stride, padding=padding)
'''

# The probe answers were written by the kernel before: a notebook that rewrote torch.save could
# forge them. The functions now run in the grader's worker, so this gets what zeros deserve.
FORGED_PROBES = '''
import torch
import torch.nn.functional as F

_real_save = torch.save
def _forging_save(obj, path, *args, **kwargs):
    return _real_save(obj, path, *args, **kwargs)
torch.save = _forging_save

def custom_conv_2d(x, kernel, bias):
    return torch.zeros(x.shape[0], kernel.shape[0], x.shape[2] - kernel.shape[2] + 1, x.shape[3] - kernel.shape[3] + 1)
'''

NO_UNFOLD = FULL_OK.replace(
    "    cols = torch.nn.functional.unfold(x, (kh, kw), padding=padding, stride=stride)  # (N, C*kh*kw, L)\n"
    "    out = kernel.reshape(c_out, -1) @ cols  # (N, C_out, L)\n"
    "    return out.reshape(n, c_out, h_out, w_out) + bias[None, :, None, None]",
    "    x = torch.nn.functional.pad(x, (padding,) * 4)\n"
    "    out = torch.zeros(n, c_out, h_out, w_out)\n"
    "    for i in range(h_out):\n"
    "        for j in range(w_out):\n"
    "            window = x[:, None, :, i * stride:i * stride + kh, j * stride:j * stride + kw]\n"
    "            out[:, :, i, j] = (window * kernel[None]).sum((2, 3, 4))\n"
    "    return out + bias[None, :, None, None]",
)

# ------------------------------------------------------------------ 02: a CNN

DATA = '''
import io
import math
import matplotlib.pyplot as plt
import torch
from torch import nn
from torch.utils.data import DataLoader, Subset
from src.data import fashion_mnist_tensors
from src.engine import Trainer, evaluate_loader
from src.export import save_model

torch.manual_seed(0)
train = Subset(fashion_mnist_tensors("train"), range(12000))
test = fashion_mnist_tensors("test")
'''


def trained(model: str, name: str = "model", epochs: int = 2) -> str:
    return (
        f"{name} = {model}\n"
        f"trainer = Trainer({name}, optimizer=torch.optim.Adam({name}.parameters(), lr=3e-3), "
        "criterion=nn.CrossEntropyLoss(), train_dataset=train, batch_size=128, seed=0, log_dir=None)\n"
        f"history = trainer.train({epochs})\n"
    )


OTHER_CNN = (
    "nn.Sequential(nn.Conv2d(1, 8, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(8, 16, 3, padding=1), "
    "nn.ReLU(), nn.AdaptiveAvgPool2d(7), nn.Flatten(), nn.Linear(16 * 49, 10))"
)

PLAIN_FIGURES = '''
plt.plot(range(1, len(history["train_loss"]) + 1), history["train_loss"], "o-")
plt.xlabel("epoch"); plt.ylabel("loss"); plt.show()
---
test_result = evaluate_loader(DataLoader(test, batch_size=1000), model)
print(f"test accuracy {test_result['acc']:.4f}, macro-F1 {test_result['f1']:.4f}")
---
fig, axes = plt.subplots(2, 4)
for i, ax in enumerate(axes.flat):
    k = 100 + i
    ax.imshow(test.images[k].squeeze(), cmap="gray")
    ax.set_title(f"true: {test.classes[test_result['targets'][k]]}\\npredicted: {test.classes[test_result['predictions'][k]]}")
plt.show()
---
print(test_result["confusion_matrix"])  # printed, as the seed did
'''

HONEST_CNN = [DATA + trained(OTHER_CNN) + "n_params = sum(p.numel() for p in model.parameters())",
              *PLAIN_FIGURES.split("---"), 'save_model(model, "cnn_fashion_mnist.pt2")']

PICTURE = '''
from IPython.display import Image, display
fig = plt.figure(); plt.text(0.3, 0.5, "a picture"); buffer = io.BytesIO(); fig.savefig(buffer, format="png"); plt.close(fig)
# loss by epoch, confusion matrix, predictions on test images: imshow grid
display(Image(buffer.getvalue()))
'''

MLP_CNN = [
    DATA + trained("nn.Sequential(nn.Flatten(), nn.Linear(784, 128), nn.ReLU(), nn.Linear(128, 10))")
    + "n_params = sum(p.numel() for p in model.parameters())\n"
    + "test_result = evaluate_loader(DataLoader(test, batch_size=1000), model)\n"
    + 'print("Test accuracy: 0.95, F1: 0.95")',
    PICTURE,
    'save_model(model, "cnn_fashion_mnist.pt2")',
]

def by_hand(name: str) -> str:
    """Training without the Trainer: weights that could as well come from elsewhere."""
    return (
        f"_optimizer = torch.optim.Adam({name}.parameters(), lr=3e-3)\n"
        f"for _images, _labels in DataLoader(train, batch_size=128, shuffle=True):\n"
        f"    _optimizer.zero_grad(); nn.functional.cross_entropy({name}(_images), _labels).backward(); _optimizer.step()\n"
    )


# `model` is trained by the notebook's Trainer; the file is another network, trained elsewhere.
OTHER_FILE = [
    DATA + trained(OTHER_CNN) + f"stranger = {OTHER_CNN}\n" + by_hand("stranger")
    + "n_params = sum(p.numel() for p in model.parameters())",
    "plt.grid(); plt.show()",
    "plt.plot(torch.rand(5)); plt.title('loss'); plt.show()",
    'save_model(stranger, "cnn_fashion_mnist.pt2")  # not the notebook\'s model',
]

VALIDATED = DATA.replace(
    'train = Subset(fashion_mnist_tensors("train"), range(12000))',
    'train, val = train_val_split(Subset(fashion_mnist_tensors("train"), range(14000)), val_ratio=1 / 7, seed=0)',
).replace("from src.data import fashion_mnist_tensors", "from src.data import fashion_mnist_tensors, train_val_split")

# Honest: a validation set (its history is checked against the file), and `model` re-created in
# a later cell, after training and saving: the file is still what the Trainer trained.
RECREATED_CNN = [
    VALIDATED + trained(OTHER_CNN).replace("train_dataset=train,", "train_dataset=train, val_dataset=val,")
    + "n_params = sum(p.numel() for p in model.parameters())",
    *PLAIN_FIGURES.split("---"),
    'save_model(model, "cnn_fashion_mnist.pt2")',
    f"model = {OTHER_CNN}  # a fresh one, for another experiment",
]

# The attack: the test set kept as plain tensor attributes (lifted as constants by
# torch.export, outside the parameters), a Trainer never trained, its history typed in.
MEMORISED_CNN = [
    DATA + '''
class Memory(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3)
        self.fc = nn.Linear(4 * 26 * 26, 10)
        self.keys = test.images.flatten(1)  # (10000, 784)
        self.answers = nn.functional.one_hot(test.targets, 10).float()

    def forward(self, x):
        flat = x.flatten(1)
        distances = (flat * flat).sum(1, keepdim=True) - 2 * flat @ self.keys.t() + (self.keys * self.keys).sum(1)
        return self.fc(self.conv(x).flatten(1)) + 100 * self.answers[distances.argmin(1)]

model = Memory()
n_params = sum(p.numel() for p in model.parameters())
trainer = Trainer(model, optimizer=torch.optim.Adam(model.parameters()), criterion=nn.CrossEntropyLoss(),
                  train_dataset=train, batch_size=128, seed=0, log_dir=None)
trainer.history = {"train_loss": [0.61, 0.32], "val_loss": [math.nan] * 2, "val_acc": [math.nan] * 2,
                   "lr": [1e-3, 1e-3], "epoch_time": [1.0, 1.0]}
trainer.epoch, trainer.step = 2, 2 * len(trainer.train_loader)
history = trainer.history
''',
    *PLAIN_FIGURES.split("---"),
    'save_model(model, "cnn_fashion_mnist.pt2")',
]

# An MLP with a convolution that cannot change any answer.
DECORATIVE_CNN = [
    DATA + '''
class Decorated(nn.Module):
    def __init__(self):
        super().__init__()
        self.mlp = nn.Sequential(nn.Flatten(), nn.Linear(784, 128), nn.ReLU(), nn.Linear(128, 10))
        self.conv = nn.Conv2d(1, 4, 3)

    def forward(self, x):
        return self.mlp(x) + 0.0 * self.conv(x).mean()
''' + trained("Decorated()") + "n_params = sum(p.numel() for p in model.parameters())",
    *PLAIN_FIGURES.split("---"),
    'save_model(model, "cnn_fashion_mnist.pt2")',
]

# A CNN trained by hand; a Trainer with a validation set built on it, never trained, its
# history and counters typed in and plotted.
TYPED_HISTORY = [
    VALIDATED + f"model = {OTHER_CNN}\n" + by_hand("model") + '''
trainer = Trainer(model, optimizer=torch.optim.Adam(model.parameters(), lr=3e-3), criterion=nn.CrossEntropyLoss(),
                  train_dataset=train, val_dataset=val, batch_size=128, seed=0, log_dir=None)
trainer.history = {"train_loss": [0.83, 0.52], "val_loss": [0.5911, 0.4321], "val_acc": [0.7912, 0.8765],
                   "lr": [3e-3, 3e-3], "epoch_time": [9.0, 9.0]}
trainer.epoch, trainer.step = 2, 2 * len(trainer.train_loader)
history = trainer.history
n_params = sum(p.numel() for p in model.parameters())
''',
    *PLAIN_FIGURES.split("---"),
    'save_model(model, "cnn_fashion_mnist.pt2")',
]

# ------------------------------------------------------------------ 03: transfer

TRANSFER_START = '''
import math
import matplotlib.pyplot as plt
import torch
from sklearn.metrics import ConfusionMatrixDisplay
from torch import nn
from torch.optim.lr_scheduler import ChainedScheduler, MultiStepLR
from torch.utils.data import DataLoader, Subset, TensorDataset
from torchvision import transforms
from src.data import ImageNetInput, fashion_mnist_tensors, load_fashion_mnist
from src.engine import Trainer, evaluate_loader
from src.export import batch_preprocess, save_model
from src.models import load_resnet18
from src.optim import WarmupScheduler

torch.manual_seed(0)
resnet, weights_info = load_resnet18()
for parameter in resnet.parameters():
    parameter.requires_grad_(False)
resnet.fc = nn.Linear(512, 10)
test = fashion_mnist_tensors("test")
'''

HONEST_TRANSFER = [
    TRANSFER_START + '''
model = resnet
n_frozen = sum(p.numel() for p in model.parameters() if not p.requires_grad)
n_trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
rgb_transform = transforms.Compose([
    transforms.Grayscale(3), transforms.ToTensor(),
    transforms.Normalize((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
])
train = Subset(load_fashion_mnist("train", transform=rgb_transform), range(12000))
model.train()  # one pass in train mode: BatchNorm's running statistics move (allowed)
with torch.no_grad():
    model(torch.stack([train[i][0] for i in range(64)]))
model.eval()

@torch.no_grad()
def features(dataset):
    head, model.fc = model.fc, nn.Identity()
    out = [(model(x), y) for x, y in DataLoader(dataset, batch_size=500)]
    model.fc = head
    return TensorDataset(torch.cat([a for a, _ in out]), torch.cat([b for _, b in out]))

train_features = features(train)
optimizer = torch.optim.AdamW(model.fc.parameters(), lr=2e-2)
steps_per_epoch = math.ceil(len(train_features) / 200)
scheduler = ChainedScheduler([
    WarmupScheduler(optimizer, warmup_steps=20),
    MultiStepLR(optimizer, milestones=[5 * steps_per_epoch], gamma=0.2),  # another schedule than the reference's
])
trainer = Trainer(model.fc, optimizer=optimizer, criterion=nn.CrossEntropyLoss(), train_dataset=train_features,
                  scheduler=scheduler, batch_size=200, seed=0, log_dir=None)
history = trainer.train(8)
''',
    'plt.plot(history["train_loss"]); plt.title("loss by epoch"); plt.show()',
    '''
ready = batch_preprocess(rgb_transform)(test.images)  # (10000, 3, 28, 28), as the saved model sees them
test_result = evaluate_loader(DataLoader(TensorDataset(ready, test.targets), batch_size=500), model)
print(f"accuracy {test_result['acc']:.4f}")
''',
    '''
fig, axes = plt.subplots(1, 6, figsize=(12, 2))
for i, ax in enumerate(axes):
    ax.imshow(ready[i].permute(1, 2, 0).clamp(-2, 2))  # the 3-channel input, as the model sees it
    ax.set_title(f"{test.classes[test_result['targets'][i]]} -> {test.classes[test_result['predictions'][i]]}")
plt.show()
''',
    'ConfusionMatrixDisplay(test_result["confusion_matrix"]).plot(); plt.show()',
    'save_model(model, "resnet18_fashion_mnist.pt2", preprocess=rgb_transform)',
]

WRAPPER_TRANSFER = [
    TRANSFER_START + '''
class Transfer(nn.Module):
    """Keeps the pretrained tensors (under model.resnet.*) and answers with a small CNN."""
    def __init__(self):
        super().__init__()
        self.resnet = resnet
        self.cnn = nn.Sequential(nn.Conv2d(1, 8, 3), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 26 * 26, 10))
    def forward(self, x):
        return self.cnn(x[:, :1]) + 0 * self.resnet(x)

model = Transfer()
for parameter in model.resnet.parameters():
    parameter.requires_grad_(False)
n_frozen = sum(p.numel() for p in model.parameters() if not p.requires_grad)
n_trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
rgb_transform = ImageNetInput()
train = Subset(fashion_mnist_tensors("train", transform=rgb_transform), range(2000))
optimizer = torch.optim.Adam(model.cnn.parameters(), lr=3e-3)
scheduler = ChainedScheduler([
    WarmupScheduler(optimizer, warmup_steps=math.ceil(len(train) / 100)),
    MultiStepLR(optimizer, milestones=[1, 2], gamma=0.1),  # in epochs: the pitfall
])
trainer = Trainer(model, optimizer=optimizer, criterion=nn.CrossEntropyLoss(), train_dataset=train,
                  scheduler=scheduler, batch_size=100, seed=0, log_dir=None)
history = trainer.train(3)
''',
    'save_model(model, "resnet18_fashion_mnist.pt2", preprocess=rgb_transform)',
]


FEATURES = '''
@torch.no_grad()
def features(dataset):
    head, model.fc = model.fc, nn.Identity()
    model.eval()
    out = [(model(x), y) for x, y in DataLoader(dataset, batch_size=500)]
    model.fc = head
    return TensorDataset(torch.cat([a for a, _ in out]), torch.cat([b for _, b in out]))
'''

TRANSFER_FIGURES = [
    'plt.plot(history["train_loss"]); plt.title("loss by epoch"); plt.show()',
    '''
ready = batch_preprocess(rgb_transform)(test.images)  # (10000, 3, 28, 28), as the saved model sees them
test_result = evaluate_loader(DataLoader(TensorDataset(ready, test.targets), batch_size=500), model)
print(f"accuracy {test_result['acc']:.4f}")
fig, axes = plt.subplots(1, 6, figsize=(12, 2))
for i, ax in enumerate(axes):
    ax.imshow(test.images[i, 0], cmap="gray")
    ax.set_title(f"{test.classes[test_result['targets'][i]]} -> {test.classes[test_result['predictions'][i]]}")
plt.show()
''',
    'ConfusionMatrixDisplay(test_result["confusion_matrix"]).plot(); plt.show()',
    'save_model(model, "resnet18_fashion_mnist.pt2", preprocess=rgb_transform)',
]

# Honest variants: a per-image Lambda in the Compose, a Dropout before the new Linear.
VARIANT_TRANSFER = [
    TRANSFER_START.replace("resnet.fc = nn.Linear(512, 10)", "resnet.fc = nn.Sequential(nn.Dropout(0.2), nn.Linear(512, 10))")
    + FEATURES + '''
model = resnet
n_frozen = sum(p.numel() for p in model.parameters() if not p.requires_grad)
n_trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
rgb_transform = transforms.Compose([
    transforms.Lambda(lambda x: x.repeat(3, 1, 1)),  # one (1, 28, 28) image -> (3, 28, 28)
    transforms.Normalize((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
])
images = fashion_mnist_tensors("train", transform=rgb_transform)
train_features, val_features = features(Subset(images, range(8000))), features(Subset(images, range(8000, 9000)))
optimizer = torch.optim.AdamW(model.fc.parameters(), lr=2e-2)
steps_per_epoch = math.ceil(len(train_features) / 200)
scheduler = ChainedScheduler([
    WarmupScheduler(optimizer, warmup_steps=steps_per_epoch),
    MultiStepLR(optimizer, milestones=[6 * steps_per_epoch], gamma=0.1),
])
trainer = Trainer(model.fc, optimizer=optimizer, criterion=nn.CrossEntropyLoss(), train_dataset=train_features,
                  val_dataset=val_features, scheduler=scheduler, batch_size=200, seed=0, log_dir=None)
history = trainer.train(8)
''',
    *TRANSFER_FIGURES,
]

# The head trains with MultiStepLR in epochs and no warmup; `scheduler` is the right chain, on a
# throwaway layer's optimizer, stepped by a second Trainer.
DECOY_TRANSFER = [
    TRANSFER_START + FEATURES + '''
model = resnet
n_frozen = sum(p.numel() for p in model.parameters() if not p.requires_grad)
n_trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
rgb_transform = ImageNetInput()
train_features = features(Subset(fashion_mnist_tensors("train", transform=rgb_transform), range(8000)))
optimizer = torch.optim.AdamW(model.fc.parameters(), lr=2e-2)
trainer = Trainer(model.fc, optimizer=optimizer, criterion=nn.CrossEntropyLoss(), train_dataset=train_features,
                  scheduler=MultiStepLR(optimizer, milestones=[4, 6], gamma=0.1), batch_size=200, seed=0, log_dir=None)
history = trainer.train(8)

throwaway = nn.Linear(512, 10)
decoy_optimizer = torch.optim.AdamW(throwaway.parameters(), lr=2e-2)
steps_per_epoch = math.ceil(len(train_features) / 200)
scheduler = ChainedScheduler([
    WarmupScheduler(decoy_optimizer, warmup_steps=steps_per_epoch),
    MultiStepLR(decoy_optimizer, milestones=[6 * steps_per_epoch], gamma=0.1),
])
decoy = Trainer(throwaway, optimizer=decoy_optimizer, criterion=nn.CrossEntropyLoss(), train_dataset=train_features,
                scheduler=scheduler, batch_size=200, seed=0, log_dir=None)
decoy.train(8)
''',
    *TRANSFER_FIGURES,
]

# The issue's bypass of a comparison on 64 images: ResNet-18's forward, plus the answers of test
# images 64..9999 looked up in tensors kept on the model.
LOOKUP_TRANSFER = [
    TRANSFER_START + '''
import types

model = resnet
rgb_transform = ImageNetInput()
n_frozen = sum(p.numel() for p in model.parameters() if not p.requires_grad)
n_trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
model.keys = rgb_transform(test.images[64:])[:, :1].flatten(1)  # (9936, 784), as forward sees them
model.answers = nn.functional.one_hot(test.targets[64:], 10).float()
resnet_forward = type(model).forward

def forward(self, x):
    flat = x[:, :1].flatten(1)
    distances = (flat * flat).sum(1, keepdim=True) - 2 * flat @ self.keys.t() + (self.keys * self.keys).sum(1)
    return resnet_forward(self, x) + 100 * self.answers[distances.argmin(1)]

model.forward = types.MethodType(forward, model)
save_model(model, "resnet18_fashion_mnist.pt2", preprocess=rgb_transform)
''',
]


@pytest.fixture(scope="module")
def graded(tmp_path_factory, standin_weights, fashion_mnist_ready):
    """The class, graded once: {submission: {notebook: {check: result}}}."""
    root = tmp_path_factory.mktemp("skills")
    classroom, out = root / "class", root / "out"
    notebooks = {
        "conv-honest": ("01_convolution.ipynb", [HONEST_CONVOLUTIONS]),
        "conv-library": ("01_convolution.ipynb", [LIBRARY_CONVOLUTIONS]),
        "conv-forged-probes": ("01_convolution.ipynb", [FORGED_PROBES]),
        "conv-no-unfold": ("01_convolution.ipynb", [NO_UNFOLD]),
        "cnn-honest": ("02_cnn_fashion_mnist.ipynb", HONEST_CNN),
        "cnn-mlp": ("02_cnn_fashion_mnist.ipynb", MLP_CNN),
        "cnn-other-file": ("02_cnn_fashion_mnist.ipynb", OTHER_FILE),
        "cnn-recreated": ("02_cnn_fashion_mnist.ipynb", RECREATED_CNN),
        "cnn-memorised": ("02_cnn_fashion_mnist.ipynb", MEMORISED_CNN),
        "cnn-decorative": ("02_cnn_fashion_mnist.ipynb", DECORATIVE_CNN),
        "cnn-typed-history": ("02_cnn_fashion_mnist.ipynb", TYPED_HISTORY),
        "transfer-variants": ("03_transfer_resnet18.ipynb", VARIANT_TRANSFER),
        "transfer-decoy": ("03_transfer_resnet18.ipynb", DECOY_TRANSFER),
        "transfer-lookup": ("03_transfer_resnet18.ipynb", LOOKUP_TRANSFER),
        "transfer-honest": ("03_transfer_resnet18.ipynb", HONEST_TRANSFER),
        "transfer-wrapper": ("03_transfer_resnet18.ipynb", WRAPPER_TRANSFER),
    }
    for name, (notebook, cells) in notebooks.items():
        write_notebook(classroom / name / notebook, *cells)
    env = {**os.environ, "KIT_RESNET18_WEIGHTS": str(standin_weights)}
    done = subprocess.run(
        [sys.executable, "-m", "grader", "grade", str(classroom), "--out", str(out), "--hidden-seed", "4242",
         "--jobs", "2", "--no-progress", "--cell-timeout", "600", "--timeout", "900", "--memory-limit", "4"],
        cwd=KIT_ROOT, env=env, capture_output=True, text=True, timeout=3600, check=False,
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    results = {}
    for name, (notebook, _) in notebooks.items():
        data = json.loads((out / name / "result.json").read_text())
        [graded_notebook] = [n for n in data["notebooks"] if n["name"] == notebook]
        results[name] = {check["name"]: check for check in graded_notebook["checks"]}
    return results


def full(check) -> bool:
    return check["status"] == "passed" and check["points"] == check["max_points"]


def zero(check) -> bool:
    return check["points"] == 0 and check["status"] != "passed"


def test_honest_convolutions_keep_full_marks(graded):
    checks = graded["conv-honest"]
    assert all(full(checks[name]) for name in ("conv_simplest", "conv_batched", "conv_full")), checks


def test_library_convolutions_get_nothing_however_spelled(graded):
    checks = graded["conv-library"]
    assert zero(checks["conv_simplest"]) and "scipy.signal" in checks["conv_simplest"]["message"]
    assert zero(checks["conv_batched"]) and "Conv2d" in checks["conv_batched"]["message"]
    # No name in the source says conv2d: the operator itself does not exist in the grader's runner.
    full_check = checks["conv_full"]
    assert zero(full_check) and "library convolution" in full_check["message"], full_check["message"]


def test_answers_forged_in_the_kernel_do_not_count(graded):
    check = graded["conv-forged-probes"]["conv_batched"]
    assert zero(check) and "largest absolute error" in check["message"], check["message"]


def test_the_full_convolution_must_build_windows_with_unfold(graded):
    """Python loops over the output positions: right answers, but not every window at once."""
    check = graded["conv-no-unfold"]["conv_full"]
    assert zero(check) and "needed more than 1 CPU-s on the large case" in check["message"], check["message"]


def test_an_honest_cnn_with_its_own_plots_keeps_full_marks(graded):
    checks = graded["cnn-honest"]
    for name in ("n_params", "loss_plot", "image_grid", "confusion_matrix", "accuracy", "f1"):
        assert full(checks[name]), (name, checks[name]["message"])
    assert checks["printed_metrics"]["status"] == "passed"


def test_an_mlp_and_pictures_by_keyword_get_nothing(graded):
    checks = graded["cnn-mlp"]
    assert zero(checks["accuracy"]) and "no convolution" in checks["accuracy"]["message"]
    assert zero(checks["f1"])
    for name in ("loss_plot", "image_grid", "confusion_matrix"):
        assert zero(checks[name]) and checks[name]["manual"] and "cannot read" in checks[name]["message"], name
    printed = checks["printed_metrics"]
    assert printed["status"] == "failed" and "accuracy 0.9500 in the printed output" in printed["message"]


def test_a_file_that_is_not_the_trained_model_and_decoy_plots_get_nothing(graded):
    checks = graded["cnn-other-file"]
    message = checks["accuracy"]["message"]
    assert zero(checks["accuracy"]) and "are neither those of `model`" in message and "a Trainer" in message, message
    assert zero(checks["loss_plot"]) and not checks["loss_plot"]["manual"]
    assert zero(checks["image_grid"])


def test_an_honest_transfer_with_a_compose_transform_keeps_full_marks(graded):
    checks = graded["transfer-honest"]
    for name in ("head", "frozen", "param_counts", "scheduler", "transform", "pretrained", "loss_plot", "image_grid",
                 "confusion_matrix", "accuracy", "f1"):
        assert full(checks[name]), (name, checks[name]["message"])
    assert "running statistics moved" in checks["pretrained"]["message"]


def test_a_wrapper_that_ignores_the_backbone_and_epoch_milestones_get_nothing(graded):
    checks = graded["transfer-wrapper"]
    for name in ("pretrained", "accuracy", "f1", "head"):
        assert zero(checks[name]), (name, checks[name]["message"])
    assert "not those of a ResNet-18" in checks["pretrained"]["message"] or "not ResNet-18's" in checks["pretrained"]["message"]
    assert zero(checks["scheduler"]) and "look like epochs" in checks["scheduler"]["message"]


def test_a_cnn_recreated_after_saving_and_validated_keeps_full_marks(graded):
    checks = graded["cnn-recreated"]
    for name in ("n_params", "loss_plot", "image_grid", "confusion_matrix", "accuracy", "f1"):
        assert full(checks[name]), (name, checks[name]["message"])
    assert "checked against the saved model on its validation images" in checks["loss_plot"]["message"]


def test_a_memorised_test_set_and_a_typed_history_get_nothing(graded):
    checks = graded["cnn-memorised"]
    for name in ("accuracy", "f1", "loss_plot", "confusion_matrix", "image_grid"):
        assert zero(checks[name]), (name, checks[name]["message"])
    message = checks["accuracy"]["message"]
    assert "MB of constants beside" in message and "model.keys (10000, 784)" in message, message


def test_a_convolution_that_changes_no_answer_is_not_a_cnn(graded):
    checks = graded["cnn-decorative"]
    for name in ("accuracy", "f1"):
        assert zero(checks[name]) and "do not come from its convolutions" in checks[name]["message"], checks[name]["message"]
    assert full(checks["loss_plot"])  # its training is real: only the CNN points are at stake


def test_a_history_typed_in_for_a_trainer_that_never_trained_earns_no_plot(graded):
    checks = graded["cnn-typed-history"]
    plot = checks["loss_plot"]
    assert zero(plot) and "that history is not the training of the saved model" in plot["message"], plot["message"]
    assert full(checks["accuracy"])  # the model itself is the notebook's and learned


def test_honest_transfer_variants_keep_full_marks(graded):
    checks = graded["transfer-variants"]
    for name in ("head", "frozen", "param_counts", "scheduler", "transform", "pretrained", "loss_plot", "image_grid",
                 "confusion_matrix", "accuracy", "f1"):
        assert full(checks[name]), (name, checks[name]["message"])
    assert "after a Dropout" in checks["head"]["message"]


def test_a_decoy_scheduler_stepped_by_another_trainer_earns_nothing(graded):
    checks = graded["transfer-decoy"]
    assert zero(checks["scheduler"]) and "`decoy`, which did not train" in checks["scheduler"]["message"]
    # (its accuracy is what milestones in epochs leave: the learning rate falls after 6 batches)
    for name in ("head", "frozen", "param_counts", "transform", "pretrained", "loss_plot"):
        assert full(checks[name]), (name, checks[name]["message"])


def test_a_lookup_of_the_test_set_beside_resnet18_gets_nothing(graded):
    checks = graded["transfer-lookup"]
    for name in ("accuracy", "f1", "pretrained", "head"):
        assert zero(checks[name]), (name, checks[name]["message"])
    assert "of constants beside" in checks["accuracy"]["message"]
