"""Generate the student notebooks (``assignments/``) from the reference solutions (``solutions/``).

The solutions are the single source. An instructor marks what the student must write:

* a **solution region** inside a code cell, between two marker lines (nbgrader's convention)::

      def custom_conv_2d(x, kernel, bias):
          \"\"\"...docstring the student keeps...\"\"\"
          ### BEGIN SOLUTION
          ...reference code...
          ### END SOLUTION

  In the template the region becomes ``# <YOUR CODE>`` and a ``raise NotImplementedError``
  that names what to do, at the marker's indentation. If the region holds only assignments
  (``optimizer = AdamW(...)``), the template keeps one ``name = ...`` line per assignment, as
  the seed did, before the ``raise``. Text after ``### BEGIN SOLUTION`` (say
  ``### BEGIN SOLUTION: count the parameters into n_params``) becomes the message; without it
  the message is derived from the enclosing function or the assigned names. Markers in a
  Markdown cell work the same and leave ``<YOUR ANSWER>``.
* a **solution cell**: a cell tagged ``solution`` (cell metadata ``tags``) is replaced whole
  by a placeholder cell.

Outputs and execution counts are cleared, and the notebook is written with nbformat's own
deterministic JSON (sorted keys, one-space indent), so ``assignments/`` is a pure function of
``solutions/`` and a stale copy can be detected byte for byte (:func:`find_stale`).
"""

from __future__ import annotations

import ast
import textwrap
from dataclasses import dataclass, field
from pathlib import Path

import nbformat
from nbformat import NotebookNode

from grader.markers import ANSWER_PLACEHOLDER
from grader.markers import CODE_PLACEHOLDER as PLACEHOLDER
from grader.paths import ASSIGNMENTS_DIR, SOLUTIONS_DIR

__all__ = [
    "ANSWER_PLACEHOLDER",
    "BEGIN_SOLUTION",
    "END_SOLUTION",
    "PLACEHOLDER",
    "SOLUTION_TAG",
    "MarkerError",
    "ReleaseResult",
    "SolutionRegion",
    "find_regions",
    "find_stale",
    "make_template",
    "release",
    "render_template",
]

BEGIN_SOLUTION = "### BEGIN SOLUTION"
END_SOLUTION = "### END SOLUTION"
SOLUTION_TAG = "solution"


# Notebook-format version the templates are written in (nbformat's current one).
_NBFORMAT_VERSION = 4


class MarkerError(ValueError):
    """A solution marker is unbalanced or nested; names the notebook, the cell and the line."""

    def __init__(self, notebook: str, cell_index: int, line: int, problem: str):
        self.notebook = notebook
        self.cell_index = cell_index
        self.line = line
        self.problem = problem
        super().__init__(
            f"{notebook}: cell {cell_index} (counting from 0), line {line}: {problem}"
        )


@dataclass(frozen=True)
class SolutionRegion:
    """One marked region: lines ``begin`` and ``end`` (0-based, the marker lines) of a cell."""

    cell_index: int
    begin: int
    end: int
    indent: str
    hint: str


def _marker_hint(line: str) -> str:
    rest = line.strip()[len(BEGIN_SOLUTION):]
    return rest.strip().lstrip(":-–—").strip()


def find_regions(source: str, *, notebook: str = "<notebook>", cell_index: int = 0) -> list[SolutionRegion]:
    """Find the solution regions of one cell's source.

    Args:
        source: the cell's source text.
        notebook: the notebook's name, used in error messages.
        cell_index: the cell's index (from 0), used in error messages.

    Returns:
        The regions in order of appearance.

    Raises:
        MarkerError: a ``### END SOLUTION`` without a ``### BEGIN SOLUTION`` before it, a
            ``### BEGIN SOLUTION`` inside another region, or one never closed in the cell.
    """
    regions = []
    lines = source.splitlines()
    open_at: int | None = None
    for i, line in enumerate(lines):
        stripped = line.strip()
        if stripped.startswith(BEGIN_SOLUTION):
            if open_at is not None:
                raise MarkerError(
                    notebook, cell_index, i + 1,
                    f"nested {BEGIN_SOLUTION!r}: the region opened on line {open_at + 1} "
                    f"is not closed yet (regions cannot be nested)",
                )
            open_at = i
        elif stripped.startswith(END_SOLUTION):
            if open_at is None:
                raise MarkerError(
                    notebook, cell_index, i + 1,
                    f"{END_SOLUTION!r} without a {BEGIN_SOLUTION!r} before it",
                )
            begin_line = lines[open_at]
            indent = begin_line[: len(begin_line) - len(begin_line.lstrip())]
            regions.append(SolutionRegion(cell_index, open_at, i, indent, _marker_hint(begin_line)))
            open_at = None
    if open_at is not None:
        raise MarkerError(
            notebook, cell_index, open_at + 1,
            f"{BEGIN_SOLUTION!r} is never closed by {END_SOLUTION!r} in this cell",
        )
    return regions


