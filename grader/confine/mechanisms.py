"""The mechanisms that enforce a box's limits, one class each (which one, and why: `grader.confine.limits`).

Every mechanism answers the same questions, so that `grader.confine.limits.ProcessBox` needs no
branch on which one is in force:

* on the machine: does it work here (`Mechanism.probe`), and what does the report say of it
  (`Mechanism.describe`, `Mechanism.cpu_meter`);
* for one box: make and remove its groups (`create`, `remove`); how the new process joins them
  (`join_files` for the launcher, extra `rlimits`, a command to `wrap` it in); what the operating
  system recorded (`memory_killed`, `cpu_seconds`, `peak_memory`; None where it records nothing);
  kill every member (`kill`).

`CgroupV2Limits`, `SystemdRunLimits` (a cgroup v2 group that systemd makes), `CgroupV1Limits` and
`WatchdogLimits` (no cgroup: the box's polling thread enforces memory and processes).
`Enforcement` names the mechanism chosen for this machine and why.
"""

from __future__ import annotations

import functools
import os
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar, Literal

from grader.confine.tree import user_processes
from grader.options import Limits

__all__ = [
    "CGROUP", "DELEGATED_CGROUP_ENV", "MECHANISMS", "CgroupV1Limits", "CgroupV2Limits", "Enforcement", "Mechanism",
    "SystemdRunLimits", "WatchdogLimits",
]

GIB = 2**30
DELEGATED_CGROUP_ENV = "GRADER_CGROUP"  # a cgroup v2 folder delegated to the grader's user
CGROUP = Path("/sys/fs/cgroup")


def write(path: Path, text: str) -> None:
    with open(path, "w") as handle:
        handle.write(text)


def read(path: Path) -> str:
    """A control file's text ("" when it cannot be read)."""
    try:
        return path.read_text()
    except OSError:
        return ""


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

    @property
    def mechanism(self) -> type[Mechanism]:
        """The class that enforces the limits of one box under this mechanism."""
        return MECHANISMS[self.kind]

    def describe(self) -> str:
        return self.mechanism.describe(self)

    @property
    def cpu_meter(self) -> str:
        """Where `grader.confine.limits.ProcessBox.cpu_seconds` reads CPU time under this mechanism."""
        return self.mechanism.cpu_meter()


class Mechanism:
    """The limits of one box under one mechanism (a subclass each); this base records nothing.

    Args:
        name: the box's unique name (its cgroups' and its systemd unit's).
        limits: the box's limits.
        enforcement: the probed mechanism (a cgroup v2 parent, sudo).
    """

    kind: ClassVar[str]
    polls_memory: ClassVar[bool] = False  # True: the box's watchdog thread enforces memory and processes

    def __init__(self, name: str, limits: Limits, enforcement: Enforcement) -> None:
        self.name, self.limits, self.enforcement = name, limits, enforcement
        self.groups: list[Path] = []  # the cgroups this box made, in the order the process joins them

    @property
    def memory_bytes(self) -> int:
        return int(self.limits.memory_gib * GIB)

    # ------------------------------------------------------------------ the machine

    @classmethod
    def probe(cls) -> Enforcement | str:
        """This mechanism as the machine offers it, or why it does not work here."""
        raise NotImplementedError

    @classmethod
    def cpu_meter(cls) -> str:
        return "summed over the process tree"

    @classmethod
    def describe(cls, enforcement: Enforcement) -> str:
        """The report's line: which mechanism, why, and where CPU time is read."""
        return f"limits by {cls.kind} ({enforcement.detail}); CPU time {cls.cpu_meter()}"

    # ------------------------------------------------------------------ one box

    def create(self) -> None:
        """Make the box's groups with their limits (raises OSError; `remove` undoes a partial one)."""

    def join_files(self) -> list[Path]:
        """The ``cgroup.procs`` files the launcher writes its pid to before it runs anything."""
        return [group / "cgroup.procs" for group in self.groups]

    def rlimits(self) -> dict[str, int]:
        """rlimits this mechanism needs on top of the box's own (CPU, file size, core)."""
        return {}

    def wrap(self, launch: list[str]) -> list[str]:
        """The launcher's command line, run through whatever this mechanism needs in front of it."""
        return launch

    def memory_killed(self) -> bool:
        """Whether the operating system killed a process of the box for memory."""
        return False

    def cpu_seconds(self) -> float | None:
        """CPU time of everything in the box so far, as the cgroup counts it (None: not counted here)."""
        return None

    def peak_memory(self) -> int | None:
        """The largest memory use the cgroup recorded (None: not recorded here)."""
        return None

    def kill(self) -> None:
        """Kill the members the process tree does not show (those that left it, by ``setsid``)."""

    def remove(self) -> None:
        """Remove the box's groups (a killed process leaves its group a moment later). Safe twice."""
        for group in self.groups:
            for _ in range(50):
                try:
                    group.rmdir()
                    break
                except FileNotFoundError:
                    break
                except OSError:
                    time.sleep(0.02)
        self.groups = []


