"""Class batches: discovery, shards, resume after a kill, several at once, gradebook, overview, merge.

The batches run real notebooks through the real grader (a kernel per notebook), small ones: each
student's folder holds a ``01_convolution.ipynb`` with the simplest convolution, some right and
some wrong, so points differ between students.
"""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from grader_notebooks import FAST, SIMPLEST_OK, write_notebook

from grader.classroom.batch import (
    discover,
    fingerprint,
    grading_context,
    parse_shard,
    plan,
    run_batch,
    shard,
)
from grader.classroom.merge import merge
from grader.classroom.summaries import overview_markdown
from grader.cli import EXIT_USAGE, main
from grader.confine.limits import threads_per_process
from grader.options import GradeOptions, Limits
from grader.paths import KIT_ROOT
from grader.report.formats import write_reports
from grader.results import CheckResult, NotebookResult, SubmissionResult

LIMIT_FLAGS = ["--cell-timeout", "20", "--timeout", "60", "--memory-limit", "4", "--hidden-seed", "7"]
SIMPLEST_WRONG = SIMPLEST_OK.replace("return out + bias", "return out - bias")


def make_class(root: Path, n: int) -> Path:
    """``n`` student folders (every third one has a wrong convolution), one empty folder, one broken file."""
    for i in range(n):
        source = SIMPLEST_WRONG if i % 3 == 2 else SIMPLEST_OK
        write_notebook(root / f"student{i:02d}" / "01_convolution.ipynb", f"# student {i}\n" + source)
    (root / "zz-empty").mkdir(parents=True)
    broken = root / "zz-truncated"
    broken.mkdir()
    (broken / "01_convolution.ipynb").write_text('{"cells": [', encoding="utf-8")
    return root


