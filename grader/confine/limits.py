"""Resource limits a confined process cannot escape, and which of the machine's mechanisms enforces them.

Every process the grader starts for a submission (a notebook's kernel, a verification worker)
runs in a `ProcessBox`: memory, number of processes, CPU time, file size, disk of its writable
folders. Where the machine has them, the operating system enforces the limits; the grader picks,
once per process (`probe_enforcement`), the first of:

1. ``cgroup-v2``: a cgroup v2 tree the grader may write (running as root, or a delegated folder
   named by ``$GRADER_CGROUP``): ``memory.max``, ``memory.swap.max = 0``, ``pids.max``, and
   ``cgroup.kill`` when the notebook ends;
2. ``systemd-run``: a transient scope (``systemd-run --scope``, through ``sudo -n`` when not
   root, as on GitHub's Ubuntu runners) with ``MemoryMax``, ``MemorySwapMax`` and ``TasksMax``;
3. ``cgroup-v1``: the v1 ``memory`` and ``pids`` hierarchies, writable by root;
4. ``watchdog``: no cgroup here. A thread polls the resident memory and the number of processes
   of the process tree and kills it above the limits (a sandboxed tree is one PID namespace, so
   it cannot leave the tree; an unconfined one can, by ``setsid``).

In every case `grader.confine.launch` sets rlimits in the new process before it runs anything (CPU seconds,
largest file, no core dumps), and the box's thread polls the size of the writable folders. The
report names the mechanism that was in force (`Enforcement.describe`).

Each mechanism is one class of `grader.confine.mechanisms` (`CgroupV2Limits`, `SystemdRunLimits`,
`CgroupV1Limits`, `WatchdogLimits`) with one interface: this module chooses one
(`probe_enforcement`) and a `ProcessBox` uses it without asking which it is. The box's own thread
(`_Watchdog`) polls its folders' size, and memory and processes where the mechanism says so.

Time budgets that decide a point count CPU time, not the wall clock (a busy machine makes grading
slower, never different): `ProcessBox.cpu_seconds` is the CPU time of everything in the box, read
from the cgroup (v2 ``cpu.stat``, v1 ``cpuacct.usage``) or, where there is none, summed over the
process tree (each process's own time and that of the children it waited for).
"""

from __future__ import annotations

import functools
import itertools
import os
import sys
import threading
import time
from pathlib import Path

import psutil

from grader.confine.mechanisms import (
    CGROUP,
    CGROUP_MECHANISMS,
    GIB,
    Enforcement,
    Mechanism,
    WatchdogLimits,
    read,
)
from grader.confine.tree import become_subreaper, process_tree, reap, tree_cpu_seconds
from grader.options import WALL_FACTOR, Limits
from grader.paths import LAUNCHER

__all__ = [
    "GIB", "WALL_FACTOR", "Enforcement", "Limits", "ProcessBox", "probe_enforcement", "threads_per_process", "usable_cores",
]

ENFORCEMENT_ENV = "GRADER_LIMITS"  # force a mechanism (tests of the fallbacks): watchdog, cgroup-v1, ...


