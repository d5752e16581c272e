"""Merge the report folders of several shards (a CI matrix, a Slurm array) into one class folder.

    python -m grader merge shard-1/ shard-2/ ... --out class/
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from grader.classroom.summaries import rebuild_summaries
from grader.report import marking
from grader.report.files import RESULT, atomic_write

__all__ = ["merge"]


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
    store = marking.load_store(out)
    for source in map(Path, sources):
        for submission, scores in marking.load_store(source).items():
            if submission in chosen and chosen[submission][1].parent.resolve() == source.resolve():
                store.setdefault(submission, {}).update(scores)
    if store:
        atomic_write(out / marking.STORE, json.dumps(store, indent=2, ensure_ascii=False) + "\n")
    rebuild_summaries(out)
    return warnings