def read_gradebook(path: Path) -> dict[str, dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as handle:
        return {row["submission"]: row for row in csv.DictReader(handle)}


# ----------------------------------------------------------------------------- no kernel


def test_discover_finds_each_submission_of_a_class_folder(tmp_path):
    make_class(tmp_path / "class", 2)
    (tmp_path / "class" / ".git").mkdir()
    single = write_notebook(tmp_path / "one" / "01_convolution.ipynb", "x = 1")
    found = discover([tmp_path / "class", tmp_path / "one", single])
    names = [p.name for p in found]
    assert names == ["student00", "student01", "zz-empty", "zz-truncated", "one", "01_convolution.ipynb"]


def test_shards_are_disjoint_balanced_and_cover_the_class(tmp_path):
    make_class(tmp_path / "class", 7)
    items = plan([tmp_path / "class"], tmp_path / "out", GradeOptions())
    shards = [shard(items, i, 3) for i in (1, 2, 3)]
    names = [sorted(item.name for item in part) for part in shards]
    assert sorted(sum(names, [])) == sorted(item.name for item in items)
    assert max(map(len, names)) - min(map(len, names)) <= 1
    # The same split from a different listing order (another machine).
    assert [i.name for i in shard(list(reversed(items)), 2, 3)] == [i.name for i in shards[1]]


@pytest.mark.parametrize(
    ("cores", "jobs", "omp", "expected"),
    [(8, 2, None, 4), (8, 2, "1", 1), (8, 2, "16", 4), (2, 4, None, 1), (8, 1, "x", 8)],
)
def test_kernels_share_the_cores_and_never_exceed_omp_num_threads(monkeypatch, cores, jobs, omp, expected):
    """A Slurm task or a pod may see every core of its node: its OMP_NUM_THREADS is the cap."""
    monkeypatch.setattr("grader.confine.limits.usable_cores", lambda: cores)
    if omp is None:
        monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    else:
        monkeypatch.setenv("OMP_NUM_THREADS", omp)
    assert threads_per_process(jobs) == expected


@pytest.mark.parametrize("text", ["2", "0/3", "4/3", "a/b", "1/0"])
def test_bad_shard_is_a_usage_error_that_says_the_form(text, tmp_path, capsys):
    assert main(["grade", str(tmp_path), "--shard", text, "--out", str(tmp_path / "out")]) == EXIT_USAGE
    assert "--shard" in capsys.readouterr().err
    with pytest.raises(ValueError):
        parse_shard(text)


def test_fingerprint_follows_the_notebooks_the_options_and_the_grader(tmp_path, monkeypatch):
    folder, out = tmp_path / "s", tmp_path / "out"
    write_notebook(folder / "01_convolution.ipynb", "x = 1")

    def fingerprinted(**options) -> str:
        return fingerprint(folder, grading_context(GradeOptions(**options), out, weights=False))

    first = fingerprinted(hidden_seed=1)
    assert fingerprinted(hidden_seed=1) == first
    assert fingerprinted(hidden_seed=2) != first  # another hidden seed: graded again
    assert fingerprinted(hidden_seed=None) != first  # self-check vs grade
    assert fingerprinted(hidden_seed=1, limits=Limits(memory_gib=3)) != first
    context = grading_context(GradeOptions(hidden_seed=123456789), out, weights=False)
    assert "123456789" not in context  # only a salted hash of the seed is kept
    from grader import paths

    monkeypatch.setattr(paths, "code_version", lambda: "another grader")
    assert fingerprinted(hidden_seed=1) != first

    monkeypatch.undo()
    write_notebook(folder / "01_convolution.ipynb", "x = 2")
    assert fingerprinted(hidden_seed=1) != first


@pytest.mark.parametrize("bubblewrap", ["works", "missing"])
def test_fingerprint_follows_the_confinement_in_force(tmp_path, monkeypatch, bubblewrap):
    """A result graded confined is not reused for an unconfined grading, nor the reverse, on a
    machine with bubblewrap and on one without (where asking for it changes nothing)."""
    from grader.confine import sandbox

    monkeypatch.setattr(sandbox, "probe_bwrap", lambda: None if bubblewrap == "works" else "bwrap is missing")
    folder, out = tmp_path / "s", tmp_path / "out"
    write_notebook(folder / "01_convolution.ipynb", "x = 1")

    def fingerprinted(sandbox: bool | None) -> str:
        return fingerprint(folder, grading_context(GradeOptions(hidden_seed=1, sandbox=sandbox), out, weights=False))

    if bubblewrap == "works":
        assert fingerprinted(None) == fingerprinted(True) != fingerprinted(False)
    else:  # nothing is confined either way: the same grading
        assert fingerprinted(None) == fingerprinted(False)


def _result(name: str, points: list[float], *, failed: str | None = None) -> SubmissionResult:
    checks = [
        CheckResult(
            name=f"c{i}",
            title="Simplest case" if i == 0 else f"check {i}",
            points=p,
            max_points=5,
            status="passed" if p == 5 else "failed",
            message=(failed or "wrong") if p < 5 else "",
        )
        for i, p in enumerate(points)
    ]
    return SubmissionResult(
        name=name, path=Path(name), notebooks=[NotebookResult("01_convolution.ipynb", Path("x"), checks)]
    )


def test_overview_shows_distribution_and_the_most_failed_check():
    from grader.results import to_dict

    results = [
        to_dict(_result("a", [5, 5])) | {"graded_at": "1"},
        to_dict(_result("b", [0, 5], failed="off by the bias")) | {"graded_at": "1"},
        to_dict(_result("c", [0, 0])) | {"graded_at": "1"},
    ]
    text = overview_markdown(results)
    assert "Submissions graded: 3" in text and "median 50.0%" in text
    assert "| 90-100% | 1 |" in text and "| 50-59% | 1 |" in text and "| 0-9% | 1 |" in text
    rows = [line for line in text.splitlines() if line.startswith("| 01_convolution.ipynb | Simplest case")]
    assert rows and "| 2 (67%) |" in rows[0] and "b: off by the bias" in rows[0]


def test_merge_joins_shards_and_keeps_the_newer_duplicate(tmp_path):
    for shard_dir, names in (("s1", ["a", "c"]), ("s2", ["b", "c"])):
        for name in names:
            points = [5, 5] if (shard_dir, name) == ("s2", "c") else [0, 5]
            write_reports(_result(name, points), tmp_path / shard_dir / name, gradebook=False)
            time.sleep(1.1)  # graded_at has one-second resolution
    (tmp_path / "s3").mkdir()
    warnings = merge([tmp_path / "s1", tmp_path / "s2", tmp_path / "s3"], tmp_path / "all")
    book = read_gradebook(tmp_path / "all" / "gradebook.csv")
    assert sorted(book) == ["a", "b", "c"]
    assert book["c"]["points"] == "10"  # s2's, graded later
    assert any("c is in" in w for w in warnings) and any("s3 holds no graded submission" in w for w in warnings)
    assert (tmp_path / "all" / "c" / "report.md").is_file() and (tmp_path / "all" / "overview.md").is_file()
    assert main(["merge", str(tmp_path / "nowhere"), "--out", str(tmp_path / "x")]) == EXIT_USAGE


# ----------------------------------------------------------------------------- real kernels


@pytest.mark.slow
def test_killed_batch_resumes_without_grading_twice_or_losing_anything(tmp_path):
    """Kill the command after its third result, run it again: the rest is graded, nothing twice."""
    make_class(tmp_path / "class", 5)
    out = tmp_path / "out"
    command = [sys.executable, "-m", "grader", "grade", str(tmp_path / "class"), "--out", str(out), "--jobs", "1"]
    command += LIMIT_FLAGS + ["--no-progress"]
    env = {**os.environ, "TMPDIR": str(tmp_path)}
    process = subprocess.Popen(
        command, env=env, cwd=KIT_ROOT, start_new_session=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    deadline = time.monotonic() + 300
    while len(list(out.glob("*/result.json"))) < 3:
        assert process.poll() is None, "the batch ended before it could be killed"
        assert time.monotonic() < deadline, "no third result within 300 s"
        time.sleep(0.05)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    before = {p.parent.name: p.stat().st_mtime_ns for p in out.glob("*/result.json")}
    assert 3 <= len(before) < 7, before

    again = subprocess.run(command, env=env, cwd=KIT_ROOT, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stdout + again.stderr
    assert f"{len(before)} of 7 already graded" in again.stderr
    after = {p.parent.name: p.stat().st_mtime_ns for p in out.glob("*/result.json")}
    assert set(after) == {f"student{i:02d}" for i in range(5)} | {"zz-empty", "zz-truncated"}
    assert {name: after[name] for name in before} == before  # not graded twice
    lines = again.stdout.splitlines()
    graded_now = [line.split(":")[0] for line in lines if " points (" in line and "graded before" not in line]
    assert sorted(graded_now) == sorted(set(after) - set(before))
    assert sorted(line.split(":")[0] for line in lines if "graded before" in line) == sorted(before)
    book = read_gradebook(out / "gradebook.csv")
    assert len(book) == 7 and book["student00"]["01_convolution"] != book["student02"]["01_convolution"]
    assert "could not be read" in json.dumps(json.loads((out / "zz-truncated" / "result.json").read_text()))


@pytest.mark.slow
def test_two_jobs_grade_like_one_job(tmp_path):
    make_class(tmp_path / "class", 3)
    options = GradeOptions(limits=FAST, hidden_seed=7)
    rows = {}
    for jobs in (1, 2):
        out = tmp_path / f"out{jobs}"
        items = plan([tmp_path / "class"], out, options)
        batch = run_batch(items, out, options=options, jobs=jobs, progress=False)
        assert sorted(batch.graded) == sorted(item.name for item in items) and not batch.skipped
        rows[jobs] = {
            name: (row["points"], row["status"], row["01_convolution"])
            for name, row in read_gradebook(out / "gradebook.csv").items()
        }
    assert rows[1] == rows[2]
    assert rows[2]["student00"][2] != rows[2]["student02"][2]  # the wrong convolution lost points
    overview = (tmp_path / "out2" / "overview.md").read_text()
    assert "Submissions graded: 5" in overview and "| 01_convolution.ipynb |" in overview
    again = run_batch(
        plan([tmp_path / "class"], tmp_path / "out2", options),
        tmp_path / "out2",
        options=options,
        jobs=2,
        progress=False,
    )
    assert not again.graded and len(again.skipped) == 5
