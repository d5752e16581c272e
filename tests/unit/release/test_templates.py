"""grader.release.templates: templates generated from the solutions, markers, staleness, the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

from grader.cli import main
from grader.paths import ASSIGNMENTS_DIR, SOLUTIONS_DIR
from grader.release import templates as release

SOLUTIONS = SOLUTIONS_DIR
ASSIGNMENTS = ASSIGNMENTS_DIR
SOLUTION_NOTEBOOKS = sorted(SOLUTIONS.glob("*.ipynb"))


def write_notebook(folder: Path, name: str, cells: list) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    nb = new_notebook(cells=cells)
    for i, cell in enumerate(nb.cells):
        cell.id = f"cell-{i}"  # fixed ids: the templates must not depend on random ones
    path = folder / name
    nbformat.write(nb, path)
    return path


def solution_lines(nb) -> tuple[set[str], set[str]]:
    """Stripped lines inside solution regions, and those outside them (over all cells)."""
    inside, outside = set(), set()
    for index, cell in enumerate(nb.cells):
        lines = cell.source.splitlines()
        in_region = set()
        for region in release.find_regions(cell.source, cell_index=index):
            in_region.update(range(region.begin + 1, region.end))
        for i, line in enumerate(lines):
            (inside if i in in_region else outside).add(line.strip())
    return inside, outside


# ------------------------------------------------------------------ the real notebooks


def test_there_are_three_solution_notebooks():
    assert [p.name for p in SOLUTION_NOTEBOOKS] == [
        "01_convolution.ipynb",
        "02_cnn_fashion_mnist.ipynb",
        "03_transfer_resnet18.ipynb",
    ]


def test_assignments_are_up_to_date():
    result = release.find_stale(solutions_dir=SOLUTIONS, assignments_dir=ASSIGNMENTS)
    assert not result.stale, (
        f"assignments/ is stale for {result.stale}: run `python -m grader release` after editing solutions/"
    )
    assert not result.extra, f"assignments/ has notebooks with no solution: {result.extra}"


@pytest.mark.parametrize("solution", SOLUTION_NOTEBOOKS, ids=lambda p: p.name)
def test_template_contains_no_solution_line(solution):
    nb = nbformat.read(solution, as_version=4)
    inside, outside = solution_lines(nb)
    template = (ASSIGNMENTS / solution.name).read_text(encoding="utf-8")
    template_lines = {
        line.strip() for cell in nbformat.reads(template, as_version=4).cells for line in cell.source.splitlines()
    }
    # A line that also appears outside the regions (a blank line, a bare ")") proves nothing.
    secret = {line for line in inside - outside if len(line) > 3}
    assert secret, f"{solution.name} has no solution lines to hide"
    leaked = sorted(secret & template_lines)
    assert not leaked, f"{solution.name}: solution lines leaked into the template: {leaked[:5]}"


@pytest.mark.parametrize("solution", SOLUTION_NOTEBOOKS, ids=lambda p: p.name)
def test_template_has_no_outputs_and_one_placeholder_per_region(solution):
    solution_nb = nbformat.read(solution, as_version=4)
    template_nb = nbformat.read(ASSIGNMENTS / solution.name, as_version=4)
    assert [c.id for c in template_nb.cells] == [c.id for c in solution_nb.cells]
    regions = 0
    for index, (sol, tpl) in enumerate(zip(solution_nb.cells, template_nb.cells)):
        if tpl.cell_type == "code":
            assert tpl.outputs == [] and tpl.execution_count is None, f"cell {index} kept outputs"
            placeholders = tpl.source.count(f"# {release.PLACEHOLDER}")
            assert tpl.source.count(f"raise NotImplementedError(\"{release.PLACEHOLDER}") == placeholders
            regions += placeholders
            expected = len(release.find_regions(sol.source, cell_index=index))
            if release.SOLUTION_TAG in sol.metadata.get("tags", []):
                expected = 1
            assert placeholders == expected, f"cell {index}: {placeholders} placeholders, {expected} regions"
        assert "solution" not in tpl.metadata.get("tags", [])
    assert regions > 0


@pytest.mark.parametrize("solution", SOLUTION_NOTEBOOKS, ids=lambda p: p.name)
def test_solutions_are_committed_without_outputs(solution):
    nb = nbformat.read(solution, as_version=4)
    for index, cell in enumerate(nb.cells):
        if cell.cell_type == "code":
            assert cell.outputs == [] and cell.execution_count is None, (
                f"{solution.name} cell {index} has outputs: clear them before committing "
                "(Jupyter: Edit > Clear Outputs of All Cells)"
            )


# ------------------------------------------------------------------ markers


def test_code_region_becomes_placeholder_at_the_marker_indentation():
    source = (
        "def custom_conv(x):\n"
        '    """Docstring kept."""\n'
        "    ### BEGIN SOLUTION\n"
        "    y = x * 2\n"
        "    return y\n"
        "    ### END SOLUTION\n"
        "\n"
        "custom_conv(1)"
    )
    nb = new_notebook(cells=[new_code_cell(source, outputs=[], execution_count=3)])
    template = release.make_template(nb, name="t.ipynb")
    assert template.cells[0].source == (
        "def custom_conv(x):\n"
        '    """Docstring kept."""\n'
        "    # <YOUR CODE>\n"
        '    raise NotImplementedError("<YOUR CODE>: implement custom_conv (see its docstring)")\n'
        "\n"
        "custom_conv(1)"
    )
    assert nb.cells[0].source == source, "make_template must not modify its input"


def test_assignment_region_keeps_the_names_like_the_seed():
    source = (
        "model = Net()\n"
        "### BEGIN SOLUTION\n"
        "optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)\n"
        "criterion = nn.CrossEntropyLoss(\n"
        "    label_smoothing=0.1,\n"
        ")\n"
        "### END SOLUTION\n"
        "trainer = Trainer(model, optimizer=optimizer)"
    )
    nb = new_notebook(cells=[new_code_cell(source)])
    assert release.make_template(nb).cells[0].source == (
        "model = Net()\n"
        "# <YOUR CODE>\n"
        "optimizer = ...\n"
        "criterion = ...\n"
        'raise NotImplementedError("<YOUR CODE>: set optimizer, criterion, then delete this line")\n'
        "trainer = Trainer(model, optimizer=optimizer)"
    )


def test_text_after_the_begin_marker_is_the_message():
    source = "### BEGIN SOLUTION: count the parameters into n_params\nn_params = 3\n### END SOLUTION"
    template = release.make_template(new_notebook(cells=[new_code_cell(source)]))
    assert template.cells[0].source.endswith(
        'raise NotImplementedError("<YOUR CODE>: count the parameters into n_params")'
    )


def test_the_placeholder_fails_with_its_message():
    source = "def f():\n    ### BEGIN SOLUTION\n    return 1\n    ### END SOLUTION\nf()"
    template = release.make_template(new_notebook(cells=[new_code_cell(source)]))
    with pytest.raises(NotImplementedError, match="<YOUR CODE>: implement f"):
        exec(template.cells[0].source, {})  # noqa: S102 - our own generated template


def test_markdown_region_and_solution_cells():
    nb = new_notebook(cells=[
        new_markdown_cell("Question?\n### BEGIN SOLUTION\nThe secret answer.\n### END SOLUTION"),
        new_code_cell("secret = 42", metadata={"tags": ["solution", "keep-me"]}),
        new_markdown_cell("Secret prose.", metadata={"tags": ["solution"]}),
    ])
    template = release.make_template(nb)
    assert template.cells[0].source == "Question?\n<YOUR ANSWER>"
    assert template.cells[1].source.startswith("# <YOUR CODE>\nraise NotImplementedError(")
    assert template.cells[1].metadata["tags"] == ["keep-me"]
    assert template.cells[2].source == "<YOUR ANSWER>"
    assert "tags" not in template.cells[2].metadata


BAD_CELLS = {
    "nested": ("### BEGIN SOLUTION\nx = 1\n    ### BEGIN SOLUTION\ny = 2\n### END SOLUTION", 3, "nested"),
    "end without begin": ("x = 1\n### END SOLUTION", 2, "without"),
    "begin never closed": ("x = 1\n### BEGIN SOLUTION\ny = 2", 2, "never closed"),
    "inside an expression": ("f(\n    ### BEGIN SOLUTION\n    1,\n    ### END SOLUTION\n)", 1, "whole statements"),
}


@pytest.mark.parametrize("source, line, problem", BAD_CELLS.values(), ids=BAD_CELLS.keys())
def test_bad_markers_name_the_notebook_and_the_cell(tmp_path, source, line, problem):
    solutions = tmp_path / "solutions"
    write_notebook(solutions, "ok.ipynb", [new_code_cell("### BEGIN SOLUTION\na = 1\n### END SOLUTION")])
    write_notebook(solutions, "bad.ipynb", [new_markdown_cell("# title"), new_code_cell("x = 0"), new_code_cell(source)])
    with pytest.raises(release.MarkerError) as error:
        release.release(solutions_dir=solutions, assignments_dir=tmp_path / "assignments")
    message = str(error.value)
    assert message.startswith("bad.ipynb: cell 2 ")
    assert problem in message
    if line > 1:
        assert f"line {line}:" in message
    assert (error.value.notebook, error.value.cell_index) == ("bad.ipynb", 2)
    assert not (tmp_path / "assignments").exists(), "nothing may be written when a notebook is broken"


# ------------------------------------------------------------------ release and staleness


def test_release_writes_deterministic_files_and_detects_staleness(tmp_path):
    solutions, assignments = tmp_path / "solutions", tmp_path / "assignments"
    path = write_notebook(solutions, "a.ipynb", [
        new_code_cell("### BEGIN SOLUTION\nanswer = 42\n### END SOLUTION", outputs=[], execution_count=7),
    ])
    first = release.release(solutions_dir=solutions, assignments_dir=assignments)
    assert [p.name for p in first.written] == ["a.ipynb"]
    text = (assignments / "a.ipynb").read_text(encoding="utf-8")
    assert text.endswith("}\n") and "answer = 42" not in text
    assert json.loads(text)["cells"][0]["execution_count"] is None
    assert release.find_stale(solutions_dir=solutions, assignments_dir=assignments).stale == []

    again = release.release(solutions_dir=solutions, assignments_dir=assignments)
    assert again.written == [] and (assignments / "a.ipynb").read_text(encoding="utf-8") == text

    nb = nbformat.read(path, as_version=4)
    nb.cells.append(new_markdown_cell("new text"))
    nbformat.write(nb, path)
    assert release.find_stale(solutions_dir=solutions, assignments_dir=assignments).stale == ["a.ipynb"]
    (assignments / "a.ipynb").unlink()
    assert release.find_stale(solutions_dir=solutions, assignments_dir=assignments).stale == ["a.ipynb"]


def test_cli_release_and_check(tmp_path, capsys):
    solutions, assignments = tmp_path / "solutions", tmp_path / "assignments"
    write_notebook(solutions, "a.ipynb", [new_code_cell("### BEGIN SOLUTION\nanswer = 42\n### END SOLUTION")])
    folders = ["--solutions", str(solutions), "--assignments", str(assignments)]

    assert main(["release", "--check", *folders]) == 1
    assert "stale" in capsys.readouterr().err
    assert main(["release", *folders]) == 0
    assert "wrote" in capsys.readouterr().out
    assert main(["release", "--check", *folders]) == 0

    write_notebook(solutions, "b.ipynb", [new_code_cell("### END SOLUTION")])
    assert main(["release", *folders]) == 2
    assert "b.ipynb: cell 0" in capsys.readouterr().err

    (solutions / "b.ipynb").write_text('{"cells": [', encoding="utf-8")  # truncated file
    assert main(["release", *folders]) == 2
    assert "b.ipynb: not a readable notebook" in capsys.readouterr().err
