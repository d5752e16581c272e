"""Manual points: the instructor reads the written answers and gives them points.

    python -m grader grade submissions/ --out OUT   # writes OUT/answers.csv: one row per answer to read
    (fill in the "points" column, and "comment" if you like, in a spreadsheet; save as CSV)
    python -m grader manual OUT                     # validates it, records the points, updates the reports

Which answers carry manual points, and how many, is in the points table (`grader.assignments`:
``CheckDef.manual_points``). The recorded points live in ``OUT/manual.json``, keyed by
submission and question, each with the sha256 of the answer it was given for. So they survive a
re-grade and a resume while the answer is the same; when the answer's text changes, the points
no longer count and the answer is flagged "changed since scored", with the points it had, for a
second look. ``answers.csv`` is rewritten after each submission a batch grades, keeping the
recorded points, unless it holds points not yet recorded (then it is left alone and the grader
says so).
"""

from __future__ import annotations

import csv
import io
import json
import math
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from grader.report.files import atomic_write

__all__ = [
    "ANSWERS",
    "STORE",
    "ManualError",
    "ManualState",
    "answers_csv",
    "manual_summary",
    "load_store",
    "read_answers",
    "record",
    "states",
]

ANSWERS = "answers.csv"
STORE = "manual.json"
# Bounds of a filled-in answers file (its answers are students' text): a class of 1,000 students
# with 3 answers of 20,000 characters is 60 MB at most.
MAX_ANSWERS_BYTES = 128 * 2**20
MAX_ANSWER_ROWS = 100_000
MAX_FIELD_CHARS = 1 << 20
FIELDS = ["submission", "notebook", "question", "max_points", "points", "comment", "status", "answer", "numbers", "answer_sha"]


class ManualError(ValueError):
    """The filled-in answers file has rows the grader cannot record; ``problems`` names each line."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("; ".join(problems))


@dataclass
class ManualState:
    """One written answer of one submission, with its manual points if any.

    Attributes:
        status: ``to read``, ``scored``, ``changed`` (scored for another text: a second look) or
            ``no answer`` (nothing to read: the question was left empty).
        points: the points that count (None unless scored).
        max_points: what the question is worth.
        previous: for ``changed``, the points the earlier text had.
        comment: the instructor's comment.
    """

    status: str
    max_points: float
    points: float | None = None
    previous: float | None = None
    comment: str = ""

    def describe(self) -> str:
        if self.status == "scored":
            return f"{self.points:g} / {self.max_points:g} manual points" + (f": {self.comment}" if self.comment else "")
        if self.status == "changed":
            return (
                f"the answer changed since it was scored ({self.previous:g} / {self.max_points:g}): "
                "to be read again"
            )
        if self.status == "no answer":
            return f"0 / {self.max_points:g} manual points: no answer to read"
        return f"up to {self.max_points:g} manual points: to be read by the instructor"


def key(notebook: str, check: str) -> str:
    return f"{notebook}::{check}"


def load_store(out: Path) -> dict[str, dict[str, Any]]:
    """``OUT/manual.json``: submission -> question key -> recorded score ({} when none yet)."""
    path = Path(out) / STORE
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _written(result: dict[str, Any]):
    """(notebook, check) of each check of a result that carries manual points."""
    for notebook in result.get("notebooks") or []:
        for check in notebook.get("checks") or []:
            if float(check.get("manual_max") or 0) > 0:
                yield notebook, check


def states(result: dict[str, Any], store: dict[str, dict[str, Any]]) -> dict[str, ManualState]:
    """Each written answer's state for one result (``result.json`` form), from the store."""
    recorded = store.get(result["name"], {})
    found = {}
    for notebook, check in _written(result):
        question = key(notebook["name"], check["name"])
        maximum = float(check["manual_max"])
        score = recorded.get(question)
        if not check.get("answer"):
            found[question] = ManualState("no answer", maximum, points=0.0)
        elif score is None:
            found[question] = ManualState("to read", maximum)
        elif score.get("answer_sha") == check.get("answer_sha"):
            found[question] = ManualState("scored", maximum, points=float(score["points"]), comment=score.get("comment", ""))
        else:
            found[question] = ManualState("changed", maximum, previous=float(score["points"]), comment=score.get("comment", ""))
    return found


