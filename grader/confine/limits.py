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

Time budgets that decide a point count CPU time, not the wall clock (a busy machine makes grading
slower, never different): `ProcessBox.cpu_seconds` is the CPU time of everything in the box, read
from the cgroup (v2 ``cpu.stat``, v1 ``cpuacct.usage``) or, where there is none, summed over the
process tree (each process's own time and that of the children it waited for).
"""

from __future__ import annotations

import functools
import itertools
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import psutil

from grader.options import WALL_FACTOR, Limits
from grader.paths import LAUNCHER

__all__ = [
    "GIB", "WALL_FACTOR", "Enforcement", "Limits", "ProcessBox", "probe_enforcement", "threads_per_process", "usable_cores",
]

GIB = 2**30
ENFORCEMENT_ENV = "GRADER_LIMITS"  # force a mechanism (tests of the fallbacks): watchdog, cgroup-v1, ...
DELEGATED_CGROUP_ENV = "GRADER_CGROUP"  # a cgroup v2 folder delegated to the grader's user
_CGROUP = Path("/sys/fs/cgroup")
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
    for line in _read(Path("/proc/self/cgroup")).splitlines():
        _, controllers, path = line.split(":", 2)
        if controllers == "":  # v2
            text = _read(_CGROUP / path.lstrip("/") / "cpu.max").split()
            if len(text) == 2 and text[0] != "max":
                return max(1.0, int(text[0]) / int(text[1]))
        elif "cpu" in controllers.split(","):
            for root in (_CGROUP / "cpu", _CGROUP / "cpu,cpuacct"):
                quota = _read(root / path.lstrip("/") / "cpu.cfs_quota_us").strip()
                period = _read(root / path.lstrip("/") / "cpu.cfs_period_us").strip()
                if quota.lstrip("-").isdigit() and int(quota) > 0 and period.isdigit():
                    return max(1.0, int(quota) / int(period))
    return None


@dataclass(frozen=True)
class Enforcement:
    """How limits are enforced on this machine.

    Attributes:
        kind: ``cgroup-v2``, ``systemd-run``, ``cgroup-v1`` or ``watchdog``.
        detail: why this one, in words.
        parent: where boxes are created (a cgroup v2 folder; unused otherwise).
        sudo: prefix privileged commands with ``sudo -n`` (``systemd-run`` as a normal user).
    """

    kind: Literal["cgroup-v2", "systemd-run", "cgroup-v1", "watchdog"]
    detail: str
    parent: str = ""
    sudo: bool = False

    def describe(self) -> str:
        if self.kind == "watchdog":
            return f"limits by the grader's watchdog (no cgroup here: {self.detail}); CPU time summed over the process tree"
        return f"limits by {self.kind} ({self.detail}); CPU time {self.cpu_meter}"

    @property
    def cpu_meter(self) -> str:
        """Where `ProcessBox.cpu_seconds` reads CPU time under this mechanism."""
        if self.kind in ("cgroup-v2", "systemd-run"):
            return "from the cgroup's cpu.stat"
        if self.kind == "cgroup-v1" and _v1_cpuacct() is not None:
            return "from the cgroup v1 cpuacct group"
        return "summed over the process tree"


# ----------------------------------------------------------------------------- which mechanism


def _write(path: Path, text: str) -> None:
    with open(path, "w") as handle:
        handle.write(text)


def _read(path: Path) -> str:
    try:
        return path.read_text()
    except OSError:
        return ""


def _v2_parent() -> tuple[Path | None, str]:
    """A cgroup v2 folder under which this process may create boxes with memory and pids."""
    if not (_CGROUP / "cgroup.controllers").is_file():
        return None, "no cgroup v2 hierarchy at /sys/fs/cgroup"
    delegated = os.environ.get(DELEGATED_CGROUP_ENV)
    parent = Path(delegated) if delegated else _CGROUP
    if not delegated and os.geteuid() != 0:
        return None, f"cgroup v2 needs root, or a delegated folder in ${DELEGATED_CGROUP_ENV}"
    wanted = {"memory", "pids"}
    enabled = set(_read(parent / "cgroup.subtree_control").split())
    if not wanted <= enabled:
        try:
            _write(parent / "cgroup.subtree_control", " ".join(f"+{c}" for c in sorted(wanted - enabled)))
        except OSError as error:
            return None, f"cannot enable memory and pids controllers in {parent} ({error.strerror})"
    probe = parent / f"cnn-kit-probe-{os.getpid()}"
    try:
        probe.mkdir()
        _write(probe / "memory.max", str(64 * 2**20))
        _write(probe / "pids.max", "16")
    except OSError as error:
        return None, f"cannot create a cgroup in {parent} ({error.strerror})"
    finally:
        try:
            probe.rmdir()
        except OSError:
            pass
    return parent, f"boxes under {parent}"


def _v1_ok() -> str | None:
    """None when the v1 memory and pids hierarchies accept a new group, else why not."""
    made = []
    try:
        for controller in ("memory", "pids"):
            folder = _CGROUP / controller / f"cnn-kit-probe-{os.getpid()}"
            folder.mkdir()
            made.append(folder)
        _write(made[0] / "memory.limit_in_bytes", str(64 * 2**20))
        _write(made[1] / "pids.max", "16")
    except OSError as error:
        return f"cgroup v1 memory and pids not writable ({error.strerror or error})"
    finally:
        for folder in made:
            try:
                folder.rmdir()
            except OSError:
                pass
    return None


@functools.cache
def _v1_cpuacct() -> Path | None:
    """The cgroup v1 ``cpuacct`` hierarchy, when this process may create groups in it."""
    root = _CGROUP / "cpuacct"
    probe = root / f"cnn-kit-probe-{os.getpid()}"
    try:
        probe.mkdir()
    except OSError:
        return None
    try:
        probe.rmdir()
    except OSError:
        pass
    return root


def _systemd_run() -> tuple[bool, str]:
    """Whether ``systemd-run --scope`` with memory and task limits works here (through sudo -n)."""
    if not Path("/run/systemd/system").is_dir() or shutil.which("systemd-run") is None:
        return False, "systemd is not running here"
    sudo = os.geteuid() != 0
    trial = [*(["sudo", "-n"] if sudo else []), "systemd-run", "--scope", "--quiet", "--collect"]
    trial += ["-p", "MemoryMax=64M", "-p", "TasksMax=16", *_as_me(sudo), "--", "true"]
    try:
        done = subprocess.run(trial, capture_output=True, text=True, timeout=30, check=False)
    except (OSError, subprocess.TimeoutExpired) as error:
        return False, f"systemd-run failed ({error})"
    if done.returncode != 0:
        return False, f"systemd-run --scope failed ({(done.stderr.strip().splitlines() or ['?'])[-1]})"
    return True, "a transient scope per process" + (", through sudo -n" if sudo else "")


def _as_me(sudo: bool) -> list[str]:
    return [f"--uid={os.getuid()}", f"--gid={os.getgid()}"] if sudo else []


@functools.cache
def probe_enforcement() -> Enforcement:
    """The strongest mechanism that works on this machine (see the module's docstring)."""
    forced = os.environ.get(ENFORCEMENT_ENV, "")
    if forced == "watchdog":
        return Enforcement("watchdog", f"${ENFORCEMENT_ENV}=watchdog")
    reasons = []
    if forced in ("", "cgroup-v2"):
        parent, why = _v2_parent()
        if parent is not None:
            return Enforcement("cgroup-v2", why, parent=str(parent))
        reasons.append(why)
    if forced in ("", "systemd-run"):
        works, why = _systemd_run()
        if works:
            return Enforcement("systemd-run", why, sudo=os.geteuid() != 0)
        reasons.append(why)
    if forced in ("", "cgroup-v1"):
        problem = _v1_ok()
        if problem is None:
            return Enforcement("cgroup-v1", "memory and pids groups per process")
        reasons.append(problem)
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
        _become_subreaper()
        self.limits = limits
        self.enforcement = enforcement or probe_enforcement()
        self.name = f"cnn-kit-{os.getpid()}-{next(_count)}-{name}"
        self.watch_dirs = tuple(watch_dirs)
        self.exceeded: str | None = None  # "memory", "disk" or "processes", once the box killed for it
        self._peak = 0
        self._pid: int | None = None
        self._groups: list[Path] = []  # v2: [group]; v1: [memory, pids] and cpuacct where it can
        self._scope_group: Path | None = None
        self._watchdog: _Watchdog | None = None
        self._make_groups()

    @property
    def memory_bytes(self) -> int:
        return int(self.limits.memory_gib * GIB)

    def _make_groups(self) -> None:
        kind = self.enforcement.kind
        try:
            if kind == "cgroup-v2":
                group = Path(self.enforcement.parent) / self.name
                group.mkdir()
                self._groups = [group]
                _write(group / "memory.max", str(self.memory_bytes))
                if (group / "memory.swap.max").exists():
                    _write(group / "memory.swap.max", "0")
                _write(group / "pids.max", str(self.limits.processes))
            elif kind == "cgroup-v1":
                memory, pids = _CGROUP / "memory" / self.name, _CGROUP / "pids" / self.name
                for group in (memory, pids):
                    group.mkdir()
                    self._groups.append(group)
                _write(memory / "memory.limit_in_bytes", str(self.memory_bytes))
                if (memory / "memory.memsw.limit_in_bytes").exists():  # swap accounting on
                    _write(memory / "memory.memsw.limit_in_bytes", str(self.memory_bytes))
                _write(pids / "pids.max", str(self.limits.processes))
                cpuacct = _v1_cpuacct()
                if cpuacct is not None:  # CPU time of the whole box, not only of the live processes
                    (cpuacct / self.name).mkdir()
                    self._groups.append(cpuacct / self.name)
        except OSError as error:
            self._remove_groups()
            raise RuntimeError(f"could not set up {kind} limits: {error}") from error

    def command(self, argv: list[str], env: dict[str, str]) -> list[str]:
        """``argv`` run through `grader.confine.launch` (limits joined, rlimits set, exactly ``env``)."""
        launch = [sys.executable, "-I", "-S", str(LAUNCHER)]
        for group in self._groups:
            launch += ["--join", str(group / "cgroup.procs")]
        rlimits = {"cpu": self.limits.cpu_seconds, "fsize": int(self.limits.disk_gib * GIB), "core": 0}
        if self.enforcement.kind == "watchdog" and os.geteuid() != 0:
            # Counted per user, across the machine: what this user runs already, plus the box's share.
            rlimits["nproc"] = _user_processes() + self.limits.processes
        for name, value in rlimits.items():
            launch += ["--rlimit", f"{name}={value}"]
        for key, value in env.items():
            launch += ["--env", f"{key}={value}"]
        launch += ["--", *argv]
        if self.enforcement.kind != "systemd-run":
            return launch
        scope = [*self._sudo(), "systemd-run", "--scope", "--quiet", "--collect", f"--unit={self.name}"]
        scope += ["-p", f"MemoryMax={self.memory_bytes}", "-p", "MemorySwapMax=0"]
        scope += ["-p", f"TasksMax={self.limits.processes}", *_as_me(self.enforcement.sudo), "--"]
        return scope + launch

    def _sudo(self) -> list[str]:
        return ["sudo", "-n"] if self.enforcement.sudo else []

    def started(self, pid: int) -> None:
        """Watch the process ``pid`` (and its tree, and the box's folders) from now on."""
        self._pid = pid
        self._watchdog = _Watchdog(self)
        self._watchdog.start()

    # ------------------------------------------------------------------ reading the box

    def _v2_group(self) -> Path | None:
        if self.enforcement.kind == "cgroup-v2":
            return self._groups[0]
        if self.enforcement.kind == "systemd-run":
            if self._scope_group is None:  # known once the scope runs; asked again until then
                shown = subprocess.run(
                    ["systemctl", "show", "-p", "ControlGroup", "--value", f"{self.name}.scope"],
                    capture_output=True, text=True, check=False,
                ).stdout.strip()
                self._scope_group = _CGROUP / shown.lstrip("/") if shown else None
            return self._scope_group
        return None

    def memory_killed(self) -> bool:
        """Whether the operating system killed a process of the box for memory."""
        if self.exceeded == "memory":
            return True
        group = self._v2_group()
        if group is not None:
            events = dict(line.split() for line in _read(group / "memory.events").splitlines() if " " in line)
            return int(events.get("oom_kill", 0)) > 0
        if self.enforcement.kind == "cgroup-v1":
            memory = self._groups[0]
            control = dict(line.split() for line in _read(memory / "memory.oom_control").splitlines() if " " in line)
            if "oom_kill" in control:
                return int(control["oom_kill"]) > 0
            return int(_read(memory / "memory.failcnt") or 0) > 0
        return False

    def cpu_seconds(self) -> float:
        """CPU time used so far by everything in the box (user and system, all threads)."""
        group = self._v2_group()
        if group is not None:
            for line in _read(group / "cpu.stat").splitlines():
                if line.startswith("usage_usec "):
                    return int(line.split()[1]) / 1e6
        elif self.enforcement.kind == "cgroup-v1" and len(self._groups) > 2:
            text = _read(self._groups[2] / "cpuacct.usage").strip()
            if text.isdigit():
                return int(text) / 1e9
        return _tree_cpu(self._pid)

    @property
    def peak_memory(self) -> int:
        """The largest memory use seen: the cgroup's own record, or the watchdog's polls."""
        if self._groups or self.enforcement.kind == "systemd-run":
            self._read_peak()
        return self._peak

    def _read_peak(self) -> None:
        group = self._v2_group()
        if group is not None:
            text = _read(group / "memory.peak") or _read(group / "memory.current")
        elif self.enforcement.kind == "cgroup-v1":
            text = _read(self._groups[0] / "memory.max_usage_in_bytes")
        else:
            return
        if text.strip().isdigit():
            self._peak = max(self._peak, int(text))

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
        """Kill every process of the box (the process tree, and the cgroup's members), and reap
        those that came to this process as orphans (see `_become_subreaper`): none is left a zombie."""
        tree = _tree(self._pid)
        for process in reversed(tree):  # children first, so none is re-parented and missed
            try:
                process.kill()
            except psutil.Error:
                pass
        kind = self.enforcement.kind
        if kind == "systemd-run":
            subprocess.run(
                [*self._sudo(), "systemctl", "kill", "--signal=SIGKILL", f"{self.name}.scope"],
                capture_output=True, check=False,
            )
        elif self._groups:
            group = self._groups[0] if kind == "cgroup-v2" else self._groups[1]  # v1: the pids group
            if kind == "cgroup-v2" and (group / "cgroup.kill").exists():
                try:
                    _write(group / "cgroup.kill", "1")
                except OSError:
                    pass
            for _ in range(100):  # a process forking as fast as it can: at most pids.max at once
                members = [int(p) for p in _read(group / "cgroup.procs").split()]
                if not members:
                    break
                for pid in members:
                    try:
                        os.kill(pid, signal.SIGKILL)
                    except OSError:
                        pass
                time.sleep(0.01)
        _reap([process.pid for process in tree[1:]])  # the root is its owner's (subprocess waits for it)

    def close(self) -> None:
        """Stop watching, kill what is left, remove the cgroups. Safe to call twice."""
        if self._watchdog is not None:
            self._watchdog.stop()
        self._read_peak()
        self.kill()
        self._remove_groups()

    def _remove_groups(self) -> None:
        for group in self._groups:
            for _ in range(50):  # a killed process leaves its group a moment later
                try:
                    group.rmdir()
                    break
                except FileNotFoundError:
                    break
                except OSError:
                    time.sleep(0.02)
        self._groups = []


@functools.cache
def _become_subreaper() -> bool:
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


def _reap(pids: list[int], *, within: float = 2.0) -> None:
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


def _tree(pid: int | None) -> list[psutil.Process]:
    if pid is None:
        return []
    try:
        root = psutil.Process(pid)
        return [root, *root.children(recursive=True)]
    except psutil.Error:
        return []


def _tree_cpu(pid: int | None) -> float:
    """CPU seconds of a process tree: each live process's own and its waited-for children's."""
    total = 0.0
    for process in _tree(pid):
        try:
            times = process.cpu_times()
        except psutil.Error:
            continue
        total += times.user + times.system + times.children_user + times.children_system
    return total


def _user_processes() -> int:
    uid = os.getuid()
    count = 0
    for process in psutil.process_iter(["uids"]):
        try:
            count += process.info["uids"].real == uid
        except (psutil.Error, TypeError, AttributeError):
            pass
    return count


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
        rss_limited = box.enforcement.kind == "watchdog"
        tree: list[psutil.Process] = []
        listed = scanned = 0.0
        disk_bytes = int(box.limits.disk_gib * GIB)
        while not self._stop_event.wait(self.interval):
            now = time.monotonic()
            if rss_limited:
                if now - listed >= 1.0:
                    tree, listed = _tree(box._pid), now
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
