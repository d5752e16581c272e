"""The checks: each looks at one thing (the run, a probe answer, a saved model, the outputs)
and returns an `Outcome` with a message a student can act on. Points are not here: each
assignment in `grader.assignments` says which checks it has and what each is worth.

A check never raises for a broken submission. When what it needs is missing (a name the kernel
does not have, a kernel that died, a file not written), it explains *why* it is missing,
pointing at the cell responsible (`Context.explain_missing`).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from grader import convolution as conv
from grader.artifacts import ModelMetrics, compare_backbone, evaluate_saved_model, grading_weights, printed_metrics
from grader.probe import PROBE_TIMEOUT_S, ProbeAnswer, ask
from grader.results import Status

if TYPE_CHECKING:
    from grader.execute import NotebookRun

__all__ = ["PLACEHOLDERS", "Context", "Outcome"]

PLACEHOLDERS = ("<YOUR CODE>", "<YOUR ANSWER>")


@dataclass
class Outcome:
    """A check's verdict. ``fraction`` of the points is earned when passed (partial credit)."""

    status: Status
    message: str
    fraction: float = 1.0
    manual: bool = False


def passed(message: str) -> Outcome:
    return Outcome("passed", message)


def failed(message: str, fraction: float = 0.0) -> Outcome:
    return Outcome("failed", message, fraction)


def error(message: str) -> Outcome:
    return Outcome("error", message, 0.0)


@dataclass
class Context:
    """What the checks of one notebook share: the run, its live kernel, and cached answers.

    Attributes:
        run: the executed notebook and its kernel (None when none survived).
        workdir: the scratch folder the notebook ran in (saved models are read from there).
        hidden_seed: seed of the hidden convolution cases, or None for visible cases only.
        probe_timeout: seconds one question to the kernel may take (the student code it calls
            included).
    """

    run: NotebookRun
    workdir: Path
    hidden_seed: int | None = None
    probe_timeout: float = PROBE_TIMEOUT_S
    cache: dict[str, Any] = field(default_factory=dict)

    @property
    def notebook(self) -> Any:
        return self.run.result.notebook

    def ask(self, function: str, **inputs: Any) -> ProbeAnswer:
        """`grader.probe.ask` on this notebook's kernel."""
        return ask(self.run.kernel, function, inputs=inputs, timeout=self.probe_timeout)

    def metrics(self, artifact: str) -> ModelMetrics:
        """The saved model's measured metrics (evaluated once per notebook)."""
        key = f"metrics:{artifact}"
        if key not in self.cache:
            self.cache[key] = evaluate_saved_model(self.workdir / artifact)
        return self.cache[key]

    def defining_cell(self, name: str) -> int | None:
        """The code cell that defines ``name`` (``def``, ``class`` or assignment): the first one
        that failed (``model = Net()`` failing makes a later ``model = model.to(device)`` fail
        too), else the last one."""
        n = re.escape(name)
        pattern = re.compile(
            rf"^[ \t]*(?:def|class)[ \t]+{n}\b"  # def name / class name
            # name = ... / a, name = ... / name: int = ...
            rf"|^[ \t]*(?:[\w.\[\] \t]+,[ \t]*)*{n}[ \t]*(?:,[\w.\[\] \t,]*)?(?::[^=\n]*)?=(?!=)",
            re.MULTILINE,
        )
        found = [
            index
            for index, cell in enumerate(getattr(self.notebook, "cells", []))
            if cell.cell_type == "code" and pattern.search(cell.source)
        ]
        for index in found:
            run = self.run.result.cell(index)
            if run is not None and run.status != "ok":
                return index
        return found[-1] if found else None

    def explain_missing(self, name: str) -> str:
        """Why the kernel has no ``name``, pointing at the cell responsible."""
        result = self.run.result
        if self.notebook is None:
            return f"`{name}` could not be checked: {result.failure.message if result.failure else 'no notebook'}"
        index = self.defining_cell(name)
        if index is None:
            return (
                f"No cell defines `{name}`. The grader reads the names listed at the top of the "
                f"notebook; keep their spelling."
            )
        cell = result.cell(index)
        source = self.notebook.cells[index].source
        where = cell.describe() if cell else f"cell {index}"
        placeholder = next((p for p in PLACEHOLDERS if p in source), None)
        hint = f" It still has {placeholder}: write your solution there." if placeholder else ""
        failure = result.failure
        if cell is None or cell.status == "not_run":
            if failure is not None and failure.cell is not None and failure.cell < index:
                return f"`{name}` is defined in {where}, which never ran: {failure.message}.{hint}"
            return f"`{name}` is defined in {where}, which did not run.{hint}"
        if cell.status == "ok":
            if self.run.kernel is None and failure is not None:
                return f"`{name}` could not be checked: {failure.message}."
            return f"{where} ran but `{name}` is not defined afterwards (was it deleted or renamed later?)."
        what = {
            "error": f"raised {cell.error_name}: {cell.error_message}",
            "timeout": cell.error_message,
            "died": f"killed the kernel ({cell.error_message})",
        }[cell.status]
        return f"`{name}` is defined in {where}, which {what}.{hint}"

    def kernel_problem(self, answer: ProbeAnswer) -> str:
        """A message for a probe that got no answer."""
        if self.run.kernel is None:
            failure = self.run.result.failure
            return f"The grader could not ask the kernel: {failure.message if failure else 'it is not running'}."
        if "killed" in self.cache:
            return f"The grader could not ask the kernel: {self.cache['killed']}."
        return f"The grader's question to the kernel failed: {answer.error}."


