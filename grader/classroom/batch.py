"""Grade a class: many submissions, several at once, resumable, split into shards.

    python -m grader grade submissions/ --jobs 2      # every submission folder in submissions/
    python -m grader grade submissions/ --shard 1/4   # a quarter of them (a CI matrix job)
    python -m grader merge shard-1/ shard-2/ ... --out class/   (`grader.classroom.merge`)

Each submission's reports are written as soon as it is graded, ``result.json`` last and
atomically, so a ``result.json`` means a complete result. A re-run skips every submission whose
``result.json`` records the same notebooks (by content) and the same grading options, unless
``--force``; a batch killed halfway resumes where it stopped. The gradebook and the class overview
are rebuilt from the ``result.json`` files after each submission, so they are never ahead of, or
behind, the reports on disk.
"""

from __future__ import annotations

import dataclasses
import hashlib
import multiprocessing
import os
import sys
import time
import traceback
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from grader.classroom.summaries import rebuild_summaries
from grader.confine.limits import threads_per_process, usable_cores
from grader.grade import grade_submissions, unique_names
from grader.options import GradeOptions
from grader.report import marking
from grader.report.files import RESULT, read_result
from grader.report.formats import write_reports
from grader.report.gradebook import gradebook_row
from grader.results import SubmissionResult

__all__ = [
    "Batch",
    "BatchItem",
    "default_jobs",
    "discover",
    "fingerprint",
    "grading_context",
    "parse_shard",
    "plan",
    "run_batch",
    "shard",
]

# ----------------------------------------------------------------------------- what to grade


def _has_notebooks(folder: Path) -> bool:
    return any(folder.glob("*.ipynb"))


def discover(paths: list[Path]) -> list[Path]:
    """The submissions named by ``paths``.

    A notebook is one submission. A folder holding notebooks is one submission. A folder holding
    no notebook itself but sub-folders is a class: each sub-folder (not hidden) is a submission,
    an empty one included (it is graded as missing every notebook rather than forgotten).
    """
    found: list[Path] = []
    for path in map(Path, paths):
        if path.is_dir() and not _has_notebooks(path):
            subfolders = sorted(p for p in path.iterdir() if p.is_dir() and not p.name.startswith((".", "_")))
            if subfolders:
                found += subfolders
                continue
        found.append(path)
    return found


def grading_context(options: GradeOptions, out: Path, *, weights: bool = True) -> str:
    """Everything besides the notebooks that a grade depends on, as one string to hash: the
    grader's and the engine's code, the ResNet-18 weights, the confinement and limits, the seeds.

    The hidden seed enters only as a salted slow hash: results reach students, and the salt
    (``OUT/.fingerprint-salt``, random, made once) does not.
    """
    from grader import paths
    from grader.confine.sandbox import sandbox_info
    from grader.evidence.artifacts import grading_weights

    hidden = "none"
    if options.hidden_seed is not None:
        salt_file = Path(out) / ".fingerprint-salt"
        if not salt_file.is_file():
            salt_file.parent.mkdir(parents=True, exist_ok=True)
            salt_file.write_bytes(os.urandom(32))
        hidden = hashlib.pbkdf2_hmac("sha256", str(options.hidden_seed).encode(), salt_file.read_bytes(), 200_000).hex()
    limits = options.limits
    settings = (
        paths.code_version(),
        grading_weights().get("sha256") if weights else None,
        sandbox_info(options.sandbox).enabled,
        options.seed,
        hidden,
        options.only,
        dataclasses.astuple(limits),
    )
    return repr(settings)


def fingerprint(path: Path, context: str) -> str:
    """What a result depends on: the submission's notebooks (by content) and `grading_context`."""
    digest = hashlib.sha256()
    path = Path(path)
    notebooks = [path] if path.is_file() else sorted(path.glob("*.ipynb"))
    for notebook in notebooks:
        digest.update(notebook.name.encode() + b"\0")
        try:
            if notebook.is_symlink() or not notebook.is_file():  # graded as such; never followed
                digest.update(b"not a plain file")
            else:
                digest.update(hashlib.sha256(notebook.read_bytes()).digest())
        except OSError:
            digest.update(b"unreadable")
    digest.update(context.encode())
    return digest.hexdigest()


def parse_shard(text: str) -> tuple[int, int]:
    """``"2/4"`` -> ``(2, 4)``; raises ValueError with what to write instead."""
    try:
        index, count = (int(part) for part in text.split("/"))
    except ValueError:
        raise ValueError(f"--shard takes I/N, like 2/4 (shard 2 of 4), not {text!r}") from None
    if not 1 <= index <= count:
        raise ValueError(f"--shard {text}: I must be between 1 and N")
    return index, count