def _assigned_names(code: str) -> list[str] | None:
    """The targets if ``code`` is only simple assignments (``a = ...``), else None."""
    try:
        tree = ast.parse(textwrap.dedent(code))
    except SyntaxError:
        return None
    if not tree.body:
        return None
    names = []
    for stmt in tree.body:
        if isinstance(stmt, ast.Assign):
            names.append(" = ".join(ast.unparse(t) for t in stmt.targets))
        elif isinstance(stmt, ast.AnnAssign) and stmt.value is not None:
            names.append(ast.unparse(stmt.target))
        else:
            return None
    return names


def _enclosing_function(source: str, line: int) -> str | None:
    """Name of the innermost function whose body contains ``line`` (1-based), if any."""
    from IPython.core.inputtransformer2 import TransformerManager

    try:
        tree = ast.parse(TransformerManager().transform_cell(source))
    except SyntaxError:
        return None
    name = None
    for node in ast.walk(tree):
        inside = isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.lineno < line <= node.end_lineno
        if inside and (name is None or node.lineno > name[0]):  # the innermost starts last
            name = (node.lineno, node.name)
    return name[1] if name else None


def _quote(text: str) -> str:
    """A double-quoted Python string literal (``repr`` would pick single quotes)."""
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _code_placeholder(source: str, region: SolutionRegion) -> list[str]:
    lines = source.splitlines()
    body = "\n".join(lines[region.begin + 1 : region.end])
    names = _assigned_names(body)
    if region.hint:
        message = region.hint
    elif names:
        message = f"set {', '.join(names)}, then delete this line"
    else:
        function = _enclosing_function(source, region.begin + 1)
        message = f"implement {function} (see its docstring)" if function else "fill in this part"
    out = [f"{region.indent}# {PLACEHOLDER}"]
    out += [f"{region.indent}{name} = ..." for name in names or []]
    out.append(f"{region.indent}raise NotImplementedError({_quote(f'{PLACEHOLDER}: {message}')})")
    return out


def _check_compiles(source: str, *, notebook: str, cell_index: int) -> None:
    from IPython.core.inputtransformer2 import TransformerManager

    try:
        compile(TransformerManager().transform_cell(source), f"<{notebook} cell {cell_index}>", "exec")
    except SyntaxError as error:
        raise MarkerError(
            notebook, cell_index, error.lineno or 0,
            f"the template of this cell is not valid Python ({error.msg}); a solution region "
            f"must hold whole statements, not part of an expression",
        ) from None


def _strip_cell(cell: NotebookNode) -> NotebookNode:
    """A copy of ``cell`` without outputs, execution data or the solution tag."""
    cell = nbformat.from_dict(cell)
    if cell.cell_type == "code":
        cell.outputs = []
        cell.execution_count = None
    cell.metadata.pop("execution", None)
    tags = [t for t in cell.metadata.get("tags", []) if t != SOLUTION_TAG]
    if tags:
        cell.metadata["tags"] = tags
    else:
        cell.metadata.pop("tags", None)
    return cell


def make_template(nb: NotebookNode, *, name: str = "<notebook>") -> NotebookNode:
    """Turn a solution notebook into the student's template (the input is not modified).

    Args:
        nb: the solution notebook, as read by ``nbformat.read(..., as_version=4)``.
        name: the notebook's name, used in error messages.

    Returns:
        A new notebook: regions and solution cells replaced by placeholders, outputs and
        execution counts cleared, cell ids kept (so the result is deterministic).

    Raises:
        MarkerError: unbalanced or nested markers, or a region that is not whole statements.
    """
    template = nbformat.from_dict(nb)
    template.cells = []
    for index, cell in enumerate(nb.cells):
        cell = _strip_cell(cell)
        is_code = cell.cell_type == "code"
        if SOLUTION_TAG in nb.cells[index].metadata.get("tags", []):
            if is_code:
                cell.source = "\n".join(
                    [f"# {PLACEHOLDER}", f"raise NotImplementedError({_quote(f'{PLACEHOLDER}: fill in this cell')})"]
                )
            else:
                cell.source = ANSWER_PLACEHOLDER
            template.cells.append(cell)
            continue
        regions = find_regions(cell.source, notebook=name, cell_index=index)
        if regions and cell.cell_type not in ("code", "markdown"):
            raise MarkerError(name, index, regions[0].begin + 1, f"solution markers in a {cell.cell_type} cell")
        if regions:
            lines = cell.source.splitlines()
            out: list[str] = []
            previous_end = -1
            for region in regions:
                out += lines[previous_end + 1 : region.begin]
                if is_code:
                    out += _code_placeholder(cell.source, region)
                else:
                    out.append(f"{region.indent}{ANSWER_PLACEHOLDER}")
                previous_end = region.end
            out += lines[previous_end + 1 :]
            cell.source = "\n".join(out)
            if is_code:
                _check_compiles(cell.source, notebook=name, cell_index=index)
        template.cells.append(cell)
    nbformat.validate(template)
    return template


