"""Similar code across a class (`grader.classroom.similarity`): near copies are listed, honest solutions and
untouched templates are not, and it stays a note for the instructor.

The classes are report folders built directly (what `grade` leaves in OUT: each submission's
executed notebooks and reports), so no kernel runs, except in the one test of the real `grade`
command. The honest solutions are the reference (``solutions/``), an einsum one written apart
(`similarity_notebooks.EINSUM`), and the loops and ``unfold`` of ``grader_notebooks`` and the
honest alternatives of ``test_grader_skills`` (the grader's tests). Between them they share at
most half of their own code; near copies share all of it: the default threshold (70%) lists the
second and not the first.
"""

from __future__ import annotations

import ast
import hashlib
import itertools
import json
import random
import re
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest
from grader_notebooks import BATCHED_OK, FULL_OK, HONEST_CONVOLUTIONS, SIMPLEST_OK, write_notebook
from similarity_notebooks import (
    CONVOLUTION,
    EINSUM,
    SOLUTIONS,
    TEMPLATES,
    fill,
    generated_class,
    near_copy,
    noisy_solution,
    read,
    write_graded,
)

from grader.classroom import similarity
from grader.classroom.summaries import rebuild_summaries
from grader.cli import EXIT_OK, EXIT_USAGE, main
from grader.paths import KIT_ROOT


def bodies(source: str) -> dict[str, str]:
    """Function name -> body (the lines under its ``def``), for each function of ``source``."""
    return {
        node.name: ast.get_source_segment(source, node).partition("\n")[2]
        for node in ast.parse(source).body
        if isinstance(node, ast.FunctionDef)
    }


def reference():
    return read(SOLUTIONS / CONVOLUTION)


def template():
    return read(TEMPLATES / CONVOLUTION)


def einsum():
    return fill(template(), EINSUM)


def other_author():
    return fill(template(), bodies(SIMPLEST_OK + BATCHED_OK + FULL_OK))


def make_class(out: Path, **submissions) -> Path:
    for name, notebook in submissions.items():
        write_graded(out, name, {CONVOLUTION: notebook})
    return out


def run(out: Path, *options: str) -> similarity.Similarity:
    assert main(["similarity", str(out), *options]) == EXIT_OK
    report = similarity.load(out)
    assert report is not None, "similarity wrote no summary.json"
    return report


def listed(report: similarity.Similarity) -> dict[tuple[str, str], similarity.Pair]:
    return {(pair.a, pair.b): pair for pair in report.pairs}


def overview(out: Path) -> str:
    return (out / "overview.md").read_text(encoding="utf-8")


# ----------------------------------------------------------------------------- what is listed


def test_near_copies_are_listed_and_honest_work_and_templates_are_not(tmp_path):
    """bob copied alice (names changed, cells moved, comments rewritten); frank took carol's
    einsum solution and added code of his own: listed by the larger share, his being lower."""
    extended = near_copy(einsum(), seed=1)
    extra = "\n".join(
        f"def helper_{i}(values, scale={i}):\n    return [v * scale + {i} for v in values if v > {i}]" for i in range(8)
    )
    extended.cells.append(nbformat.v4.new_code_cell(extra))
    out = make_class(
        tmp_path / "out",
        alice=reference(),
        bob=near_copy(reference(), seed=0),
        carol=einsum(),
        dave=template(),
        erin=template(),
        frank=extended,
    )
    report = run(out)
    pairs = listed(report)
    assert sorted(pairs) == [("alice", "bob"), ("carol", "frank")], pairs
    assert (pairs["alice", "bob"].share_a, pairs["alice", "bob"].share_b) == (100, 100)  # all of it, both ways
    assert pairs["carol", "frank"].share_a >= 95 and pairs["carol", "frank"].share_b < similarity.DEFAULT_THRESHOLD
    (stats,) = report.notebooks
    assert (stats.notebook, stats.submissions, stats.pairs, stats.listed) == (CONVOLUTION, 6, 15, 2)
    text = overview(out)
    assert "## Similar code (a signal for a person, never points)" in text
    assert "This changes no points and no student's report mentions it" in text
    assert "| 01_convolution.ipynb | alice | bob | 100% | 100% |" in text


