"""Similar code across a class: which pairs of submissions share code the template did not give.

    python -m grader similarity out/grades       # also run by `grade` on a class, and by `merge`

Each notebook is compared with the same notebook of every other submission (01 with 01, ...), on
its code cells only (no outputs, no Markdown), read from the executed copies the grader wrote
into ``OUT/<submission>/``. The comparison is copydetect's: winnowing fingerprints, as MOSS, of
the code with names, strings, comments and spacing normalised away, every 25-character run of
that normalised code a fingerprint. The template a student received (``assignments/``, its
placeholders included) is the boilerplate: what every student got does not count.

A pair is listed when the larger of its two shares (A's own code found in B, B's found in A) is
at least the threshold and it shares at least `MIN_SHARED` characters of normalised code. It is
a signal for a person, who reads the pair side by side and decides; it changes no points, and no
student's report mentions it.

Writes ``OUT/similarity/``: ``summary.json`` (what ``overview.md`` shows), ``pairs.csv`` (every
listed pair) and one side-by-side page per listed pair, ``<notebook>/<A>--<B>.html``.
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import html
import io
import json
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import numpy as np

from grader.assignments import find_assignment
from grader.paths import ASSIGNMENTS_DIR
from grader.run.execute import read_notebook

if TYPE_CHECKING:
    from copydetect.detector import CodeFingerprint

# copydetect is imported where it is used: it imports matplotlib.pyplot (0.4 s), and every
# grading process imports this module for the overview.

__all__ = [
    "DEFAULT_THRESHOLD",
    "FOLDER",
    "MIN_SHARED",
    "Pair",
    "Similarity",
    "compare_class",
    "load",
    "markdown_section",
    "notebook_code",
    "up_to_date",
]

FOLDER = "similarity"  # OUT/similarity/
SUMMARY = "summary.json"
PAIRS_CSV = "pairs.csv"

# Percent of a submission's own code found in the other one. Near copies (names changed, cells
# moved, comments rewritten) score 100%; the honest solutions of tests/unit/classroom/test_similarity.py
# share at most half of their own code: 70 lists the first and not the second.
DEFAULT_THRESHOLD = 70.0
# copydetect's default noise threshold: the shortest match that counts, in characters of
# normalised code (about one line). Every such run is a fingerprint (window 1), so the result
# does not depend on Python's per-process string hashes.
NOISE = 25
# Fewer characters of normalised code in common than this (about four lines) is never listed,
# whatever the share: short canonical lines are common to honest solutions of a small task.
MIN_SHARED = 100
MAX_CODE_CHARS = 200_000  # a notebook with more code than this is skipped (data pasted into a cell)
MAX_PAGES = 200  # side-by-side pages per notebook, the highest pairs first; pairs.csv lists all
MAX_ROWS = 50  # pairs shown in overview.md; pairs.csv lists all
# Around every cell of a notebook: a private-use character, which the tokenizer keeps as it is
# and no code needs, as many times as a fingerprint is long. So no fingerprint holds code of two
# cells, and the template's fingerprints that mark a cell's first and last characters (a
# function's signature before its <YOUR CODE>) are the same whichever cell comes next: moving
# cells around changes nothing.
_CELL_BREAK = "\ue000"
_BREAK = "\n" + _CELL_BREAK * NOISE + "\n"


# ----------------------------------------------------------------------------- reading


def notebook_code(path: Path) -> tuple[list[tuple[int, str]] | None, str | None]:
    """The code cells of a notebook, read the way the grader reads a submission (bounded).

    Args:
        path: an executed notebook in ``OUT/<submission>/``.

    Returns:
        ``([(cell index, source), ...], None)``, or ``(None, why)`` when the notebook cannot be
        read (missing, a link, too large, not JSON, not a notebook) or holds more than
        `MAX_CODE_CHARS` characters of code.
    """
    notebook, failure, _ = read_notebook(path)
    if failure is not None:
        return None, failure.message.split(". ")[0]
    cells = [
        (index, cell.source.replace(_CELL_BREAK, ""))
        for index, cell in enumerate(notebook.cells)
        if cell.cell_type == "code" and cell.source.strip()
    ]
    size = sum(len(source) for _, source in cells)
    if size > MAX_CODE_CHARS:
        return None, f"{size:,} characters of code, more than the {MAX_CODE_CHARS:,} compared"
    return cells, None


def _document(cells: list[tuple[int, str]]) -> str:
    # "# cell 8" is a comment, so it is not compared; on a page it says which cell a line is in.
    return "".join(f"{_BREAK}# cell {index}\n{source}" for index, source in cells) + _BREAK


# ----------------------------------------------------------------------------- fingerprints


def _template_hashes(template: list[tuple[int, str]]) -> np.ndarray:
    """Every fingerprint of the template's code: copydetect's boilerplate."""
    from copydetect.detector import CodeFingerprint

    fingerprint = CodeFingerprint("template.py", NOISE, 1, fp=io.StringIO(_document(template)), language="python")
    return np.unique(np.fromiter(fingerprint.hashes, dtype=np.int64, count=len(fingerprint.hashes)))


def _own_code(name: str, cells: list[tuple[int, str]], boilerplate: np.ndarray) -> CodeFingerprint:
    """copydetect's fingerprint of a notebook's code, keeping only what the template did not give.

    copydetect drops the fingerprints equal to the template's, but keeps those that straddle
    template and own code. Here own code is often a few lines inside a template cell, and those
    straddles (up to 24 per edge, the same for every student who starts a function the same way)
    made honest pairs look half-copied. So every fingerprint that touches a character of the
    template's (or a break between cells) is dropped too, with the coverage it counted.
    """
    from copydetect.detector import CodeFingerprint
    from copydetect.utils import get_token_coverage, hashed_kgrams

    # copydetect's boilerplate removal first; the mask below removes a superset of it.
    fingerprint = CodeFingerprint(
        name, NOISE, 1, boilerplate=boilerplate, fp=io.StringIO(_document(cells)), language="python"
    )
    code = fingerprint.filtered_code
    if len(code) < NOISE:
        return fingerprint
    kgrams = hashed_kgrams(code, NOISE)  # one per start, as copydetect hashes them
    from_template = np.isin(kgrams, boilerplate).astype(np.int32)
    covered = np.convolve(from_template, np.ones(NOISE, dtype=np.int32))[: len(code)] > 0  # (len(code),)
    covered |= np.frombuffer(code.encode("utf-32-le"), dtype=np.uint32) == ord(_CELL_BREAK)
    touched = np.concatenate([[0], np.cumsum(covered)])
    clean = (touched[NOISE:] - touched[:-NOISE]) == 0  # per start: no template character in its window
    kept = {int(h): [i for i in idx if clean[i]] for h, idx in fingerprint.hash_idx.items()}
    fingerprint.hash_idx = {h: idx for h, idx in kept.items() if idx}
    fingerprint.hashes = set(fingerprint.hash_idx)
    fingerprint.token_coverage = get_token_coverage(fingerprint.hash_idx, NOISE, len(code))
    return fingerprint


@dataclass
class _Own:
    """A submission's notebook: its fingerprint (`_own_code`), and the same as arrays."""

    fingerprint: CodeFingerprint
    starts: np.ndarray  # (n,) where each of its fingerprints starts in the normalised code, ascending
    hashes: np.ndarray  # (n,) the hash of each

    @classmethod
    def of(cls, fingerprint: CodeFingerprint) -> _Own:
        located = sorted((int(i), h) for h, idx in fingerprint.hash_idx.items() for i in idx)
        starts = np.array([i for i, _ in located], dtype=np.int64)
        return cls(fingerprint, starts, np.array([h for _, h in located], dtype=np.int64))


