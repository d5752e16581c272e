"""The checks: each decides one thing from evidence the grader owns, and returns an `Outcome` with
a message a student can act on. Points are not here: each assignment in `grader.assignments` says
which checks it has and what each is worth.

Evidence, not claims (see ``docs/threat-model.md``). The student's kernel can forge anything it
computes, so a verdict comes from what the grader computed outside it: the convolutions re-created
and run in a confined worker (`grader.evidence.convolution`), the saved model verified in another
(`grader.evidence.artifacts`), the figures compared with the grader's own numbers (`grader.evidence.figures`), the
schedule replayed here (`grader.evidence.schedule`). What the kernel reports (``n_params``, which
parameters are frozen, the Trainer's history) is the notebook's claim: it is checked against that
evidence, and it words the messages.

A check never raises for a broken submission. When what it needs is missing (a name the notebook
does not define, a kernel that died, a file not written), it explains *why* it is missing,
pointing at the cell responsible (`Context.explain_missing`).
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from grader.evidence import convolution as conv
from grader.evidence import figures as shown
from grader.evidence.answers import ANSWER_HEADING, read_written_answer
from grader.evidence.artifacts import ModelEvidence, grading_weights, printed_metrics, test_set, verify_saved_model
from grader.evidence.schedule import scheduler_verdict
from grader.evidence.training import Tie, tie_trainers
from grader.markers import CODE_PLACEHOLDER, PLACEHOLDERS
from grader.options import Limits
from grader.results import SandboxInfo, Status
from grader.run.kernel import PROBE_TIMEOUT_S, ProbeAnswer

if TYPE_CHECKING:
    from grader.run.execute import NotebookRun

__all__ = ["Context", "Outcome"]

HEADS = ("fc.", "fc.1.")  # nn.Linear(512, 10), or nn.Sequential(nn.Dropout(p), nn.Linear(512, 10))


@dataclass
class Outcome:
    """A check's verdict. ``fraction`` of the points is earned when passed (partial credit)."""

    status: Status
    message: str
    fraction: float = 1.0
    manual: bool = False
    answer: str = ""  # a written answer's text, for the instructor (`grader.report.marking`)


def passed(message: str) -> Outcome:
    return Outcome("passed", message)


def failed(message: str, fraction: float = 0.0) -> Outcome:
    return Outcome("failed", message, fraction)


def error(message: str) -> Outcome:
    return Outcome("error", message, 0.0)