def render_template(solution_path: str | Path) -> str:
    """Read a solution notebook and return its template as the exact text to write to disk.

    Args:
        solution_path: path of the solution ``.ipynb``.

    Returns:
        The template serialised by nbformat (sorted keys, one-space indent, final newline).

    Raises:
        ValueError: the file is not a notebook (`MarkerError`, a subclass, for bad markers).
    """
    solution_path = Path(solution_path)
    try:
        nb = nbformat.read(solution_path, as_version=_NBFORMAT_VERSION)
    except (nbformat.reader.NotJSONError, nbformat.ValidationError, UnicodeDecodeError) as error:
        raise ValueError(
            f"{solution_path.name}: not a readable notebook ({type(error).__name__}: {error}); "
            "open it in Jupyter and save it again"
        ) from None
    template = make_template(nb, name=solution_path.name)
    return nbformat.writes(template, version=_NBFORMAT_VERSION) + "\n"


@dataclass
class ReleaseResult:
    """What :func:`release` did: templates written, and stale or extra files found."""

    written: list[Path] = field(default_factory=list)
    stale: list[str] = field(default_factory=list)
    extra: list[str] = field(default_factory=list)


def _solution_notebooks(solutions_dir: Path) -> list[Path]:
    notebooks = sorted(solutions_dir.glob("*.ipynb"))
    if not notebooks:
        raise FileNotFoundError(f"no *.ipynb in {solutions_dir}: nothing to release")
    return notebooks


def find_stale(
    *,
    solutions_dir: str | Path = SOLUTIONS_DIR,
    assignments_dir: str | Path = ASSIGNMENTS_DIR,
) -> ReleaseResult:
    """Compare ``assignments_dir`` with the templates regenerated in memory from ``solutions_dir``.

    Args:
        solutions_dir: folder of the solution notebooks.
        assignments_dir: folder of the generated templates.

    Returns:
        A result whose ``stale`` lists the templates missing or different from what
        :func:`release` would write, and ``extra`` the notebooks with no solution.
    """
    solutions_dir, assignments_dir = Path(solutions_dir), Path(assignments_dir)
    result = ReleaseResult()
    names = set()
    for solution in _solution_notebooks(solutions_dir):
        names.add(solution.name)
        target = assignments_dir / solution.name
        expected = render_template(solution)
        if not target.exists() or target.read_text(encoding="utf-8") != expected:
            result.stale.append(solution.name)
    result.extra = sorted(p.name for p in assignments_dir.glob("*.ipynb") if p.name not in names)
    return result


def release(
    *,
    solutions_dir: str | Path = SOLUTIONS_DIR,
    assignments_dir: str | Path = ASSIGNMENTS_DIR,
) -> ReleaseResult:
    """Write one template per solution notebook into ``assignments_dir``.

    Every template is generated before any file is written, so a marker error leaves
    ``assignments_dir`` untouched.

    Args:
        solutions_dir: folder of the solution notebooks.
        assignments_dir: folder to write the templates to (created if missing).

    Returns:
        A result whose ``written`` lists the files written (only those that changed), and
        ``extra`` the notebooks in ``assignments_dir`` with no solution (left in place).
    """
    solutions_dir, assignments_dir = Path(solutions_dir), Path(assignments_dir)
    rendered = {s.name: render_template(s) for s in _solution_notebooks(solutions_dir)}
    assignments_dir.mkdir(parents=True, exist_ok=True)
    result = ReleaseResult()
    for name, text in rendered.items():
        target = assignments_dir / name
        if not target.exists() or target.read_text(encoding="utf-8") != text:
            target.write_text(text, encoding="utf-8", newline="\n")
            result.written.append(target)
    result.extra = sorted(p.name for p in assignments_dir.glob("*.ipynb") if p.name not in rendered)
    return result