def _covered(starts: np.ndarray) -> int:
    """Characters covered by fingerprints starting at ``starts`` (ascending), each NOISE long."""
    return int(np.minimum(np.diff(starts), NOISE).sum()) + NOISE if len(starts) else 0


def _pairs_sharing_code(own: list[_Own]) -> Iterator[tuple[int, int, int, int]]:
    """``(i, j, characters of i's in common, of j's)`` for each pair ``i < j`` of ``own`` that
    shares a fingerprint: what copydetect's `compare_files` counts, by two look-ups per pair in a
    table of the class's fingerprints instead of a few array operations per fingerprint. At 300
    submissions, 45,000 pairs per notebook, compare_files took most of the time."""
    vocabulary = np.unique(np.concatenate([np.zeros(0, dtype=np.int64)] + [o.hashes for o in own]))
    ids = [np.searchsorted(vocabulary, o.hashes) for o in own]  # (n_i,) each fingerprint's row in the table
    distinct = [np.unique(i) for i in ids]
    in_first, in_second = np.zeros(len(vocabulary), dtype=bool), np.zeros(len(vocabulary), dtype=bool)
    for i in range(len(own)):
        in_first[distinct[i]] = True
        for j in range(i + 1, len(own)):
            second_matched = in_first[ids[j]]  # (n_j,) j's fingerprints that i has too
            if not second_matched.any():
                continue  # most pairs of a real class
            in_second[distinct[j]] = True
            first_matched = in_second[ids[i]]  # (n_i,)
            in_second[distinct[j]] = False
            yield i, j, _covered(own[i].starts[first_matched]), _covered(own[j].starts[second_matched])
        in_first[distinct[i]] = False


