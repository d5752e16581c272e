"""The answers file is read within bounds: too large, too many rows, a malformed line or a field
over the limit is a `ManualError` naming the file and the line, never a crash of the grader."""

from __future__ import annotations

import pytest

from grader.report import marking
from grader.report.marking import ManualError, read_answers

HEADER = "submission,notebook,question,max_points,points,comment,status,answer,numbers,answer_sha\n"


def test_an_answers_file_over_the_size_bound_is_refused(tmp_path, monkeypatch):
    monkeypatch.setattr(marking, "MAX_ANSWERS_BYTES", 1000)
    path = tmp_path / "answers.csv"
    path.write_text(HEADER + "alice,03.ipynb,comparison,3,2,,,x,,\n" * 100)
    with pytest.raises(ManualError, match="more than the 0 MB an answers file may have"):
        read_answers(path, [])


def test_too_many_rows_are_refused(tmp_path, monkeypatch):
    monkeypatch.setattr(marking, "MAX_ANSWER_ROWS", 5)
    path = tmp_path / "answers.csv"
    path.write_text(HEADER + "alice,03.ipynb,comparison,3,,,,x,,\n" * 6)
    with pytest.raises(ManualError, match="more than 5 rows"):
        read_answers(path, [])


def test_a_field_over_the_limit_is_a_line_not_a_crash(tmp_path, monkeypatch):
    monkeypatch.setattr(marking, "MAX_FIELD_CHARS", 10)
    import csv

    previous = csv.field_size_limit(10)
    try:
        path = tmp_path / "answers.csv"
        path.write_text(HEADER + 'alice,03.ipynb,comparison,3,,,,"' + "x" * 1000 + '",,\n')
        with pytest.raises(ManualError, match="answers.csv: line 2: not a CSV row"):
            read_answers(path, [])
    finally:
        csv.field_size_limit(previous)


def test_a_file_that_is_not_utf8_is_refused(tmp_path):
    path = tmp_path / "answers.csv"
    path.write_bytes(HEADER.encode() + b"\xff\xfe\xfa,x\n")
    with pytest.raises(ManualError, match="not UTF-8"):
        read_answers(path, [])
    assert marking.unrecorded(path, {}) == 0
