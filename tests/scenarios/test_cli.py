"""The command line and the pytest front end, on trivial notebooks (no torch in the kernel)."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
import xml.etree.ElementTree as ET

import pytest
from grader_notebooks import write_notebook

from grader.cli import EXIT_BELOW, EXIT_GRADER, EXIT_OK, EXIT_USAGE, main
from grader.paths import KIT_ROOT

LIMITS = ["--cell-timeout", "20", "--timeout", "60"]


def test_grade_writes_reports_and_exits_0_whatever_the_points(tmp_path, capsys):
    good = write_notebook(tmp_path / "subs" / "good.ipynb", "x = 1")
    bad = write_notebook(tmp_path / "subs" / "bad.ipynb", "1 / 0")
    out = tmp_path / "out"
    assert main(["grade", str(good), str(bad), "--out", str(out), "--hidden-seed", "3", *LIMITS]) == EXIT_OK
    printed = capsys.readouterr().out
    assert "good: 0 / 0 points" in printed and "bad: 0 / 0 points" in printed
    for name in ("good", "bad"):
        assert {p.name for p in (out / name).iterdir()} >= {"result.json", "report.md", "junit.xml", f"{name}.ipynb"}
    data = json.loads((out / "bad" / "result.json").read_text())
    assert data["notebooks"][0]["checks"][0]["status"] == "failed"
    executed = json.loads((out / "bad" / "bad.ipynb").read_text())
    assert executed["cells"][0]["outputs"][0]["ename"] == "ZeroDivisionError"
    rows = list(csv.DictReader((out / "gradebook.csv").open()))
    assert [r["submission"] for r in rows] == ["bad", "good"]


def test_fail_under_exits_1_below_the_pass_mark(tmp_path):
    write_notebook(tmp_path / "sub" / "01_convolution.ipynb", "x = 1")  # defines none of the functions
    code = main(["grade", str(tmp_path / "sub"), "--out", str(tmp_path / "out"), "--fail-under", "50", *LIMITS])
    assert code == EXIT_BELOW
    report = (tmp_path / "out" / "sub" / "report.md").read_text()
    assert "# sub: 0 / 34 points" in report and "was not found in the submission" in report


def test_usage_errors(tmp_path, capsys):
    assert main(["grade", str(tmp_path / "nowhere")]) == EXIT_USAGE
    assert "no such file" in capsys.readouterr().err
    assert main(["check", str(tmp_path / "nowhere.ipynb")]) == EXIT_USAGE
    with pytest.raises(SystemExit):
        main(["grade", "--memory-limit", "lots"])


def test_grading_student_work_fails_closed_without_confinement(tmp_path, monkeypatch, capsys):
    """No bubblewrap: grade (and pr) stop with the fix; --no-sandbox grades, and every report says so."""
    import grader.confine.sandbox

    monkeypatch.setattr(grader.confine.sandbox, "probe_bwrap", lambda: "bubblewrap (bwrap) is not installed")
    path = write_notebook(tmp_path / "nb.ipynb", "x = 1")
    for flags in ([], ["--require-sandbox"]):
        assert main(["grade", str(path), *flags, "--out", str(tmp_path / "out")]) == EXIT_GRADER
        error = capsys.readouterr().err
        assert "needs confinement" in error and "apt-get install bubblewrap" in error and "--no-sandbox" in error
    assert not (tmp_path / "out").exists()
    assert main(["grade", str(path), "--no-sandbox", "--out", str(tmp_path / "out"), *LIMITS]) == EXIT_OK
    assert "NOT sandboxed: confinement turned off (--no-sandbox)" in (tmp_path / "out" / "nb" / "report.md").read_text()
    assert read_gradebook_row(tmp_path / "out")["sandboxed"] == "false"


def read_gradebook_row(out):
    [row] = list(csv.DictReader((out / "gradebook.csv").open()))
    return row


def test_a_class_needs_a_hidden_seed_and_one_submission_says_where_its_came_from(tmp_path, monkeypatch, capsys):
    from grader import options

    monkeypatch.delenv(options.HIDDEN_SEED_ENV, raising=False)
    monkeypatch.setattr(options, "HIDDEN_SEED_FILE", tmp_path / "no-seed.txt")
    for name in ("a", "b"):
        write_notebook(tmp_path / "class" / name / "01_convolution.ipynb", "x = 1")
    assert main(["grade", str(tmp_path / "class"), "--out", str(tmp_path / "out")]) == EXIT_USAGE
    assert "--hidden-seed" in capsys.readouterr().err and not (tmp_path / "out").exists()
    assert main(["grade", str(tmp_path / "class"), "--shard", "1/2", "--out", str(tmp_path / "out")]) == EXIT_USAGE
    assert main(["grade", str(tmp_path / "class" / "a"), "--out", str(tmp_path / "out"), *LIMITS]) == EXIT_OK
    assert "random seed for this run" in (tmp_path / "out" / "a" / "report.md").read_text()


def test_check_prints_the_report_for_the_student(tmp_path, capsys):
    path = write_notebook(tmp_path / "mine.ipynb", "print('hi')", "undefined_name")
    assert main(["check", str(path), *LIMITS]) == EXIT_OK
    text = capsys.readouterr().out
    assert text.startswith("# mine: 0 / 0 points")
    assert "NameError" in text and "visible only" in text


def test_pytest_front_end_gives_one_test_per_check_and_junit(tmp_path):
    path = write_notebook(tmp_path / "bad.ipynb", "1 / 0")
    junit = tmp_path / "junit.xml"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-p",
            "grader.pytest_plugin",
            "grader/pytest_checks.py",
            "--submission",
            str(path),
            f"--junitxml={junit}",
            "-p",
            "no:cacheprovider",
            "-q",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        cwd=KIT_ROOT,
    )
    assert done.returncode == 1, done.stdout + done.stderr
    assert "test_check[bad-runs]" in done.stdout and "ZeroDivisionError" in done.stdout
    case = ET.parse(junit).getroot().find(".//testcase")
    assert case.get("name") == "test_check[bad-runs]" and case.find("failure") is not None
