"""Re-create a notebook's functions from its source, with the helpers and imports they need.

The convolution checks do not call the student's kernel (code there can forge any answer):
they take the functions' definitions from the executed notebook and run them in a fresh confined
process (`grader.evidence.workers.conv_worker`). This module builds that process's source: for each
function, its last top-level definition among the cells that ran, then, by the names it uses,
the top-level definitions of those names (functions, classes, assignments, imports) that Python
would use: for a name read inside a function body, the last one in the notebook; for a name read
at once (an assignment's right side, a default value), the last one before that statement;
transitively, in notebook order.

It also reads that source for what a convolution must not reach (`scan`): a library convolution
by name (``F.conv2d``, ``nn.Conv2d``, ``np.convolve``, ``scipy.signal``...), and the Python
escape hatches that could hide one from the run-time guard (``getattr``, ``eval``, ``__import__``,
``sys.setprofile``, ``torch._C``...). The worker's run-time guard then sees what the code really
calls, whatever its spelling.
"""

from __future__ import annotations

import ast
import bisect
import builtins
import re
import symtable
from dataclasses import dataclass, field
from typing import Any

__all__ = ["Recreated", "recreate", "scan"]

LIBRARY_CONVOLUTION = re.compile(
    r"^(conv[123]d|conv_transpose[123]d|convolution|_convolution|convolve[123]?d?|fftconvolve|oaconvolve|"
    r"correlate[123]?d?|filter2D|cudnn_convolution|mkldnn_convolution|conv_tbc|(Lazy)?Conv(Transpose)?[123]d)$",
    re.IGNORECASE,
)
CONVOLUTION_MODULES = ("scipy.signal", "scipy.ndimage", "cv2", "skimage", "astropy.convolution")
ESCAPE_NAMES = {
    "eval", "exec", "compile", "__import__", "getattr", "setattr", "delattr", "globals", "locals", "vars",
    "open", "breakpoint", "input", "memoryview",
}
ESCAPE_ATTRIBUTES = {
    "__dict__", "__globals__", "__code__", "__class__", "__subclasses__", "__mro__", "__bases__", "__builtins__",
    "__getattribute__", "__closure__", "_getframe", "setprofile", "settrace", "f_back", "f_globals", "f_locals",
    "gi_frame", "_C", "ops", "library", "_ops", "_dynamo", "_python_dispatch", "overrides",
}
# Dunder attributes an ordinary class or function may touch; any other reaches the interpreter's internals.
PLAIN_DUNDERS = {"__init__", "__call__", "__name__", "__doc__", "__len__", "__getitem__", "__repr__", "__str__"}
ESCAPE_MODULES = {
    "os", "sys", "subprocess", "ctypes", "importlib", "gc", "inspect", "threading", "_thread", "multiprocessing",
    "signal", "atexit", "builtins", "pickle", "marshal", "socket", "shutil", "types", "code", "runpy", "cffi",
}


@dataclass
class Recreated:
    """The module that re-creates some functions.

    Attributes:
        source: Python source: imports, helpers and the functions, in notebook order.
        cells: function name -> index of the cell whose definition was taken.
        findings: function name -> what it must not use, found in the source it needs.
        problem: why nothing could be re-created ("" when the notebook was read).
    """

    source: str
    cells: dict[str, int] = field(default_factory=dict)
    findings: dict[str, list[str]] = field(default_factory=dict)
    problem: str = ""


MAX_SOURCE_CHARS = 2_000_000  # the code cells that ran, all together: far beyond any honest notebook
# Cell magics that run their cell in the notebook's namespace, unchanged: what the cell defines stays.
TRANSPARENT_CELL_MAGICS = ("time", "capture")


def _python(source: str) -> str:
    """A cell's source as plain Python (IPython's ``%magic`` and ``!shell`` lines become calls;
    the body of a ``%%time`` or ``%%capture`` cell is the cell's own code)."""
    from IPython.core.inputtransformer2 import TransformerManager

    first, _, rest = source.lstrip().partition("\n")
    if first.startswith("%%") and first[2:].split(" ")[0] in TRANSPARENT_CELL_MAGICS:
        source = rest
    try:
        return TransformerManager().transform_cell(source)
    except Exception:
        return source