def shard(items: list[BatchItem], index: int, count: int) -> list[BatchItem]:
    """Shard ``index`` of ``count`` (1-based): every count-th submission in name order.

    Deterministic for the same set of submissions on any machine, and balanced to within one.
    """
    ordered = sorted(items, key=lambda item: item.name)
    return ordered[index - 1 :: count]


@dataclass(frozen=True)
class BatchItem:
    """One submission of a batch: where it is, its unique name, its report folder."""

    path: Path
    name: str
    out_dir: Path
    fingerprint: str


def plan(paths: list[Path], out: Path, options: GradeOptions) -> list[BatchItem]:
    """The batch's submissions (see `discover`), with unique names and report folders."""
    from grader.assignments import TRANSFER, find_assignment

    submissions = discover(paths)
    transfer = any(
        find_assignment(notebook) is TRANSFER
        for path in submissions
        for notebook in ([Path(path)] if Path(path).is_file() else Path(path).glob("*.ipynb"))
    )
    context = grading_context(options, out, weights=transfer and (options.only is None or TRANSFER.notebook in options.only))
    return [
        BatchItem(path, name, out / name, fingerprint(path, context))
        for path, name in zip(submissions, unique_names(submissions))
    ]


def _previous(item: BatchItem) -> dict[str, Any] | None:
    """``item``'s ``result.json`` when it is complete, for the same inputs and without a grader
    error (so it need not be graded again); None otherwise."""
    data = read_result(item.out_dir / RESULT)
    if data is None or data.get("fingerprint") != item.fingerprint or data.get("grader_error"):
        return None
    return data