def answers_csv(results: list[dict[str, Any]], store: dict[str, dict[str, Any]]) -> str:
    """The file an instructor fills in: one row per written answer, recorded points filled."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=FIELDS)
    writer.writeheader()
    for result in sorted(results, key=lambda r: r["name"]):
        found = states(result, store)
        for notebook, check in _written(result):
            state = found[key(notebook["name"], check["name"])]
            if state.status == "no answer":
                continue
            if state.status == "changed":
                status = f"changed since scored (was {state.previous:g})"
            else:
                status = "scored" if state.status == "scored" else ""
            writer.writerow(
                {
                    "submission": result["name"],
                    "notebook": notebook["name"],
                    "question": check["name"],
                    "max_points": f"{state.max_points:g}",
                    "points": "" if state.points is None else f"{state.points:g}",
                    "comment": state.comment,
                    "status": status,
                    "answer": check["answer"],
                    "numbers": " ".join(check.get("numbers") or []),
                    "answer_sha": check["answer_sha"],
                }
            )
    return buffer.getvalue()


def read_answers(path: Path, results: list[dict[str, Any]]) -> dict[str, dict[str, dict[str, Any]]]:
    """The scores a filled-in answers file gives, checked against the graded results.

    Returns:
        submission -> question key -> ``{"points", "comment", "answer_sha"}`` for every row whose
        ``points`` is filled.

    Raises:
        ManualError: one message per bad row (its line number, what is wrong, what to do): an
            unknown submission or question, a score that is not a number or outside 0..max, an
            answer that changed since the file was written.
    """
    by_name = {result["name"]: result for result in results}
    problems, scores = [], {}
    text = _read_bounded(Path(path))
    csv.field_size_limit(max(csv.field_size_limit(), MAX_FIELD_CHARS))
    reader = csv.DictReader(io.StringIO(text))
    try:
        fields = reader.fieldnames or []
    except csv.Error as error:
        raise ManualError([f"{path}: line 1: not a CSV file ({error})"]) from None
    missing = [name for name in ("submission", "notebook", "question", "points") if name not in fields]
    if missing:
        raise ManualError([f"{path}: line 1: no column {', '.join(missing)}; keep the header the grader wrote"])
    for row in _rows(reader, Path(path)):
        line = reader.line_num
        where = f"{Path(path).name}: line {line}"
        points_text = (row.get("points") or "").strip().replace(",", ".")
        if not points_text:
            continue
        submission, notebook, question = row.get("submission", ""), row.get("notebook", ""), row.get("question", "")
        result = by_name.get(submission)
        if result is None:
            problems.append(f"{where}: unknown submission {submission!r} (no graded result in this folder)")
            continue
        check = next(
            (c for n, c in _written(result) if n["name"] == notebook and c["name"] == question), None
        )
        if check is None:
            problems.append(f"{where}: {submission} has no written answer {question!r} in {notebook!r}")
            continue
        try:
            points = float(points_text)
        except ValueError:
            problems.append(f"{where}: points {points_text!r} is not a number")
            continue
        maximum = float(check["manual_max"])
        if not math.isfinite(points) or not 0 <= points <= maximum:
            problems.append(f"{where}: {points:g} points is outside 0 to {maximum:g}, what this question is worth")
            continue
        sha = (row.get("answer_sha") or "").strip()
        if sha and sha != check.get("answer_sha"):
            problems.append(
                f"{where}: {submission}'s answer changed since this file was written (it was graded again): "
                f"read the new text in the {ANSWERS} the grader writes now"
            )
            continue
        scores.setdefault(submission, {})[key(notebook, question)] = {
            "points": points,
            "comment": (row.get("comment") or "").strip(),
            "answer_sha": check.get("answer_sha"),
        }
    if problems:
        raise ManualError(problems)
    return scores


def _read_bounded(path: Path) -> str:
    """The file's text, or a `ManualError` when it cannot be read, is too large or is not UTF-8."""
    try:
        size = path.stat().st_size
        if size > MAX_ANSWERS_BYTES:
            raise ManualError([
                f"{path}: {size / 2**20:.0f} MB, more than the {MAX_ANSWERS_BYTES >> 20} MB an answers file may have; "
                f"start again from the {ANSWERS} the grader wrote"
            ])
        return path.read_text(encoding="utf-8-sig")  # a spreadsheet may add a byte-order mark
    except OSError as error:
        raise ManualError([f"{path}: cannot be read ({error.strerror})"]) from None
    except UnicodeDecodeError as error:
        raise ManualError([f"{path}: not UTF-8 text (byte {error.start}); save it as CSV UTF-8"]) from None


def _rows(reader: csv.DictReader, path: Path):
    """The reader's rows, at most `MAX_ANSWER_ROWS`; a malformed line is a `ManualError` naming it."""
    count = 0
    while True:
        try:
            row = next(reader)
        except StopIteration:
            return
        except csv.Error as error:
            raise ManualError([f"{path.name}: line {reader.line_num + 1}: not a CSV row ({error}); save the file as CSV"]) from None
        count += 1
        if count > MAX_ANSWER_ROWS:
            raise ManualError([f"{path.name}: more than {MAX_ANSWER_ROWS:,} rows; the grader writes one per answer to read"])
        yield row


def record(out: Path, scores: dict[str, dict[str, dict[str, Any]]]) -> dict[str, dict[str, Any]]:
    """Add ``scores`` to ``OUT/manual.json`` (atomically) and return the whole store."""
    store = load_store(out)
    stamp = datetime.now(timezone.utc).isoformat(timespec="seconds")
    for submission, given in scores.items():
        for question, score in given.items():
            store.setdefault(submission, {})[question] = {**score, "recorded_at": stamp}
    atomic_write(Path(out) / STORE, json.dumps(store, indent=2, ensure_ascii=False) + "\n")
    return store


def unrecorded(path: Path, store: dict[str, dict[str, Any]]) -> int:
    """How many rows of an existing answers file hold points the store does not have."""
    try:
        rows = list(_rows(csv.DictReader(io.StringIO(_read_bounded(Path(path)))), Path(path)))
    except ManualError:
        return 0
    count = 0
    for row in rows:
        text = (row.get("points") or "").strip().replace(",", ".")
        if not text:
            continue
        score = store.get(row.get("submission", ""), {}).get(key(row.get("notebook", ""), row.get("question", "")))
        try:
            same = score is not None and float(text) == float(score["points"]) and score.get("answer_sha") == row.get("answer_sha")
        except ValueError:
            same = False
        count += not same
    return count


def manual_summary(manual: dict[str, ManualState]) -> tuple[float, float]:
    """Points given and points worth, over a submission's written answers (`states`)."""
    """(manual points that count, what the written answers are worth)."""
    return sum(s.points or 0 for s in manual.values()), sum(s.max_points for s in manual.values())
