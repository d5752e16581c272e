"""Process limits (`grader.confine.limits`, `grader.confine.mechanisms`): which mechanism is in
force, and that it really acts, on real processes. Each mechanism is forced in turn through
``$GRADER_LIMITS``: where the machine has it, a box under it must stop a fork bomb and a memory
hog and meter CPU time where its description says; where the machine lacks it, it must be refused
for the watchdog, saying why."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
from grader_notebooks import write_notebook

from grader.confine import limits
from grader.confine.limits import ProcessBox, probe_enforcement
from grader.confine.mechanisms import CGROUP, DELEGATED_CGROUP_ENV, MECHANISMS
from grader.options import Limits
from grader.run.execute import copy_notebook, execute_notebook

KINDS = ["cgroup-v2", "systemd-run", "cgroup-v1", "watchdog"]


@pytest.fixture
def force(monkeypatch):
    """Force a mechanism through ``$GRADER_LIMITS`` and probe again; the probe is re-run after."""

    def forced(kind: str):
        monkeypatch.setenv(limits.ENFORCEMENT_ENV, kind)
        probe_enforcement.cache_clear()
        return probe_enforcement()

    yield forced
    monkeypatch.delenv(limits.ENFORCEMENT_ENV, raising=False)
    probe_enforcement.cache_clear()


def machine_has(kind: str) -> bool:
    """What this machine offers, read from the machine, not from the grader's probe."""
    if kind == "cgroup-v2":
        return (CGROUP / "cgroup.controllers").is_file() and (os.geteuid() == 0 or bool(os.environ.get(DELEGATED_CGROUP_ENV)))
    if kind == "systemd-run":
        return Path("/run/systemd/system").is_dir() and shutil.which("systemd-run") is not None
    if kind == "cgroup-v1":
        return all(os.access(CGROUP / c, os.W_OK) and (CGROUP / c / "cgroup.procs").is_file() for c in ("memory", "pids"))
    return True


