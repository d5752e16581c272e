"""A class's report folder beside its submissions' folders: the gradebook, the overview, and the
written answers to mark (``answers.csv``), rebuilt from the ``*/result.json`` files and the
recorded manual points; and the ``manual`` command, which records those points.

    python -m grader manual OUT    # `record_manual_points`: validate OUT/answers.csv, record, rebuild
"""

from __future__ import annotations

import statistics
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

from grader.assignments import ASSIGNMENTS
from grader.classroom import similarity
from grader.report import marking
from grader.report.files import GRADEBOOK, OVERVIEW, atomic_write, results_in
from grader.report.formats import to_markdown
from grader.report.gradebook import gradebook_row, write_gradebook
from grader.results import from_dict

__all__ = ["overview_markdown", "rebuild_summaries", "record_manual_points"]


def rebuild_summaries(out: Path, *, log: Callable[[str], None] | None = None) -> tuple[Path, Path]:
    """Write ``gradebook.csv``, ``overview.md`` and ``answers.csv`` in ``out`` from its
    ``*/result.json`` and its recorded manual points.

    ``answers.csv`` is left alone when it holds points not recorded yet (an instructor's edits):
    `log` says so, once.
    """
    results = results_in(out)
    store = marking.load_store(out)
    write_gradebook(out / GRADEBOOK, [gradebook_row(data, store) for data in results])
    atomic_write(out / OVERVIEW, overview_markdown(results, store, similarity.load(out)))
    answers = out / marking.ANSWERS
    pending = marking.unrecorded(answers, store) if answers.is_file() else 0
    if pending:
        if log is not None and out not in _WARNED:
            _WARNED.add(out)
            log(
                f"{answers} holds {pending} score(s) not recorded yet, so it is left as it is: run "
                f"`python -m grader manual {out}` to record them (it writes the file again)"
            )
    elif any(marking.states(data, store) for data in results):
        atomic_write(answers, marking.answers_csv(results, store))
    return out / GRADEBOOK, out / OVERVIEW


_WARNED: set[Path] = set()


def record_manual_points(out: Path, answers: Path | None = None) -> dict[str, int]:
    """Validate a filled-in answers file, record its points, and write the gradebook, the overview,
    ``answers.csv`` and each ``report.md`` again.

    Args:
        out: a report folder of ``grade`` or ``merge``.
        answers: the filled-in file (default ``OUT/answers.csv``).

    Returns:
        Counts: ``recorded`` (rows recorded now), and answers ``scored``, ``to read``, ``changed``.

    Raises:
        FileNotFoundError: no graded submission in ``out``, or no answers file.
        marking.ManualError: bad rows (nothing is recorded then).
    """
    out = Path(out)
    answers = Path(answers) if answers is not None else out / marking.ANSWERS
    results = results_in(out)
    if not results:
        raise FileNotFoundError(f"{out} holds no graded submission (no */result.json)")
    if not answers.is_file():
        raise FileNotFoundError(f"no answers file at {answers}: `grade` writes one when a written answer is to be read")
    scores = marking.read_answers(answers, results)
    store = marking.record(out, scores)
    atomic_write(out / marking.ANSWERS, marking.answers_csv(results, store))  # every filled row is recorded now
    rebuild_summaries(out)
    for data in results:  # the reports show the manual points next to the automatic ones
        atomic_write(out / data["name"] / "report.md", to_markdown(from_dict(data), marking.states(data, store)))
    written = [state for data in results for state in marking.states(data, store).values()]
    counts = {status: sum(state.status == status for state in written) for status in ("scored", "to read", "changed")}
    return {"recorded": sum(len(given) for given in scores.values()), **counts}


# ----------------------------------------------------------------------------- the overview


def _bar(count: int, largest: int, width: int = 30) -> str:
    return "█" * (round(width * count / largest) if largest else 0)


def _readable(notebook: dict[str, Any]) -> bool:
    failure = (notebook.get("execution") or {}).get("failure") or {}
    return failure.get("kind") not in ("missing", "invalid")


def _percent(result: dict[str, Any]) -> float:
    return 100 * result["points"] / result["max_points"] if result["max_points"] else 0.0


def _headline(results: list[dict[str, Any]]) -> list[str]:
    percents = [_percent(r) for r in results]
    errors = [r["name"] for r in results if r.get("grader_error")]
    return [
        f"- Submissions graded: {len(results)}"
        + (f" ({len(errors)} with a grader error: {', '.join(errors)}; re-run to retry them)" if errors else ""),
        f"- Score: mean {statistics.fmean(percents):.1f}%, median {statistics.median(percents):.1f}%, "
        f"lowest {min(percents):.1f}%, highest {max(percents):.1f}%",
    ]