@dataclass
class Context:
    """What the checks of one notebook share: the run, its live kernel, and cached evidence.

    Attributes:
        run: the executed notebook and its kernel (None when none survived).
        workdir: the scratch folder the notebook ran in (saved models are read from there).
        hidden_seed: seed of the hidden convolution cases, or None for visible cases only.
        probe_timeout: seconds one question to the kernel may take.
        sandbox: confinement for the grader's verification workers (as for the kernel).
        limits: the notebook's limits (the workers get its memory).
    """

    run: NotebookRun
    workdir: Path
    hidden_seed: int | None = None
    probe_timeout: float = PROBE_TIMEOUT_S
    sandbox: SandboxInfo = field(default_factory=lambda: SandboxInfo(False, "not given"))
    limits: Limits = field(default_factory=Limits)
    cache: dict[str, Any] = field(default_factory=dict)

    @property
    def notebook(self) -> Any:
        return self.run.result.notebook

    def ask(self, function: str, **inputs: Any) -> ProbeAnswer:
        """A probe of the notebook's kernel (`grader.run.kernel_side`): the notebook's claims.

        Asked once per notebook: several checks read the same answer (``head_facts``), and a
        probe that times out should cost its timeout once, not once per check.
        """
        if self.run.kernel is None:
            return ProbeAnswer(False, error="no kernel survived the run")
        key = f"ask:{function}:{sorted(inputs.items())!r}"
        if key not in self.cache:
            self.cache[key] = self.run.kernel.ask(function, timeout=self.probe_timeout, **inputs)
        return self.cache[key]

    def evidence(self, artifact: str, kind: str) -> ModelEvidence:
        """The saved model, verified once per notebook in a confined worker (for the CNN task,
        also on the validation images each of the notebook's Trainers reports)."""
        key = f"model:{artifact}"
        if key not in self.cache:
            validation = [t.get("validation") or {} for t in self.trainers()] if kind == "cnn" else None
            self.cache[key] = verify_saved_model(
                self.workdir / artifact, kind=kind, sandbox=self.sandbox, limits=self.limits, validation=validation
            )
        return self.cache[key]

    def trainers(self) -> list[dict[str, Any]]:
        """The notebook's `src.engine.Trainer` objects as its kernel describes them (claims:
        `grader.run.kernel_side.training_facts`); [] when the kernel cannot answer."""
        answer = self.ask("training_facts")
        if not answer.ok or not isinstance(answer.value, dict):
            return []
        return [t for t in answer.value.get("trainers") or [] if isinstance(t, dict)]

    def convolutions(self) -> tuple[dict[str, list[conv.ConvCase]], dict[str, conv.ConvAnswer]]:
        """The three functions re-created and run on their cases in one confined worker, once."""
        if "conv" not in self.cache:
            cases = {spec.name: conv.cases_for(spec, self.hidden_seed) for spec in conv.CONV_SPECS}
            ran = {cell.index for cell in self.run.result.cells if cell.status != "not_run"}
            worker_limits = Limits(memory_gib=min(2.0, self.limits.memory_gib), processes=64, disk_gib=0.5)
            answers = conv.verify_convolutions(
                self.notebook, ran, cases, list(conv.CONV_SPECS), sandbox=self.sandbox, limits=worker_limits
            )
            self.cache["conv"] = (cases, answers)
        return self.cache["conv"]

    def defining_cell(self, name: str) -> int | None:
        """The code cell that defines ``name`` (``def``, ``class`` or assignment): the first one
        that failed (``model = Net()`` failing makes a later ``model = model.to(device)`` fail
        too), else the last one."""
        n = re.escape(name)
        pattern = re.compile(
            rf"^[ \t]*(?:def|class)[ \t]+{n}\b"  # def name / class name
            # name = ... / a, name = ... / name: int = ...
            # each target before `name` ends at its comma, blanks only around it: one way to match
            # a line, so a long line of commas costs linear time (nested blanks made it exponential)
            rf"|^[ \t]*(?:[\w.\[\]]+[ \t]*,[ \t]*)*{n}[ \t]*(?:,[\w.\[\] \t,]*)?(?::[^=\n]*)?=(?!=)",
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
        """Why the notebook has no ``name``, pointing at the cell responsible."""
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
        return f"The grader's question to the kernel failed: {answer.error}."

    def artifact_problem(self, artifact: str, evidence: ModelEvidence) -> Outcome:
        """The outcome for a saved model the grader could not measure."""
        if evidence.grader_fault:
            return error(f"{evidence.error}; tell your instructor.")
        source = "\n".join(c.source for c in getattr(self.notebook, "cells", []) if c.cell_type == "code")
        if artifact not in source:
            return failed(f'{evidence.error}: save your trained model with src.export.save_model(model, "{artifact}").')
        return failed(f"{evidence.error}.")


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
        problems.append(f"Cells {', '.join(unfilled)} still have {CODE_PLACEHOLDER}: write your solution there.")
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
        return passed(f"all {len(result.cells)} code cells ran without errors")
    return failed(" ".join(problems))


# ------------------------------------------------------------------------------- convolutions


def convolution(ctx: Context, *, spec: conv.ConvSpec) -> Outcome:
    """The student's own function, re-created from the notebook and run by the grader where no
    library convolution exists, matches ``conv2d`` on every case (and, where the task asks for
    ``unfold``, computes every window at once)."""
    cases, answers = ctx.convolutions()
    cases, answer = cases[spec.name], answers[spec.name]
    name = spec.name
    if answer.cell is None:
        return failed(f"{answer.problem}." if answer.problem else ctx.explain_missing(name))
    if answer.grader_fault:
        return error(f"`{name}` could not be checked: {answer.problem}; tell your instructor.")
    reached = answer.findings + [f for f in answer.forbidden if f not in answer.findings]
    hatches = [f for f in reached if "can hide" in f or "put back" in f]
    libraries = [f for f in reached if f not in hatches]
    blocked = any(isinstance(o, str) and conv.BLOCKED_MESSAGE in o for o in answer.outputs)
    if libraries or blocked:
        used = ", ".join(libraries[:3]) or "a library convolution"
        return failed(
            f"`{name}` uses {used}: the task is to compute the convolution yourself (loops over the output, "
            "or unfold and a matrix product); a library convolution gets no points, and the grader's runner has none."
        )
    if hatches:
        return failed(
            f"`{name}` uses {', '.join(h.split(' (')[0] for h in hatches[:3])}, which a convolution does not "
            "need and which could hide a library call from the grader: write it without."
        )
    if answer.problem:
        return failed(f"`{name}` (cell {answer.cell}): {answer.problem}.")
    problems = [conv.compare(case, output) for case, output in zip(cases, answer.outputs)]
    problems += ["no answer"] * (len(cases) - len(problems))
    bad = [problem is not None for problem in problems]
    large = next((case for case in cases if case.large), None)
    if spec.needs_windows and large is not None and not answer.windows:
        return failed(
            f"`{name}` needed more than {conv.LARGE_CASE_CPU_S:g} CPU-s on the large case ({large.describe()}), "
            "which one matrix product over the windows answers in a tenth of that: build every window at once "
            "with unfold (im2col) and multiply once, without a Python loop over the output positions."
        )
    which = "visible and hidden" if ctx.hidden_seed is not None else "visible"
    if not any(bad):
        return passed(
            f"`{name}` (cell {answer.cell}), run by the grader outside your kernel, matches "
            f"torch.nn.functional.conv2d on all {len(cases)} {which} cases."
        )
    first = bad.index(True)
    kind = "hidden" if cases[first].hidden else "visible"
    message = (
        f"`{name}` is wrong on {sum(bad)} of {len(cases)} {which} cases. First failing case ({kind}): "
        f"{cases[first].describe()}: {problems[first]}. {conv.diagnose(cases, bad)}"
    )
    return failed(message.strip())


# ------------------------------------------------------------------------------- saved models


def _claims(ctx: Context, model: str, names: list[str], *, with_digests: bool = False) -> tuple[dict[str, Any], Outcome | None]:
    answer = ctx.ask("model_facts", model_name=model, count_names=names, with_digests=with_digests)
    if not answer.ok:
        return {}, error(ctx.kernel_problem(answer))
    return answer.value, None


def _claimed_int(ctx: Context, claims: dict[str, Any], name: str) -> tuple[int | None, str]:
    given = claims["counts"][name]
    if not given["defined"]:
        return None, ctx.explain_missing(name)
    if given["value"] is None:
        return None, f"`{name}` is {given['repr']} ({given['type']}), expected an integer"
    return given["value"], ""


def _typed(ctx: Context, name: str) -> str:
    cell = ctx.defining_cell(name)
    if cell is not None and re.search(rf"^\s*{re.escape(name)}\s*=\s*[\d_,.\s]+$", ctx.notebook.cells[cell].source, re.MULTILINE):
        return "; compute it from the model rather than typing a number"
    return ""


def parameter_count(ctx: Context, *, artifact: str, model: str = "model", name: str = "n_params") -> Outcome:
    """``n_params`` equals the parameter count of the saved model (counted by the grader)."""
    evidence = ctx.evidence(artifact, "cnn")
    if evidence.error:
        outcome = ctx.artifact_problem(artifact, evidence)
        outcome.message = f"the grader counts the parameters of {artifact}, and " + outcome.message
        return outcome
    claims, problem = _claims(ctx, model, [name])
    if problem is not None:
        return problem
    value, why = _claimed_int(ctx, claims, name)
    if value is None:
        return failed(why + ".")
    real = evidence.parameters
    if value != real:
        facts = claims["model"]
        hint = ""
        if facts.get("is_module") and value == facts.get("trainable") != real:
            hint = " (that is the trainable count of `model`)"
        return failed(f"`{name}` is {value:,} but {artifact} has {real:,} parameters{hint}{_typed(ctx, name)}.")
    return passed(f"`{name}` = {real:,}, the parameter count of {artifact} (counted by the grader).")


def training_tie(ctx: Context, artifact: str, kind: str) -> Tie:
    """The notebook's Trainers tied to the saved file (`grader.evidence.training`), once per notebook."""
    key = f"tie:{artifact}"
    if key not in ctx.cache:
        evidence = ctx.evidence(artifact, kind)
        ctx.cache[key] = tie_trainers(ctx.trainers(), evidence, artifact, whole=kind == "cnn") if not evidence.error else Tie()
    return ctx.cache[key]


def _cnn_problem(ctx: Context, artifact: str, evidence: ModelEvidence, threshold: float, model: str = "model") -> str:
    """Why the saved file is not the notebook's trained CNN ("" when it is)."""
    spatial = [c for c in evidence.convolutions if len(c.get("weight", [])) == 4 and c["weight"][2] * c["weight"][3] > 1]
    if not spatial:
        return f"{artifact} has no convolution with a kernel larger than 1x1: Task 1 asks for a convolutional network"
    ablated = evidence.without_convolutions.get("acc")
    if ablated is None or ablated >= threshold:
        measured = f"it still scores {ablated:.4f}" if ablated is not None else "the grader could not measure it"
        return (
            f"the answers of {artifact} do not come from its convolutions: with the weights of all "
            f"{len(spatial)} convolutions zeroed, {measured} on the test set (a CNN falls to about 0.1). Task 1 "
            "asks for a network whose answers are computed by its convolutional layers"
        )
    if "same_as_model" not in ctx.cache:
        ctx.cache["same_as_model"] = _same_model(ctx, artifact, evidence, model)
    return ctx.cache["same_as_model"]


def _same_model(ctx: Context, artifact: str, evidence: ModelEvidence, model: str) -> str:
    """"" when the file is `model`, or the model a Trainer of the notebook trained (re-creating
    `model` after saving is fine); else why not."""
    if training_tie(ctx, artifact, "cnn").trained:
        return ""
    claims, problem = _claims(ctx, model, [], with_digests=True)
    mine = claims.get("model", {}).get("digests") if problem is None else None
    if not isinstance(mine, dict):
        return f"the grader could not read `{model}` from the notebook to compare it with {artifact}"
    if mine == evidence.digests:
        return ""
    different = sorted(set(mine) ^ set(evidence.digests)) or sorted(k for k in mine if mine[k] != evidence.digests.get(k))
    return (
        f"the weights in {artifact} are neither those of `{model}` (first difference: {different[0]}) nor those "
        "of a model a Trainer of the notebook trained: save the model you trained, after training"
    )


def _transfer_problem(evidence: ModelEvidence, artifact: str) -> str:
    transfer = evidence.transfer
    if transfer.get("problem"):
        return f"{artifact}: {transfer['problem']}"
    if not transfer.get("is_resnet18"):
        return f"{artifact} is not a ResNet-18 with a new 10-class head"
    return ""


def _unmeasured(ctx: Context, artifact: str, evidence: ModelEvidence) -> Outcome | None:
    """The outcome when the grader has no test predictions for the file (None when it has)."""
    if evidence.error:
        return ctx.artifact_problem(artifact, evidence)
    if evidence.acc is None or evidence.confusion_matrix is None:
        return failed((_transfer_problem(evidence, artifact) or f"{artifact} could not be evaluated") + ".")
    return None


def metric(ctx: Context, *, artifact: str, name: str, threshold: float, kind: str) -> Outcome:
    """The saved model (the task's model) reaches ``threshold`` on the test set (measured by the
    grader: Task 1's file's own graph, Task 2's weights in the grader's own ResNet-18)."""
    label = {"acc": "accuracy", "f1": "macro-F1"}[name]
    evidence = ctx.evidence(artifact, kind)
    missing = _unmeasured(ctx, artifact, evidence)
    if missing is not None:
        return missing
    problem = _cnn_problem(ctx, artifact, evidence, threshold) if kind == "cnn" else _transfer_problem(evidence, artifact)
    value = getattr(evidence, name)
    if problem:
        return failed(f"{problem}. (Its test {label}, {value:.4f}, earns nothing until it is.)")
    if value >= threshold:
        how = "measured by the grader" if kind == "cnn" else "measured by the grader's own ResNet-18 with the file's weights"
        return passed(f"the saved model's test {label} is {value:.4f} (needed {threshold:g}), {how}.")
    return failed(
        f"the saved model's test {label} is {value:.4f}, below {threshold:g}. The grader measures "
        f"{artifact} itself: save the model after training it."
    )


def printed_matches(
    ctx: Context, *, artifact: str, kind: str, result_name: str = "test_result", tolerance: float = 0.005
) -> Outcome:
    """The notebook's own test metrics, in ``test_result`` and in its printed output, agree with
    what the grader measured (0 points; a warning)."""
    evidence = ctx.evidence(artifact, kind)
    if evidence.error or evidence.acc is None:
        return Outcome("skipped", "no saved model to compare with")
    claimed: list[tuple[str, str, float]] = []
    answer = ctx.ask("metrics_facts", name=result_name)
    if answer.ok and answer.value.get("defined"):
        claimed += [(f"`{result_name}`", k, answer.value[k]) for k in ("acc", "f1") if answer.value.get(k) is not None]
    printed = printed_metrics(ctx.notebook) if ctx.notebook is not None else {}
    claimed += [("the printed output", k, v) for k, v in printed.items()]
    if not claimed:
        return Outcome("skipped", f"the notebook reports no test accuracy or F1 (`{result_name}` or printed)")
    mismatches, agreed = [], []
    for source, key, value in claimed:
        real = getattr(evidence, key)
        label = {"acc": "accuracy", "f1": "F1"}[key]
        if abs(real - value) > tolerance:
            mismatches.append(f"{label} {value:.4f} in {source}, but the saved model scores {real:.4f}")
        else:
            agreed.append(f"{label} {value:.4f} in {source}")
    if mismatches:
        return failed("; ".join(mismatches) + f". Is {artifact} the model you evaluated (saved after training)?")
    return passed(f"{', '.join(agreed)} agree with the grader's measurement.")


def head(ctx: Context, *, artifact: str, model: str = "model", classes: int = 10) -> Outcome:
    """The saved model's final layer is a new ``Linear(512, classes)``, trainable in the notebook."""
    evidence = ctx.evidence(artifact, "transfer")
    if evidence.error:
        return ctx.artifact_problem(artifact, evidence)
    shapes = evidence.state_shapes
    prefix = _head_prefix(evidence)
    weight, bias = shapes.get(f"model.{prefix}weight"), shapes.get(f"model.{prefix}bias")
    if weight != [classes, 512] or bias != [classes]:
        return failed(
            f"the final layer in {artifact} is {weight or 'missing'} (weight shape), expected nn.Linear(512, {classes}): "
            f"replace `{model}.fc` with nn.Linear(512, {classes}) (a Dropout before it is fine)."
        )
    answer = ctx.ask("head_facts", model_name=model, head_name="fc")
    if answer.ok and answer.value.get("frozen_in_head"):
        return failed(
            f"`{model}.fc` is frozen ({', '.join(answer.value['frozen_in_head'])} has requires_grad=False): "
            "the new head is the part that must train."
        )
    after = " after a Dropout" if prefix != "fc." else ""
    return passed(f"{artifact} ends with a new nn.Linear(512, {classes}){after}.")


def _head_prefix(evidence: ModelEvidence) -> str:
    """``fc.`` (a Linear head) or ``fc.1.`` (a Linear after a Dropout), as the file holds it."""
    prefix = evidence.transfer.get("head_prefix")
    if prefix in HEADS:
        return prefix
    return next((p for p in HEADS if f"model.{p}weight" in evidence.state_shapes), HEADS[0])


def frozen(ctx: Context, *, artifact: str, model: str = "model") -> Outcome:
    """Every parameter outside the head is frozen: ``requires_grad=False`` in the notebook, and
    unchanged from the pretrained weights in the saved file."""
    answer = ctx.ask("head_facts", model_name=model, head_name="fc")
    if answer.ok and answer.value["model"].get("is_module"):
        trainable = answer.value["trainable_outside_head"]
        if trainable:
            listed = ", ".join(trainable[:3]) + (f" and {len(trainable) - 3} more" if len(trainable) > 3 else "")
            return failed(
                f"{len(trainable)} parameter tensors outside the head still train ({listed}): set "
                "requires_grad=False on every backbone parameter before creating the optimizer."
            )
    evidence = ctx.evidence(artifact, "transfer")
    if evidence.error:
        return ctx.artifact_problem(artifact, evidence)
    backbone = evidence.transfer.get("backbone")
    if not backbone:
        return failed(_transfer_problem(evidence, artifact) + ".")
    if backbone["changed"]:
        name, delta = max(backbone["changed"], key=lambda item: item[1])
        return failed(
            f"{len(backbone['changed'])} backbone tensors in {artifact} changed during training (largest change "
            f"{delta:.3g} in {name}): freeze them (requires_grad=False) before creating the optimizer."
        )
    return passed("every backbone parameter is frozen: requires_grad=False, and unchanged in the saved model.")


def parameter_split(ctx: Context, *, artifact: str, model: str = "model") -> Outcome:
    """``n_frozen`` and ``n_trainable`` are the saved model's backbone and head parameter counts."""
    evidence = ctx.evidence(artifact, "transfer")
    if evidence.error:
        return ctx.artifact_problem(artifact, evidence)
    prefix = _head_prefix(evidence)
    head_size = sum(_numel(evidence.state_shapes.get(f"model.{prefix}{key}", [])) for key in ("weight", "bias"))
    expected = {"n_frozen": evidence.parameters - head_size, "n_trainable": head_size}
    claims, problem = _claims(ctx, model, list(expected))
    if problem is not None:
        return problem
    problems, good = [], []
    for name, real in expected.items():
        value, why = _claimed_int(ctx, claims, name)
        if value is None:
            problems.append(why)
        elif value != real:
            what = "frozen (backbone)" if name == "n_frozen" else "trainable (head)"
            problems.append(f"`{name}` is {value:,} but {artifact} has {real:,} {what} parameters{_typed(ctx, name)}")
        else:
            good.append(f"`{name}` = {real:,}")
    if problems:
        return failed("; ".join(problems) + ".")
    return passed(", ".join(good) + f" (of {evidence.parameters:,} in {artifact}).")


def _numel(shape: list[int]) -> int:
    return math.prod(shape) if shape else 0


def backbone_pretrained(ctx: Context, *, artifact: str, weights_name: str = "weights_info") -> Outcome:
    """The saved model answers from the pretrained ResNet-18: its weights load strictly into the
    grader's own torchvision ResNet-18 (which computes the metrics), and its backbone parameters
    equal the pretrained file's."""
    evidence = ctx.evidence(artifact, "transfer")
    if evidence.error:
        return ctx.artifact_problem(artifact, evidence)
    problem = _transfer_problem(evidence, artifact)
    if problem:
        return failed(f"{problem}: start from src.models.load_resnet18() and replace only model.fc.")
    info = grading_weights()
    used = ctx.ask("weights_facts", name=weights_name)
    note = ""
    if used.ok and used.value.get("defined") and used.value.get("sha256") and used.value["sha256"] != info["sha256"]:
        note = (
            f" The notebook's `{weights_name}` reports weights with sha256 {used.value['sha256'][:12]}..., "
            f"the grader has {info['sha256'][:12]}...: load them with src.models.load_resnet18()."
        )
    backbone = evidence.transfer["backbone"]
    if backbone["changed"] or backbone["missing"] or not backbone["compared"]:
        parts = []
        if backbone["changed"]:
            name, delta = max(backbone["changed"], key=lambda item: item[1])
            parts.append(
                f"{len(backbone['changed'])} of {backbone['compared']} backbone tensors differ from the pretrained "
                f"weights (largest change {delta:.3g} in {name})"
            )
        if backbone["missing"]:
            parts.append(f"{len(backbone['missing'])} pretrained tensors are missing (e.g. {backbone['missing'][0]})")
        return failed(
            "; ".join(parts or ["no backbone tensor to compare"]) + ": start from src.models.load_resnet18() and "
            "freeze the backbone (requires_grad=False) before training." + note
        )
    kind = "official ImageNet" if info["official"] else "stand-in (NOT official)"
    moved = backbone.get("statistics_moved") or []
    stats = (
        f" BatchNorm's running statistics moved in {len(moved)} layers (training in train mode): allowed."
        if moved else ""
    )
    return passed(
        f"its weights are a torchvision ResNet-18's (the grader computes its answers with its own), and all {backbone['compared']} backbone "
        f"tensors equal the {kind} pretrained weights (sha256 {info['sha256'][:12]}...).{stats}{note}"
    )


def transform(ctx: Context, *, artifact: str, names: tuple[str, ...], channels: int = 3) -> Outcome:
    """The saved model's preprocessing turns the grey images into ``channels`` channels."""
    evidence = ctx.evidence(artifact, "transfer")
    if evidence.error:
        outcome = ctx.artifact_problem(artifact, evidence)
        outcome.message = f"the grader checks the preprocessing saved in {artifact}, and " + outcome.message
        return outcome
    shape = evidence.transfer.get("preprocess_shape")
    if not shape:
        return failed(_transfer_problem(evidence, artifact) + ".")
    if len(shape) != 4 or shape[1] != channels:
        hint = ctx.ask("transform_facts", names=list(names))
        yours = ""
        if hint.ok and hint.value.get("name"):
            yours = f" (`{hint.value['name']}` gives {tuple(hint.value['shape']) if hint.value['shape'] else hint.value['error']})"
        return failed(
            f"the preprocessing saved in {artifact} turns (N, 1, 28, 28) into {tuple(shape)}; ResNet-18 needs "
            f"{channels} channels: save_model(model, path, preprocess=your_transform){yours}."
        )
    return passed(f"the preprocessing saved in {artifact} turns (N, 1, 28, 28) images into {tuple(shape)}.")


def scheduler(ctx: Context, *, name: str = "scheduler", artifact: str, kind: str) -> Outcome:
    """``name`` chains WarmupScheduler and MultiStepLR, behaves as a warmup then step decay over
    the notebook's training, and the Trainer that trained the saved file used it."""
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
    users = facts.get("trainers") or []
    if users and facts.get("is_chain"):
        evidence = ctx.evidence(artifact, kind)
        if evidence.error:
            outcome = ctx.artifact_problem(artifact, evidence)
            outcome.message = f"a schedule counts for the Trainer that trained {artifact}, and " + outcome.message
            return outcome
        tie = training_tie(ctx, artifact, kind)
        tied = [user for user in users if user.get("name") in tie.names]
        if not tied:
            stepped = ", ".join(f"`{user.get('name')}`" for user in users)
            return failed(
                f"`{name}` is stepped by {stepped}, which did not train {artifact} ({tie.explain(artifact)}): "
                f"the schedule counts only for the Trainer that trained the saved model."
            )
        facts = {**facts, "trainers": tied}
    ok, message = scheduler_verdict(facts, name)
    return passed(message) if ok else failed(message)


# ------------------------------------------------------------------------------- figures


def _for_instructor(ctx: Context, verdict: str, what: str) -> Outcome:
    """A failed figure check; a picture the grader cannot read goes to the instructor, unpointed."""
    cells = shown.unreadable(shown.shown_figures(ctx.notebook))
    if cells:
        return Outcome(
            "failed",
            f"cell {cells[0]} shows a picture the grader cannot read as the {what} (draw it with matplotlib so "
            f"the grader can check it); it is left for the instructor, with no automatic points. {verdict}.",
            manual=True,
        )
    return failed(verdict + ".")


def loss_plot(ctx: Context, *, artifact: str, kind: str) -> Outcome:
    """A plot of the loss by epoch, whose points are the history of the Trainer that trained the
    saved file (`grader.evidence.training`)."""
    if ctx.notebook is None:
        return failed("no notebook to look for the plot in.")
    answer = ctx.ask("training_facts")
    if not answer.ok:
        return error(ctx.kernel_problem(answer))
    evidence = ctx.evidence(artifact, kind)
    if evidence.error:
        outcome = ctx.artifact_problem(artifact, evidence)
        outcome.message = f"the loss plot counts for the training of {artifact}, and " + outcome.message
        return outcome
    tie = training_tie(ctx, artifact, kind)
    if not tie.trained:
        return failed(f"{tie.explain(artifact)}. The loss plot counts only for the Trainer that trained the saved model.")
    histories = [t["history"] for t in tie.trained]
    ok, verdict = shown.loss_verdict(shown.shown_figures(ctx.notebook), histories)
    if ok:
        checked = " (its history checked against the saved model on its validation images)" if any(t["validated"] for t in tie.trained) else ""
        return passed(f"{verdict}, of `{tie.trained[0]['name']}`, which trained {artifact}{checked}.")
    return _for_instructor(ctx, verdict, "loss plot")


def confusion_figure(ctx: Context, *, artifact: str, kind: str) -> Outcome:
    """The confusion matrix shown is the saved model's on the test set (computed by the grader)."""
    if ctx.notebook is None:
        return failed("no notebook to look for the confusion matrix in.")
    evidence = ctx.evidence(artifact, kind)
    missing = _unmeasured(ctx, artifact, evidence)
    if missing is not None:
        missing.message = "the grader compares the matrix you show with the one of " + f"{artifact}, and " + missing.message
        return missing
    ok, verdict = shown.confusion_verdict(shown.shown_figures(ctx.notebook), ctx.notebook, evidence.confusion_matrix)
    return passed(verdict + ".") if ok else _for_instructor(ctx, verdict, "confusion matrix")


def image_grid(ctx: Context, *, artifact: str, kind: str) -> Outcome:
    """Test images, each titled with its true class and the saved model's prediction."""
    if ctx.notebook is None:
        return failed("no notebook to look for the images in.")
    evidence = ctx.evidence(artifact, kind)
    try:
        test = test_set()
    except (OSError, ValueError) as problem:
        return error(f"the grading machine has no usable test set ({problem}); tell your instructor.")
    predictions = evidence.predictions if not evidence.error and evidence.predictions else None
    ok, verdict = shown.grid_verdict(shown.shown_figures(ctx.notebook), test, predictions)
    if ok and predictions is None:
        why = evidence.error or _transfer_problem(evidence, artifact) or "no predictions"
        return failed(f"{verdict}, but the grader cannot check the predicted classes: {why}.")
    return passed(verdict + ".") if ok else _for_instructor(ctx, verdict, "grid of test images")


# ------------------------------------------------------------------------------- written answers


def written_answer(ctx: Context, *, template: Path | None, keywords: str = ANSWER_HEADING) -> Outcome:
    """The written comparison is there; a person reads it (no automatic points).

    The answer is read from the notebook by `grader.evidence.answers.read_written_answer`: what
    follows the question's heading (the cell before the template's last placeholder cell, else a
    Markdown heading matching ``keywords``).
    """
    if ctx.notebook is None:
        return Outcome("skipped", "no notebook", 0.0, manual=True)
    answer = read_written_answer(ctx.notebook, template, keywords)
    if answer.start is None:
        return failed("the section with the written comparison of the two models was not found; keep its heading.")
    words = answer.text.split()
    if len(words) < 10:
        return failed(
            f"the written comparison of the two models (after cell {answer.start}) is empty or too short: "
            "write it there, as text or as the output of your code."
        )
    excerpt = " ".join(words)
    excerpt = excerpt if len(excerpt) <= 300 else excerpt[:297] + "..."
    return Outcome(
        "skipped",
        f"for the instructor to read ({len(words)} words after cell {answer.start}): {excerpt}",
        0.0,
        manual=True,
        answer=answer.kept,
    )