Check = Callable[[Context], Outcome]


# ------------------------------------------------------------------------------- the run


def runs(ctx: Context, *, shown: int = 3) -> Outcome:
    """The notebook ran top to bottom without errors (informational)."""
    result = ctx.run.result
    if not result.readable:
        return failed(result.failure.message)
    problems = []
    unfilled = [
        str(cell.index)
        for cell in result.cells
        if any(p in ctx.notebook.cells[cell.index].source for p in PLACEHOLDERS)
    ]
    if unfilled:
        problems.append(f"Cells {', '.join(unfilled)} still have <YOUR CODE>: write your solution there.")
    errors = result.errors
    for cell in errors[:shown]:
        if cell.status == "error":
            problems.append(f"{cell.describe()} raised {cell.error_name}: {cell.error_message}.")
        else:
            problems.append(f"{cell.describe()}: {cell.error_message}.")
    if len(errors) > shown:
        more = len(errors) - shown
        problems.append(f"{more} more {'cell' if more == 1 else 'cells'} failed (see the executed notebook).")
    not_run = [cell for cell in result.cells if cell.status == "not_run"]
    if result.failure is not None and result.failure.kind == "kernel_start":
        problems.append(result.failure.message + ".")
    elif not_run and result.failure is not None and result.failure.kind == "notebook_timeout":
        problems.append(f"{len(not_run)} cells did not run: {result.failure.message}.")
    if result.rerun_cells:
        problems.append(
            f"The {result.rerun_cells} code cells before the fatal one were run again in a fresh "
            "kernel, so what they define is still graded."
        )
    if not problems:
        return passed(f"all {len(result.cells)} code cells ran without errors in {result.cells_elapsed:.1f} s")
    return failed(" ".join(problems))


# ------------------------------------------------------------------------------- probes


