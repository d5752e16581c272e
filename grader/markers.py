"""The placeholders the release writes into a student's template (`grader.release.templates`) and
the checks look for in a submission (`grader.checks`, `grader.evidence.answers`): one definition
for both ends, so a template's unfilled cell is always recognised."""

from __future__ import annotations

__all__ = ["ANSWER_PLACEHOLDER", "CODE_PLACEHOLDER", "PLACEHOLDERS"]

CODE_PLACEHOLDER = "<YOUR CODE>"  # where a solution region or a solution cell of code was
ANSWER_PLACEHOLDER = "<YOUR ANSWER>"  # where a Markdown answer was
PLACEHOLDERS = (CODE_PLACEHOLDER, ANSWER_PLACEHOLDER)