# ----------------------------------------------------------------------------- results


@dataclass
class Pair:
    """Two submissions whose notebook shares code.

    Attributes:
        notebook: the assignment's notebook name.
        a, b: the submissions, in name order.
        share_a: percent of A's own code (what the template did not give) also in B's.
        share_b: percent of B's own code also in A's.
        shared: characters of normalised code in common (the fewer of the two sides' counts).
        lines: lines of A's notebook that hold code in common.
        page: the side-by-side page, relative to OUT; None past `MAX_PAGES`.
    """

    notebook: str
    a: str
    b: str
    share_a: float
    share_b: float
    shared: int
    lines: int = 0
    page: str | None = None

    @property
    def share(self) -> float:
        """The larger share: what the list is ranked and cut by."""
        return max(self.share_a, self.share_b)


@dataclass
class NotebookStats:
    """One notebook across the class.

    Attributes:
        notebook: the assignment's notebook name.
        submissions: submissions whose notebook was compared.
        pairs: pairs compared.
        listed: pairs at or above the threshold.
        highest_below: the highest share of a pair not listed (with at least `MIN_SHARED`
            characters in common): how close the rest of the class comes to the threshold.
        template: whether the template was found (else all code counts as the students').
    """

    notebook: str
    submissions: int
    pairs: int
    listed: int
    highest_below: float
    template: bool


@dataclass
class Similarity:
    """What `compare_class` found; saved as ``OUT/similarity/summary.json``.

    Attributes:
        threshold: percent; see `DEFAULT_THRESHOLD`.
        notebooks: per notebook, how many submissions and pairs were compared.
        pairs: the listed pairs, highest share first.
        skipped: ``"<submission>/<notebook>: why"`` for each notebook that was not compared.
        graded_at: each compared submission's ``graded_at``: the report is out of date when a
            submission is graded again.
        elapsed: seconds taken.
    """

    threshold: float
    notebooks: list[NotebookStats] = field(default_factory=list)
    pairs: list[Pair] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    graded_at: dict[str, str] = field(default_factory=dict)
    elapsed: float = 0.0

    def to_json(self) -> str:
        """The report as ``summary.json`` holds it."""
        return json.dumps(dataclasses.asdict(self), indent=2, ensure_ascii=False) + "\n"

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Similarity:
        """The report from ``summary.json``'s parsed contents."""
        return cls(
            threshold=data["threshold"],
            notebooks=[NotebookStats(**n) for n in data.get("notebooks", [])],
            pairs=[Pair(**p) for p in data.get("pairs", [])],
            skipped=list(data.get("skipped", [])),
            graded_at=dict(data.get("graded_at", {})),
            elapsed=data.get("elapsed", 0.0),
        )


def load(out: Path) -> Similarity | None:
    """The last report written in ``out``, or None (none yet, or unreadable)."""
    try:
        return Similarity.from_dict(json.loads((Path(out) / FOLDER / SUMMARY).read_text(encoding="utf-8")))
    except (OSError, ValueError, KeyError, TypeError):
        return None


def up_to_date(out: Path, threshold: float) -> bool:
    """Whether ``out`` holds a report made with ``threshold`` after its last submission was graded."""
    report = load(out)
    return (
        report is not None
        and report.threshold == threshold
        and report.graded_at == {name: at for name, (_, at) in _submissions(Path(out)).items()}
    )


# ----------------------------------------------------------------------------- the comparison