def convolution(ctx: Context, *, spec: conv.ConvSpec, visible: int = 10, hidden: int = 20) -> Outcome:
    """The student's function matches ``conv2d`` on every case (visible, plus hidden in grading)."""
    cases = conv.make_cases(spec, seed=conv.PUBLIC_SEED, count=visible)
    if ctx.hidden_seed is not None:
        cases += conv.make_cases(spec, seed=ctx.hidden_seed, count=hidden)
    answer = ctx.ask(
        "call_conv", name=spec.name, cases=[case.as_inputs() for case in cases], numpy_inputs=spec.numpy_inputs
    )
    if not answer.ok:
        if ctx.run.kernel is not None and not ctx.run.kernel.is_alive():
            # The student's function killed the kernel: that is its failure. The other checks
            # get a fresh kernel that has run the notebook again.
            if not ctx.run.revive():
                ctx.cache["killed"] = f"calling `{spec.name}` killed the kernel ({answer.error})"
            return failed(f"Calling `{spec.name}` on the test cases killed the kernel: {answer.error}.")
        if answer.error.startswith("no answer within"):
            return failed(f"`{spec.name}` did not return: {answer.error}. Is there an endless loop?")
        return error(ctx.kernel_problem(answer))
    if not answer.value["defined"]:
        return failed(ctx.explain_missing(spec.name))
    if len(answer.value["results"]) != len(cases):
        return failed(f"`{spec.name}` is a {answer.value['type']}, not a function.")
    problems = [conv.compare(case, output) for case, output in zip(cases, answer.value["results"])]
    bad = [problem is not None for problem in problems]
    which = "visible and hidden" if ctx.hidden_seed is not None else "visible"
    if not any(bad):
        return passed(f"`{spec.name}` matches torch.nn.functional.conv2d on all {len(cases)} {which} cases.")
    first = bad.index(True)
    message = (
        f"`{spec.name}` is wrong on {sum(bad)} of {len(cases)} {which} cases. First failing case: "
        f"{cases[first].describe()}: {problems[first]}. {conv.diagnose(cases, bad)}"
    )
    return failed(message.strip())


def parameter_counts(ctx: Context, *, model: str, counts: dict[str, str]) -> Outcome:
    """The notebook's count variables equal the model's real counts.

    Args:
        model: name of the model in the kernel.
        counts: variable name -> ``"total"``, ``"trainable"`` or ``"frozen"``.
    """
    answer = ctx.ask("model_facts", model_name=model, count_names=list(counts))
    if not answer.ok:
        return error(ctx.kernel_problem(answer))
    facts = answer.value["model"]
    if not facts.get("defined"):
        return failed(ctx.explain_missing(model))
    if not facts.get("is_module"):
        return failed(f"`{model}` is a {facts['type']}, expected a torch.nn.Module.")
    problems, good = [], []
    for name, kind in counts.items():
        given = answer.value["counts"][name]
        real = facts[kind]
        if not given["defined"]:
            problems.append(ctx.explain_missing(name))
        elif given["value"] is None:
            problems.append(f"`{name}` is {given['repr']} ({given['type']}), expected an integer")
        elif given["value"] != real:
            hint = ""
            others = [k for k in ("total", "trainable", "frozen") if k != kind and facts[k] == given["value"]]
            if others:
                hint = f" (that is the {others[0]} count)"
            cell = ctx.defining_cell(name)
            if cell is not None and re.search(
                rf"^\s*{re.escape(name)}\s*=\s*[\d_,.\s]+$", ctx.notebook.cells[cell].source, re.MULTILINE
            ):
                hint += "; compute it from the model rather than typing a number"
            problems.append(f"`{name}` is {given['value']:,} but `{model}` has {real:,} {kind} parameters{hint}")
        else:
            good.append(f"`{name}` = {real:,}")
    if problems:
        return failed("; ".join(problems) + ".")
    return passed(", ".join(good) + f" ({kind_summary(facts)}).")


def kind_summary(facts: dict[str, Any]) -> str:
    return f"total {facts['total']:,}, trainable {facts['trainable']:,}, frozen {facts['frozen']:,}"


def _head_facts(ctx: Context, *, model: str, head_name: str) -> tuple[dict[str, Any], Outcome | None]:
    """The kernel's facts about ``model`` and its head, or the outcome when there is no module."""
    answer = ctx.ask("head_facts", model_name=model, head_name=head_name)
    if not answer.ok:
        return {}, error(ctx.kernel_problem(answer))
    facts = answer.value
    if not facts["model"].get("defined"):
        return facts, failed(ctx.explain_missing(model))
    if not facts["model"].get("is_module"):
        return facts, failed(f"`{model}` is a {facts['model']['type']}, expected a torch.nn.Module.")
    return facts, None


