"""Grade a class: many submissions, several at once, resumable, split into shards.

    python -m grader grade submissions/ --jobs 2      # every submission folder in submissions/
    python -m grader grade submissions/ --shard 1/4   # a quarter of them (a CI matrix job)
    python -m grader merge shard-1/ shard-2/ ... --out class/

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
import json
import multiprocessing
import os
import shutil
import statistics
import sys
import time
import traceback
from collections import Counter
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from grader.assignments import ASSIGNMENTS
from grader.classroom import similarity
from grader.confine.limits import threads_per_process, usable_cores
from grader.grade import grade_submissions, unique_names
from grader.options import GradeOptions
from grader.report import manual as manual_points
from grader.report.formats import atomic_write, gradebook_csv, gradebook_row, write_reports
from grader.results import SubmissionResult

__all__ = [
    "Batch",
    "BatchItem",
    "default_jobs",
    "discover",
    "fingerprint",
    "grading_context",
    "merge",
    "overview_markdown",
    "parse_shard",
    "plan",
    "rebuild_summaries",
    "run_batch",
    "shard",
]

GRADEBOOK = "gradebook.csv"
OVERVIEW = "overview.md"
RESULT = "result.json"


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
    data = _read_result(item.out_dir / RESULT)
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
    store = manual_points.load_store(item.out_dir.parent)  # a re-graded answer keeps its manual points
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
            batch.rows[item.name] = gradebook_row(previous, manual_points.load_store(out))
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


# ----------------------------------------------------------------------------- summaries


_PARSED: dict[Path, tuple[tuple[int, int], dict[str, Any]]] = {}


def _read_result(path: Path) -> dict[str, Any] | None:
    """A parsed ``result.json``, None when absent or unreadable; parsed again only when the file
    changed (summaries are rebuilt after every submission of a batch)."""
    try:
        stat = path.stat()
        key = (stat.st_mtime_ns, stat.st_size)
        cached = _PARSED.get(path)
        if cached is None or cached[0] != key:
            _PARSED[path] = cached = (key, json.loads(path.read_text(encoding="utf-8")))
    except (OSError, ValueError):
        return None  # missing, being replaced right now, or not ours
    return cached[1]


def results_in(out: Path) -> list[dict[str, Any]]:
    """Every complete result (``*/result.json``) in a report folder."""
    return [data for path in sorted(out.glob(f"*/{RESULT}")) if (data := _read_result(path)) is not None]


def rebuild_summaries(out: Path, *, log: Callable[[str], None] | None = None) -> tuple[Path, Path]:
    """Write ``gradebook.csv``, ``overview.md`` and ``answers.csv`` in ``out`` from its
    ``*/result.json`` and its recorded manual points.

    ``answers.csv`` is left alone when it holds points not recorded yet (an instructor's edits):
    `log` says so, once.
    """
    results = results_in(out)
    store = manual_points.load_store(out)
    atomic_write(out / GRADEBOOK, gradebook_csv([gradebook_row(data, store) for data in results]))
    atomic_write(out / OVERVIEW, overview_markdown(results, store, similarity.load(out)))
    answers = out / manual_points.ANSWERS
    pending = manual_points.unrecorded(answers, store) if answers.is_file() else 0
    if pending:
        if log is not None and out not in _WARNED:
            _WARNED.add(out)
            log(
                f"{answers} holds {pending} score(s) not recorded yet, so it is left as it is: run "
                f"`python -m grader manual {out}` to record them (it writes the file again)"
            )
    elif any(manual_points.states(data, store) for data in results):
        atomic_write(answers, manual_points.answers_csv(results, store))
    return out / GRADEBOOK, out / OVERVIEW


_WARNED: set[Path] = set()


def _bar(count: int, largest: int, width: int = 30) -> str:
    return "█" * (round(width * count / largest) if largest else 0)


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
    percents = [100 * r["points"] / r["max_points"] if r["max_points"] else 0.0 for r in results]
    errors = [r["name"] for r in results if r.get("grader_error")]
    lines += [
        f"- Submissions graded: {len(results)}"
        + (f" ({len(errors)} with a grader error: {', '.join(errors)}; re-run to retry them)" if errors else ""),
        f"- Score: mean {statistics.fmean(percents):.1f}%, median {statistics.median(percents):.1f}%, "
        f"lowest {min(percents):.1f}%, highest {max(percents):.1f}%",
        "",
        "## Score distribution",
        "",
        "| score | submissions | |",
        "|---|---:|---|",
    ]
    bins = Counter(min(int(p // 10), 9) for p in percents)
    largest = max(bins.values())
    for index in range(9, -1, -1):
        label = "90-100%" if index == 9 else f"{10 * index}-{10 * index + 9}%"
        lines.append(f"| {label} | {bins.get(index, 0)} | {_bar(bins.get(index, 0), largest)} |")

    lines += [
        "",
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

    failed: Counter[tuple[str, str]] = Counter()
    examples: dict[tuple[str, str], str] = {}
    for result in results:
        # A missing or unreadable notebook fails every check; it is counted above, once.
        for notebook in filter(_readable, result.get("notebooks") or []):
            for check in notebook.get("checks") or []:
                if check["status"] in ("failed", "error") and not check.get("manual"):
                    key = (notebook["name"], check["title"])
                    failed[key] += 1
                    examples.setdefault(key, f"{result['name']}: {check['message'].splitlines()[0][:160]}")
    lines += ["", "## Checks most often failed", ""]
    if failed:
        lines += ["| notebook | check | failed | an example |", "|---|---|---:|---|"]
        for (notebook, title), count in failed.most_common(10):
            share = f"{count} ({100 * count / len(results):.0f}%)"
            example = examples[(notebook, title)].replace("|", "\\|")
            lines.append(f"| {notebook} | {title} | {share} | {example} |")
    else:
        lines.append("Every automatic check passed in every submission.")
    written = [state for r in results for state in manual_points.states(r, store or {}).values()]
    if written:
        counts = Counter(state.status for state in written)
        scored = [state.points for state in written if state.status == "scored"]
        lines += ["", "## Written answers (manual points)", ""]
        lines.append(
            f"{len(written)} answers: {counts['scored']} scored, {counts['to read']} to read, "
            f"{counts['changed']} changed since scored, {counts['no answer']} empty"
            + (f"; mean {statistics.fmean(scored):.1f} / {written[0].max_points:g} over the scored ones" if scored else "")
            + f". Fill in `{manual_points.ANSWERS}` and run `python -m grader manual` on this folder."
        )
    lines += similarity.markdown_section(similar, results)
    return "\n".join(lines) + "\n"


def _readable(notebook: dict[str, Any]) -> bool:
    failure = (notebook.get("execution") or {}).get("failure") or {}
    return failure.get("kind") not in ("missing", "invalid")


# ----------------------------------------------------------------------------- merge


def merge(sources: list[Path], out: Path) -> list[str]:
    """Merge the report folders of several shards into ``out``; rebuild its gradebook and overview.

    A submission found in several sources keeps its most recent result (by ``graded_at``).

    Returns:
        Warnings for people (duplicates, sources without results).
    """
    warnings = []
    chosen: dict[str, tuple[str, Path]] = {}
    for source in map(Path, sources):
        folders = [p.parent for p in sorted(source.glob(f"*/{RESULT}"))]
        if not folders:
            warnings.append(f"{source} holds no graded submission (no */{RESULT})")
        for folder in folders:
            try:
                graded_at = json.loads((folder / RESULT).read_text(encoding="utf-8")).get("graded_at", "")
            except (OSError, ValueError) as error:
                warnings.append(f"{folder / RESULT} is unreadable ({error}); left out")
                continue
            previous = chosen.get(folder.name)
            if previous is not None:
                warnings.append(f"{folder.name} is in {previous[1].parent} and in {source}; keeping the newer result")
                if previous[0] >= graded_at:
                    continue
            chosen[folder.name] = (graded_at, folder)
    out.mkdir(parents=True, exist_ok=True)
    for name, (_, folder) in chosen.items():
        target = out / name
        if target.resolve() != folder.resolve():
            shutil.rmtree(target, ignore_errors=True)
            shutil.copytree(folder, target)
    # Manual points recorded in a shard's folder come along (those of the kept result).
    store = manual_points.load_store(out)
    for source in map(Path, sources):
        for submission, scores in manual_points.load_store(source).items():
            if submission in chosen and chosen[submission][1].parent.resolve() == source.resolve():
                store.setdefault(submission, {}).update(scores)
    if store:
        atomic_write(out / manual_points.STORE, json.dumps(store, indent=2, ensure_ascii=False) + "\n")
    rebuild_summaries(out)
    return warnings