def _submissions(out: Path) -> dict[str, tuple[Path, str]]:
    """Graded submissions in ``out``: name (as its ``result.json`` says) -> (folder, graded_at)."""
    found = {}
    for result in sorted(out.glob("*/result.json")):
        try:
            data = json.loads(result.read_text(encoding="utf-8"))
            found[str(data.get("name") or result.parent.name)] = (result.parent, str(data.get("graded_at", "")))
        except (OSError, ValueError, AttributeError):
            continue  # being replaced right now, or not ours: rebuild_summaries skips it too
    return found


def _notebook_key(path: Path) -> str:
    assignment = find_assignment(path)
    return assignment.notebook if assignment is not None and assignment.notebook else path.name


def compare_class(
    out: Path,
    *,
    threshold: float = DEFAULT_THRESHOLD,
    templates: Path = ASSIGNMENTS_DIR,
    log: Callable[[str], None] | None = None,
) -> Similarity:
    """Compare every pair of graded submissions in ``out``, notebook by notebook; write the report.

    Args:
        out: a report folder of `grade` or `merge`: one sub-folder per submission, with its
            ``result.json`` and executed notebooks.
        threshold: list pairs whose larger share is at least this percent (0 < threshold <= 100).
        templates: the notebooks the students received (their code is boilerplate).
        log: called with one line per notebook compared, or None.

    Returns:
        The `Similarity`, also written to ``out/similarity/`` with the pages and ``pairs.csv``.

    Raises:
        ValueError: ``threshold`` out of range, or a submission named like the report's folder.
    """
    if not 0 < threshold <= 100:
        raise ValueError(f"the similarity threshold is a percent above 0 and at most 100, not {threshold!r}")
    out = Path(out)
    if (out / FOLDER / "result.json").exists():
        raise ValueError(
            f"{out / FOLDER} holds a graded submission, so the similarity report has nowhere to go: "
            "rename that submission's folder and grade it again"
        )
    started = time.monotonic()
    submissions = _submissions(out)
    report = Similarity(threshold=threshold, graded_at={name: at for name, (_, at) in submissions.items()})

    by_notebook: dict[str, dict[str, Path]] = {}
    for name, (folder, _) in submissions.items():
        for path in sorted(folder.glob("*.ipynb")):
            by_notebook.setdefault(_notebook_key(path), {})[name] = path

    staging = Path(tempfile.mkdtemp(prefix=f".{FOLDER}-", dir=out))
    try:
        for notebook in sorted(by_notebook):
            stats, pairs = _compare_notebook(
                notebook,
                by_notebook[notebook],
                templates=templates,
                threshold=threshold,
                staging=staging,
                skipped=report.skipped,
            )
            report.notebooks.append(stats)
            report.pairs += pairs
            if log is not None:
                log(
                    f"similarity: {notebook}: {stats.submissions} submissions, {stats.pairs} pairs, "
                    f"{stats.listed} at or above {threshold:g}%"
                )
        report.pairs.sort(key=lambda p: (-p.share, p.notebook, p.a, p.b))
        report.elapsed = time.monotonic() - started
        _write_csv(staging / PAIRS_CSV, report.pairs)
        (staging / SUMMARY).write_text(report.to_json(), encoding="utf-8")
        _replace(out / FOLDER, staging)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return report


def _compare_notebook(
    notebook: str,
    paths: dict[str, Path],
    *,
    templates: Path,
    threshold: float,
    staging: Path,
    skipped: list[str],
) -> tuple[NotebookStats, list[Pair]]:
    """Fingerprint one notebook of each submission, compare every pair, write the listed pairs' pages."""
    from copydetect.detector import compare_files

    template_path = templates / notebook
    template, _ = notebook_code(template_path) if template_path.is_file() else (None, None)
    boilerplate = _template_hashes(template) if template else np.array([], dtype=np.int64)
    given = {source for _, source in template or []}
    own: dict[str, _Own] = {}
    for name, path in paths.items():
        cells, why = notebook_code(path)
        if cells is None:
            skipped.append(f"{name}/{path.name}: {why}")
            continue
        # A cell as the template has it holds no code of the student's: not worth tokenizing.
        changed = [(index, source) for index, source in cells if source not in given]
        own[name] = _Own.of(_own_code(f"{name}/{path.name}", changed, boilerplate))

    names = sorted(own)
    pairs, below = [], 0.0
    for i, j, overlap_a, overlap_b in _pairs_sharing_code([own[name] for name in names]):
        (a, first), (b, second) = (names[i], own[names[i]]), (names[j], own[names[j]])
        if min(overlap_a, overlap_b) < MIN_SHARED:
            continue
        share_a = 100 * overlap_a / first.fingerprint.token_coverage
        share_b = 100 * overlap_b / second.fingerprint.token_coverage
        if max(share_a, share_b) < threshold:
            below = max(below, share_a, share_b)
            continue
        _, _, slices = compare_files(first.fingerprint, second.fingerprint)  # where, for the page
        pair = Pair(notebook, a, b, round(share_a, 1), round(share_b, 1), min(overlap_a, overlap_b))
        pairs.append((pair, slices))

    pairs.sort(key=lambda item: -item[0].share)
    for rank, (pair, slices) in enumerate(pairs):
        pair.lines = _lines(own[pair.a].fingerprint.raw_code, slices[0])
        if rank < MAX_PAGES:
            pair.page = _write_page(staging, pair, paths, own, slices)
    compared = len(names) * (len(names) - 1) // 2
    stats = NotebookStats(notebook, len(names), compared, len(pairs), round(float(below), 1), template is not None)
    return stats, [pair for pair, _ in pairs]