def head(ctx: Context, *, model: str, head_name: str = "fc", classes: int = 10) -> Outcome:
    """The final layer is a trainable ``nn.Linear`` with ``classes`` outputs."""
    facts, problem = _head_facts(ctx, model=model, head_name=head_name)
    if problem is not None:
        return problem
    layer = facts["head"]
    if layer is None:
        return failed(
            f"`{model}` has no `{head_name}` and no nn.Linear layer: replace `{model}.{head_name}` "
            f"with nn.Linear(512, {classes})."
        )
    if not layer["is_linear"]:
        return failed(f"`{model}.{layer['name']}` is a {layer['type']}, expected nn.Linear(..., {classes}).")
    if layer["out_features"] != classes:
        return failed(
            f"`{model}.{layer['name']}` has {layer['out_features']} outputs; Fashion-MNIST has {classes} classes."
        )
    if facts["frozen_in_head"]:
        return failed(
            f"`{model}.{layer['name']}` is frozen ({', '.join(facts['frozen_in_head'])} has requires_grad=False): "
            "the new head is the part that must train."
        )
    return passed(f"`{model}.{layer['name']}` is a trainable nn.Linear({layer['in_features']}, {classes}).")


def frozen(ctx: Context, *, model: str, head_name: str = "fc") -> Outcome:
    """Every parameter outside the head has ``requires_grad=False``."""
    facts, problem = _head_facts(ctx, model=model, head_name=head_name)
    if problem is not None:
        return problem
    trainable = facts["trainable_outside_head"]
    if trainable:
        shown = ", ".join(trainable[:3]) + (f" and {len(trainable) - 3} more" if len(trainable) > 3 else "")
        return failed(
            f"{len(trainable)} parameter tensors outside the head still train ({shown}): set "
            "requires_grad=False on every backbone parameter before creating the optimizer."
        )
    return passed("every parameter outside the head is frozen (requires_grad=False).")


def scheduler(ctx: Context, *, name: str = "scheduler") -> Outcome:
    """``name`` chains `src.optim.WarmupScheduler` with ``MultiStepLR``."""
    answer = ctx.ask("scheduler_facts", name=name)
    if not answer.ok:
        return error(ctx.kernel_problem(answer))
    facts = answer.value
    if not facts["defined"]:
        return failed(ctx.explain_missing(name))
    if not facts["is_scheduler"]:
        return failed(
            f"`{name}` is {facts['repr']} ({facts['type']}), not a learning-rate scheduler: chain "
            "src.optim.WarmupScheduler and MultiStepLR with torch.optim.lr_scheduler.ChainedScheduler."
        )
    missing = []
    if not facts["is_chain"]:
        missing.append("a ChainedScheduler (or SequentialLR) around both schedulers")
    if not facts["has_warmup"]:
        missing.append("src.optim.WarmupScheduler")
    if not facts["has_multistep"]:
        missing.append("torch.optim.lr_scheduler.MultiStepLR")
    if missing:
        parts = ", ".join(facts["parts"]) or "nothing"
        return failed(f"`{name}` is a {facts['type']} of [{parts}]; it needs {', '.join(missing)}.")
    return passed(f"`{name}` is a {_short(facts['type'])} of {', '.join(_short(part) for part in facts['parts'])}.")


def _short(type_name: str) -> str:
    return type_name.rsplit(".", 1)[-1]


def transform(ctx: Context, *, names: tuple[str, ...], channels: int = 3) -> Outcome:
    """The notebook's transform turns a grey image into ``channels`` channels."""
    answer = ctx.ask("transform_facts", names=list(names))
    if not answer.ok:
        return error(ctx.kernel_problem(answer))
    facts = answer.value
    if facts["name"] is None:
        return failed(
            f"No transform found: the grader looks for {', '.join(f'`{n}`' for n in names)} or a "
            "src.data.ImageNetInput in the notebook."
        )
    if facts["shape"] is None:
        return failed(f"`{facts['name']}` failed on a (1, 28, 28) grey image: {facts['error']}.")
    shape = facts["shape"]
    if len(shape) < 3 or shape[-3] != channels:
        return failed(
            f"`{facts['name']}` turns a (1, 28, 28) image into {tuple(shape)}; ResNet-18 needs {channels} channels."
        )
    return passed(f"`{facts['name']}` turns a (1, 28, 28) grey image into {tuple(shape)}.")