def threads_per_process(jobs: int = 1) -> int:
    """CPU threads each of ``jobs`` kernels or workers at once may use: the usable cores shared
    out, and never more than ``$OMP_NUM_THREADS`` (what ``--jobs N`` set for its workers, or a
    scheduler's allocation: a Slurm task or a Kubernetes pod may see every core of its node)."""
    threads = max(1, usable_cores() // max(1, jobs))
    asked = os.environ.get("OMP_NUM_THREADS", "")
    return min(threads, int(asked)) if asked.isdigit() and int(asked) > 0 else threads


def usable_cores() -> int:
    """The cores this process may use: its CPU affinity, capped by its cgroup's CPU quota."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    quota = _cpu_quota()
    return max(1, min(cores, int(quota)) if quota else cores)


def _cpu_quota() -> float | None:
    """This process's cgroup CPU quota in cores (v2 ``cpu.max``, v1 ``cpu.cfs_quota_us``), or None."""
    for line in read(Path("/proc/self/cgroup")).splitlines():
        _, controllers, path = line.split(":", 2)
        if controllers == "":  # v2
            text = read(CGROUP / path.lstrip("/") / "cpu.max").split()
            if len(text) == 2 and text[0] != "max":
                return max(1.0, int(text[0]) / int(text[1]))
        elif "cpu" in controllers.split(","):
            for root in (CGROUP / "cpu", CGROUP / "cpu,cpuacct"):
                quota = read(root / path.lstrip("/") / "cpu.cfs_quota_us").strip()
                period = read(root / path.lstrip("/") / "cpu.cfs_period_us").strip()
                if quota.lstrip("-").isdigit() and int(quota) > 0 and period.isdigit():
                    return max(1.0, int(quota) / int(period))
    return None


@functools.cache
def probe_enforcement() -> Enforcement:
    """The strongest mechanism that works on this machine (see the module's docstring)."""
    forced = os.environ.get(ENFORCEMENT_ENV, "")
    if forced == WatchdogLimits.kind:
        return Enforcement("watchdog", f"${ENFORCEMENT_ENV}=watchdog")
    reasons = []
    for mechanism in CGROUP_MECHANISMS:
        if forced in ("", mechanism.kind):
            found = mechanism.probe()
            if isinstance(found, Enforcement):
                return found
            reasons.append(found)
    return Enforcement("watchdog", "; ".join(reasons))


# ----------------------------------------------------------------------------- one box


_count = itertools.count()


class ProcessBox:
    """The limits of one confined process and of everything it starts.

    Build it, wrap the command with `command`, start the process, then call `started` with its
    pid. `close` kills whatever is still running in the box and removes the cgroup.

    Args:
        name: a short label for the cgroup and the systemd unit.
        limits: memory, processes, CPU, disk.
        watch_dirs: the process's writable folders; their size is kept under ``limits.disk_gib``.
        enforcement: the mechanism; default `probe_enforcement`.
    """

    def __init__(
        self,
        name: str,
        limits: Limits,
        *,
        watch_dirs: tuple[Path, ...] = (),
        enforcement: Enforcement | None = None,
    ) -> None:
        become_subreaper()
        self.limits = limits
        self.enforcement = enforcement or probe_enforcement()
        self.name = f"cnn-kit-{os.getpid()}-{next(_count)}-{name}"
        self.watch_dirs = tuple(watch_dirs)
        self.exceeded: str | None = None  # "memory", "disk" or "processes", once the box killed for it
        self._peak = 0
        self._pid: int | None = None
        self._watchdog: _Watchdog | None = None
        self.mechanism: Mechanism = self.enforcement.mechanism(self.name, limits, self.enforcement)
        try:
            self.mechanism.create()
        except OSError as error:
            self.mechanism.remove()
            raise RuntimeError(f"could not set up {self.enforcement.kind} limits: {error}") from error

    @property
    def memory_bytes(self) -> int:
        return int(self.limits.memory_gib * GIB)

    def command(self, argv: list[str], env: dict[str, str]) -> list[str]:
        """``argv`` run through `grader.confine.launch` (limits joined, rlimits set, exactly ``env``)."""
        launch = [sys.executable, "-I", "-S", str(LAUNCHER)]
        for procs in self.mechanism.join_files():
            launch += ["--join", str(procs)]
        rlimits = {"cpu": self.limits.cpu_seconds, "fsize": int(self.limits.disk_gib * GIB), "core": 0}
        rlimits.update(self.mechanism.rlimits())
        for name, value in rlimits.items():
            launch += ["--rlimit", f"{name}={value}"]
        for key, value in env.items():
            launch += ["--env", f"{key}={value}"]
        launch += ["--", *argv]
        return self.mechanism.wrap(launch)

    def started(self, pid: int) -> None:
        """Watch the process ``pid`` (and its tree, and the box's folders) from now on."""
        self._pid = pid
        self._watchdog = _Watchdog(self)
        self._watchdog.start()

    # ------------------------------------------------------------------ reading the box

    def memory_killed(self) -> bool:
        """Whether the operating system killed a process of the box for memory."""
        return self.exceeded == "memory" or self.mechanism.memory_killed()

    def cpu_seconds(self) -> float:
        """CPU time used so far by everything in the box (user and system, all threads)."""
        used = self.mechanism.cpu_seconds()
        return used if used is not None else tree_cpu_seconds(self._pid)

    @property
    def peak_memory(self) -> int:
        """The largest memory use seen: the cgroup's own record, or the watchdog's polls."""
        self._read_peak()
        return self._peak

    def _read_peak(self) -> None:
        peak = self.mechanism.peak_memory()
        if peak is not None:
            self._peak = max(self._peak, peak)

    def reason(self) -> str:
        """Why the box killed its process, in words ("" when it did not)."""
        if self.exceeded == "disk":
            return f"disk limit of {self.limits.disk_gib:g} GiB exceeded (the scratch folder grew past it)"
        if self.exceeded == "processes":
            return f"process limit of {self.limits.processes} exceeded"
        if self.memory_killed():
            return (
                f"memory limit of {self.limits.memory_gib:g} GiB exceeded (the kernel was using "
                f"{max(self.peak_memory, self.memory_bytes) / GIB:.2f} GiB when it was stopped)"
            )
        return ""

    # ------------------------------------------------------------------ ending it

    def kill(self) -> None:
        """Kill every process of the box (the process tree, and the mechanism's members), and reap
        those that came to this process as orphans (see `grader.confine.tree.become_subreaper`):
        none is left a zombie."""
        tree = process_tree(self._pid)
        for process in reversed(tree):  # children first, so none is re-parented and missed
            try:
                process.kill()
            except psutil.Error:
                pass
        self.mechanism.kill()
        reap([process.pid for process in tree[1:]])  # the root is its owner's (subprocess waits for it)

    def close(self) -> None:
        """Stop watching, kill what is left, remove the cgroups. Safe to call twice."""
        if self._watchdog is not None:
            self._watchdog.stop()
        self._read_peak()
        self.kill()
        self.mechanism.remove()


def _folder_size(folder: Path, stop_after: int) -> tuple[int, int]:
    """Bytes and entries under ``folder`` (symlinks not followed), stopping past ``stop_after`` bytes."""
    total = entries = 0
    stack = [folder]
    while stack:
        try:
            with os.scandir(stack.pop()) as found:
                for entry in found:
                    entries += 1
                    try:
                        if entry.is_dir(follow_symlinks=False):
                            stack.append(Path(entry.path))
                        else:
                            total += entry.stat(follow_symlinks=False).st_blocks * 512
                    except OSError:
                        continue
                    if total > stop_after:
                        return total, entries
        except OSError:
            continue
    return total, entries


class _Watchdog(threading.Thread):
    """Polls a box: memory and processes of the tree (the watchdog mechanism), disk always.

    Memory is read every ``interval`` seconds; the process list (listing children scans all of
    /proc, ~5 ms) is refreshed every second, so a new DataLoader worker is watched within that.
    """

    MAX_ENTRIES = 200_000  # files in the scratch folder; scanning more would cost the grader itself

    def __init__(self, box: ProcessBox, *, interval: float = 0.1) -> None:
        super().__init__(daemon=True, name=f"watchdog-{box.name}")
        self.box = box
        self.interval = interval
        self._stop_event = threading.Event()

    def run(self) -> None:
        box = self.box
        rss_limited = box.mechanism.polls_memory
        tree: list[psutil.Process] = []
        listed = scanned = 0.0
        disk_bytes = int(box.limits.disk_gib * GIB)
        while not self._stop_event.wait(self.interval):
            now = time.monotonic()
            if rss_limited:
                if now - listed >= 1.0:
                    tree, listed = process_tree(box._pid), now
                    if not tree:
                        return
                    if len(tree) > box.limits.processes:
                        self._kill("processes")
                        return
                rss = 0
                for process in tree:
                    try:
                        rss += process.memory_info().rss
                    except psutil.Error:
                        listed = 0.0  # a process ended: list the tree again next time
                box._peak = max(box._peak, rss)
                if rss > box.memory_bytes:
                    self._kill("memory")
                    return
            if box.watch_dirs and now - scanned >= 2.0:
                scanned = now
                for folder in box.watch_dirs:
                    size, entries = _folder_size(folder, disk_bytes)
                    if size > disk_bytes or entries > self.MAX_ENTRIES:
                        self._kill("disk")
                        return

    def _kill(self, why: str) -> None:
        self.box.exceeded = why
        self.box.kill()

    def stop(self) -> None:
        self._stop_event.set()
