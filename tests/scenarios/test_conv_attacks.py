"""The convolution checks against a student who has read the grader: library convolutions that no
scan knows, threads, a rewritten verdict, cleared evidence, hidden cases read back through the
report; next to honest variants that must keep full marks (numpy ``as_strided`` and ``einsum``,
``Tensor.as_strided`` windows, a ``@torch.no_grad()`` helper with ``F.unfold`` and ``torch.bmm``,
``%%time`` / ``%%capture`` / ``%matplotlib inline`` in a definition cell).

One class of 01 notebooks, graded once through the real command line with a hidden seed.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from grader_notebooks import BATCHED_OK, FULL_OK, SIMPLEST_OK, write_notebook

from grader.paths import KIT_ROOT

pytestmark = pytest.mark.slow

HIDDEN_SEED = 424242

# Each function attacks differently: compiled SciPy reached by attributes, F.conv2d in a thread,
# and unfold called for show before Python loops over the output positions.
ATTACKS_1 = '''
import concurrent.futures
import operator
import scipy
import torch
import torch.nn.functional as F

def custom_conv_2d_simplest_case(x, kernel, bias):
    return scipy.signal._sigtools._convolve2d(x, kernel[::-1, ::-1], 1, 0, 0, 0) + bias

def custom_conv_2d(x, kernel, bias):
    convolve = operator.attrgetter("con" + "v2d")(F)
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(convolve, x, kernel, bias).result()

def custom_conv_2d_full(x, kernel, bias, stride=1, padding=0):
    x.unfold(2, 1, 1)  # "with unfold", thrown away
    x = F.pad(x, (padding,) * 4)
    n, c, h, w = x.shape
    c_out, _, kh, kw = kernel.shape
    h_out, w_out = 1 + (h - kh) // stride, 1 + (w - kw) // stride
    out = torch.zeros(n, c_out, h_out, w_out)
    weights = kernel.reshape(c_out, -1).T
    for i in range(h_out):
        for j in range(w_out):
            window = x[:, :, i * stride:i * stride + kh, j * stride:j * stride + kw]
            out[:, :, i, j] = window.reshape(n, -1) @ weights
    return out + bias[None, :, None, None]
'''

# The verdict rewritten by module-level code (json.dumps), the evidence cleared through frames
# (``__builtins__.exec``), hidden inputs spelled into an exception's type name and text, and the
# worker's folder read for the cases.
ATTACKS_2 = '''
import json
import pathlib
import torch
import torch.nn.functional as F

_dumps = json.dumps
json.dumps = lambda obj, *args, **kwargs: _dumps({"forbidden": [], "windows": True, "status": "ok"})
__builtins__.exec("import sys\\nframe = sys._getframe()\\nwhile frame:\\n    frame.f_globals.pop('found', None)\\n    frame = frame.f_back")

def custom_conv_2d_simplest_case(x, kernel, bias):
    raise ValueError("FILES " + " ".join(sorted(path.name for path in pathlib.Path(".").iterdir())))

def custom_conv_2d(x, kernel, bias):
    return F.conv2d(x, kernel, bias)

def custom_conv_2d_full(x, kernel, bias, stride=1, padding=0):
    values = " ".join(f"{v:.6f}" for v in x.flatten()[:8].tolist())
    raise type("CORPUS " + values, (ValueError,), {})("CORPUS " + values + " BIAS " + str(bias.tolist()))
'''

HONEST_STRIDED = '''
import numpy as np
import torch
import torch.nn.functional as F
from numpy.lib.stride_tricks import as_strided

def custom_conv_2d_simplest_case(x, kernel, bias):
    kh, kw = kernel.shape
    windows = as_strided(x, (x.shape[0] - kh + 1, x.shape[1] - kw + 1, kh, kw), x.strides * 2)
    return np.einsum("ijkl,kl->ij", windows, kernel) + bias

def custom_conv_2d(x, kernel, bias):
    n, c, h, w = x.shape
    c_out, _, kh, kw = kernel.shape
    s = x.stride()
    windows = x.as_strided((n, c, h - kh + 1, w - kw + 1, kh, kw), (s[0], s[1], s[2], s[3], s[2], s[3]))
    return torch.einsum("nchwij,ocij->nohw", windows, kernel) + bias[None, :, None, None]

@torch.no_grad()
def _product(x, kernel, stride, padding):
    cols = F.unfold(x, kernel.shape[-2:], stride=stride, padding=padding)  # (N, C*KH*KW, L)
    weights = kernel.reshape(kernel.shape[0], -1).expand(x.shape[0], -1, -1)  # (N, C_out, C*KH*KW)
    return torch.bmm(weights, cols)  # (N, C_out, L)

def custom_conv_2d_full(x, kernel, bias, stride=1, padding=0):
    n, _, h, w = x.shape
    c_out, _, kh, kw = kernel.shape
    h_out, w_out = 1 + (h + 2 * padding - kh) // stride, 1 + (w + 2 * padding - kw) // stride
    return _product(x, kernel, stride, padding).reshape(n, c_out, h_out, w_out) + bias[None, :, None, None]
'''


@pytest.fixture(scope="module")
def graded(tmp_path_factory):
    """The class, graded once: ({submission: {check: result}}, {submission: every text written})."""
    root = tmp_path_factory.mktemp("conv-attacks")
    classroom, out = root / "class", root / "out"
    submissions = {
        "attacks-1": [ATTACKS_1],
        "attacks-2": [ATTACKS_2],
        "honest-strided": [HONEST_STRIDED],
        "honest-magics": ["%%time\n" + SIMPLEST_OK, "%%capture\n" + BATCHED_OK, "%matplotlib inline\n" + FULL_OK],
    }
    for name, cells in submissions.items():
        write_notebook(classroom / name / "01_convolution.ipynb", *cells)
    done = subprocess.run(
        [sys.executable, "-m", "grader", "grade", str(classroom), "--out", str(out), "--hidden-seed", str(HIDDEN_SEED),
         "--jobs", "2", "--no-progress", "--require-sandbox"],
        cwd=KIT_ROOT, capture_output=True, text=True, timeout=1800, check=False,
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    results, written = {}, {}
    for name in submissions:
        data = json.loads((out / name / "result.json").read_text())
        [notebook] = [n for n in data["notebooks"] if n["name"] == "01_convolution.ipynb"]
        results[name] = {check["name"]: check for check in notebook["checks"]}
        written[name] = "\n".join(
            path.read_text(errors="replace") for path in (out / name).iterdir() if path.suffix in (".md", ".json", ".xml")
        )
    return results, written


def zero(check) -> bool:
    return check["points"] == 0 and check["status"] != "passed"


def test_compiled_scipy_is_not_in_the_runner(graded):
    check = graded[0]["attacks-1"]["conv_simplest"]
    assert zero(check) and "scipy" in check["message"], check["message"]


def test_a_library_convolution_in_a_thread_gets_nothing(graded):
    check = graded[0]["attacks-1"]["conv_batched"]
    assert zero(check), check["message"]
    assert "can't start new thread" in check["message"] or "library convolution" in check["message"]


def test_unfold_for_show_before_python_loops_is_not_unfold(graded):
    check = graded[0]["attacks-1"]["conv_full"]
    assert zero(check) and "needed more than 1 CPU-s on the large case" in check["message"], check["message"]


def test_a_rewritten_verdict_and_cleared_evidence_change_nothing(graded):
    check = graded[0]["attacks-2"]["conv_batched"]
    assert zero(check) and "library convolution" in check["message"], check["message"]


def test_the_runner_folder_holds_no_case_for_module_code_to_read(graded):
    check = graded[0]["attacks-2"]["conv_simplest"]
    assert zero(check) and "FILES" in check["message"]
    listed = check["message"].split("FILES", 1)[1]
    assert "case" not in listed and "module.py" not in listed, listed


def test_hidden_inputs_do_not_reach_any_report(graded):
    """The function raises with the inputs in its type name and text: visible cases may show the
    text (public data), a hidden case shows only its shapes and "raised an exception"."""
    results, written = graded
    from grader.evidence.convolution import FULL, make_cases

    check = results["attacks-2"]["conv_full"]
    assert zero(check)
    hidden = make_cases(FULL, seed=HIDDEN_SEED, count=20, hidden=True)
    for case in hidden:
        for value in case.x.flatten()[:8].tolist() + case.bias.tolist():
            assert f"{value:.6f}" not in written["attacks-2"]


def test_hidden_cases_report_only_a_fixed_outcome(graded):
    results, written = graded
    report = written["attacks-2"]
    for line in report.splitlines():
        if "(hidden)" in line:
            assert "CORPUS" not in line and "ValueError" not in line


@pytest.mark.parametrize("submission", ["honest-strided", "honest-magics"])
def test_honest_variants_keep_full_marks(graded, submission):
    checks = graded[0][submission]
    for name in ("conv_simplest", "conv_batched", "conv_full"):
        assert checks[name]["status"] == "passed" and checks[name]["points"] == checks[name]["max_points"], checks[name]
