"""The files of a report folder, as every later stage reads and writes them.

A report folder holds one folder per submission (``NAME/result.json``, ``report.md``,
``junit.xml``, the executed notebooks) and the class's files beside them. Every file is written
whole or not at all (`atomic_write`); a ``result.json`` is written last, so its presence means a
complete result (`results_in` lists those).
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

__all__ = ["GRADEBOOK", "OVERVIEW", "RESULT", "atomic_write", "read_result", "results_in"]

RESULT = "result.json"
GRADEBOOK = "gradebook.csv"
OVERVIEW = "overview.md"


def atomic_write(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` whole or not at all (a temporary file beside it, then a rename)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as handle:
            handle.write(text)
        os.chmod(tmp, 0o644)  # mkstemp makes 0600; reports are read by people and CI uploads
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


_PARSED: dict[Path, tuple[tuple[int, int], dict[str, Any]]] = {}


def read_result(path: Path) -> dict[str, Any] | None:
    """A parsed ``result.json``, None when absent or unreadable; parsed again only when the file
    changed (summaries are rebuilt after every submission of a batch)."""
    try:
        stat = path.stat()
        key = (stat.st_mtime_ns, stat.st_size)
        cached = _PARSED.get(path)
        if cached is None or cached[0] != key:
            _PARSED[path] = cached = (key, json.loads(path.read_text(encoding="utf-8")))
    except (OSError, ValueError):
        return None  # missing, being replaced right now, or not ours
    return cached[1]


def results_in(out: Path) -> list[dict[str, Any]]:
    """Every complete result (``*/result.json``) in a report folder."""
    return [data for path in sorted(out.glob(f"*/{RESULT}")) if (data := read_result(path)) is not None]