def _lines(raw: str, slices: np.ndarray) -> int:
    """Lines of ``raw`` that hold a part of ``slices`` (copydetect's starts and ends in ``raw``)."""
    lines: set[int] = set()
    for start, end in zip(*slices):
        first, last = raw.count("\n", 0, int(start)), raw.count("\n", 0, max(int(start), int(end) - 1))
        lines.update(range(first, last + 1))
    return len(lines)


def _write_csv(path: Path, pairs: list[Pair]) -> None:
    columns = ["notebook", "a", "b", "share_a", "share_b", "shared", "lines", "page"]
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns)
        writer.writeheader()
        writer.writerows({key: getattr(pair, key) for key in columns} for pair in pairs)


def _replace(target: Path, staging: Path) -> None:
    """Put ``staging`` where ``target`` is: a reader never sees half of a report (at most, for a
    moment, none)."""
    old = None
    if target.exists():
        old = Path(tempfile.mkdtemp(prefix=f".{FOLDER}-old-", dir=target.parent))
        os.replace(target, old / FOLDER)
    os.replace(staging, target)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


# ----------------------------------------------------------------------------- the page


_PAGE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>{title}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 1.5em; }}
.pair {{ display: flex; gap: 1em; }}
.pair > div {{ flex: 1; min-width: 0; }}
pre {{ background: #f6f6f6; padding: 0.8em; overflow-x: auto; font-size: 0.85em; }}
mark {{ background: #f5c2c2; }}
.note {{ color: #555; }}
</style>
</head>
<body>
<h1>{title}</h1>
<p>{share_a}% of {a}'s own code in this notebook is also in {b}'s, and {share_b}% of {b}'s is in
{a}'s ({lines} lines of {a}'s notebook). <mark>Marked</mark>: code in common that the template did
not give. The comparison ignores names, strings, comments, spacing and the order of cells.
Shown: the cells that differ from the template, each under <code># cell i</code> (its place in the
notebook, every cell counted from 0).</p>
<p class="note">A signal for a person, not a finding: it changes no points and no student sees it.
Short tasks have few ways to be written. Read both notebooks before deciding anything.</p>
<div class="pair">
<div><h2>{a}</h2><p><a href="{link_a}">executed notebook</a></p><pre>{code_a}</pre></div>
<div><h2>{b}</h2><p><a href="{link_b}">executed notebook</a></p><pre>{code_b}</pre></div>
</div>
</body>
</html>
"""


def _page_name(pair: Pair) -> str:
    name = f"{pair.a}--{pair.b}.html"
    if len(name.encode()) > 200:  # file names have a limit; submission names do not
        name = hashlib.sha256(f"{pair.a}\0{pair.b}".encode()).hexdigest()[:32] + ".html"
    return f"{Path(pair.notebook).stem}/{name}"


def _write_page(
    staging: Path,
    pair: Pair,
    paths: dict[str, Path],
    own: dict[str, _Own],
    slices: tuple[np.ndarray, np.ndarray],
) -> str:
    """Write the side-by-side page of ``pair``; its path relative to OUT."""
    from copydetect.utils import highlight_overlap

    codes = []
    for name, marked in ((pair.a, slices[0]), (pair.b, slices[1])):
        # highlight_overlap escapes the code: a student's "<script>" is text on this page.
        code, _ = highlight_overlap(own[name].fingerprint.raw_code, marked, "<mark>", "</mark>", escape_html=True)
        codes.append(code.replace(_CELL_BREAK * NOISE, "\u2500" * 40))
    relative = _page_name(pair)
    link = {name: "../../" + quote(f"{paths[name].parent.name}/{paths[name].name}") for name in (pair.a, pair.b)}
    page = _PAGE.format(
        title=html.escape(f"{pair.notebook}: {pair.a} and {pair.b}"),
        a=html.escape(pair.a),
        b=html.escape(pair.b),
        share_a=f"{pair.share_a:g}",
        share_b=f"{pair.share_b:g}",
        lines=pair.lines,
        link_a=html.escape(link[pair.a]),  # from OUT/similarity/<notebook>/
        link_b=html.escape(link[pair.b]),
        code_a=codes[0],
        code_b=codes[1],
    )
    target = staging / relative
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(page, encoding="utf-8")
    return f"{FOLDER}/{relative}"


# ----------------------------------------------------------------------------- overview.md


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def markdown_section(report: Similarity | None, results: list[dict[str, Any]]) -> list[str]:
    """The overview's section on similar code, as Markdown lines (none before the first report).

    Args:
        report: from `load`, or None.
        results: the class's ``result.json`` contents: a report made before one of them was
            graded is out of date, and says only that.
    """
    if report is None:
        return []
    lines = ["", "## Similar code (a signal for a person, never points)", ""]
    if {r["name"]: str(r.get("graded_at", "")) for r in results} != report.graded_at:
        return lines + [
            "Out of date: submissions were graded since it was made. Run `python -m grader similarity` "
            "on this folder (it takes seconds).",
        ]
    lines += [
        f"Pairs of submissions whose own code in a notebook (what the template did not give them) is at least "
        f"{report.threshold:g}% the same, compared as MOSS does (copydetect's winnowing fingerprints: names, "
        "strings, comments, spacing and the order of cells do not matter). **This changes no points and no "
        "student's report mentions it**: it says where to look, not what happened. Short tasks have few ways to "
        "be written, so honest solutions can share lines; read the pair side by side and both notebooks before "
        "deciding anything. *A in B*: the share of A's own code also in B's; the list is cut and ranked by the "
        "larger of the two.",
        "",
        "| notebook | submissions compared | pairs | listed | highest share not listed |",
        "|---|---:|---:|---:|---:|",
    ]
    for stats in report.notebooks:
        lines.append(
            f"| {stats.notebook} | {stats.submissions} | {stats.pairs} | {stats.listed} | {stats.highest_below:g}% |"
        )
    for stats in report.notebooks:
        if not stats.template:
            lines.append(f"\nNo template found for {stats.notebook}: all of its code counts as the students' own.")
        elif stats.pairs >= 10 and stats.listed > stats.pairs / 2:
            lines.append(
                f"\nMore than half of the pairs of {stats.notebook} are listed: the template in assignments/ may not "
                "be the one the students received (what it lacks counts as their own code)."
            )
    lines.append("")
    if report.pairs:
        lines += [
            "| notebook | A | B | A in B | B in A | lines of A in common | side by side |",
            "|---|---|---|---:|---:|---:|---|",
        ]
        for pair in report.pairs[:MAX_ROWS]:
            page = f"[open]({quote(pair.page)})" if pair.page else "(pairs.csv)"
            lines.append(
                f"| {pair.notebook} | {_cell(pair.a)} | {_cell(pair.b)} | {pair.share_a:g}% | {pair.share_b:g}% | "
                f"{pair.lines} | {page} |"
            )
        if len(report.pairs) > MAX_ROWS:
            lines.append(f"\n... and {len(report.pairs) - MAX_ROWS} more pairs in `{FOLDER}/{PAIRS_CSV}`.")
    else:
        lines.append(f"No pair at or above {report.threshold:g}%.")
    if report.skipped:
        lines += ["", "Not compared: " + "; ".join(_cell(s) for s in report.skipped[:20])]
        if len(report.skipped) > 20:
            lines[-1] += f"; and {len(report.skipped) - 20} more (`{FOLDER}/{SUMMARY}`)"
    lines += ["", f"Compared in {report.elapsed:.1f} s; data in `{FOLDER}/`."]
    return lines
