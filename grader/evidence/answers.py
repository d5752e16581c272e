"""Written answers: the text a student wrote for a question a person reads (no automatic points).

The answer is whatever follows the question's heading: Markdown cells, and the outputs of code
cells (the reference solution builds its comparison table in code), with the template's
placeholders removed. The heading is the Markdown cell before the template's last placeholder
cell, else the last Markdown heading matching the given keywords. Nothing runs here: the text is
read from the executed notebook.

For the instructor's sheet (`grader.report.marking`) an answer also has a digest, whitespace
folded (re-saving a notebook must not make a scored answer look changed), and the numbers it
quotes (``0.91``, ``87,5 %``, ``12%``), to compare with the measured ones at a glance.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from grader.markers import PLACEHOLDERS

__all__ = [
    "ANSWER_HEADING",
    "MAX_ANSWER_CHARS",
    "QUOTED_NUMBER",
    "WrittenAnswer",
    "answer_digest",
    "answer_text",
    "question_cell",
    "quoted_numbers",
    "read_written_answer",
]

MAX_ANSWER_CHARS = 20_000  # of an answer's text kept for the instructor
ANSWER_HEADING = r"размышл|сравн|compar"  # the heading of the written comparison, when no template says
# A number quoted in a written answer: a decimal (point or comma), or a whole number with a percent sign.
QUOTED_NUMBER = re.compile(r"\d+[.,]\d+\s*%?|\d+\s*%")
MAX_QUOTED_NUMBERS = 30


@dataclass(frozen=True)
class WrittenAnswer:
    """What a notebook holds for a written question.

    Attributes:
        start: the index of the question's cell, or None when it was not found.
        text: everything after it (see the module's docstring), placeholders removed; "" when
            the question was not found.
    """

    start: int | None
    text: str = ""

    @property
    def kept(self) -> str:
        """The text as the result keeps it: stripped, at most `MAX_ANSWER_CHARS`."""
        return self.text.strip()[:MAX_ANSWER_CHARS]


def read_written_answer(notebook: Any, template: Path | None, keywords: str = ANSWER_HEADING) -> WrittenAnswer:
    """The answer to the question of ``template`` (or under a heading matching ``keywords``)."""
    cells = notebook.cells
    start = question_cell(cells, template, re.compile(keywords, re.IGNORECASE))
    if start is None:
        return WrittenAnswer(None)
    return WrittenAnswer(start, answer_text(cells[start + 1 :]))


def answer_text(cells: list[Any]) -> str:
    """The Markdown cells' text and the code cells' shown outputs (Markdown, else plain text, and
    standard output), one per line, placeholders removed."""
    parts = []
    for cell in cells:
        if cell.cell_type == "markdown":
            parts.append(cell.source)
        elif cell.cell_type == "code":
            for output in cell.outputs:
                if output.output_type in ("display_data", "execute_result"):
                    parts.append(
                        output.get("data", {}).get("text/markdown") or output.get("data", {}).get("text/plain", "")
                    )
                elif output.output_type == "stream" and output.get("name") == "stdout":
                    parts.append(output.get("text", ""))
    text = "\n".join(part if isinstance(part, str) else "".join(part) for part in parts)
    for placeholder in PLACEHOLDERS:
        text = text.replace(placeholder, "")
    return text


def question_cell(cells: list[Any], template: Path | None, keywords: re.Pattern[str]) -> int | None:
    """The index of the question's Markdown cell: the one equal to the Markdown cell before the
    template's last placeholder cell, else the last heading whose first line matches
    ``keywords``; None when there is neither."""
    question = None
    if template is not None and template.is_file():
        import nbformat

        try:
            blank = nbformat.read(template, as_version=4).cells
            last = max(i for i, cell in enumerate(blank) if any(p in cell.source for p in PLACEHOLDERS))
            question = next(
                blank[i].source.strip() for i in range(last - 1, -1, -1) if blank[i].cell_type == "markdown"
            )
        except (ValueError, StopIteration, OSError, nbformat.reader.NotJSONError):
            question = None
    found = None
    for index, cell in enumerate(cells):
        if cell.cell_type != "markdown":
            continue
        if question is not None and cell.source.strip() == question:
            return index
        if cell.source.lstrip().startswith("#") and keywords.search(cell.source.splitlines()[0]):
            found = index
    return found


def answer_digest(answer: str) -> str:
    """sha256 of the answer with its whitespace folded ("" for no answer)."""
    return hashlib.sha256(" ".join(answer.split()).encode()).hexdigest() if answer else ""


def quoted_numbers(answer: str) -> list[str]:
    """The numbers the answer quotes (`QUOTED_NUMBER`), blanks removed, each once, in order, at
    most `MAX_QUOTED_NUMBERS`."""
    return list(dict.fromkeys(n.replace(" ", "") for n in QUOTED_NUMBER.findall(answer)))[:MAX_QUOTED_NUMBERS]
