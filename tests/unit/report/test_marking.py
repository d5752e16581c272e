"""Manual points for written answers, through the real command line: grade a class, fill in the
answers file as an instructor would in a spreadsheet, read it back; bad rows refused with their
line; points kept across a re-grade, flagged when the answer changed."""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from grader_notebooks import write_notebook

from grader.paths import KIT_ROOT

pytestmark = pytest.mark.slow

QUESTION = "### 2.6 Размышления\nСравните модели из первой и второй задачи."
ANSWERS = {
    "alice": "The CNN reaches 0.91 accuracy and ResNet-18 only 0.81: the frozen backbone saw colour photos, not "
    "grey clothes, and 28x28 images shrink to 1x1 in its last block. Resizing to 64 would help.",
    "bob": "ResNet-18 is worse (0.80 vs 0.92) because only its last layer trains; unfreezing layer4 with a small "
    "learning rate and a warmup would close part of the gap.",
    "carol": "",
}


def write_class(root: Path, answers: dict[str, str]) -> Path:
    """One ``03`` notebook per student: a code cell, the question, the answer (if any)."""
    for name, answer in answers.items():
        markdown = {1: QUESTION, **({2: answer} if answer else {})}
        write_notebook(root / name / "03_transfer_resnet18.ipynb", "x = 1", markdown=markdown)
    return root


def grader(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "grader", *args], cwd=KIT_ROOT, env=env, capture_output=True, text=True,
        timeout=900, check=False,
    )


def rows(path: Path) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(path.read_text(encoding="utf-8"))))


def fill(path: Path, points: dict[str, str], extra: list[dict[str, str]] = (), comment: str = "") -> None:
    """Fill in the points column as a spreadsheet would save it."""
    table = rows(path)
    for row in table:
        row["points"] = points.get(row["submission"], row["points"])
        row["comment"] = comment or row["comment"]
    table += list(extra)
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(table[0]))
        writer.writeheader()
        writer.writerows(table)


def gradebook(out: Path) -> dict[str, dict[str, str]]:
    return {row["submission"]: row for row in rows(out / "gradebook.csv")}


def test_manual_points_round_trip(tmp_path, standin_weights):
    env = {**os.environ, "KIT_RESNET18_WEIGHTS": str(standin_weights)}
    classroom, out = write_class(tmp_path / "class", ANSWERS), tmp_path / "out"
    grade = ["grade", str(classroom), "--out", str(out), "--hidden-seed", "3", "--jobs", "1", "--no-progress",
             "--cell-timeout", "60", "--timeout", "120"]
    done = grader(*grade, env=env)
    assert done.returncode == 0, done.stderr[-2000:]

    # The grader lists the answers to read: the text, the numbers it cites, an empty score column.
    answers = out / "answers.csv"
    listed = rows(answers)
    assert [r["submission"] for r in listed] == ["alice", "bob"]  # carol wrote nothing: nothing to read
    assert listed[0]["max_points"] == "3" and listed[0]["points"] == "" and "colour photos" in listed[0]["answer"]
    assert listed[1]["numbers"] == "0.80 0.92"
    assert gradebook(out)["alice"]["manual_status"] == "1 to read"

    # Bad rows are refused, each named by its line, and nothing is recorded.
    fill(answers, {"alice": "2", "bob": "abc"}, extra=[{**listed[0], "submission": "zed", "points": "1"}])
    done = grader("manual", str(out), env=env)
    assert done.returncode == 2
    assert "answers.csv: line 3: points 'abc' is not a number" in done.stderr
    assert "answers.csv: line 4: unknown submission 'zed'" in done.stderr
    assert not (out / "manual.json").exists()
    fill(answers, {"bob": "5"})
    done = grader("manual", str(out), env=env)
    assert done.returncode == 2 and "5 points is outside 0 to 3" in done.stderr

    # Fixed: recorded; the gradebook, the reports and the overview show them.
    table = [row for row in rows(answers) if row["submission"] != "zed"]
    answers.write_text("")
    with answers.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(table[0]))
        writer.writeheader()
        writer.writerows(table)
    fill(answers, {"alice": "2", "bob": "2,5"}, comment="good")  # a comma, as some spreadsheets write decimals
    done = grader("manual", str(out), env=env)
    assert done.returncode == 0, done.stderr
    book = gradebook(out)
    assert book["alice"]["manual"] == "2" and book["bob"]["manual"] == "2.5" and book["alice"]["manual_max"] == "3"
    assert float(book["alice"]["total"]) == float(book["alice"]["points"]) + 2
    assert book["carol"]["manual"] == "0" and book["carol"]["manual_status"] == "1 no answer"
    assert "2 / 3 manual points: good" in (out / "alice" / "report.md").read_text()
    assert "2 scored, 0 to read" in (out / "overview.md").read_text()

    # A re-grade keeps the points of an unchanged answer, and flags a changed one.
    notebook = classroom / "bob" / "03_transfer_resnet18.ipynb"
    data = json.loads(notebook.read_text())
    data["cells"][-1]["source"] = "I changed my mind: the two models are about the same, so nothing to fix."
    notebook.write_text(json.dumps(data))
    done = grader(*grade, env=env)
    assert done.returncode == 0, done.stderr[-2000:]
    book = gradebook(out)
    assert book["alice"]["manual"] == "2"  # same text: kept
    assert book["bob"]["manual"] == "0" and book["bob"]["manual_status"] == "1 changed"
    bob = next(row for row in rows(answers) if row["submission"] == "bob")
    assert bob["status"] == "changed since scored (was 2.5)" and bob["points"] == ""
    assert "changed since it was scored (2.5 / 3)" in (out / "bob" / "report.md").read_text()

    # Points typed into answers.csv but not recorded yet are never overwritten by a grade.
    fill(answers, {"bob": "1"})
    done = grader(*grade, "--force", env=env)
    assert "not recorded yet" in done.stderr
    assert next(row for row in rows(answers) if row["submission"] == "bob")["points"] == "1"