def default_jobs(memory_gib: float) -> int:
    """How many submissions this machine can grade at once: one per CPU core, as many as the
    available memory holds at ``memory_gib`` per kernel, at least one."""
    import psutil

    by_memory = int(psutil.virtual_memory().available / 2**30 // max(memory_gib, 0.1))
    return max(1, min(usable_cores(), by_memory))


# ----------------------------------------------------------------------------- grading


def _write(result: SubmissionResult, item: BatchItem) -> dict[str, str]:
    store = marking.load_store(item.out_dir.parent)  # a re-graded answer keeps its manual points
    write_reports(result, item.out_dir, gradebook=False, extra={"fingerprint": item.fingerprint}, store=store)
    return gradebook_row(result, store)


def _failed_result(item: BatchItem, message: str) -> SubmissionResult:
    return SubmissionResult(name=item.name, path=item.path, grader_error=message)


def _worker_init(threads: int) -> None:
    # Kernels inherit this: N kernels at once share the cores instead of each taking all of them.
    for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[name] = str(threads)


def _grade_in_worker(item: BatchItem, options: GradeOptions) -> dict[str, str]:
    try:
        results = grade_submissions(
            [item.path], options=options, out_dir_for=lambda name: item.out_dir, names=[item.name]
        )
        result = next(results)
    except Exception as error:  # the grader's own fault: a graded row, not a stopped batch
        traceback.print_exc()
        result = _failed_result(item, f"{type(error).__name__}: {error}")
    return _write(result, item)


@dataclass
class Batch:
    """What a batch did: every submission's gradebook row, and which were graded now."""

    rows: dict[str, dict[str, str]] = field(default_factory=dict)
    graded: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    elapsed: float = 0.0


def run_batch(
    items: list[BatchItem],
    out: Path,
    *,
    options: GradeOptions,
    jobs: int = 1,
    force: bool = False,
    log: Callable[[str], None] | None = None,
    progress: bool = True,
) -> Batch:
    """Grade ``items``, ``jobs`` at once, skipping those already graded (unless ``force``).

    Args:
        items: from `plan` (and perhaps `shard`).
        out: the batch's report folder: one folder per submission, ``gradebook.csv`` and
            ``overview.md``.
        options: see `GradeOptions`.
        jobs: submissions graded at once; 1 grades in this process (the next kernel starts while
            the current notebook runs), more use that many worker processes.
        force: grade again what is already graded.
        log: one line per step for people (only with ``jobs == 1``; workers are quiet).
        progress: show a progress bar (done / total, ETA) on stderr.

    Returns:
        A `Batch`; its ``rows`` cover every item, graded now or before.
    """
    start = time.monotonic()
    batch = Batch()
    pending = []
    for item in items:
        previous = None if force else _previous(item)
        if previous is not None:
            batch.skipped.append(item.name)
            batch.rows[item.name] = gradebook_row(previous, marking.load_store(out))
        else:
            pending.append(item)
    out.mkdir(parents=True, exist_ok=True)
    bar = _Progress(len(items), len(batch.skipped), enabled=progress and len(items) > 1)
    say = bar.write_err if progress else (log or (lambda line: None))
    if batch.skipped:
        say(
            f"{len(batch.skipped)} of {len(items)} already graded (same notebooks, same options); "
            "--force grades them again"
        )

    def finished(item: BatchItem, row: dict[str, str]) -> None:
        batch.rows[item.name] = row
        batch.graded.append(item.name)
        rebuild_summaries(out, log=say)
        bar.write_out(  # results on stdout; steps and progress on stderr
            f"{item.name}: {row['points']} / {row['max_points']} points ({row['percent'] or '-'}%) in "
            f"{row['seconds']} s" + ("; GRADER ERROR, see its report" if row["status"] == "grader_error" else "")
        )
        bar.advance()

    try:
        if jobs <= 1 or len(pending) <= 1:
            _run_here(pending, options, finished, log=say if log else None)
        else:
            _run_in_workers(pending, options, jobs, finished, say)
    finally:
        bar.close()
        rebuild_summaries(out, log=say)
    batch.elapsed = time.monotonic() - start
    return batch


class _Progress:
    """Done / total and an ETA on stderr: a tqdm bar on a terminal, one plain line per
    submission in a log (CI), nothing for a single submission."""

    def __init__(self, total: int, done: int, *, enabled: bool) -> None:
        from tqdm.auto import tqdm

        self.total, self.done, self.started_with, self.start = total, done, done, time.monotonic()
        self.plain = enabled and not sys.stderr.isatty()
        self.bar = tqdm(
            total=total,
            initial=done,
            unit="submission",
            desc="grading",
            file=sys.stderr,
            disable=not enabled or self.plain,
            dynamic_ncols=True,
        )

    def write_out(self, line: str) -> None:
        self.bar.write(line, file=sys.stdout)

    def write_err(self, line: str) -> None:
        self.bar.write(line, file=sys.stderr)

    def advance(self) -> None:
        self.done += 1
        self.bar.update(1)
        if self.plain:
            elapsed = time.monotonic() - self.start
            left = elapsed / (self.done - self.started_with) * (self.total - self.done)
            print(
                f"progress: {self.done}/{self.total} graded, {elapsed / 60:.1f} min so far, "
                f"about {left / 60:.1f} min left",
                file=sys.stderr,
                flush=True,
            )

    def close(self) -> None:
        self.bar.close()


def _run_here(
    pending: list[BatchItem],
    options: GradeOptions,
    finished: Callable[[BatchItem, dict[str, str]], None],
    log: Callable[[str], None] | None,
) -> None:
    by_name = {item.name: item for item in pending}
    results = grade_submissions(
        [item.path for item in pending],
        options=options,
        out_dir_for=lambda name: by_name[name].out_dir,
        names=[item.name for item in pending],
        log=log,
    )
    for result in results:
        item = by_name[result.name]
        finished(item, _write(result, item))


def _run_in_workers(
    pending: list[BatchItem],
    options: GradeOptions,
    jobs: int,
    finished: Callable[[BatchItem, dict[str, str]], None],
    say: Callable[[str], None],
) -> None:
    threads = threads_per_process(jobs)
    todo = list(pending)
    for attempt in (1, 2):  # a worker that dies breaks its pool: one fresh pool for the rest
        context = multiprocessing.get_context("spawn")  # workers start clean: no threads, no zmq state
        with ProcessPoolExecutor(
            max_workers=jobs, mp_context=context, initializer=_worker_init, initargs=(threads,)
        ) as pool:
            futures: dict[Future, BatchItem] = {pool.submit(_grade_in_worker, item, options): item for item in todo}
            broken: list[BatchItem] = []
            while futures:
                done, _ = wait(futures, return_when=FIRST_COMPLETED)
                for future in done:
                    item = futures.pop(future)
                    try:
                        finished(item, future.result())
                    except BrokenProcessPool:
                        broken.append(item)
        if not broken:
            return
        todo = sorted(broken, key=lambda item: item.name)
        say(f"a grading worker died; {'retrying' if attempt == 1 else 'giving up on'} {len(todo)} submission(s)")
    for item in todo:
        message = "a grading worker process died twice while this submission was in the batch; re-run to retry it"
        finished(item, _write(_failed_result(item, message), item))
