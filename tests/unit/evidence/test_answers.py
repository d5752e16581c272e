"""grader.evidence.answers: the text of a written answer read from the notebook (after the
template's question, else a matching heading; Markdown and shown outputs; placeholders removed),
its digest and the numbers it quotes."""

from __future__ import annotations

import nbformat
from grader_notebooks import notebook

from grader.evidence.answers import (
    MAX_ANSWER_CHARS,
    WrittenAnswer,
    answer_digest,
    quoted_numbers,
    read_written_answer,
)


def test_written_answer_is_read_after_the_question_from_markdown_and_outputs(tmp_path):
    question = nbformat.v4.new_markdown_cell("### 2.6 Размышления\nСравните две модели.")
    template = tmp_path / "template.ipynb"
    placeholder = nbformat.v4.new_code_cell("# <YOUR CODE>\nraise NotImplementedError('<YOUR CODE>: compare')")
    nbformat.write(
        nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("x = 1"), question, placeholder]), template
    )

    text = "ResNet-18 trains only its last layer, so it reaches a lower accuracy than the CNN."
    in_markdown = read_written_answer(notebook("x = 1", question, nbformat.v4.new_markdown_cell(text)), template)
    assert in_markdown == WrittenAnswer(1, text)

    table = (
        "| | CNN | ResNet-18 |\n|---|---|---|\n| accuracy | 0.91 | 0.80 |\nThe CNN is better because it sees details."
    )
    in_output = notebook("x = 1", question, "Markdown(text)", "print('done')")
    in_output.cells[2].outputs = [
        nbformat.v4.new_output("execute_result", data={"text/markdown": table, "text/plain": "<Markdown>"})
    ]
    in_output.cells[3].outputs = [
        nbformat.v4.new_output("stream", name="stdout", text="printed too\n"),
        nbformat.v4.new_output("stream", name="stderr", text="a warning, not the answer\n"),
    ]
    assert read_written_answer(in_output, template).text == table + "\nprinted too\n"

    untouched = notebook("x = 1", question, placeholder.source, nbformat.v4.new_markdown_cell("<YOUR ANSWER>"))
    untouched.cells[2].outputs = [
        nbformat.v4.new_output("error", ename="NotImplementedError", evalue="<YOUR CODE>: compare", traceback=[])
    ]
    empty = read_written_answer(untouched, template)
    assert empty.start == 1 and empty.text.split() == []

    renamed_heading = notebook(
        "x = 1",
        nbformat.v4.new_markdown_cell("## Сравнение моделей"),
        nbformat.v4.new_markdown_cell("The transfer model is worse here: the features were learned on colour photos."),
    )
    assert read_written_answer(renamed_heading, None).start == 1
    assert read_written_answer(renamed_heading, tmp_path / "no such template.ipynb").start == 1
    assert read_written_answer(notebook("x = 1"), template) == WrittenAnswer(None, "")


def test_the_kept_text_is_stripped_and_bounded():
    assert WrittenAnswer(0, "  an answer \n").kept == "an answer"
    assert len(WrittenAnswer(0, "x" * (MAX_ANSWER_CHARS + 5)).kept) == MAX_ANSWER_CHARS


def test_quoted_numbers_are_decimals_and_percentages_each_once():
    answer = "The CNN reaches 0.91 (91 %), ResNet-18 0,80 and 80%; again 0.91; 3 epochs; 12.5 % of 2024."
    assert quoted_numbers(answer) == ["0.91", "91%", "0,80", "80%", "12.5%"]
    assert quoted_numbers(" ".join(f"0.{i:02d}" for i in range(50))) == [f"0.{i:02d}" for i in range(30)]
    assert quoted_numbers("") == []


def test_the_digest_ignores_how_whitespace_is_laid_out():
    assert answer_digest("a  b\nc") == answer_digest(" a b c ") != answer_digest("a b d")
    assert answer_digest("") == ""
