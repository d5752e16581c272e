"""Command line of the grader: argument parsing only; each command calls library functions.

    python -m grader grade [PATH ...]      grade submissions (folders or notebooks); default solutions/
    python -m grader check NOTEBOOK        a student's self-check: visible cases only
    python -m grader release               write assignments/ from solutions/

Exit codes: 0 when every submission was graded, whatever its points; 1 with ``--fail-under``
when a submission scored below it; 2 for a usage error; 3 when the grader itself could not do
its job (a crash of the grader, a required sandbox that is missing).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from grader.assignments import REPO_ROOT
from grader.kernel import Limits

__all__ = ["build_parser", "main"]

EXIT_OK, EXIT_BELOW, EXIT_USAGE, EXIT_GRADER = 0, 1, 2, 3


def _add_limits(parser: argparse.ArgumentParser, *, cell: float, notebook: float) -> None:
    group = parser.add_argument_group("limits")
    group.add_argument(
        "--cell-timeout", type=float, default=cell, metavar="S", help="seconds one cell may run (default: %(default)s)"
    )
    group.add_argument(
        "--timeout",
        type=float,
        default=notebook,
        metavar="S",
        help="seconds a whole notebook may run (default: %(default)s)",
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
        "--no-sandbox", dest="sandbox", action="store_const", const=False, help="run kernels without bubblewrap"
    )
    sandbox.add_argument(
        "--require-sandbox",
        dest="sandbox",
        action="store_const",
        const=True,
        help="fail (exit 3) instead of running unconfined when bubblewrap does not work",
    )
    parser.add_argument("--keep-scratch", action="store_true", help="keep the scratch copies (debugging)")


def build_parser() -> argparse.ArgumentParser:
    """The parser: ``grade``, ``check`` and ``release``."""
    parser = argparse.ArgumentParser(prog="python -m grader", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    grade = commands.add_parser(
        "grade",
        help="grade submissions: run, probe, verify, report",
        description="Grade each PATH (a folder with the three notebooks, or one notebook) and write "
        "result.json, report.md, junit.xml and the executed notebooks to OUT/<submission>/, and a "
        "row per submission to OUT/gradebook.csv.",
    )
    grade.add_argument(
        "paths", nargs="*", type=Path, metavar="PATH", help="submission folders or notebooks (default: solutions/)"
    )
    grade.add_argument("--out", type=Path, default=Path("out/grades"), help="report folder (default: %(default)s)")
    grade.add_argument(
        "--hidden-seed",
        type=int,
        default=None,
        help="seed of the hidden convolution cases (default: $GRADER_HIDDEN_SEED, "
        "else grader/hidden_seed.txt, else random)",
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
    _add_limits(grade, cell=Limits.cell_timeout, notebook=Limits.timeout)
    grade.set_defaults(func=_cmd_grade)

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

    _add_release(commands)
    return parser


def _options(args: argparse.Namespace, hidden_seed: int | None):
    from grader.grade import GradeOptions

    limits = Limits(cell_timeout=args.cell_timeout, timeout=args.timeout, memory_gib=args.memory_limit)
    return GradeOptions(
        limits=limits, seed=args.seed, hidden_seed=hidden_seed, sandbox=args.sandbox, keep_scratch=args.keep_scratch
    )


def _sandbox_problem(args: argparse.Namespace) -> str | None:
    if args.sandbox is True:
        from grader.sandbox import probe_bwrap

        return probe_bwrap()
    return None


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _cmd_grade(args: argparse.Namespace) -> int:
    from grader.convolution import resolve_hidden_seed
    from grader.grade import grade_submissions
    from grader.report import write_reports

    problem = _sandbox_problem(args)
    if problem:
        _log(f"error: --require-sandbox: {problem}")
        return EXIT_GRADER
    paths = args.paths or [REPO_ROOT / "solutions"]
    missing = [p for p in paths if not p.exists()]
    if missing:
        _log("error: no such file or folder: " + ", ".join(map(str, missing)))
        return EXIT_USAGE
    if args.standin_weights_if_missing is not None:
        _use_standin_if_missing(args.standin_weights_if_missing)
    hidden_seed, source = resolve_hidden_seed(args.hidden_seed)
    _log(f"hidden convolution cases: seed from {source}")
    code = EXIT_OK
    results = grade_submissions(
        paths, options=_options(args, hidden_seed), out_dir_for=lambda name: args.out / name, log=_log
    )
    for path, result in zip(paths, results):
        written = write_reports(result, args.out / result.name)
        percent = 100 * result.points / result.max_points if result.max_points else 100.0
        print(
            f"{result.name}: {result.points:g} / {result.max_points:g} points ({percent:.0f}%) "
            f"in {result.elapsed:.1f} s; report: {written['markdown']}",
            flush=True,
        )
        if result.grader_error:
            _log(f"error: the grader failed on {path}: {result.grader_error}")
            code = EXIT_GRADER
        elif args.fail_under is not None and percent < args.fail_under and code == EXIT_OK:
            code = EXIT_BELOW
    return code


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
    from grader.report import to_markdown, write_reports

    problem = _sandbox_problem(args)
    if problem:
        _log(f"error: --require-sandbox: {problem}")
        return EXIT_GRADER
    if not args.notebook.exists():
        _log(f"error: no such notebook: {args.notebook}")
        return EXIT_USAGE
    result = grade_submission(args.notebook, options=_options(args, None), out_dir=args.out, log=_log)
    print(to_markdown(result))
    if args.out is not None:
        write_reports(result, args.out)
    return EXIT_GRADER if result.grader_error else EXIT_OK


# ------------------------------------------------------------------------------- release


def _add_release(commands: argparse._SubParsersAction) -> None:
    try:
        from grader import release as release_module
    except ImportError:
        return
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
        default=release_module.REPO_ROOT / "solutions",
        help="folder of the solution notebooks (default: %(default)s)",
    )
    release.add_argument(
        "--assignments",
        type=Path,
        default=release_module.REPO_ROOT / "assignments",
        help="folder to write the templates to (default: %(default)s)",
    )
    release.add_argument(
        "--check",
        action="store_true",
        help="write nothing; exit 1 if a template is missing or differs from what release would write",
    )
    release.set_defaults(func=_cmd_release)


def _cmd_release(args: argparse.Namespace) -> int:
    from grader import release as release_module

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
    return EXIT_OK


def main(argv: list[str] | None = None) -> int:
    """Parse ``argv`` and run the command; returns the exit code."""
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
