"""Grade a submission: run each notebook, probe it, verify its saved model, collect the results.

A submission is a folder holding the three notebooks (`grader.assignments`) or a single
notebook. Only those notebooks are copied (as data: a link is not followed) into one scratch
folder, where they run in order, each in its own fresh confined kernel (`grader.run.kernel`) that
sees the data and weights files it needs and nothing else; the next notebook's kernel (in this
submission or the next) starts while the current one runs, which hides its start-up time.
Nothing a submission does makes this module raise: a missing notebook, a broken file or a dead
kernel is a graded result. Only a fault of the grader itself is recorded, as ``grader_error``.
"""

from __future__ import annotations

import shutil
import tempfile
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from grader.assignments import ASSIGNMENTS, GENERIC, Assignment, CheckDef, find_assignment
from grader.checks import Context, Outcome
from grader.confine.sandbox import sandbox_info
from grader.evidence.answers import answer_digest, quoted_numbers
from grader.options import GradeOptions, Limits
from grader.results import CheckResult, NotebookResult, SandboxInfo, SubmissionResult
from grader.run.execute import NotebookRun, copy_notebook, execute_notebook
from grader.run.kernel import PROBE_TIMEOUT_S, KernelSession

__all__ = [
    "find_notebooks",
    "grade_notebook_run",
    "grade_submission",
    "grade_submissions",
    "unique_names",
]


def find_notebooks(path: Path) -> tuple[str, list[tuple[Assignment, Path]]]:
    """What to grade in ``path``.

    Args:
        path: a submission folder or a single ``.ipynb``.

    Returns:
        ``(submission name, [(assignment, notebook path)])``. For a folder, every assignment is
        listed, with the path where its notebook should be (it may be missing; a notebook named
        only by its number prefix, like ``02_my_cnn.ipynb``, is accepted). A single notebook gets
        its assignment, or `GENERIC` when it matches none.
    """
    path = Path(path)
    if path.suffix == ".ipynb" or path.is_file():
        return path.stem, [(find_assignment(path) or GENERIC, path)]
    pairs = []
    present = sorted(path.glob("*.ipynb"))
    for assignment in ASSIGNMENTS:
        exact = path / assignment.notebook
        if not exact.exists():
            candidates = [p for p in present if find_assignment(p) is assignment]
            exact = candidates[0] if len(candidates) == 1 else exact
        pairs.append((assignment, exact))
    return path.resolve().name, pairs


def unique_names(paths: list[Path]) -> list[str]:
    """Submission names for ``paths`` (see `find_notebooks`), made unique where two collide
    (``a/01_convolution.ipynb`` and ``b/01_convolution.ipynb`` become ``a-01_convolution`` ...)."""
    names = [find_notebooks(Path(path))[0] for path in paths]
    return [
        f"{Path(path).resolve().parent.name}-{name}" if names.count(name) > 1 else name
        for path, name in zip(paths, names)
    ]


@dataclass
class _Prepared:
    """What the grader fetched for a submission's kernels: files to bind read-only, variables
    naming them, and problems to report (data or weights missing on the grading machine)."""

    readonly: dict[str, tuple[Path, ...]] = field(default_factory=dict)
    env: dict[str, dict[str, str]] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    weights: dict | None = None


def _prepare(assignments: list[Assignment]) -> _Prepared:
    """Fetch what notebooks read but cannot write in the sandbox (checked Fashion-MNIST, the
    ResNet-18 weights), per assignment."""
    prepared = _Prepared()
    data = weights = None
    if any(a.needs_data for a in assignments):
        try:
            from grader.evidence.artifacts import grading_data

            data = grading_data()
        except Exception as error:
            prepared.problems.append(f"Fashion-MNIST is not available on the grading machine: {error}")
    if any(a.needs_weights for a in assignments):
        from grader.evidence.artifacts import grading_weights

        prepared.weights = grading_weights()
        if prepared.weights.get("error"):
            prepared.problems.append(f"ResNet-18 weights are not available on the grading machine: {prepared.weights['error']}")
        else:
            weights = Path(prepared.weights["path"])
    for assignment in assignments:
        readonly, env = [], {}
        if assignment.needs_data and data is not None:
            readonly.append(data / "FashionMNIST" / "raw")
            env["KIT_DATA_DIR"] = str(data)
        if assignment.needs_weights and weights is not None:
            readonly += [p for p in (weights, weights.with_name(weights.name + ".json")) if p.is_file()]
            env["KIT_RESNET18_WEIGHTS"] = str(weights)
        prepared.readonly[assignment.notebook] = tuple(readonly)
        prepared.env[assignment.notebook] = env
    return prepared


