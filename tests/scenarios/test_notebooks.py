"""The notebooks: solutions run end to end and reach their thresholds; templates stop at <YOUR CODE>.

Every check reads what the notebook produced the way the grader will: saved models are loaded
here with ``src.export.load_model`` (none of the notebook's code runs) and evaluated on the
canonical test set; names such as ``n_params`` are read from the live kernel and compared with
the real counts.
"""

from __future__ import annotations

import ast
import re

import pytest
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

from grader.paths import KIT_ROOT
from src.engine import evaluate_loader
from src.export import load_model

pytestmark = pytest.mark.slow

ASSIGNMENTS = KIT_ROOT / "assignments"

CNN_FILE = "cnn_fashion_mnist.pt2"
RESNET_FILE = "resnet18_fashion_mnist.pt2"
CNN_THRESHOLD = 0.92  # the reference solution's own bar (students need 0.7)
RESNET_THRESHOLD = 0.7

# (N, C_in, H, W), C_out, (KH, KW), stride, padding
FULL_CASES = [
    ((3, 2, 9, 8), 4, (3, 3), 2, 1),
    ((1, 1, 5, 5), 1, (3, 3), 1, 0),
    ((2, 3, 7, 10), 5, (2, 4), 1, 2),
    ((3, 2, 11, 11), 3, (5, 3), 3, 0),
    ((2, 4, 6, 6), 2, (1, 1), 2, 1),
]
LOOP_CASES = [case[:3] for case in FULL_CASES]  # stride 1, padding 0
SIMPLEST_CASES = [((5, 7), (2, 2)), ((8, 8), (3, 3)), ((6, 9), (4, 2)), ((4, 4), (1, 4)), ((3, 3), (3, 3))]


def case_id(case) -> str:
    return "-".join(str(part).replace(" ", "") for part in case)


def evaluate_saved(path, test_set) -> dict:
    module, _ = load_model(path, device="cpu")
    return evaluate_loader(DataLoader(test_set, batch_size=1000), module)


# ---------------------------------------------------------------- 01 convolution


def ask_conv(run, tmp_path, call: str, inputs: dict) -> torch.Tensor:
    """Call a convolution function in the notebook's kernel on ``inputs``; return its output.

    The files go through the notebook's own folder: the only one its confined kernel may write."""
    torch.save(inputs, run.workdir / "inputs.pt")
    run.ask(
        "import torch as _torch\n"
        "_in = _torch.load('inputs.pt')\n"
        f"_out = {call}\n"
        "_torch.save(_torch.as_tensor(_out), 'output.pt')"
    )
    return torch.load(run.workdir / "output.pt")


def test_convolution_notebook_runs(convolution_run):
    assert convolution_run.error is None, convolution_run.error
    assert len(convolution_run.outputs("image/png")) >= 4  # windows (x3) and the receptive field
    table = "\n".join(convolution_run.outputs("text/markdown"))
    assert "F.conv2d" in table and "custom_conv_2d_full" in table


@pytest.mark.parametrize("image_size, kernel_size", SIMPLEST_CASES, ids=map(case_id, SIMPLEST_CASES))
def test_simplest_case_matches_conv2d(convolution_run, tmp_path, image_size, kernel_size):
    generator = torch.Generator().manual_seed(1)
    x = torch.randn(image_size, generator=generator, dtype=torch.float64)
    kernel = torch.randn(kernel_size, generator=generator, dtype=torch.float64)
    bias = 0.5
    out = ask_conv(convolution_run, tmp_path,
                   "custom_conv_2d_simplest_case(_in['x'].numpy(), _in['kernel'].numpy(), _in['bias'])",
                   {"x": x, "kernel": kernel, "bias": bias})
    expected = F.conv2d(x[None, None], kernel[None, None], torch.tensor([bias], dtype=torch.float64))[0, 0]
    torch.testing.assert_close(out.to(torch.float64), expected)