def own_code(folder: Path, notebooks: list[nbformat.NotebookNode]) -> list:
    """Each notebook's code as the comparison sees it (`similarity._Own`), the 01 template given."""
    given, _ = similarity.notebook_code(TEMPLATES / CONVOLUTION)
    boilerplate = similarity._template_hashes(given)
    own = []
    for index, notebook in enumerate(notebooks):
        nbformat.write(notebook, folder / f"{index}.ipynb")
        cells, _ = similarity.notebook_code(folder / f"{index}.ipynb")
        own.append(similarity._Own.of(similarity._own_code(str(index), cells, boilerplate)))
    return own


def test_honest_solutions_share_at_most_half_of_their_own_code(tmp_path):
    """Four honest solutions by three authors (the reference; einsum; loops and unfold in two
    styles from the grader's tests): every pair's larger share, however little code it has in
    common, is at most 50%, against the near copies' 100%. At the default threshold, none is
    listed."""
    honest = [reference(), einsum(), other_author(), fill(template(), bodies(HONEST_CONVOLUTIONS))]
    own = own_code(tmp_path, honest)
    shares = {
        (i, j): 100 * max(first / own[i].fingerprint.token_coverage, second / own[j].fingerprint.token_coverage)
        for i, j, first, second in similarity._pairs_sharing_code(own)
    }
    assert len(shares) == 5 and max(shares.values()) <= 50, shares  # einsum and the skills' share nothing
    out = make_class(tmp_path / "out", **dict(zip(("reference", "einsum", "other", "skills"), honest)))
    assert not run(out).pairs
    assert "No pair at or above 70%." in overview(out)


def test_untouched_templates_have_no_code_of_their_own(tmp_path):
    out = make_class(tmp_path / "out", dave=template(), erin=template(), alice=reference())
    report = run(out, "--similarity-threshold", "1")
    assert not report.pairs  # the template's code never counts, not even against a solution
    assert report.notebooks[0].highest_below == 0


def test_a_few_identical_lines_are_not_a_copy(tmp_path):
    """Two students who both wrote only the same one-line einsum share 100% of it, but less than
    MIN_SHARED characters: short canonical lines are common to honest work."""
    windows = "np.lib.stride_tricks.sliding_window_view(x, kernel.shape)"
    line = {"custom_conv_2d_simplest_case": f'    return np.einsum("ijkl,kl->ij", {windows}, kernel) + bias'}
    out = make_class(tmp_path / "out", a=fill(template(), line), b=fill(template(), line))
    report = run(out, "--similarity-threshold", "1")
    assert not report.pairs and report.notebooks[0].highest_below == 0


def test_a_generated_class_of_30_lists_exactly_the_planted_copies(tmp_path):
    """28 submissions that each add their own lines to the reference, 2 near copies of others;
    all three notebooks. Its time is measured by bench/bench_similarity.py, not here."""
    out = tmp_path / "out"
    planted = generated_class(out, 30, copies=2)
    report = run(out)
    assert {(p.notebook, p.a, p.b) for p in report.pairs} == planted
    assert [(n.submissions, n.pairs) for n in report.notebooks] == [(30, 435)] * 3


def test_the_pair_loop_counts_what_copydetect_counts(tmp_path):
    """The loop over pairs counts shared code with a table of fingerprints
    (`_pairs_sharing_code`), not with copydetect's `compare_files`, which is slower: on every
    pair, the same numbers, and a pair it leaves out shares nothing."""
    from copydetect.detector import compare_files

    rng = random.Random(0)
    notebooks = [reference(), near_copy(reference()), einsum(), other_author(), template()]
    notebooks += [noisy_solution(SOLUTIONS / CONVOLUTION, rng) for _ in range(3)]
    own = own_code(tmp_path, notebooks)
    counted = {(i, j): (first, second) for i, j, first, second in similarity._pairs_sharing_code(own)}
    for (i, a), (j, b) in itertools.combinations(enumerate(own), 2):
        overlap, (share_a, share_b), _ = compare_files(a.fingerprint, b.fingerprint)
        first, second = counted.get((i, j), (0, 0))
        assert first == overlap, (i, j)
        assert first / max(a.fingerprint.token_coverage, 1) == pytest.approx(share_a), (i, j)
        assert second / max(b.fingerprint.token_coverage, 1) == pytest.approx(share_b), (i, j)
    assert len(counted) >= 10  # the copies, the solutions and the generated ones share code