_UNREADABLE = {"missing": "is missing", "invalid": "could not be read"}


def _check_result(check: CheckDef, outcome: Outcome) -> CheckResult:
    points = check.points * outcome.fraction if outcome.status == "passed" else 0.0
    answer = outcome.answer if check.manual_points else ""
    return CheckResult(
        name=check.name,
        title=check.title,
        points=round(points, 2),
        max_points=check.points,
        status=outcome.status,
        message=outcome.message,
        manual=outcome.manual,
        manual_max=check.manual_points,
        answer=answer,
        answer_sha=answer_digest(answer),
        numbers=quoted_numbers(answer),
    )


def grade_notebook_run(
    assignment: Assignment,
    run: NotebookRun,
    *,
    workdir: Path,
    hidden_seed: int | None,
    probe_timeout: float = PROBE_TIMEOUT_S,
    limits: Limits = Limits(),
    sandbox: SandboxInfo | None = None,
) -> list[CheckResult]:
    """Run the assignment's checks on an executed notebook (its kernel still alive).

    Args:
        assignment: which checks.
        run: the executed notebook and its kernel.
        workdir: the notebook's scratch folder (saved models are read there).
        hidden_seed: None for visible convolution cases only.
        probe_timeout: seconds one question to the kernel may take.
        limits: the notebook's limits; the verification workers get its memory.
        sandbox: confinement of the verification workers (default: as the notebook's kernel).

    Returns:
        One `CheckResult` per check, in the assignment's order.
    """
    sandbox = sandbox or run.result.sandbox or sandbox_info(None)
    ctx = Context(
        run=run, workdir=workdir, hidden_seed=hidden_seed, probe_timeout=probe_timeout, sandbox=sandbox, limits=limits
    )
    results = []
    for check in assignment.checks:
        if not run.result.readable and check.name != "runs":
            outcome = Outcome("failed", f"not graded: the notebook {_UNREADABLE[run.result.failure.kind]}.")
        else:
            try:
                outcome = check.run(ctx)
            except Exception as error:  # a bug in a check: report it, grade the rest
                outcome = Outcome(
                    "error", f"the grader failed on this check ({type(error).__name__}: {error}); tell your instructor."
                )
                traceback.print_exc()
        results.append(_check_result(check, outcome))
    return results


@dataclass
class _Job:
    """One notebook to grade, with the kernel started for it ahead of time."""

    submission: SubmissionResult
    assignment: Assignment
    notebook: Path
    workdir: Path
    out_dir: Path | None
    prepared: _Prepared
    last: bool
    scratch: Path
    kernel: KernelSession | None = None


def _jobs(
    paths: list[Path], names: list[str], options: GradeOptions, out_dir_for: Callable[[str], Path | None]
) -> Iterator[_Job]:
    """The notebooks to grade, in order; each submission's notebooks are copied to scratch when reached."""
    for path, name in zip(paths, names):
        path = Path(path)
        _, pairs = find_notebooks(path)
        if options.only is not None:
            pairs = [(a, p) for a, p in pairs if a.notebook in options.only or p.name in options.only]
        submission = SubmissionResult(
            name=name, path=path, hidden_cases=options.hidden_seed is not None, hidden_seed_source=options.hidden_seed_source
        )
        submission.elapsed = time.monotonic()  # start time until the submission is done
        scratch = Path(tempfile.mkdtemp(prefix="grade-", dir=options.scratch_root))
        # One folder for the whole submission, as on the student's machine: the notebooks run
        # in order and a later one may read what an earlier one saved (03 compares itself with
        # 02's model). Only the notebooks are copied: saved models and any other file of the
        # submission stay out, so what is graded comes from this run.
        workdir = scratch / "work"
        workdir.mkdir()
        copies = []
        for assignment, notebook in pairs:
            try:
                copies.append((assignment, notebook, copy_notebook(notebook, workdir)))
            except OSError:
                copies.append((assignment, notebook, notebook))
        present = [a for a, _, copied in copies if copied.is_file()]
        try:
            prepared = _prepare(present)
            submission.weights = prepared.weights
        except Exception as error:
            prepared = _Prepared(problems=[f"the grader could not prepare the data: {error}"])
        for index, (assignment, notebook, copied) in enumerate(copies):
            yield _Job(
                submission, assignment, notebook, workdir, out_dir_for(name), prepared,
                last=index == len(copies) - 1, scratch=scratch,
            )
        if not pairs:
            yield _Job(submission, GENERIC, path, workdir, None, prepared, last=True, scratch=scratch)