def run_in_box(box: ProcessBox, code: str, timeout: float = 60) -> tuple[int, str]:
    """Run ``python -c code`` in ``box`` (unconfined by bubblewrap): its return code and output."""
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin")}
    process = subprocess.Popen(
        box.command([sys.executable, "-c", code], env), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    box.started(process.pid)
    output, _ = process.communicate(timeout=timeout)
    return process.returncode, output


@pytest.mark.parametrize("kind", KINDS)
def test_limits_say_which_mechanism_is_in_force(force, kind):
    """A forced mechanism is the one in force where the machine has it; where not, it is refused
    for the watchdog, which says why."""
    enforcement = force(kind)
    if not machine_has(kind):
        assert enforcement.kind == "watchdog"
        assert enforcement.detail and enforcement.describe().startswith("limits by the grader's watchdog (no cgroup here: ")
        return
    assert enforcement.kind == kind and enforcement.mechanism is MECHANISMS[kind]
    box = ProcessBox("probe", Limits(), enforcement=enforcement)
    try:
        assert type(box.mechanism) is MECHANISMS[kind]
    finally:
        box.close()


def test_the_unforced_probe_picks_the_strongest_mechanism_the_machine_has(force):
    strongest = next(kind for kind in KINDS if machine_has(kind))
    assert force("").kind == strongest


@pytest.mark.parametrize("kind", KINDS)
def test_a_fork_bomb_is_stopped_at_the_process_limit(force, kind):
    enforcement = force(kind)
    if enforcement.kind != kind:
        pytest.skip(f"{kind} not on this machine: {enforcement.detail}")
    fork = (
        "import os, time\nstarted = 0\nfor _ in range(64):\n    try:\n        if os.fork() == 0:\n"
        "            os.close(1)\n            os.close(2)\n            time.sleep(30)\n            os._exit(0)\n        started += 1\n    except OSError:\n        break\n"
        "print(started, flush=True)\ntime.sleep(5)"
    )
    box = ProcessBox("forks", Limits(processes=16), enforcement=enforcement)
    try:
        code, output = run_in_box(box, fork)
        # A cgroup refuses the 17th process; the watchdog kills the tree once it sees it over the limit.
        refused = code == 0 and int(output.split()[0]) < 16
        assert refused or box.exceeded == "processes", (code, output)
        if box.exceeded == "processes":
            assert box.reason() == "process limit of 16 exceeded"
    finally:
        box.close()


@pytest.mark.parametrize("kind", KINDS)
def test_a_memory_hog_is_killed_at_the_memory_limit_and_cpu_time_is_read_where_described(force, kind):
    enforcement = force(kind)
    if enforcement.kind != kind:
        pytest.skip(f"{kind} not on this machine: {enforcement.detail}")
    box = ProcessBox("hog", Limits(memory_gib=0.25), enforcement=enforcement)
    try:
        burn = "import time\nstart = time.process_time()\nwhile time.process_time() - start < 1:\n    pass\n"
        code, _ = run_in_box(box, burn + "blocks = [bytearray(2**27) for _ in range(16)]\ntime.sleep(5)")
        assert code == -signal.SIGKILL and box.memory_killed()
        assert box.reason().startswith("memory limit of 0.25 GiB exceeded")
        assert box.peak_memory >= 0.2 * 2**30
        # CPU time comes from the cgroup exactly when the report says so, and counts the dead process.
        from_cgroup = box.mechanism.cpu_seconds()
        assert (from_cgroup is not None) == ("from the cgroup" in enforcement.describe())
        if from_cgroup is not None:
            assert box.cpu_seconds() >= 0.9
    finally:
        box.close()


@pytest.mark.parametrize("kind", ["cgroup-v2", "systemd-run", "cgroup-v1"])
def test_a_cgroup_kills_a_process_that_left_the_tree(force, kind):
    """A double fork leaves the process tree (its orphan comes to the grader, the subreaper):
    closing the box still kills it, through the cgroup."""
    enforcement = force(kind)
    if enforcement.kind != kind:
        pytest.skip(f"{kind} not on this machine: {enforcement.detail}")
    escape = "import os, time\nif os.fork() == 0:\n    os.setsid()\n    if os.fork() == 0:\n" \
             "        os.close(1)\n        os.close(2)\n        time.sleep(60)\n        os._exit(0)\n    print(os.getpid() + 1, flush=True)\n    os._exit(0)\n" \
             "os.wait()\ntime.sleep(0.5)"
    box = ProcessBox("escape", Limits(), enforcement=enforcement)
    try:
        code, output = run_in_box(box, escape)
        orphans = [p for p in psutil.Process().children() if p.status() != psutil.STATUS_ZOMBIE
                   and "time.sleep(60)" in " ".join(p.cmdline())]
        assert code == 0 and orphans, output
    finally:
        box.close()
    time.sleep(0.2)
    assert not any(p.is_running() and p.status() != psutil.STATUS_ZOMBIE for p in orphans)
    for orphan in orphans:  # the grader is their subreaper: reap them
        try:
            os.waitpid(orphan.pid, os.WNOHANG)
        except ChildProcessError:
            pass


def test_an_unknown_forced_mechanism_falls_back_to_the_watchdog(force):
    assert force("no-such-mechanism").kind == "watchdog"


@pytest.mark.slow
@pytest.mark.parametrize("mechanism", ["os", "watchdog"])
def test_disk_and_processes_are_bounded_by_either_mechanism(tmp_path, monkeypatch, mechanism):
    """The operating system's mechanism where the machine has one, the watchdog where not."""
    if mechanism == "watchdog":
        monkeypatch.setenv(limits.ENFORCEMENT_ENV, "watchdog")
        limits.probe_enforcement.cache_clear()
    try:
        small = Limits(cell_timeout=30, timeout=90, memory_gib=2, processes=64, disk_gib=0.05)
        path = write_notebook(
            tmp_path / "submission" / "nb.ipynb",
            "x = 1",
            "with open('big', 'wb') as f:\n    for _ in range(100):\n        f.write(b'0' * 2**20)\n"
            "import time\ntime.sleep(5)",
        )
        workdir = tmp_path / "scratch" / "work"
        with execute_notebook(copy_notebook(path, workdir), workdir=workdir, limits=small, sandbox=None) as run:
            assert run.result.cells[1].status in ("died", "error")
            reason = run.result.cells[1].error_message + run.result.cells[1].error_name
            assert "disk limit" in reason or "File too large" in reason or "EFBIG" in reason, reason
        box = ProcessBox("probe", small)
        assert box.enforcement.kind == ("watchdog" if mechanism == "watchdog" else probe_enforcement().kind)
        box.close()
    finally:
        if mechanism == "watchdog":
            monkeypatch.undo()
            limits.probe_enforcement.cache_clear()