def _distribution(results: list[dict[str, Any]]) -> list[str]:
    lines = ["## Score distribution", "", "| score | submissions | |", "|---|---:|---|"]
    bins = Counter(min(int(_percent(r) // 10), 9) for r in results)
    largest = max(bins.values())
    for index in range(9, -1, -1):
        label = "90-100%" if index == 9 else f"{10 * index}-{10 * index + 9}%"
        lines.append(f"| {label} | {bins.get(index, 0)} | {_bar(bins.get(index, 0), largest)} |")
    return lines


def _per_notebook(results: list[dict[str, Any]]) -> list[str]:
    lines = [
        "## Per notebook",
        "",
        "| notebook | mean points | full marks | missing or unreadable |",
        "|---|---:|---:|---:|",
    ]
    order = {a.notebook: i for i, a in enumerate(ASSIGNMENTS)}
    per_notebook: dict[str, list[dict[str, Any]]] = {}
    for result in results:
        for notebook in result.get("notebooks") or []:
            per_notebook.setdefault(notebook["name"], []).append(notebook)
    for name in sorted(per_notebook, key=lambda n: (order.get(n, len(order)), n)):
        graded = per_notebook[name]
        top = graded[0]["max_points"]
        mean = statistics.fmean(n["points"] for n in graded)
        full = sum(1 for n in graded if n["points"] >= n["max_points"])
        unreadable = sum(1 for n in graded if not _readable(n))
        lines.append(f"| {name} | {mean:.1f} / {top:g} | {full} of {len(graded)} | {unreadable} |")
    return lines


def _most_failed(results: list[dict[str, Any]]) -> list[str]:
    failed: Counter[tuple[str, str]] = Counter()
    examples: dict[tuple[str, str], str] = {}
    for result in results:
        # A missing or unreadable notebook fails every check; it is counted in "Per notebook", once.
        for notebook in filter(_readable, result.get("notebooks") or []):
            for check in notebook.get("checks") or []:
                if check["status"] in ("failed", "error") and not check.get("manual"):
                    key = (notebook["name"], check["title"])
                    failed[key] += 1
                    examples.setdefault(key, f"{result['name']}: {check['message'].splitlines()[0][:160]}")
    lines = ["## Checks most often failed", ""]
    if not failed:
        return lines + ["Every automatic check passed in every submission."]
    lines += ["| notebook | check | failed | an example |", "|---|---|---:|---|"]
    for (notebook, title), count in failed.most_common(10):
        share = f"{count} ({100 * count / len(results):.0f}%)"
        example = examples[(notebook, title)].replace("|", "\\|")
        lines.append(f"| {notebook} | {title} | {share} | {example} |")
    return lines


def _written_answers(results: list[dict[str, Any]], store: dict[str, Any]) -> list[str]:
    written = [state for r in results for state in marking.states(r, store).values()]
    if not written:
        return []
    counts = Counter(state.status for state in written)
    scored = [state.points for state in written if state.status == "scored"]
    return [
        "",
        "## Written answers (manual points)",
        "",
        f"{len(written)} answers: {counts['scored']} scored, {counts['to read']} to read, "
        f"{counts['changed']} changed since scored, {counts['no answer']} empty"
        + (f"; mean {statistics.fmean(scored):.1f} / {written[0].max_points:g} over the scored ones" if scored else "")
        + f". Fill in `{marking.ANSWERS}` and run `python -m grader manual` on this folder.",
    ]


def overview_markdown(
    results: list[dict[str, Any]],
    store: dict[str, Any] | None = None,
    similar: similarity.Similarity | None = None,
) -> str:
    """The class at a glance: score distribution, points per notebook, the checks most often
    failed, the written answers and their manual points, and the pairs of submissions with
    similar code (`grader.classroom.similarity`; ``similar`` is its last report, None before one)."""
    lines = ["# Class overview", ""]
    if not results:
        return "\n".join(lines + ["No graded submission yet.", ""])
    lines += _headline(results) + [""] + _distribution(results) + [""] + _per_notebook(results)
    lines += [""] + _most_failed(results)
    lines += _written_answers(results, store or {})
    lines += similarity.markdown_section(similar, results)
    return "\n".join(lines) + "\n"