# ------------------------------------------------------------------------------- saved models


def metric(ctx: Context, *, artifact: str, name: str, threshold: float) -> Outcome:
    """The saved model reaches ``threshold`` on the test set (measured by the grader)."""
    label = {"acc": "accuracy", "f1": "macro-F1"}[name]
    measured = ctx.metrics(artifact)
    if measured.error:
        return failed(_artifact_hint(ctx, artifact, measured.error))
    value = getattr(measured, name)
    if value >= threshold:
        return passed(f"the saved model's test {label} is {value:.4f} (needed {threshold:g}).")
    return failed(
        f"the saved model's test {label} is {value:.4f}, below {threshold:g}. The grader measures "
        f"{artifact} itself: save the model after training it."
    )


def _artifact_hint(ctx: Context, artifact: str, problem: str) -> str:
    source = "\n".join(c.source for c in getattr(ctx.notebook, "cells", []) if c.cell_type == "code")
    if artifact not in source:
        return f'{problem}: save your trained model with src.export.save_model(model, "{artifact}").'
    return f"{problem}."


def printed_matches(
    ctx: Context, *, artifact: str, result_name: str = "test_result", tolerance: float = 0.005
) -> Outcome:
    """The notebook's own test metrics agree with what the grader measured (0 points; a warning).

    The notebook's numbers are read from ``result_name`` in the kernel (``evaluate_loader``'s
    dict), else parsed from what it printed.
    """
    measured = ctx.metrics(artifact)
    if measured.error:
        return Outcome("skipped", "no saved model to compare with")
    answer = ctx.ask("metrics_facts", name=result_name)
    if answer.ok and answer.value.get("defined"):
        claimed = {k: answer.value[k] for k in ("acc", "f1") if answer.value.get(k) is not None}
        source = f"`{result_name}`"
    else:
        claimed = printed_metrics(ctx.notebook) if ctx.notebook is not None else {}
        source = "the notebook's printed output"
    if not claimed:
        return Outcome("skipped", f"the notebook reports no test accuracy or F1 (`{result_name}`)")
    mismatches, agreed = [], []
    for name, value in claimed.items():
        real = getattr(measured, name)
        label = {"acc": "accuracy", "f1": "F1"}[name]
        if abs(real - value) > tolerance:
            mismatches.append(f"{label} {value:.4f} in {source}, but the saved model scores {real:.4f}")
        else:
            agreed.append(f"{label} {value:.4f}")
    if mismatches:
        return failed("; ".join(mismatches) + f". Is {artifact} the model you evaluated (saved after training)?")
    return passed(f"{', '.join(agreed)} in {source} agree with the grader's measurement.")


def backbone_pretrained(
    ctx: Context, *, artifact: str, head_name: str = "fc", weights_name: str = "weights_info"
) -> Outcome:
    """The saved model's frozen parameters equal the pretrained checkpoint's."""
    measured = ctx.metrics(artifact)
    if measured.error:
        return failed(_artifact_hint(ctx, artifact, measured.error))
    comparison = compare_backbone(measured.state_dict, head=head_name)
    if comparison["error"]:
        return error(f"the grading machine has no ResNet-18 weights to compare with: {comparison['error']}")
    _, info = grading_weights()
    used = ctx.ask("weights_facts", name=weights_name)
    note = ""
    if used.ok and used.value.get("defined") and used.value.get("sha256") and used.value["sha256"] != info["sha256"]:
        note = (
            f" The notebook's `{weights_name}` reports weights with sha256 {used.value['sha256'][:12]}..., "
            f"the grader has {info['sha256'][:12]}...: load them with src.models.load_resnet18()."
        )
    if comparison["compared"] == 0:
        return failed(
            f"{artifact} has none of ResNet-18's layers (keys model.conv1.weight, ...): is it a ResNet-18?{note}"
        )
    changed, missing = comparison["changed"], comparison["missing"]
    if changed or missing:
        parts = []
        if changed:
            name, delta = max(changed, key=lambda item: item[1])
            parts.append(
                f"{len(changed)} of {comparison['compared']} backbone tensors differ from the pretrained "
                f"weights (largest change {delta:.3g} in {name})"
            )
        if missing:
            parts.append(f"{len(missing)} pretrained tensors are missing (e.g. {missing[0]})")
        return failed(
            "; ".join(parts) + ": start from src.models.load_resnet18() and freeze the backbone "
            "(requires_grad=False) before training." + note
        )
    kind = "official ImageNet" if info["official"] else "stand-in (NOT official)"
    return passed(
        f"all {comparison['compared']} backbone tensors equal the {kind} pretrained weights "
        f"(sha256 {info['sha256'][:12]}...).{note}"
    )