# ----------------------------------------------------------------------------- what is written


def test_side_by_side_page_escapes_student_code_and_links_the_notebooks(tmp_path):
    hostile = reference()
    hostile.cells[8].source += '\n    "</pre><script>alert(1)</script>"  # <img src=x onerror=alert(2)>'
    out = make_class(tmp_path / "out", alice=hostile, bob=near_copy(hostile))
    (pair,) = run(out).pairs
    page = out / pair.page
    assert page.is_file() and f"]({pair.page})" in overview(out)
    text = page.read_text(encoding="utf-8")
    assert "<script>" not in text and "<img" not in text
    assert "&lt;/pre&gt;&lt;script&gt;" in text and "<mark>" in text
    links = re.findall(r'<a href="([^"]+)">executed notebook</a>', text)
    assert [(page.parent / link).resolve() for link in links] == [
        (out / name / CONVOLUTION).resolve() for name in ("alice", "bob")
    ]
    with (out / "similarity" / "pairs.csv").open(encoding="utf-8") as handle:
        assert handle.read().splitlines()[1].startswith("01_convolution.ipynb,alice,bob,100.0,100.0,")


def test_student_reports_never_mention_it(tmp_path):
    out = make_class(tmp_path / "out", alice=reference(), bob=near_copy(reference()))
    files = [out / name / kind for name in ("alice", "bob") for kind in ("report.md", "result.json", "junit.xml")]
    before = {path: hashlib.sha256(path.read_bytes()).hexdigest() for path in files}
    assert run(out).pairs
    for path in files:
        assert hashlib.sha256(path.read_bytes()).hexdigest() == before[path], f"{path} changed"
        assert not re.search("similar|copydetect|copied", path.read_text(encoding="utf-8"), re.IGNORECASE), path


def test_a_broken_or_huge_notebook_is_skipped_with_a_note(tmp_path, monkeypatch):
    out = make_class(tmp_path / "out", alice=reference(), bob=near_copy(reference()))
    write_graded(out, "huge", {CONVOLUTION: fill(template(), {"custom_conv_2d": "    x = 1\n" * 1000})})
    truncated = write_graded(out, "truncated", {CONVOLUTION: template()})
    (truncated / CONVOLUTION).write_text('{"cells": [', encoding="utf-8")
    code = sum(len(cell.source) for cell in reference().cells if cell.cell_type == "code")
    monkeypatch.setattr(similarity, "MAX_CODE_CHARS", code + 100)  # the reference and its copy, not "huge"
    report = run(out)
    assert sorted(listed(report)) == [("alice", "bob")]
    notes = dict(note.split(": ", 1) for note in report.skipped)
    assert "not valid JSON" in notes["truncated/01_convolution.ipynb"]
    assert "characters of code, more than the" in notes["huge/01_convolution.ipynb"]
    assert "Not compared: huge/01_convolution.ipynb" in overview(out)
    assert report.notebooks[0].submissions == 2


def test_overview_keeps_the_section_and_says_when_it_is_out_of_date(tmp_path):
    out = make_class(tmp_path / "out", alice=reference(), bob=near_copy(reference()))
    run(out)
    rebuild_summaries(out)  # as after `manual`: the section stays
    assert "| alice | bob |" in overview(out)
    data = json.loads((out / "alice" / "result.json").read_text(encoding="utf-8"))
    data["graded_at"] = "2099-01-01T00:00:00+00:00"  # alice graded again
    (out / "alice" / "result.json").write_text(json.dumps(data), encoding="utf-8")
    rebuild_summaries(out)
    text = overview(out)
    assert "Out of date" in text and "python -m grader similarity" in text and "| alice | bob |" not in text


