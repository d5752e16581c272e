"""Command line of the grader: argument parsing and printing; each command calls library functions,
and the policies (limits, hidden seed, confinement) are `grader.options`'.

    python -m grader grade [PATH ...]      grade submissions (folders, class folders or notebooks);
                                           default solutions/ (assignments/ in a student repository)
    python -m grader merge SOURCE... --out DIR  merge the reports of several shards
    python -m grader similarity OUT        which pairs of a graded class share code (also run by
                                           `grade` on a class and by `merge`)
    python -m grader manual OUT            record the manual points of the filled-in OUT/answers.csv
    python -m grader check NOTEBOOK        a student's self-check: visible cases only
    python -m grader release               write assignments/ from solutions/

Confinement is required to grade student work (``grade`` and ``pr``): where bubblewrap cannot
confine a kernel, they stop with exit code 3 and say how to fix it, unless ``--no-sandbox`` turns
confinement off, which every report and the gradebook then say. Only the demo (``grade`` with no
path: the reference solutions) and a student's own ``check`` run unconfined with a warning.

Exit codes: 0 when every submission was graded, whatever its points; 1 with ``--fail-under``
when a submission scored below it; 2 for a usage error (a class graded without a hidden seed
included); 3 when the grader itself could not do its job (a crash of the grader, confinement
required but impossible).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from grader.options import GradeOptions, Grading, Limits, OptionError, confinement, hidden_seed
from grader.paths import ASSIGNMENTS_DIR, SOLUTIONS_DIR

if TYPE_CHECKING:
    from grader.classroom.similarity import Similarity

__all__ = ["build_parser", "main"]

EXIT_OK, EXIT_BELOW, EXIT_USAGE, EXIT_GRADER = 0, 1, 2, 3


def _add_limits(parser: argparse.ArgumentParser, *, cell: float, notebook: float) -> None:
    group = parser.add_argument_group("limits")
    group.add_argument(
        "--cell-timeout", type=float, default=cell, metavar="S",
        help="CPU seconds one cell may use; a cell that waits is stopped after twice as many seconds (default: %(default)s)"
    )
    group.add_argument(
        "--timeout",
        type=float,
        default=notebook,
        metavar="S",
        help="CPU seconds a whole notebook may use (default: %(default)s)",
    )
    group.add_argument(
        "--memory-limit",
        type=float,
        default=Limits.memory_gib,
        metavar="GIB",
        help="memory of a notebook's kernel, GiB (default: %(default)s)",
    )
    group.add_argument("--seed", type=int, default=0, help="seed for random/numpy/torch in the kernel (default: 0)")
    sandbox = group.add_mutually_exclusive_group()
    sandbox.add_argument(
        "--no-sandbox",
        dest="sandbox",
        action="store_const",
        const=False,
        help="run student code unconfined, with your rights (every report and the gradebook say so)",
    )
    sandbox.add_argument(
        "--require-sandbox",
        dest="sandbox",
        action="store_const",
        const=True,
        help="fail (exit 3) when bubblewrap cannot confine kernels (the default when grading submissions)",
    )
    parser.add_argument("--keep-scratch", action="store_true", help="keep the scratch copies (debugging)")


def _percent(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not 0 < value <= 100:  # also refuses nan
        raise argparse.ArgumentTypeError(f"a percent above 0 and at most 100 (70: pairs sharing 70%), not {text!r}")
    return value


def _add_similarity(parser: argparse.ArgumentParser) -> None:
    from grader.classroom.similarity import DEFAULT_THRESHOLD

    parser.add_argument(
        "--similarity-threshold",
        type=_percent,
        default=DEFAULT_THRESHOLD,
        metavar="PERCENT",
        help="list in the overview the pairs of submissions whose own code in a notebook is at least PERCENT "
        "the same (default: %(default)g). A signal for a person, never points",
    )


def build_parser() -> argparse.ArgumentParser:
    """The parser: ``grade``, ``check`` and ``release``."""
    parser = argparse.ArgumentParser(prog="python -m grader", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    grade = commands.add_parser(
        "grade",
        help="grade submissions: run, probe, verify, report",
        description="Grade each submission named by PATH (a folder with the three notebooks, a class "
        "folder with one sub-folder per submission, or one notebook) and write report.md, junit.xml, "
        "the executed notebooks and, last, result.json to OUT/<submission>/; then OUT/gradebook.csv "
        "(one row per submission) and OUT/overview.md (the class at a glance). A submission already "
        "graded in OUT with the same notebooks and options is skipped, so an interrupted batch "
        "resumes where it stopped.",
    )
    grade.add_argument(
        "paths",
        nargs="*",
        type=Path,
        metavar="PATH",
        help="a submission folder, a class folder (one sub-folder per submission) or a notebook "
        "(default: solutions/, or assignments/ where there is no solutions/)",
    )
    grade.add_argument("--out", type=Path, default=Path("out/grades"), help="report folder (default: %(default)s)")
    grade.add_argument(
        "--hidden-seed",
        type=int,
        default=None,
        help="seed of the hidden convolution cases (default: $GRADER_HIDDEN_SEED, else grader/hidden_seed.txt; "
        "required for a class or a shard)",
    )
    grade.add_argument(
        "--fail-under",
        type=float,
        default=None,
        metavar="PERCENT",
        help="exit 1 when a submission scores below PERCENT of its points (for CI)",
    )
    grade.add_argument(
        "--standin-weights-if-missing",
        type=Path,
        default=None,
        metavar="FILE",
        help="when no ResNet-18 weights can be found or downloaded, make a stand-in (a seeded random "
        "init, NOT ImageNet) at FILE and grade with it; every report then says so. For demos and "
        "for machines that cannot reach the official file, never for real grades",
    )
    batch = grade.add_argument_group("class batches")
    batch.add_argument(
        "--jobs",
        type=int,
        default=None,
        metavar="N",
        help="grade N submissions at once (default: one per CPU core, as many as the memory holds)",
    )
    batch.add_argument("--force", action="store_true", help="grade again the submissions already graded in OUT")
    batch.add_argument(
        "--shard", default=None, metavar="I/N", help="grade only shard I of N (deterministic, by submission name)"
    )
    batch.add_argument("--no-progress", action="store_true", help="no progress bar")
    _add_similarity(batch)
    _add_limits(grade, cell=Limits.cell_timeout, notebook=Limits.timeout)
    grade.set_defaults(func=_cmd_grade)

    merge = commands.add_parser(
        "merge",
        help="merge the report folders of several shards into one gradebook",
        description="Copy each graded submission of each SOURCE (an --out folder of `grade --shard`) "
        "into OUT and write OUT/gradebook.csv and OUT/overview.md for all of them.",
    )
    merge.add_argument("sources", nargs="+", type=Path, metavar="SOURCE")
    merge.add_argument("--out", type=Path, required=True, help="the merged report folder")
    _add_similarity(merge)
    merge.set_defaults(func=_cmd_merge)

    similarity = commands.add_parser(
        "similarity",
        help="which pairs of a graded class share code the template did not give them",
        description="Compare the code cells of each notebook of every graded submission in OUT with the same "
        "notebook of every other one (copydetect's winnowing fingerprints, as MOSS; the template's code does not "
        "count), then list the pairs at or above the threshold in OUT/overview.md, with a side-by-side page of "
        "each in OUT/similarity/. A signal for a person: no points change, no student's report mentions it.",
    )
    similarity.add_argument("out", type=Path, metavar="OUT", help="the report folder of `grade` (or `merge`)")
    _add_similarity(similarity)
    similarity.add_argument(
        "--templates",
        type=Path,
        default=ASSIGNMENTS_DIR,
        metavar="DIR",
        help="the notebooks the students received, whose code does not count (default: %(default)s)",
    )
    similarity.set_defaults(func=_cmd_similarity)

    check = commands.add_parser(
        "check",
        help="check your notebook before submitting (visible cases only)",
        description="Run NOTEBOOK as the grader does and print what the grader would say, "
        "without the hidden convolution cases.",
    )
    check.add_argument("notebook", type=Path, metavar="NOTEBOOK")
    check.add_argument("--out", type=Path, default=None, help="also write the reports to this folder")
    _add_limits(check, cell=Limits.cell_timeout, notebook=Limits.timeout)
    check.set_defaults(func=_cmd_check)

    pr = commands.add_parser(
        "pr",
        help="grade a pull request of a student repository (what its workflow runs)",
        description="Refuse a pull request that changes files outside assignments/; otherwise grade "
        "the notebooks it changes, as committed in HEAD. Writes the reports to OUT and, on GitHub "
        "Actions, the Markdown report to $GITHUB_STEP_SUMMARY and GitHub Classroom's points to "
        "$GITHUB_OUTPUT (result=...). Exit 1 when the pull request is refused.",
    )
    pr.add_argument("--repo", type=Path, default=Path("."), help="a clone with both commits (default: .)")
    pr.add_argument("--base", required=True, metavar="COMMIT", help="the base branch's commit")
    pr.add_argument("--head", required=True, metavar="COMMIT", help="the pull request's commit")
    pr.add_argument("--out", type=Path, default=Path("out/pr"), help="report folder (default: %(default)s)")
    _add_limits(pr, cell=Limits.cell_timeout, notebook=Limits.timeout)
    pr.set_defaults(func=_cmd_pr)

    manual = commands.add_parser(
        "manual",
        help="record the manual points of written answers from the filled-in answers.csv",
        description="Read OUT/answers.csv (written by `grade`, with its points column filled in by you), "
        "check every filled row (known submission and question, a number from 0 to the question's "
        "points, an answer that has not changed since), record the points in OUT/manual.json, and "
        "write the gradebook, the overview, answers.csv and each report.md again. Nothing is "
        "recorded when a row is wrong: each wrong row is named with its line (exit 2).",
    )
    manual.add_argument("out", type=Path, metavar="OUT", help="the report folder of `grade` (or `merge`)")
    manual.add_argument("--answers", type=Path, default=None, help="the filled-in file (default: OUT/answers.csv)")
    manual.set_defaults(func=_cmd_manual)

    _add_release(commands)
    return parser


def _cmd_manual(args: argparse.Namespace) -> int:
    from grader.classroom.summaries import record_manual_points
    from grader.report.marking import ManualError

    try:
        counts = record_manual_points(args.out, args.answers)
    except FileNotFoundError as error:
        _log(f"error: {error}")
        return EXIT_USAGE
    except ManualError as error:
        for problem in error.problems:
            _log(f"error: {problem}")
        _log("nothing was recorded: correct those rows and run the command again")
        return EXIT_USAGE
    print(
        f"recorded {counts['recorded']} score(s); {counts['scored']} answers scored, {counts['to read']} still "
        f"to read, {counts['changed']} changed since scored. gradebook: {args.out / 'gradebook.csv'}",
        flush=True,
    )
    return EXIT_OK


def _cmd_pr(args: argparse.Namespace) -> int:
    from grader.classroom.pr import GitError, grade_pull_request

    sandbox = _confinement(args, optional=False)
    if sandbox is _REFUSED:
        return EXIT_GRADER
    options = _options(args, "pull request", sandbox)
    try:
        code, result, summary = grade_pull_request(args.repo, args.base, args.head, out=args.out, options=options, log=_log)
    except GitError as error:
        _log(f"error: {error}")
        return EXIT_USAGE
    print(summary, flush=True)
    if result is not None and result.grader_error:
        _log(f"error: the grader failed: {result.grader_error}")
        return EXIT_GRADER
    points, top = (result.points, result.max_points) if result is not None else (0, 0)
    print(f"Points {points:g}/{top:g}", flush=True)
    return code


def _options(args: argparse.Namespace, grading: Grading, sandbox: bool | None) -> GradeOptions:
    """The options of this grading; the hidden-case seed as `grader.options.hidden_seed` decides
    (`OptionError` when it cannot)."""
    seed, source = hidden_seed(grading, getattr(args, "hidden_seed", None))
    if grading != "self-check":
        _log(f"hidden convolution cases: seed from {source}")
    limits = Limits(cell_timeout=args.cell_timeout, timeout=args.timeout, memory_gib=args.memory_limit)
    return GradeOptions(
        limits=limits,
        seed=args.seed,
        hidden_seed=seed,
        hidden_seed_source=source,
        sandbox=sandbox,
        keep_scratch=args.keep_scratch,
    )


_REFUSED = object()  # confinement required and impossible: the error is said, the command stops


def _confinement(args: argparse.Namespace, *, optional: bool) -> bool | None | object:
    """``--no-sandbox`` / ``--require-sandbox`` decided by `grader.options.confinement`; the
    warning or the error (with its fix) printed. `_REFUSED` when grading cannot go on."""
    from grader.confine.sandbox import SANDBOX_FIX, probe_bwrap

    try:
        decided = confinement(args.sandbox, optional=optional, probe=probe_bwrap, fix=SANDBOX_FIX)
    except OptionError as error:
        _log(f"error: {error}")
        return _REFUSED
    if decided.warning:
        _log(f"warning: {decided.warning}")
    return decided.sandbox


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _cmd_grade(args: argparse.Namespace) -> int:
    from grader.classroom.batch import default_jobs, discover, parse_shard, plan, run_batch, shard

    demo = not args.paths
    sandbox = _confinement(args, optional=demo)
    if sandbox is _REFUSED:
        return EXIT_GRADER
    paths = args.paths or [SOLUTIONS_DIR if SOLUTIONS_DIR.is_dir() else ASSIGNMENTS_DIR]
    missing = [p for p in paths if not p.exists() and not p.is_symlink()]
    if missing:
        _log("error: no such file or folder: " + ", ".join(map(str, missing)))
        return EXIT_USAGE
    if args.jobs is not None and args.jobs < 1:
        _log(f"error: --jobs must be 1 or more, not {args.jobs}")
        return EXIT_USAGE
    try:
        shard_of = parse_shard(args.shard) if args.shard else None
    except ValueError as error:
        _log(f"error: {error}")
        return EXIT_USAGE
    if args.standin_weights_if_missing is not None:
        _use_standin_if_missing(args.standin_weights_if_missing)
    grading = "demo" if demo else "class" if shard_of is not None or len(discover(paths)) > 1 else "submission"
    try:
        options = _options(args, grading, sandbox)
    except OptionError as error:
        _log(f"error: {error}")
        return EXIT_USAGE
    items = plan(paths, args.out, options)
    if shard_of is not None:
        total = len(items)
        items = shard(items, *shard_of)
        _log(f"shard {shard_of[0]}/{shard_of[1]}: {len(items)} of {total} submissions")
    jobs = args.jobs or default_jobs(options.limits.memory_gib)
    if len(items) > 1:
        _log(f"{len(items)} submissions, {jobs} at once; reports in {args.out}")
    batch = run_batch(
        items, args.out, options=options, jobs=jobs, force=args.force, log=_log, progress=not args.no_progress
    )
    code = EXIT_OK
    for item in items:
        row = batch.rows[item.name]
        if item.name in batch.skipped:
            print(f"{item.name}: {row['points']} / {row['max_points']} points (graded before; --force to redo)")
        if row["status"] == "grader_error":
            _log(f"error: the grader failed on {item.path}; see {item.out_dir / 'report.md'}")
            code = EXIT_GRADER
        elif args.fail_under is not None and row["percent"] and float(row["percent"]) < args.fail_under:
            code = EXIT_BELOW if code == EXIT_OK else code
    if shard_of is not None:
        _log("similarity: left to `merge`, which sees the whole class")
    elif len(items) > 1:
        _similarity_after(args.out, args.similarity_threshold)
    print(f"gradebook: {args.out / 'gradebook.csv'}; class overview: {args.out / 'overview.md'}", flush=True)
    if len(items) == 1:
        print(f"report: {items[0].out_dir / 'report.md'}", flush=True)
    return code


def _similarity_after(out: Path, threshold: float) -> None:
    """The similarity report after a class is graded or merged. Grades are done by then, so a
    failure here is said and leaves the exit code alone."""
    from grader.classroom.similarity import compare_class, up_to_date
    from grader.classroom.summaries import rebuild_summaries

    if up_to_date(out, threshold):  # a resumed batch that graded nothing: minutes saved at 300
        _log(f"similarity: up to date (no submission graded since); `python -m grader similarity {out}` redoes it")
        return
    try:
        report = compare_class(out, threshold=threshold)
    except Exception as error:  # noqa: BLE001  # the grades stand; say what failed and how to retry
        _log(
            f"warning: no similarity report ({type(error).__name__}: {error}); the grades are not affected. "
            f"Retry with `python -m grader similarity {out}`"
        )
        return
    rebuild_summaries(out)
    _log(_similarity_line(report))


def _similarity_line(report: Similarity) -> str:
    listed = len(report.pairs)
    return (
        f"similarity: {listed} pair(s) at or above {report.threshold:g}% in "
        f"{sum(n.pairs for n in report.notebooks)} compared, {report.elapsed:.1f} s"
        + (f"; {len(report.skipped)} notebook(s) not compared" if report.skipped else "")
        + "; see the overview"
    )


def _cmd_similarity(args: argparse.Namespace) -> int:
    from grader.classroom.similarity import compare_class
    from grader.classroom.summaries import rebuild_summaries

    missing = [folder for folder in (args.out, args.templates) if not folder.is_dir()]
    if missing:
        _log("error: no such folder: " + ", ".join(map(str, missing)))
        return EXIT_USAGE
    try:
        report = compare_class(args.out, threshold=args.similarity_threshold, templates=args.templates, log=_log)
    except ValueError as error:
        _log(f"error: {error}")
        return EXIT_USAGE
    for note in report.skipped:
        _log(f"not compared: {note}")
    rebuild_summaries(args.out)
    print(_similarity_line(report) + f": {args.out / 'overview.md'}", flush=True)
    return EXIT_OK


def _cmd_merge(args: argparse.Namespace) -> int:
    from grader.classroom.merge import merge

    missing = [p for p in args.sources if not p.is_dir()]
    if missing:
        _log("error: no such folder: " + ", ".join(map(str, missing)))
        return EXIT_USAGE
    for warning in merge(args.sources, args.out):
        _log(f"warning: {warning}")
    if len(list(args.out.glob("*/result.json"))) > 1:
        _similarity_after(args.out, args.similarity_threshold)
    print(f"gradebook: {args.out / 'gradebook.csv'}; class overview: {args.out / 'overview.md'}")
    return EXIT_OK


def _use_standin_if_missing(path: Path) -> None:
    """Point ``$KIT_RESNET18_WEIGHTS`` at a stand-in when no real ResNet-18 weights load."""
    from src.models import WEIGHTS_ENV, load_resnet18, make_standin_weights

    try:
        _, info = load_resnet18()
    except FileNotFoundError as error:
        if not path.exists():
            make_standin_weights(path)
        os.environ[WEIGHTS_ENV] = str(path.resolve())
        _, info = load_resnet18()
        _log(f"warning: no ResNet-18 weights here ({type(error).__name__}); grading with {info.description}")
        return
    _log(f"ResNet-18 weights: {info.description}")


def _cmd_check(args: argparse.Namespace) -> int:
    from grader.grade import grade_submission
    from grader.report.formats import to_markdown, write_reports

    sandbox = _confinement(args, optional=True)  # the student's own code, on the student's own machine
    if sandbox is _REFUSED:
        return EXIT_GRADER
    if not args.notebook.exists():
        _log(f"error: no such notebook: {args.notebook}")
        return EXIT_USAGE
    result = grade_submission(args.notebook, options=_options(args, "self-check", sandbox), out_dir=args.out, log=_log)
    print(to_markdown(result))
    if args.out is not None:
        write_reports(result, args.out)
    return EXIT_GRADER if result.grader_error else EXIT_OK


# ------------------------------------------------------------------------------- release


def _add_release(commands: argparse._SubParsersAction) -> None:
    release = commands.add_parser(
        "release",
        help="generate the student notebooks (assignments/) from the solutions",
        description="Replace each ### BEGIN SOLUTION / ### END SOLUTION region and each cell tagged "
        "'solution' with a <YOUR CODE> placeholder, clear outputs, and write the result to the "
        "assignments folder.",
    )
    release.add_argument(
        "--solutions",
        type=Path,
        default=SOLUTIONS_DIR,
        help="folder of the solution notebooks (default: %(default)s)",
    )
    release.add_argument(
        "--assignments",
        type=Path,
        default=ASSIGNMENTS_DIR,
        help="folder to write the templates to (default: %(default)s)",
    )
    release.add_argument(
        "--check",
        action="store_true",
        help="write nothing; exit 1 if a template is missing or differs from what release would write",
    )
    release.add_argument(
        "--student-repo",
        type=Path,
        default=None,
        metavar="DIR",
        help="also write the whole student repository into DIR: assignments/, src/, grader/ (without "
        "the hidden seed), the student README and the autograding workflow; never solutions/",
    )
    release.set_defaults(func=_cmd_release)


def _cmd_release(args: argparse.Namespace) -> int:
    from grader.release import templates as release_module

    try:
        if args.check:
            result = release_module.find_stale(solutions_dir=args.solutions, assignments_dir=args.assignments)
        else:
            result = release_module.release(solutions_dir=args.solutions, assignments_dir=args.assignments)
    except (ValueError, FileNotFoundError) as error:  # MarkerError is a ValueError; so is an unreadable notebook
        _log(f"error: {error}")
        return EXIT_USAGE
    for name in result.extra:
        _log(f"warning: {args.assignments / name} has no solution in {args.solutions}")
    if args.check:
        if result.stale:
            for name in result.stale:
                _log(f"stale: {args.assignments / name}")
            _log("run `python -m grader release` to regenerate them")
            return 1
        print(f"{args.assignments} is up to date")
        return EXIT_OK
    for path in result.written:
        print(f"wrote {path}")
    if not result.written:
        print(f"{args.assignments} was already up to date")
    if args.student_repo is not None:
        from grader.release.student_repo import ReleaseError, write_student_repo

        try:
            files = write_student_repo(args.student_repo, solutions_dir=args.solutions)
        except ReleaseError as error:
            _log(f"error: {error}")
            return EXIT_USAGE
        print(f"wrote the student repository: {args.student_repo} ({len(files)} files)")
    return EXIT_OK


def main(argv: list[str] | None = None) -> int:
    """Parse ``argv`` and run the command; returns the exit code."""
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