def _parse(source: str) -> list[ast.stmt]:
    """A cell's statements; none for a cell Python cannot parse (a syntax error, or nesting so deep
    that the parser gives up: such a cell defines nothing the grader will run)."""
    try:
        return ast.parse(_python(source)).body
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return []


def _bound(statement: ast.stmt) -> list[str]:
    """The names a top-level statement binds (``*`` for a star import)."""
    if isinstance(statement, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
        return [statement.name]
    if isinstance(statement, ast.Import):
        return [(alias.asname or alias.name.split(".")[0]) for alias in statement.names]
    if isinstance(statement, ast.ImportFrom):
        return ["*" if alias.name == "*" else (alias.asname or alias.name) for alias in statement.names]
    targets: list[ast.expr] = []
    if isinstance(statement, ast.Assign):
        targets = statement.targets
    elif isinstance(statement, (ast.AnnAssign, ast.AugAssign)) and statement.value is not None:
        targets = [statement.target]
    names = []
    for target in targets:
        for node in ast.walk(target):
            if isinstance(node, ast.Name):
                names.append(node.id)
    return names


def _used(statement: ast.stmt) -> tuple[set[str], set[str]]:
    """Global names a top-level statement reads, by Python's own scoping (`symtable`), split by
    when they are read: now (at module level, in a class body, a default, a comprehension) or
    later (inside a function body, when it is called). Inside a function, its parameters and
    local variables are not globals, even when the notebook also has a global of the same name
    (``kernel = conv_layer.weight`` is not needed by ``def conv(x, kernel, bias)``)."""
    try:
        table = symtable.symtable(ast.unparse(statement), "cell", "exec")
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        names = {node.id for node in ast.walk(statement) if isinstance(node, ast.Name)}
        return names, names
    now: set[str] = set()
    later: set[str] = set()
    stack = [(table, False)]
    while stack:
        scope, deferred = stack.pop()
        for symbol in scope.get_symbols():
            if symbol.is_referenced() and (scope.get_type() == "module" or symbol.is_global()):
                (later if deferred else now).add(symbol.get_name())
        for child in scope.get_children():
            runs_later = deferred or (child.get_type() == "function" and not child.get_name().endswith("comp"))
            stack.append((child, runs_later))
    return now, later


def recreate(notebook: Any, ran: set[int], names: list[str]) -> Recreated:
    """Build the module that defines ``names`` as the notebook last defined them.

    Args:
        notebook: the executed notebook.
        ran: indices of the code cells that ran (a cell that never ran defines nothing).
        names: the functions wanted.

    Returns:
        A `Recreated`; a name no cell defines is absent from ``cells``.
    """
    statements: list[tuple[int, int, ast.stmt]] = []  # (cell, position, statement), in notebook order
    size = 0
    for index, cell in enumerate(getattr(notebook, "cells", [])):
        if cell.cell_type != "code" or index not in ran:
            continue
        size += len(cell.source)
        if size > MAX_SOURCE_CHARS:  # the grader's own process reads this: bounded
            return Recreated(
                "", problem=f"the notebook's code cells hold more than {MAX_SOURCE_CHARS:,} characters, more than "
                "the grader reads to re-create functions: keep the notebook to the task's code"
            )
        statements += [(index, position, statement) for position, statement in enumerate(_parse(cell.source))]
    definitions: dict[str, list[tuple[int, int, ast.stmt]]] = {}  # name -> its bindings, in notebook order
    stars = []
    for item in statements:
        for name in _bound(item[2]):
            if name == "*":
                stars.append(item)
            else:
                definitions.setdefault(name, []).append(item)
    places = {name: [item[:2] for item in items] for name, items in definitions.items()}

    def defined(name: str, before: tuple[int, int] | None) -> tuple[int, int, ast.stmt] | None:
        """The definition of ``name`` in force at ``before`` (None: after the whole notebook ran)."""
        found = definitions.get(name)
        if not found:
            return None
        if before is None:
            return found[-1]
        at = bisect.bisect_left(places[name], before)  # the bindings before ``before``: a binary search
        return found[at - 1] if at else None

    chosen: dict[tuple[int, int], ast.stmt] = {(c, p): s for c, p, s in stars}
    result = Recreated(source="")
    for name in names:
        item = defined(name, None)
        if item is None or not isinstance(item[2], (ast.FunctionDef, ast.AsyncFunctionDef)):
            continue
        result.cells[name] = item[0]
        needed: dict[tuple[int, int], ast.stmt] = {}
        todo = [item]
        while todo:
            cell, position, statement = todo.pop()
            if (cell, position) in needed:
                continue
            needed[(cell, position)] = statement
            now, later = _used(statement)
            todo += [d for used in now if (d := defined(used, (cell, position))) is not None]
            todo += [d for used in later if (d := defined(used, None)) is not None]
        result.findings[name] = scan(list(needed.values()))
        chosen.update(needed)
    result.source = "\n\n".join(ast.unparse(chosen[key]) for key in sorted(chosen)) + "\n"
    return result


def _own(statements: list[ast.stmt]) -> set[str]:
    """Every name the statements bind themselves: definitions, parameters, variables, imports."""
    own = {name for statement in statements for name in _bound(statement)}
    for statement in statements:
        for node in ast.walk(statement):
            if isinstance(node, ast.Name) and isinstance(node.ctx, (ast.Store, ast.Del)):
                own.add(node.id)
            elif isinstance(node, ast.arg):
                own.add(node.arg)
            elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                own.add(node.name)
            elif isinstance(node, ast.alias):
                own.add(node.asname or node.name.split(".")[0])
    return own


def scan(statements: list[ast.stmt]) -> list[str]:
    """What the statements use that a hand-written convolution must not: library convolutions and
    ways around the run-time guard. Names the statements define themselves are not counted (a
    parameter called ``input``, a helper called ``conv2d``).

    Returns:
        Descriptions, e.g. ``"torch.nn.functional.conv2d"`` or ``"getattr (can hide a library call)"``.
    """
    found: list[str] = []
    own = _own(statements)

    def add(text: str) -> None:
        if text not in found:
            found.append(text)

    for statement in statements:
        for node in ast.walk(statement):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                modules = [alias.name for alias in node.names] if isinstance(node, ast.Import) else [node.module or ""]
                for module in modules:
                    if module.startswith(CONVOLUTION_MODULES):
                        add(module)
                    elif module.split(".")[0] in ESCAPE_MODULES or module.startswith(("torch._", "torch.utils._")):
                        add(f"import {module} (can hide a library call)")
                if isinstance(node, ast.ImportFrom):
                    for alias in node.names:
                        if LIBRARY_CONVOLUTION.match(alias.name):
                            add(f"{node.module}.{alias.name}")
                        elif f"{node.module}.{alias.name}".startswith(CONVOLUTION_MODULES):
                            add(f"{node.module}.{alias.name}")
            elif isinstance(node, ast.Attribute):
                if LIBRARY_CONVOLUTION.match(node.attr):
                    add(_dotted(node))
                elif node.attr in ESCAPE_ATTRIBUTES or node.attr in ESCAPE_NAMES or _dunder(node.attr):
                    add(f"{_dotted(node)} (can hide a library call)")
            elif isinstance(node, ast.Name) and node.id not in own:
                if LIBRARY_CONVOLUTION.match(node.id):
                    add(node.id)
                elif (node.id in ESCAPE_NAMES and hasattr(builtins, node.id)) or _dunder(node.id):
                    add(f"{node.id} (can hide a library call)")
    return found


def _dunder(name: str) -> bool:
    return name.startswith("__") and name.endswith("__") and name not in PLAIN_DUNDERS


def _dotted(node: ast.AST) -> str:
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if isinstance(node, ast.Name):
        parts.append(node.id)
    return ".".join(reversed(parts))
