"""The gradebook (``gradebook.csv``): one row per submission, written by `write_gradebook` only.

A class's gradebook is rebuilt from its ``result.json`` files (`grader.classroom.summaries`); a
single submission graded into a folder updates its own row (`update_gradebook`). Both go
through `write_gradebook`.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any

from grader.report.files import atomic_write
from grader.report.marking import manual_summary, states
from grader.results import SubmissionResult, to_dict

__all__ = ["GRADEBOOK_FIELDS", "gradebook_csv", "gradebook_row", "points_text", "read_gradebook", "update_gradebook", "write_gradebook"]


def points_text(value: float) -> str:
    """Points as people write them: 3, 2.5 (never 3.0)."""
    return f"{value:g}"


GRADEBOOK_FIELDS = [
    "submission", "points", "max_points", "percent", "manual", "manual_max", "manual_status", "total", "total_max",
    "total_percent", "status", "seconds", "sandboxed", "weights",
]


def gradebook_row(result: SubmissionResult | dict[str, Any], store: dict[str, Any] | None = None) -> dict[str, str]:
    """One CSV row: the submission, automatic points per notebook and in total, manual points
    (`grader.report.marking`), the two together, status, time taken.

    Args:
        result: a graded submission, or its ``result.json`` (as `to_json` wrote it).
        store: the recorded manual points (``OUT/manual.json``), or None.
    """
    data = to_dict(result) if isinstance(result, SubmissionResult) else result
    manual = states(data, store or {})
    given, worth = manual_summary(manual)
    counts = {}
    for state in manual.values():
        counts[state.status] = counts.get(state.status, 0) + 1
    manual_status = ", ".join(f"{n} {status}" for status, n in sorted(counts.items()))
    points, max_points = float(data["points"]), float(data["max_points"])
    notebooks = data.get("notebooks") or []
    sandboxes = [n["execution"]["sandbox"] for n in notebooks if n.get("execution") and n["execution"].get("sandbox")]
    weights = data.get("weights")
    row = {
        "submission": data["name"],
        "points": points_text(points),
        "max_points": points_text(max_points),
        "percent": f"{100 * points / max_points:.1f}" if max_points else "",
        "manual": points_text(given) if worth else "",
        "manual_max": points_text(worth) if worth else "",
        "manual_status": manual_status,
        "total": points_text(points + given),
        "total_max": points_text(max_points + worth),
        "total_percent": f"{100 * (points + given) / (max_points + worth):.1f}" if max_points + worth else "",
        "status": "grader_error" if data.get("grader_error") else "graded",
        "seconds": f"{float(data.get('elapsed') or 0):.1f}",
        "sandboxed": str(all(s.get("enabled") for s in sandboxes)).lower() if sandboxes else "",
        "weights": "" if not weights else ("official" if weights.get("official") else "stand-in"),
    }
    for notebook in notebooks:
        row[Path(notebook["name"]).stem] = points_text(float(notebook["points"]))
    return row


def gradebook_csv(rows: list[dict[str, str]]) -> str:
    """The gradebook as CSV text: the fixed columns, then one column per notebook; sorted by submission."""
    fields = list(GRADEBOOK_FIELDS)
    for row in rows:
        fields += [key for key in row if key not in fields]
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=fields, restval="")
    writer.writeheader()
    writer.writerows(sorted(rows, key=lambda r: r["submission"]))
    return buffer.getvalue()


def write_gradebook(path: Path, rows: list[dict[str, str]]) -> None:
    """Write the gradebook at ``path`` with these rows (atomically): the one gradebook writer."""
    atomic_write(path, gradebook_csv(rows))


def read_gradebook(path: Path) -> list[dict[str, str]]:
    """The rows of the gradebook at ``path`` ([] when there is none)."""
    if not path.is_file():
        return []
    with path.open(newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def update_gradebook(path: Path, row: dict[str, str]) -> None:
    """Insert or replace ``row`` (by submission) in the gradebook at ``path``."""
    rows = [r for r in read_gradebook(path) if r.get("submission") != row["submission"]]
    write_gradebook(path, rows + [row])
