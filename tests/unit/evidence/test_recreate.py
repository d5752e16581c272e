"""Functions re-created from a notebook's source: the right definitions, in the right order, and
what their source reaches that a hand-written convolution must not."""

from __future__ import annotations

import nbformat

from grader.evidence.recreate import recreate


def notebook(*cells: str) -> nbformat.NotebookNode:
    return nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(source) for source in cells])


def built(nb, names, ran=None):
    made = recreate(nb, set(range(len(nb.cells))) if ran is None else ran, names)
    namespace: dict = {}
    exec(made.source, namespace)
    return made, namespace


def test_the_last_definition_with_its_helpers_and_imports_and_nothing_else():
    nb = notebook(
        "import numpy as np\nimport time\nSCALE = 2.0",
        "def conv(x, kernel, bias):\n    return 0",
        "kernel = load_everything()  # a global named like a parameter: not needed",
        "def helper(a):\n    return a * SCALE\n\ndef conv(x, kernel, bias):\n    return helper(np.sum(x)) + bias",
        "%timeit conv(1, 2, 3)\nresult = conv(np.ones(3), None, 1)",
    )
    made, namespace = built(nb, ["conv"])
    assert made.cells == {"conv": 3}
    assert namespace["conv"](namespace["np"].ones(2), None, 1) == 5.0
    assert "load_everything" not in made.source and "import time" not in made.source
    assert made.findings == {"conv": []}


def test_a_cell_that_never_ran_defines_nothing_and_magics_are_not_syntax_errors():
    nb = notebook("def conv(x):\n    return 1", "def conv(x):\n    return 2\n!echo hi")
    assert built(nb, ["conv"], ran={0})[1]["conv"](0) == 1
    assert built(nb, ["conv"])[1]["conv"](0) == 2
    assert recreate(nb, {0, 1}, ["missing"]).cells == {}


def test_a_redefinition_that_wraps_the_previous_one_keeps_both_in_order():
    nb = notebook("def conv(x):\n    return x + 1", "first = conv\ndef conv(x):\n    return first(x) * 10")
    assert built(nb, ["conv"])[1]["conv"](1) == 20


def test_library_convolutions_are_named_whatever_the_spelling():
    nb = notebook(
        "import torch\nimport torch.nn.functional as F\nfrom scipy.signal import correlate2d\nfrom torch import nn",
        "def a(x, k, b):\n    return F.conv2d(x, k, b)",
        "def b(x, k, b):\n    return nn.Conv2d(1, 1, 3)(x)",
        "def c(x, k, b):\n    return correlate2d(x, k) + b",
        "def d(x, k, b):\n    return getattr(F, 'con' + 'v2d')(x, k, b)",
        "def e(x, k, b):\n    return torch.ops.aten.convolution(x, k, b, [1, 1], [0, 0], [1, 1], False, [0, 0], 1)",
    )
    findings = recreate(nb, set(range(6)), list("abcde")).findings
    assert findings["a"] == ["F.conv2d"]
    assert findings["b"] == ["nn.Conv2d"]
    assert findings["c"] == ["scipy.signal", "scipy.signal.correlate2d"]
    assert findings["d"] == ["getattr (can hide a library call)"]
    assert any("torch.ops" in f for f in findings["e"])


def test_honest_names_are_not_findings():
    """A parameter called ``input``, a helper called ``conv2d``, ``unfold``, ``einsum``: all fine."""
    nb = notebook(
        "import torch\nimport numpy as np\nfrom numpy.lib.stride_tricks import sliding_window_view",
        "def conv2d(window, kernel):\n    return (window * kernel).sum()",
        "def f(input, kernel, bias):\n    cols = torch.nn.functional.unfold(input, kernel.shape[-2:])\n"
        "    return torch.einsum('ok,nkl->nol', kernel.flatten(1), cols) + conv2d(input, 0) * 0 + bias[:, None]",
        "def g(x, kernel, bias):\n    return np.einsum('ijkl,kl->ij', sliding_window_view(x, kernel.shape), kernel) + bias",
    )
    findings = recreate(nb, set(range(4)), ["f", "g"]).findings
    assert findings == {"f": [], "g": []}