# ------------------------------------------------------------------------------- presence


FIGURES = {
    "loss": (re.compile(r"plot_history|loss", re.IGNORECASE), "plot of the loss by epoch", "src.plots.plot_history"),
    "confusion": (re.compile(r"confusion", re.IGNORECASE), "confusion matrix", "src.plots.plot_confusion_matrix"),
    "grid": (
        re.compile(r"plot_predictions|imshow|grid|show_images|predictions", re.IGNORECASE),
        "grid of test images with true and predicted class",
        "src.plots.plot_predictions",
    ),
}


def figure(ctx: Context, *, kind: str) -> Outcome:
    """An output of the executed notebook shows ``kind`` (a loss plot, confusion matrix, image grid)."""
    pattern, what, helper = FIGURES[kind]
    if ctx.notebook is None:
        return failed(f"no notebook to look for the {what} in.")
    images = 0
    for index, cell in enumerate(ctx.notebook.cells):
        if cell.cell_type != "code":
            continue
        has_image = any("image/png" in output.get("data", {}) for output in cell.outputs)
        images += has_image
        if not pattern.search(cell.source):
            continue
        if has_image:
            return passed(f"the {what} is shown by cell {index}.")
        if kind == "confusion" and any(_looks_like_matrix(_output_text(o)) for o in cell.outputs):
            return passed(f"the {what} is printed by cell {index}.")
    found = f" ({images} figures found, none in a cell that draws it)" if images else ""
    return failed(
        f"the executed notebook shows no {what}{found}: draw it ({helper}) in a cell that displays the figure."
    )


def _output_text(output: Any) -> str:
    text = output.get("text") or output.get("data", {}).get("text/plain") or ""
    return "".join(text) if isinstance(text, list) else text


def _looks_like_matrix(text: str, size: int = 5) -> bool:
    """At least ``size`` lines of at least ``size`` integers: a printed confusion matrix."""
    rows = [line for line in text.splitlines() if len(re.findall(r"\b\d+\b", line)) >= size]
    return len(rows) >= size


ANSWER_HEADING = r"размышл|сравн|compar"  # the heading of the written comparison, when no template says


def written_answer(ctx: Context, *, template: Path | None, keywords: str = ANSWER_HEADING) -> Outcome:
    """The written comparison is there; a person reads it (no automatic points).

    The answer is whatever follows the question's heading: Markdown cells, and the outputs of
    code cells (the reference solution builds its comparison table in code). The heading is the
    cell before the template's last placeholder cell, else a Markdown heading matching
    ``keywords``.
    """
    if ctx.notebook is None:
        return Outcome("skipped", "no notebook", 0.0, manual=True)
    cells = ctx.notebook.cells
    start = _question_cell(cells, template, re.compile(keywords, re.IGNORECASE))
    if start is None:
        return failed("the section with the written comparison of the two models was not found; keep its heading.")
    parts = []
    for cell in cells[start + 1 :]:
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
    words = text.split()
    if len(words) < 10:
        return failed(
            f"the written comparison of the two models (after cell {start}) is empty or too short: "
            "write it there, as text or as the output of your code."
        )
    excerpt = " ".join(words)
    excerpt = excerpt if len(excerpt) <= 300 else excerpt[:297] + "..."
    return Outcome(
        "skipped", f"for the instructor to read ({len(words)} words after cell {start}): {excerpt}", 0.0, manual=True
    )


def _question_cell(cells: list[Any], template: Path | None, keywords: re.Pattern[str]) -> int | None:
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