def _kill_members(group: Path) -> None:
    """SIGKILL every process in ``group`` until it is empty (a process forking as fast as it can:
    at most pids.max at once)."""
    for _ in range(100):
        members = [int(p) for p in read(group / "cgroup.procs").split()]
        if not members:
            break
        for pid in members:
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
        time.sleep(0.01)


def _fields(text: str) -> dict[str, str]:
    """``key value`` lines (``memory.events``, ``memory.oom_control``) as a dict."""
    return dict(line.split() for line in text.splitlines() if " " in line)


# ----------------------------------------------------------------------------- cgroup v2


class CgroupV2Limits(Mechanism):
    """A cgroup v2 group per box under a folder the grader may write (root, or delegated by
    ``$GRADER_CGROUP``): ``memory.max``, ``memory.swap.max = 0``, ``pids.max``; killed with
    ``cgroup.kill``; CPU time from ``cpu.stat``."""

    kind = "cgroup-v2"

    @classmethod
    def probe(cls) -> Enforcement | str:
        parent, why = _v2_parent()
        return Enforcement("cgroup-v2", why, parent=str(parent)) if parent is not None else why

    @classmethod
    def cpu_meter(cls) -> str:
        return "from the cgroup's cpu.stat"

    def create(self) -> None:
        group = Path(self.enforcement.parent) / self.name
        group.mkdir()
        self.groups = [group]
        write(group / "memory.max", str(self.memory_bytes))
        if (group / "memory.swap.max").exists():
            write(group / "memory.swap.max", "0")
        write(group / "pids.max", str(self.limits.processes))

    def group(self) -> Path | None:
        """The box's cgroup v2 folder, where its memory and CPU are read."""
        return self.groups[0] if self.groups else None

    def memory_killed(self) -> bool:
        group = self.group()
        return group is not None and int(_fields(read(group / "memory.events")).get("oom_kill", 0)) > 0

    def cpu_seconds(self) -> float | None:
        group = self.group()
        if group is not None:
            for line in read(group / "cpu.stat").splitlines():
                if line.startswith("usage_usec "):
                    return int(line.split()[1]) / 1e6
        return None

    def peak_memory(self) -> int | None:
        group = self.group()
        if group is None:
            return None
        text = read(group / "memory.peak") or read(group / "memory.current")
        return int(text) if text.strip().isdigit() else None

    def kill(self) -> None:
        group = self.group()
        if group is None:
            return
        if (group / "cgroup.kill").exists():
            try:
                write(group / "cgroup.kill", "1")
            except OSError:
                pass
        _kill_members(group)


def _v2_parent() -> tuple[Path | None, str]:
    """A cgroup v2 folder under which this process may create boxes with memory and pids."""
    if not (CGROUP / "cgroup.controllers").is_file():
        return None, "no cgroup v2 hierarchy at /sys/fs/cgroup"
    delegated = os.environ.get(DELEGATED_CGROUP_ENV)
    parent = Path(delegated) if delegated else CGROUP
    if not delegated and os.geteuid() != 0:
        return None, f"cgroup v2 needs root, or a delegated folder in ${DELEGATED_CGROUP_ENV}"
    wanted = {"memory", "pids"}
    enabled = set(read(parent / "cgroup.subtree_control").split())
    if not wanted <= enabled:
        try:
            write(parent / "cgroup.subtree_control", " ".join(f"+{c}" for c in sorted(wanted - enabled)))
        except OSError as error:
            return None, f"cannot enable memory and pids controllers in {parent} ({error.strerror})"
    probe = parent / f"cnn-kit-probe-{os.getpid()}"
    try:
        probe.mkdir()
        write(probe / "memory.max", str(64 * 2**20))
        write(probe / "pids.max", "16")
    except OSError as error:
        return None, f"cannot create a cgroup in {parent} ({error.strerror})"
    finally:
        try:
            probe.rmdir()
        except OSError:
            pass
    return parent, f"boxes under {parent}"


# ----------------------------------------------------------------------------- systemd-run


class SystemdRunLimits(CgroupV2Limits):
    """A transient systemd scope per box (``systemd-run --scope``, through ``sudo -n`` when not
    root, as on GitHub's Ubuntu runners) with ``MemoryMax``, ``MemorySwapMax`` and ``TasksMax``;
    systemd makes its cgroup v2 group, read like `CgroupV2Limits`'s; killed by ``systemctl kill``."""

    kind = "systemd-run"

    def __init__(self, name: str, limits: Limits, enforcement: Enforcement) -> None:
        super().__init__(name, limits, enforcement)
        self._scope_group: Path | None = None

    @classmethod
    def probe(cls) -> Enforcement | str:
        works, why = _systemd_run()
        return Enforcement("systemd-run", why, sudo=os.geteuid() != 0) if works else why

    def create(self) -> None:
        """Nothing to make: systemd makes the scope when the command starts."""

    def join_files(self) -> list[Path]:
        return []

    def wrap(self, launch: list[str]) -> list[str]:
        scope = [*self._sudo(), "systemd-run", "--scope", "--quiet", "--collect", f"--unit={self.name}"]
        scope += ["-p", f"MemoryMax={self.memory_bytes}", "-p", "MemorySwapMax=0"]
        scope += ["-p", f"TasksMax={self.limits.processes}", *_as_me(self.enforcement.sudo), "--"]
        return scope + launch

    def group(self) -> Path | None:
        if self._scope_group is None:  # known once the scope runs; asked again until then
            shown = subprocess.run(
                ["systemctl", "show", "-p", "ControlGroup", "--value", f"{self.name}.scope"],
                capture_output=True, text=True, check=False,
            ).stdout.strip()
            self._scope_group = CGROUP / shown.lstrip("/") if shown else None
        return self._scope_group

    def kill(self) -> None:
        subprocess.run(
            [*self._sudo(), "systemctl", "kill", "--signal=SIGKILL", f"{self.name}.scope"],
            capture_output=True, check=False,
        )

    def _sudo(self) -> list[str]:
        return ["sudo", "-n"] if self.enforcement.sudo else []


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