@pytest.mark.parametrize("input_shape, out_channels, kernel_size", LOOP_CASES, ids=map(case_id, LOOP_CASES))
def test_loop_conv_matches_conv2d(convolution_run, tmp_path, input_shape, out_channels, kernel_size):
    generator = torch.Generator().manual_seed(2)
    x = torch.randn(input_shape, generator=generator)
    kernel = torch.randn(out_channels, input_shape[1], *kernel_size, generator=generator)
    bias = torch.randn(out_channels, generator=generator)
    out = ask_conv(convolution_run, tmp_path, "custom_conv_2d(_in['x'], _in['kernel'], _in['bias']).detach()",
                   {"x": x, "kernel": kernel, "bias": bias})
    torch.testing.assert_close(out, F.conv2d(x, kernel, bias), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("input_shape, out_channels, kernel_size, stride, padding", FULL_CASES,
                         ids=map(case_id, FULL_CASES))
def test_unfold_conv_matches_conv2d(convolution_run, tmp_path, input_shape, out_channels, kernel_size,
                                    stride, padding):
    generator = torch.Generator().manual_seed(3)
    x = torch.randn(input_shape, generator=generator)
    kernel = torch.randn(out_channels, input_shape[1], *kernel_size, generator=generator)
    bias = torch.randn(out_channels, generator=generator)
    out = ask_conv(
        convolution_run, tmp_path,
        "custom_conv_2d_full(_in['x'], _in['kernel'], _in['bias'], "
        f"stride={stride}, padding={padding}).detach()",
        {"x": x, "kernel": kernel, "bias": bias},
    )
    torch.testing.assert_close(out, F.conv2d(x, kernel, bias, stride=stride, padding=padding),
                               rtol=1e-4, atol=1e-5)


# ---------------------------------------------------------------- 02 CNN


def test_cnn_notebook_runs_and_shows_its_plots(cnn_run):
    assert cnn_run.error is None, cnn_run.error
    assert len(cnn_run.outputs("image/png")) >= 3  # loss by epoch, test images, confusion matrix
    assert (cnn_run.workdir / CNN_FILE).is_file()


def test_cnn_saved_model_reaches_the_reference_bar(cnn_run, fashion_mnist_test):
    result = evaluate_saved(cnn_run.workdir / CNN_FILE, fashion_mnist_test)
    print(f"CNN from {CNN_FILE}: accuracy {result['acc']:.4f}, macro-F1 {result['f1']:.4f}")
    assert result["acc"] >= CNN_THRESHOLD and result["f1"] >= CNN_THRESHOLD, result


def test_cnn_parameter_count_is_the_real_one(cnn_run):
    module, _ = load_model(cnn_run.workdir / CNN_FILE, device="cpu")
    saved_count = sum(p.numel() for p in module.parameters())
    answers = cnn_run.ask_json('{"n_params": n_params, "real": sum(p.numel() for p in model.parameters())}')
    assert answers["n_params"] == answers["real"] == saved_count


def test_cnn_printed_metrics_match_the_saved_model(cnn_run, fashion_mnist_test):
    printed = cnn_run.ask_json('{"acc": test_result["acc"], "f1": test_result["f1"]}')
    result = evaluate_saved(cnn_run.workdir / CNN_FILE, fashion_mnist_test)
    assert printed["acc"] == pytest.approx(result["acc"], abs=1e-3)
    assert printed["f1"] == pytest.approx(result["f1"], abs=1e-3)


# ---------------------------------------------------------------- 03 transfer


def test_transfer_notebook_runs_and_says_which_weights(transfer_run, standin_weights):
    from src.models import describe_weights

    assert transfer_run.error is None, transfer_run.error
    assert len(transfer_run.outputs("image/png")) >= 3
    info = describe_weights(standin_weights, source="local-file")
    printed = "".join(
        o.get("text", "") for c in transfer_run.notebook.cells if c.cell_type == "code" for o in c.outputs
    )
    assert info.sha256 in printed and "NOT the official ImageNet weights" in printed


def test_transfer_saved_model_reaches_the_bar(transfer_run, fashion_mnist_test):
    result = evaluate_saved(transfer_run.workdir / RESNET_FILE, fashion_mnist_test)
    print(f"ResNet-18 (stand-in weights) from {RESNET_FILE}: accuracy {result['acc']:.4f}, "
          f"macro-F1 {result['f1']:.4f}")
    assert result["acc"] >= RESNET_THRESHOLD and result["f1"] >= RESNET_THRESHOLD, result


def test_transfer_backbone_is_frozen_and_unchanged(transfer_run, standin_weights):
    pretrained = torch.load(standin_weights, map_location="cpu", weights_only=True)
    module, _ = load_model(transfer_run.workdir / RESNET_FILE, device="cpu")
    saved = {k.removeprefix("model."): v for k, v in module.state_dict().items() if k.startswith("model.")}
    compared = 0
    for key, value in pretrained.items():
        if key.startswith("fc."):
            continue
        assert key in saved, f"{key} missing from the saved model"
        torch.testing.assert_close(saved[key], value, rtol=0, atol=0, msg=f"{key} changed in training")
        compared += 1
    assert compared == len(pretrained) - 2
    assert saved["fc.weight"].shape == (10, 512) and saved["fc.bias"].shape == (10,)

    counts = transfer_run.ask_json(
        '{"n_frozen": n_frozen, "n_trainable": n_trainable,'
        ' "frozen": sum(p.numel() for p in model.parameters() if not p.requires_grad),'
        ' "trainable": [n for n, p in model.named_parameters() if p.requires_grad],'
        ' "trainable_count": sum(p.numel() for p in model.parameters() if p.requires_grad)}'
    )
    assert counts["trainable"] == ["fc.weight", "fc.bias"]
    assert counts["n_trainable"] == counts["trainable_count"] == 10 * 512 + 10
    assert counts["n_frozen"] == counts["frozen"] == sum(
        v.numel() for k, v in pretrained.items() if not k.startswith("fc.") and "running" not in k
        and "num_batches" not in k
    )


def test_transfer_chains_warmup_and_multistep_and_gives_three_channels(transfer_run):
    answers = transfer_run.ask_json(
        '{"scheduler": type(scheduler).__name__,'
        ' "chain": [type(s).__name__ for s in scheduler._schedulers],'
        ' "warmup_module": type(scheduler._schedulers[0]).__module__,'
        ' "rgb": list(rgb_transform(torch.rand(1, 28, 28)).shape)}'
    )
    assert answers["scheduler"] == "ChainedScheduler"
    assert sorted(answers["chain"]) == ["MultiStepLR", "WarmupScheduler"]
    assert answers["warmup_module"] == "src.optim"
    assert answers["rgb"] == [3, 28, 28]


def test_transfer_comparison_quotes_measured_numbers(transfer_run, cnn_run, fashion_mnist_test):
    comparison = "\n".join(transfer_run.outputs("text/markdown"))
    cnn = evaluate_saved(cnn_run.workdir / CNN_FILE, fashion_mnist_test)
    resnet = evaluate_saved(transfer_run.workdir / RESNET_FILE, fashion_mnist_test)
    numbers = [float(n) for n in re.findall(r"\b0\.\d{4}\b", comparison)]
    for name, value in (("CNN accuracy", cnn["acc"]), ("ResNet accuracy", resnet["acc"])):
        assert any(abs(n - value) < 5e-4 for n in numbers), f"{name} {value:.4f} is not quoted in 2.6"
    assert "не веса ImageNet" in comparison  # the stand-in is disclosed
    assert "0.7" in comparison and "не доказывает" in comparison  # and the bar is put in context


# ---------------------------------------------------------------- templates


def first_placeholder(notebook) -> tuple[int, str]:
    """Index of the first cell with a placeholder, and the message its ``raise`` gives."""
    for index, cell in enumerate(notebook.cells):
        match = re.search(r'raise NotImplementedError\(("<YOUR CODE>.*?")\)', cell.source)
        if cell.cell_type == "code" and match:
            return index, ast.literal_eval(match.group(1))
    raise AssertionError("no placeholder in the template")


@pytest.mark.parametrize(
    "name", ["01_convolution.ipynb", "02_cnn_fashion_mnist.ipynb", "03_transfer_resnet18.ipynb"]
)
def test_template_stops_at_its_first_placeholder(name, tmp_path, kernel_env, notebook_runner):
    run = notebook_runner(ASSIGNMENTS / name, workdir=tmp_path, prepared=kernel_env)
    index, message = first_placeholder(run.notebook)
    assert run.error is not None, f"{name}: the untouched template ran to the end"
    assert run.error.ename == "NotImplementedError", run.error
    assert run.error.evalue == message
    assert run.error_cell >= index  # it got as far as the placeholder, and failed on it
