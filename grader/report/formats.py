"""A `SubmissionResult` as JSON (machines), Markdown (the student, and GitHub's job summary) and
JUnit XML (CI: one test case per check).

`write_reports` writes all of them into one folder per submission, each file atomically (a
half-written report never replaces a good one), and updates that submission's row in the
gradebook next to it (`grader.report.gradebook`).
"""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Literal

from grader.report.files import atomic_write
from grader.report.gradebook import gradebook_row, points_text, update_gradebook
from grader.report.marking import ManualState, key, manual_summary, states
from grader.results import CheckResult, NotebookResult, SubmissionResult, to_dict

__all__ = [
    "to_json",
    "to_junit",
    "to_markdown",
    "write_reports",
]

_ICONS = {"passed": "✅", "failed": "❌", "error": "⚠️", "skipped": "➖"}


def to_json(result: SubmissionResult, *, extra: dict[str, Any] | None = None) -> str:
    """The full result as indented JSON (executed notebooks left out; they are files)."""
    data = to_dict(result)
    data["graded_at"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
    data.update(extra or {})
    return json.dumps(data, indent=2, ensure_ascii=False, default=str)


def _sandbox_line(result: SubmissionResult) -> str:
    infos = {n.execution.sandbox.describe() for n in result.notebooks if n.execution and n.execution.sandbox}
    limits = {n.execution.enforcement for n in result.notebooks if n.execution and n.execution.enforcement}
    return "; ".join(sorted(infos) + sorted(limits)) or "no notebook ran"


def _weights_line(result: SubmissionResult) -> str | None:
    info = result.weights
    if not info:
        return None
    if info.get("error"):
        return f"ResNet-18 weights: none available on the grading machine ({info['error'].splitlines()[0]})"
    kind = (
        "official ImageNet (torchvision IMAGENET1K_V1)"
        if info.get("official")
        else "stand-in, NOT the official ImageNet weights"
    )
    return f"ResNet-18 weights: {kind}, sha256 `{info.get('sha256')}`"


Manual = dict[str, ManualState]  # question key -> state (`grader.report.marking.states`)


def _notebook_markdown(notebook: NotebookResult, manual: Manual) -> list[str]:
    lines = [f"## {notebook.name}: {points_text(notebook.points)} / {points_text(notebook.max_points)}", ""]
    execution = notebook.execution
    if execution is not None and execution.readable:
        facts = [
            f"ran in {execution.elapsed:.1f} s ({execution.cells_elapsed:.1f} s in cells, which used "
            f"{execution.cells_cpu:.0f} CPU-s of the {execution.cpu_limit:g} allowed)",
            f"checked in {notebook.checks_elapsed:.1f} s",
        ]
        if execution.peak_memory:
            facts.append(f"peak memory {execution.peak_memory / 2**30:.2f} GiB")
        if execution.failure is not None:
            facts.append(f"stopped early: {execution.failure.message}")
        lines += ["_" + "; ".join(facts) + "_", ""]
    for warning in execution.warnings if execution else []:
        lines += [f"> Note: {warning}", ""]
    for check in notebook.checks:
        lines += _check_markdown(check, manual.get(key(notebook.name, check.name)))
    return lines


def _check_markdown(check: CheckResult, manual: ManualState | None) -> list[str]:
    icon = "📝" if check.manual else _ICONS[check.status]
    if manual is not None:
        points = manual.describe()
    else:
        points = f"{points_text(check.points)} / {points_text(check.max_points)}" if check.max_points else "no points"
    lines = [f"- {icon} **{check.title}** ({points})"]
    if check.message:
        lines.append(f"  {check.message}")
    return lines


def to_markdown(result: SubmissionResult, manual: Manual | None = None) -> str:
    """What a student reads: each notebook, each check, its points and what to fix.

    Args:
        result: the graded submission.
        manual: the written answers' manual points (`grader.report.marking.states`); default: computed
            from the result alone (every answer still to be read).
    """
    manual = states(to_dict(result), {}) if manual is None else manual
    given, worth = manual_summary(manual)
    extra = f" (+ {points_text(given)} / {points_text(worth)} manual)" if worth else ""
    lines = [f"# {result.name}: {points_text(result.points)} / {points_text(result.max_points)} points{extra}", ""]
    lines.append(f"- Kernel: {_sandbox_line(result)}")
    weights = _weights_line(result)
    if weights:
        lines.append(f"- {weights}")
    if result.hidden_cases:
        source = f" (hidden seed from {result.hidden_seed_source})" if result.hidden_seed_source else ""
        lines.append(f"- Convolution cases: visible and hidden{source}")
    else:
        lines.append("- Convolution cases: visible only (self-check; grading adds hidden cases)")
    if result.grader_error:
        lines.append(f"- **The grader itself failed ({result.grader_error}); these points are incomplete.**")
    lines.append("")
    for notebook in result.notebooks:
        lines += _notebook_markdown(notebook, manual) + [""]
    pending = [state for state in manual.values() if state.status in ("to read", "changed")]
    if pending:
        lines += [
            f"📝 {len(pending)} written answer(s) are left for the instructor to read "
            f"(up to {points_text(sum(s.max_points for s in pending))} manual points).",
            "",
        ]
    return "\n".join(lines).rstrip() + "\n"


def to_junit(result: SubmissionResult) -> str:
    """JUnit XML: one test suite per notebook, one test case per check."""
    suites = ET.Element("testsuites", name=f"grade {result.name}")
    for notebook in result.notebooks:
        counts = {status: sum(c.status == status for c in notebook.checks) for status in _ICONS}
        suite = ET.SubElement(
            suites,
            "testsuite",
            name=notebook.name,
            tests=str(len(notebook.checks)),
            failures=str(counts["failed"]),
            errors=str(counts["error"]),
            skipped=str(counts["skipped"]),
            time=f"{notebook.execution.elapsed if notebook.execution else 0:.3f}",
        )
        for check in notebook.checks:
            case = ET.SubElement(
                suite,
                "testcase",
                classname=f"{result.name}.{Path(notebook.name).stem}",
                name=check.name,
            )
            ET.SubElement(case, "properties").extend(
                [
                    ET.Element("property", name="points", value=points_text(check.points)),
                    ET.Element("property", name="max_points", value=points_text(check.max_points)),
                ]
            )
            if check.status in ("failed", "error"):
                tag = "failure" if check.status == "failed" else "error"
                ET.SubElement(case, tag, message=check.message[:500]).text = check.message
            elif check.status == "skipped":
                ET.SubElement(case, "skipped", message=check.message[:500])
            if check.status == "passed" and check.message:
                ET.SubElement(case, "system-out").text = check.message
    ET.indent(suites)
    return ET.tostring(suites, encoding="unicode", xml_declaration=True) + "\n"


def write_reports(
    result: SubmissionResult,
    out_dir: Path,
    *,
    gradebook: Path | None | Literal[False] = None,
    extra: dict[str, Any] | None = None,
    store: dict[str, Any] | None = None,
) -> dict[str, Path]:
    """Write ``report.md``, ``junit.xml`` and then ``result.json`` into ``out_dir``; update the gradebook.

    Args:
        result: the graded submission.
        out_dir: the submission's report folder (executed notebooks go there too).
        gradebook: CSV to update; None means ``out_dir.parent / "gradebook.csv"``; False, none
            (`grader.classroom.batch` rebuilds its gradebook from the ``result.json`` files).
        extra: more top-level keys for ``result.json`` (a batch records what it graded).
        store: the recorded manual points (``OUT/manual.json``), shown in ``report.md``.

    Returns:
        The paths written, by kind.
    """
    paths = {"markdown": out_dir / "report.md", "junit": out_dir / "junit.xml", "json": out_dir / "result.json"}
    atomic_write(paths["markdown"], to_markdown(result, states(to_dict(result), store or {})))
    atomic_write(paths["junit"], to_junit(result))
    # result.json last: its presence means the submission's reports are complete (batches resume on it).
    atomic_write(paths["json"], to_json(result, extra=extra))
    if gradebook is not False:
        paths["gradebook"] = gradebook or out_dir.parent / "gradebook.csv"
        update_gradebook(paths["gradebook"], gradebook_row(result, store))
    return paths