# ----------------------------------------------------------------------------- cgroup v1


class CgroupV1Limits(Mechanism):
    """Groups in the v1 ``memory`` and ``pids`` hierarchies (root only), and in ``cpuacct`` where
    this process may create one there (CPU time of the whole box, not only of its live processes)."""

    kind = "cgroup-v1"

    @classmethod
    def probe(cls) -> Enforcement | str:
        problem = _v1_ok()
        return Enforcement("cgroup-v1", "memory and pids groups per process") if problem is None else problem

    @classmethod
    def cpu_meter(cls) -> str:
        return "from the cgroup v1 cpuacct group" if _v1_cpuacct() is not None else "summed over the process tree"

    def create(self) -> None:
        memory, pids = CGROUP / "memory" / self.name, CGROUP / "pids" / self.name
        for group in (memory, pids):
            group.mkdir()
            self.groups.append(group)
        write(memory / "memory.limit_in_bytes", str(self.memory_bytes))
        if (memory / "memory.memsw.limit_in_bytes").exists():  # swap accounting on
            write(memory / "memory.memsw.limit_in_bytes", str(self.memory_bytes))
        write(pids / "pids.max", str(self.limits.processes))
        cpuacct = _v1_cpuacct()
        if cpuacct is not None:
            (cpuacct / self.name).mkdir()
            self.groups.append(cpuacct / self.name)

    def _group(self, index: int) -> Path | None:
        """0: the memory group, 1: the pids group, 2: the cpuacct group (None when not made)."""
        return self.groups[index] if len(self.groups) > index else None

    def memory_killed(self) -> bool:
        memory = self._group(0)
        if memory is None:
            return False
        control = _fields(read(memory / "memory.oom_control"))
        if "oom_kill" in control:
            return int(control["oom_kill"]) > 0
        return int(read(memory / "memory.failcnt") or 0) > 0

    def cpu_seconds(self) -> float | None:
        cpuacct = self._group(2)
        text = read(cpuacct / "cpuacct.usage").strip() if cpuacct is not None else ""
        return int(text) / 1e9 if text.isdigit() else None

    def peak_memory(self) -> int | None:
        memory = self._group(0)
        text = read(memory / "memory.max_usage_in_bytes") if memory is not None else ""
        return int(text) if text.strip().isdigit() else None

    def kill(self) -> None:
        pids = self._group(1)
        if pids is not None:
            _kill_members(pids)


def _v1_ok() -> str | None:
    """None when the v1 memory and pids hierarchies accept a new group, else why not."""
    made = []
    try:
        for controller in ("memory", "pids"):
            folder = CGROUP / controller / f"cnn-kit-probe-{os.getpid()}"
            folder.mkdir()
            made.append(folder)
        write(made[0] / "memory.limit_in_bytes", str(64 * 2**20))
        write(made[1] / "pids.max", "16")
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
    root = CGROUP / "cpuacct"
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


# ----------------------------------------------------------------------------- watchdog


class WatchdogLimits(Mechanism):
    """No cgroup here: the box's thread polls the resident memory and the number of processes of
    the process tree and kills it above the limits (a sandboxed tree is one PID namespace, so it
    cannot leave the tree; an unconfined one can, by ``setsid``). As a normal user, ``RLIMIT_NPROC``
    bounds the processes too. It is what is left when no cgroup mechanism works: it has no `probe`."""

    kind = "watchdog"
    polls_memory = True

    @classmethod
    def describe(cls, enforcement: Enforcement) -> str:
        return f"limits by the grader's watchdog (no cgroup here: {enforcement.detail}); CPU time {cls.cpu_meter()}"

    def rlimits(self) -> dict[str, int]:
        if os.geteuid() == 0:
            return {}
        # Counted per user, across the machine: what this user runs already, plus the box's share.
        return {"nproc": user_processes() + self.limits.processes}


# Strongest first: the order `grader.confine.limits.probe_enforcement` tries them in.
CGROUP_MECHANISMS: tuple[type[Mechanism], ...] = (CgroupV2Limits, SystemdRunLimits, CgroupV1Limits)
MECHANISMS: dict[str, type[Mechanism]] = {m.kind: m for m in (*CGROUP_MECHANISMS, WatchdogLimits)}