def _launch(job: _Job | None, options: GradeOptions) -> None:
    if job is None or job.kernel is not None or not job.assignment.checks:
        return
    if not (job.workdir / job.notebook.name).is_file():
        return  # missing, or not a plain file: nothing to run
    info = sandbox_info(options.sandbox)
    if options.sandbox is True and not info.enabled:
        raise RuntimeError(f"sandbox required but unavailable: {info.detail}")
    job.kernel = KernelSession(
        workdir=job.workdir,
        seed=options.seed,
        limits=options.limits,
        sandbox=info,
        readonly=job.prepared.readonly.get(job.assignment.notebook, ()),
        env=job.prepared.env.get(job.assignment.notebook, {}),
    )
    job.kernel.start()


def _grade_job(job: _Job, options: GradeOptions, log: Callable[[str], None] | None) -> NotebookResult:
    copied = job.workdir / job.notebook.name
    if log is not None:
        log(f"  {job.notebook.name}: {'running' if copied.is_file() else 'not graded'}")
    run = execute_notebook(
        copied if copied.is_file() else job.notebook,
        workdir=job.workdir,
        limits=options.limits,
        seed=options.seed,
        sandbox=options.sandbox,
        kernel=job.kernel,
        rerun=options.rerun,
    )
    job.kernel = None  # the run owns it now
    run.result.path = job.notebook
    run.result.warnings[:0] = job.prepared.problems
    if log is not None and run.result.readable:
        log(f"  {job.notebook.name}: ran in {run.result.elapsed:.1f} s; checking")
    started = time.monotonic()
    with run:
        checks = grade_notebook_run(
            job.assignment,
            run,
            workdir=job.workdir,
            hidden_seed=options.hidden_seed,
            probe_timeout=min(PROBE_TIMEOUT_S, options.limits.cell_timeout),
            limits=options.limits,
        )
    result = NotebookResult(
        name=job.notebook.name, path=job.notebook, checks=checks, execution=run.result,
        checks_elapsed=time.monotonic() - started,
    )
    if job.out_dir is not None and run.result.notebook is not None:
        import nbformat

        job.out_dir.mkdir(parents=True, exist_ok=True)
        result.executed_path = job.out_dir / job.notebook.name
        nbformat.write(run.result.notebook, result.executed_path)
    return result


def grade_submissions(
    paths: list[Path],
    *,
    options: GradeOptions = GradeOptions(),
    out_dir_for: Callable[[str], Path | None] = lambda name: None,
    log: Callable[[str], None] | None = None,
    names: list[str] | None = None,
) -> Iterator[SubmissionResult]:
    """Grade submissions one after the other, yielding each as soon as it is graded.

    The kernel of the next notebook (of this submission or the next one) starts while the
    current notebook runs, so its start-up time is hidden.

    Args:
        paths: submission folders or single notebooks.
        options: see `GradeOptions`.
        out_dir_for: submission name -> folder for its executed notebooks (None: not saved).
        log: called with one line per step (progress for people), or None.
        names: the submissions' names (default: `unique_names`).

    Yields:
        One `SubmissionResult` per path, in order (reports are written by `grader.report.formats`).
    """
    paths = list(paths)
    jobs = _jobs(paths, names or unique_names(paths), options, out_dir_for)
    current = next(jobs, None)
    try:
        while current is not None:
            upcoming = next(jobs, None)
            submission = current.submission
            try:
                _launch(current, options)
                _launch(upcoming, options)
                if not submission.grader_error:
                    submission.notebooks.append(_grade_job(current, options, log))
            except Exception as error:  # the grader's own fault: say so, keep what was graded
                submission.grader_error = f"{type(error).__name__}: {error}"
                traceback.print_exc()
            finally:
                if current.kernel is not None:
                    current.kernel.close()
            if current.last:
                if not options.keep_scratch:
                    shutil.rmtree(current.scratch, ignore_errors=True)
                submission.elapsed = time.monotonic() - submission.elapsed
                yield submission
            current = upcoming
    finally:
        if current is not None and current.kernel is not None:
            current.kernel.close()


def grade_submission(
    path: Path,
    *,
    options: GradeOptions = GradeOptions(),
    out_dir: Path | None = None,
    log: Callable[[str], None] | None = None,
) -> SubmissionResult:
    """Grade every notebook of one submission.

    Args:
        path: a submission folder or a single notebook.
        options: see `GradeOptions`.
        out_dir: where to save the executed notebooks (None: not saved).
        log: called with one line per step (progress for people), or None.

    Returns:
        The `SubmissionResult` (reports are written by `grader.report.formats`).
    """
    return next(grade_submissions([path], options=options, out_dir_for=lambda name: out_dir, log=log))
