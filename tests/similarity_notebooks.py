"""Graded report folders for the similarity tests and benchmark, built without running a kernel.

A submission's folder is what `grader.classroom.batch` leaves in OUT: its executed notebooks (here: the
notebook itself; similarity reads only code cells) and the reports, ``result.json`` last.
"""

from __future__ import annotations

import random
import re
from pathlib import Path

import nbformat

from grader.paths import KIT_ROOT
from grader.report.formats import write_reports
from grader.results import NotebookResult, SubmissionResult

TEMPLATES = KIT_ROOT / "assignments"
SOLUTIONS = KIT_ROOT / "solutions"
CONVOLUTION = "01_convolution.ipynb"

# An honest solution written apart from the reference: einsum over windows, no Python loop.
EINSUM = {
    "custom_conv_2d_simplest_case": '''
    kh, kw = kernel.shape
    patches = np.lib.stride_tricks.sliding_window_view(x, (kh, kw))  # (H', W', KH, KW)
    return np.einsum("ijab,ab->ij", patches, kernel) + bias
''',
    "custom_conv_2d": '''
    c_out, c_in, kh, kw = kernel.shape
    patches = x.unfold(2, kh, 1).unfold(3, kw, 1)  # (N, C_in, H', W', KH, KW)
    out = torch.einsum("ncijab,ocab->noij", patches, kernel)  # (N, C_out, H', W')
    return out + bias.view(1, -1, 1, 1)
''',
    "custom_conv_2d_full": '''
    n, c_in, h, w = x.shape
    c_out, _, kh, kw = kernel.shape
    h_out = (h + 2 * padding - kh) // stride + 1
    w_out = (w + 2 * padding - kw) // stride + 1
    columns = F.unfold(x, (kh, kw), padding=padding, stride=stride)  # (N, C_in * KH * KW, L)
    out = torch.einsum("ok,nkl->nol", kernel.flatten(1), columns)  # (N, C_out, L)
    return out.reshape(n, c_out, h_out, w_out) + bias.view(1, -1, 1, 1)
''',
}


def read(path: Path) -> nbformat.NotebookNode:
    return nbformat.read(path, as_version=4)


def fill(template: nbformat.NotebookNode, bodies: dict[str, str]) -> nbformat.NotebookNode:
    """The template with each function's ``# <YOUR CODE>`` placeholder replaced by its body."""
    notebook = nbformat.from_dict(template)
    for cell in notebook.cells:
        for name, body in bodies.items():
            placeholder = re.compile(
                r"    # <YOUR CODE>\n    raise NotImplementedError\(\"<YOUR CODE>: implement "
                + re.escape(name)
                + r" \(see its docstring\)\"\)"
            )
            cell.source = placeholder.sub(lambda _: body.strip("\n"), cell.source)
    return notebook


def near_copy(
    notebook: nbformat.NotebookNode, *, template: str = CONVOLUTION, seed: int = 0
) -> nbformat.NotebookNode:
    """What a student who copied ``notebook`` might hand in: the variables of every cell the
    ``template`` does not have renamed, its comments rewritten, and cells moved around."""
    rng = random.Random(seed)
    given = {cell.source for cell in read(TEMPLATES / template).cells}
    copy = nbformat.from_dict(notebook)
    for cell in copy.cells:
        if cell.cell_type != "code" or cell.source in given:
            continue
        names = set(re.findall(r"^\s*([a-z_][a-z0-9_]*)(?:,| =)", cell.source, flags=re.MULTILINE)) - {"def", "return"}
        for name in sorted(names):
            cell.source = re.sub(rf"\b{name}\b", f"{name[0]}{rng.randrange(10, 99)}", cell.source)
        cell.source = re.sub(r"#[^\n]*", lambda _: f"# note {rng.randrange(1000)}", cell.source)
    code = [i for i, cell in enumerate(copy.cells) if cell.cell_type == "code"]
    for _ in range(4):  # swap code cells: the functions' cells among them, whatever their order
        i, j = rng.sample(code, 2)
        copy.cells[i], copy.cells[j] = copy.cells[j], copy.cells[i]
    return copy


def noisy_solution(path: Path, rng: random.Random) -> nbformat.NotebookNode:
    """The reference solution made a student's own: in each solution region, about half of the
    numbers changed (sizes, learning rates, epochs: students choose their own) and a line of
    the student's after about half of the lines. Generated submissions then share about as
    little as honest ones do, though all come from one solution."""
    notebook = read(path)
    for cell in notebook.cells:
        lines, inside = [], False
        for line in cell.source.splitlines():
            inside = ("### BEGIN SOLUTION" in line or inside) and "### END SOLUTION" not in line
            if inside:
                line = re.sub(r"\b\d+\b", lambda m: str(rng.randrange(2, 999)) if rng.random() < 0.5 else m[0], line)
            lines.append(line)
            open_line = line.rstrip().endswith(("(", "[", "{", ",", "\\"))  # a statement goes on
            if inside and line.strip() and not open_line and rng.random() < 0.5:
                indent = re.match(r"\s*", line).group()
                if line.rstrip().endswith(":"):
                    indent += "    "
                lines.append(f"{indent}step_{rng.randrange(10**6)} = {rng.randrange(10**6)}")
        cell.source = "\n".join(lines)
    return notebook


def write_graded(out: Path, name: str, notebooks: dict[str, nbformat.NotebookNode]) -> Path:
    """A graded submission's folder in ``out``: its executed notebooks, then its reports."""
    folder = out / name
    folder.mkdir(parents=True, exist_ok=True)
    results = []
    for notebook_name, notebook in notebooks.items():
        nbformat.write(notebook, folder / notebook_name)
        results.append(NotebookResult(notebook_name, folder / notebook_name, []))
    write_reports(SubmissionResult(name=name, path=folder, notebooks=results), folder, gradebook=False)
    return folder


def generated_class(
    out: Path, size: int, *, copies: int = 2, seed: int = 0, prefixes: tuple[str, ...] = ("01", "02", "03")
) -> set[tuple[str, str, str]]:
    """``size`` graded submissions of the notebooks named by ``prefixes``: each the reference
    with its own lines (`noisy_solution`), the last ``copies`` of them near copies of others.

    Returns:
        The planted pairs: ``{(notebook, a, b), ...}`` with ``a < b``.
    """
    rng = random.Random(seed)
    solutions = [p for p in sorted(SOLUTIONS.glob("*.ipynb")) if p.name[:2] in prefixes]
    names = [f"student{i:03d}" for i in range(size)]
    planted = set()
    handed_in: dict[str, dict[str, nbformat.NotebookNode]] = {}
    for index, name in enumerate(names):
        if index >= size - copies:
            source = names[rng.randrange(size - copies)]
            copied = handed_in[source].items()
            handed_in[name] = {nb: near_copy(notebook, template=nb, seed=index) for nb, notebook in copied}
            planted |= {(nb, *sorted((source, name))) for nb in handed_in[name]}
        else:
            handed_in[name] = {path.name: noisy_solution(path, rng) for path in solutions}
        write_graded(out, name, handed_in[name])
    return planted
