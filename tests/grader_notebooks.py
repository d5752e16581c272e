"""Small notebooks for the grader's tests, written from code strings next to the assertions."""

from __future__ import annotations

from pathlib import Path

import nbformat

from grader.options import Limits

# Limits that keep a hanging test short; a kernel with torch needs a few seconds on a busy CPU.
FAST = Limits(cell_timeout=20, timeout=60, memory_gib=4)


def notebook(*cells: str | nbformat.NotebookNode) -> nbformat.NotebookNode:
    """A notebook in memory: strings become code cells, cells are kept as they are."""
    return nbformat.v4.new_notebook(
        cells=[nbformat.v4.new_code_cell(cell) if isinstance(cell, str) else cell for cell in cells]
    )


def write_notebook(path: Path, *cells: str, markdown: dict[int, str] | None = None) -> Path:
    """Write a notebook of code cells (``markdown`` inserts Markdown cells at given positions)."""
    nb_cells = [nbformat.v4.new_code_cell(source) for source in cells]
    for position, text in sorted((markdown or {}).items()):
        nb_cells.insert(position, nbformat.v4.new_markdown_cell(text))
    notebook = nbformat.v4.new_notebook(cells=nb_cells)
    notebook.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    path.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(notebook, path)
    return path


SIMPLEST_OK = """
import numpy as np

def custom_conv_2d_simplest_case(x, kernel, bias):
    kh, kw = kernel.shape
    out = np.zeros((x.shape[0] - kh + 1, x.shape[1] - kw + 1))
    for i in range(out.shape[0]):
        for j in range(out.shape[1]):
            out[i, j] = (x[i:i + kh, j:j + kw] * kernel).sum()
    return out + bias
"""

BATCHED_OK = """
import torch

def custom_conv_2d(x, kernel, bias):
    n, c, h, w = x.shape
    c_out, _, kh, kw = kernel.shape
    out = torch.zeros(n, c_out, h - kh + 1, w - kw + 1)
    for i in range(h - kh + 1):
        for j in range(w - kw + 1):
            window = x[:, None, :, i:i + kh, j:j + kw]  # (N, 1, C, kh, kw)
            out[:, :, i, j] = (window * kernel[None]).sum((2, 3, 4))
    return out + bias[None, :, None, None]
"""

# Assumes one input channel, as the seed notebook did.
BATCHED_ONE_CHANNEL = BATCHED_OK.replace("window * kernel[None]", "window[:, :, :1] * kernel[None, :, :1]")

FULL_OK = """
import torch

def custom_conv_2d_full(x, kernel, bias, stride=1, padding=0):
    n, c, h, w = x.shape
    c_out, _, kh, kw = kernel.shape
    h_out = (h + 2 * padding - kh) // stride + 1
    w_out = (w + 2 * padding - kw) // stride + 1
    cols = torch.nn.functional.unfold(x, (kh, kw), padding=padding, stride=stride)  # (N, C*kh*kw, L)
    out = kernel.reshape(c_out, -1) @ cols  # (N, C_out, L)
    return out.reshape(n, c_out, h_out, w_out) + bias[None, :, None, None]
"""

# Right for every stride but 2: an off-by-one in the output height.
FULL_STRIDE_2_BUG = """
import torch

def custom_conv_2d_full(x, kernel, bias, stride=1, padding=0):
    n, c, h, w = x.shape
    c_out, _, kh, kw = kernel.shape
    h_out = (h + 2 * padding - kh) // stride + 1
    w_out = (w + 2 * padding - kw) // stride + 1
    if stride == 2:
        h_out -= 1
    cols = torch.nn.functional.unfold(x, (kh, kw), padding=padding, stride=stride)  # (N, C*kh*kw, L)
    cols = cols[..., : h_out * w_out]
    out = kernel.reshape(c_out, -1) @ cols  # (N, C_out, L)
    return out.reshape(n, c_out, h_out, w_out) + bias[None, :, None, None]
"""


def edit_saved_graph(path: str, nodes: str) -> str:
    """Code that rewrites the saved model at ``path`` as an attacker would (its graph is JSON anyone
    can edit): ``nodes`` runs with ``add(op, args, kwargs)``, which appends a call to the graph."""
    return f"""
import zipfile
import torch
from src.export import METADATA_FILE

program = torch.export.load({path!r})
graph = program.graph
output = next(node for node in graph.nodes if node.op == "output")
fake = next(node.meta["val"] for node in graph.nodes if isinstance(node.meta.get("val"), torch.Tensor))

def add(op, args, kwargs=None):
    with graph.inserting_before(output):
        node = graph.call_function(op, args, kwargs or {{}})
    with fake.fake_mode:
        node.meta["val"] = torch.empty(1)
    node.meta["nn_module_stack"] = {{}}
    node.meta["stack_trace"] = ""
    return node

{nodes}
program.graph_module.recompile()
with zipfile.ZipFile({path!r}) as archive:
    metadata = archive.read(next(n for n in archive.namelist() if n.endswith(METADATA_FILE))).decode()
torch.export.save(program, {path!r}, extra_files={{METADATA_FILE: metadata}})
"""


def add_file_operator(path: str, marker: str) -> str:
    """One more graph node, ``aten.from_file(marker, shared=True, size=16)``, which creates
    ``marker`` when the graph runs."""
    return edit_saved_graph(path, f"add(torch.ops.aten.from_file.default, ({marker!r}, True, 16), {{'dtype': torch.float32}})")


# Another honest author: other loop orders and library helpers that are not convolutions.
HONEST_CONVOLUTIONS = '''
import numpy as np
import torch
import torch.nn.functional as F
from numpy.lib.stride_tricks import sliding_window_view

def custom_conv_2d_simplest_case(x, kernel, bias):
    windows = sliding_window_view(x, kernel.shape)  # (H', W', KH, KW)
    return np.einsum("ijkl,kl->ij", windows, kernel) + bias

def custom_conv_2d(x, kernel, bias):
    n, c, h, w = x.shape
    c_out, _, kh, kw = kernel.shape
    out = torch.zeros(n, c_out, h - kh + 1, w - kw + 1)
    for u in range(kh):            # other loop order: over the kernel, not the output
        for v in range(kw):
            patch = x[:, :, u:u + h - kh + 1, v:v + w - kw + 1]  # (N, C, H', W')
            out += torch.einsum("nchw,oc->nohw", patch, kernel[:, :, u, v])
    return out + bias[None, :, None, None]

def custom_conv_2d_full(x, kernel, bias, stride=1, padding=0):
    n, c, h, w = x.shape
    c_out, _, kh, kw = kernel.shape
    x = F.pad(x, (padding, padding, padding, padding))
    windows = x.unfold(2, kh, stride).unfold(3, kw, stride)  # (N, C, H', W', KH, KW)
    return torch.einsum("nchwij,ocij->nohw", windows, kernel) + bias[None, :, None, None]
'''
