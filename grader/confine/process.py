"""What a notebook's kernel and a verification worker share as confined processes.

Owns three things, one implementation each, used by `grader.run.kernel.KernelSession` and by
`grader.confine.worker` alike:

* `confine`: a command line wrapped in bubblewrap (`grader.confine.sandbox.bwrap_argv`, when
  confined) and in a new `grader.confine.limits.ProcessBox` (the launcher that joins its limits);
* `OutputTail`: the process's own stdout and stderr drained while it runs (a full pipe would
  block it), keeping only their end;
* `describe_exit`: how a process ended, in words, from its return code (an exit code, or the
  signal that killed it).
"""

from __future__ import annotations

import signal
import threading
from pathlib import Path
from typing import Any

from grader.confine.limits import GIB, ProcessBox
from grader.confine.sandbox import Mounts, bwrap_argv
from grader.options import Limits

__all__ = ["OutputTail", "confine", "describe_exit", "exit_signal", "signal_name"]


def confine(
    argv: list[str],
    env: dict[str, str],
    *,
    name: str,
    limits: Limits,
    sandboxed: bool,
    mounts: Mounts,
    cwd: Path,
    scratch: Path,
    watch_dirs: tuple[Path, ...],
) -> tuple[list[str], ProcessBox]:
    """The command line that runs ``argv`` confined, and the box holding its limits.

    Args:
        argv: the command to run.
        env: its whole environment (nothing else is inherited).
        name: a short label for the box (cgroup, systemd unit).
        limits: memory, processes, CPU time, disk.
        sandboxed: wrap it in bubblewrap (else only the box's limits apply).
        mounts, cwd, scratch: what the sandbox shows, where the process starts, where the sandbox
            writes its made-up files (`grader.confine.sandbox.bwrap_argv`).
        watch_dirs: the process's writable folders, kept under ``limits.disk_gib``.

    Returns:
        ``(command, box)``: start ``command``, then call ``box.started(pid)``; the caller closes the box.
    """
    if sandboxed:
        # /tmp and /dev/shm are memory: a quarter of the limit (the cgroup counts them too).
        argv = bwrap_argv(argv, mounts=mounts, cwd=cwd, scratch=scratch, tmp_bytes=int(limits.memory_gib * GIB / 4))
    box = ProcessBox(name, limits, watch_dirs=watch_dirs)
    try:
        return box.command(argv, env), box
    except BaseException:
        box.close()
        raise


class OutputTail(threading.Thread):
    """Drains a process's stdout and stderr while it runs (a full pipe would block it), keeping
    the last ``size`` bytes. Start it once the process runs; `text` reads what it kept so far."""

    def __init__(self, stream: Any, *, size: int = 8192, name: str = "process-output") -> None:
        super().__init__(daemon=True, name=name)
        self.stream, self.size, self.tail = stream, size, bytearray()

    def run(self) -> None:
        for chunk in iter(lambda: self.stream.read1(65536), b""):
            self.tail.extend(chunk)
            del self.tail[: -self.size]

    def text(self) -> str:
        return bytes(self.tail).decode(errors="replace")


def exit_signal(code: int) -> int | None:
    """The signal that ended a process, from its return code (``-N`` from `subprocess`, ``128+N``
    from a shell or from bubblewrap passing on its child's death), or None when it exited."""
    if code < 0:
        return -code
    if code > 128:
        return code - 128
    return None


def signal_name(number: int) -> str:
    """``SIGKILL`` for 9; ``signal 99`` for a number no signal has."""
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


def describe_exit(code: int) -> str:
    """How a process ended: ``killed by SIGKILL`` or ``exited with code 3``."""
    number = exit_signal(code)
    if number is None:
        return f"exited with code {code}"
    return f"killed by {signal_name(number)}"
