"""Report writers on a hand-made result (no kernel): JSON, Markdown, JUnit XML, gradebook CSV."""

from __future__ import annotations

import csv
import json
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from grader.report.formats import to_json, to_junit, to_markdown, write_reports
from grader.report.gradebook import gradebook_row, update_gradebook
from grader.results import (
    CellRun,
    CheckResult,
    ExecutionResult,
    NotebookResult,
    RunFailure,
    SandboxInfo,
    SubmissionResult,
)


@pytest.fixture
def result() -> SubmissionResult:
    execution = ExecutionResult(
        path=Path("alice/01_convolution.ipynb"),
        cells=[
            CellRun(0, "import numpy as np", "ok", 0.5),
            CellRun(1, "os._exit(1)", "died", 1.0, "DeadKernel", "exited"),
        ],
        failure=RunFailure("died", "cell 1 (`os._exit(1)`): the kernel exited with code 1", 1),
        elapsed=4.2,
        cells_elapsed=1.5,
        sandbox=SandboxInfo(False, "bwrap missing"),
        peak_memory=2**29,
        rerun_cells=1,
    )
    checks = [
        CheckResult("runs", "Runs", 0, 0, "failed", "cell 1 died"),
        CheckResult("conv_simplest", "Simplest matches", 3, 3, "passed", "all 30 cases"),
        CheckResult("conv_full", "Full matches", 0, 4, "failed", "wrong on x (1, 1, 6, 6) & <stride 2>"),
        CheckResult("conv_batched", "Batched matches", 0, 3, "error", "kernel not running"),
        CheckResult("comparison", "Written comparison", 0, 0, "skipped", "for the instructor to read", manual=True),
    ]
    notebook = NotebookResult("01_convolution.ipynb", execution.path, checks, execution)
    weights = {"official": False, "sha256": "ab" * 32, "source": "local-file"}
    return SubmissionResult("alice", Path("alice"), [notebook], weights=weights, elapsed=5.0)


def test_json_round_trips_the_points_and_leaves_out_the_notebook(result):
    data = json.loads(to_json(result))
    assert data["points"] == 3 and data["max_points"] == 10
    notebook = data["notebooks"][0]
    assert notebook["execution"]["failure"]["kind"] == "died"
    assert "notebook" not in notebook["execution"]
    assert notebook["checks"][2]["message"].startswith("wrong on")


def test_markdown_tells_the_student_each_check_and_the_machine_facts(result):
    text = to_markdown(result)
    assert text.startswith("# alice: 3 / 10 points")
    assert "NOT sandboxed: bwrap missing" in text
    assert "stand-in, NOT the official ImageNet weights" in text and "ab" * 32 in text
    assert "❌ **Full matches** (0 / 4)" in text and "wrong on x (1, 1, 6, 6)" in text
    assert "📝 **Written comparison**" in text
    assert "stopped early: cell 1" in text


def test_junit_has_one_test_case_per_check_with_its_status(result):
    root = ET.fromstring(to_junit(result))
    suite = root.find("testsuite")
    assert suite.get("tests") == "5" and suite.get("failures") == "2" and suite.get("errors") == "1"
    assert suite.get("skipped") == "1"
    cases = {case.get("name"): case for case in suite.iter("testcase")}
    assert set(cases) == {"runs", "conv_simplest", "conv_full", "conv_batched", "comparison"}
    assert "<stride 2>" in cases["conv_full"].find("failure").get("message")
    assert cases["conv_batched"].find("error") is not None
    points = {p.get("name"): p.get("value") for p in cases["conv_simplest"].iter("property")}
    assert points == {"points": "3", "max_points": "3"}


def test_gradebook_rows_are_replaced_per_submission(tmp_path, result):
    book = tmp_path / "gradebook.csv"
    update_gradebook(book, gradebook_row(result))
    update_gradebook(book, {**gradebook_row(result), "submission": "bob", "points": "7"})
    update_gradebook(book, {**gradebook_row(result), "points": "4"})  # alice again
    rows = list(csv.DictReader(book.open()))
    assert [(r["submission"], r["points"]) for r in rows] == [("alice", "4"), ("bob", "7")]
    assert rows[0]["01_convolution"] == "3" and rows[0]["sandboxed"] == "false" and rows[0]["weights"] == "stand-in"


def test_write_reports_writes_every_format(tmp_path, result):
    paths = write_reports(result, tmp_path / "alice")
    assert {p.name for p in (tmp_path / "alice").iterdir()} == {"result.json", "report.md", "junit.xml"}
    assert paths["gradebook"] == tmp_path / "gradebook.csv" and paths["gradebook"].is_file()