def test_merge_of_shards_makes_the_report_for_the_whole_class(tmp_path, capsys):
    make_class(tmp_path / "s1", alice=reference(), carol=einsum())
    make_class(tmp_path / "s2", bob=near_copy(reference()), dave=template())
    assert main(["merge", str(tmp_path / "s1"), str(tmp_path / "s2"), "--out", str(tmp_path / "all")]) == EXIT_OK
    assert "similarity: 1 pair(s) at or above 70%" in capsys.readouterr().err
    assert sorted(listed(similarity.load(tmp_path / "all"))) == [("alice", "bob")]
    assert "| alice | bob |" in overview(tmp_path / "all")
    summary = tmp_path / "all" / "similarity" / "summary.json"
    made = summary.stat().st_mtime_ns
    assert main(["merge", str(tmp_path / "s1"), str(tmp_path / "s2"), "--out", str(tmp_path / "all")]) == EXIT_OK
    assert "similarity: up to date" in capsys.readouterr().err and summary.stat().st_mtime_ns == made
    main(["merge", str(tmp_path / "s1"), "--out", str(tmp_path / "all"), "--similarity-threshold", "1"])
    assert similarity.load(tmp_path / "all").threshold == 1  # another threshold: made again


@pytest.mark.parametrize("value", ["0", "101", "-5", "abc", "nan"])
def test_threshold_out_of_range_is_a_usage_error_that_says_the_range(value, tmp_path, capsys):
    for command in (["similarity", str(tmp_path)], ["grade", str(tmp_path)], ["merge", str(tmp_path), "--out", "x"]):
        with pytest.raises(SystemExit) as exit_info:
            main([*command, "--similarity-threshold", value])
        assert exit_info.value.code == EXIT_USAGE
        assert "a percent above 0 and at most 100" in capsys.readouterr().err
    with pytest.raises(ValueError, match="above 0 and at most 100, not 0"):
        similarity.compare_class(tmp_path, threshold=0)


def test_missing_folders_are_named(tmp_path, capsys):
    assert main(["similarity", str(tmp_path / "nowhere")]) == EXIT_USAGE
    assert f"no such folder: {tmp_path / 'nowhere'}" in capsys.readouterr().err
    assert main(["similarity", str(tmp_path), "--templates", str(tmp_path / "templates")]) == EXIT_USAGE
    assert f"no such folder: {tmp_path / 'templates'}" in capsys.readouterr().err


def test_a_submission_named_like_the_report_folder_is_refused(tmp_path, capsys):
    out = make_class(tmp_path / "out", alice=reference(), similarity=reference())
    assert main(["similarity", str(out)]) == EXIT_USAGE
    assert "rename that submission's folder" in capsys.readouterr().err
    assert (out / "similarity" / "result.json").is_file()  # its reports are left alone


# ----------------------------------------------------------------------------- the real command


@pytest.mark.slow
def test_grade_of_a_class_adds_the_section_to_the_overview(tmp_path):
    """Three small 01 notebooks graded by the real command line: two of them near copies."""
    mine = SIMPLEST_OK + (
        "\n\ndef helper(values):\n    total = 0\n    for value in values:\n        total += value * value\n"
        "    return total / len(values)\n"
    )
    class_dir = tmp_path / "class"
    write_notebook(class_dir / "alice" / CONVOLUTION, mine, "print(helper([1, 2, 3]))")
    renamed = mine.replace("total", "acc").replace("value", "v")
    write_notebook(class_dir / "bob" / CONVOLUTION, "print('first')", renamed)  # its own cell first
    write_notebook(class_dir / "carol" / CONVOLUTION, BATCHED_OK)
    out = tmp_path / "out"
    command = [sys.executable, "-m", "grader", "grade", str(class_dir), "--out", str(out), "--jobs", "1"]
    command += ["--no-progress", "--cell-timeout", "20", "--timeout", "60", "--memory-limit", "4", "--hidden-seed", "7"]
    done = subprocess.run(command, cwd=KIT_ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "similarity: 1 pair(s) at or above 70%" in done.stderr
    assert "| 01_convolution.ipynb | alice | bob | 100% | 100% |" in overview(out)
    assert "similar" not in (out / "alice" / "report.md").read_text(encoding="utf-8").lower()
