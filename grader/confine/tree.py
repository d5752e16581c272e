"""A confined process's tree as the operating system shows it, without any cgroup.

Owns listing a process and its descendants (`process_tree`), their CPU time (`tree_cpu_seconds`),
reaping the killed ones that come to the grader as orphans (`become_subreaper`, `reap`), and
counting a user's processes (`user_processes`). Used by `grader.confine.limits.ProcessBox`, its
mechanisms and `grader.run.kernel.KernelSession` (which finds its kernel in the tree).
"""

from __future__ import annotations

import functools
import os
import sys
import time

import psutil

__all__ = ["become_subreaper", "process_tree", "reap", "tree_cpu_seconds", "user_processes"]


def process_tree(pid: int | None) -> list[psutil.Process]:
    """The process ``pid`` and all its descendants, parents before children ([] when it is gone)."""
    if pid is None:
        return []
    try:
        root = psutil.Process(pid)
        return [root, *root.children(recursive=True)]
    except psutil.Error:
        return []


def tree_cpu_seconds(pid: int | None) -> float:
    """CPU seconds of a process tree: each live process's own and its waited-for children's."""
    total = 0.0
    for process in process_tree(pid):
        try:
            times = process.cpu_times()
        except psutil.Error:
            continue
        total += times.user + times.system + times.children_user + times.children_system
    return total


@functools.cache
def become_subreaper() -> bool:
    """Make this process the child subreaper of what it starts (Linux): a process of a box whose
    parent was killed comes to this process, which reaps it, instead of to PID 1, which in a
    container may never reap it. Returns whether it worked."""
    if sys.platform != "linux":
        return False
    import ctypes

    try:
        return ctypes.CDLL(None, use_errno=True).prctl(36, 1, 0, 0, 0) == 0  # PR_SET_CHILD_SUBREAPER
    except (OSError, AttributeError):
        return False


def reap(pids: list[int], *, within: float = 2.0) -> None:
    """Wait for the given killed processes that are (or become) this process's children."""
    deadline = time.monotonic() + within
    pending = set(pids)
    while pending and time.monotonic() < deadline:
        for pid in list(pending):
            try:
                done, _ = os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:  # not ours (yet: its parent may still be dying), or gone
                if not psutil.pid_exists(pid):
                    pending.discard(pid)
                continue
            if done:
                pending.discard(pid)
        if pending:
            time.sleep(0.01)


def user_processes() -> int:
    """How many processes this user runs on the machine (what ``RLIMIT_NPROC`` counts)."""
    uid = os.getuid()
    count = 0
    for process in psutil.process_iter(["uids"]):
        try:
            count += process.info["uids"].real == uid
        except (psutil.Error, TypeError, AttributeError):
            pass
    return count
