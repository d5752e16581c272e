"""Confine a notebook's kernel with bubblewrap: no network, writes only inside the scratch folder.

The kernel sees the machine read-only (so Python, torch, ``src`` and the dataset are all there),
a private ``/tmp`` and ``/dev/shm`` (tmpfs, capped), its own process namespace (it cannot see
or signal the grader) and no network interface but its own loopback. The only writable real
folder is the submission's scratch copy, bound at the same path, which also holds the kernel's
connection sockets: with ``--unshare-net`` the kernel cannot reach the grader over TCP, so the
grader talks to it over ZeroMQ's IPC transport (Unix sockets in that folder).

bubblewrap is Linux-only and needs unprivileged user namespaces. Where it is missing or does not
work (some containers), `probe_bwrap` says why and the grader runs the kernel unconfined and says
so in every report.
"""

from __future__ import annotations

import functools
import glob
import os
import shutil
import subprocess
import sys
from pathlib import Path

from grader.results import SandboxInfo

__all__ = ["bwrap_argv", "probe_bwrap", "sandbox_info"]

# Device nodes a GPU kernel needs; bound only where they exist.
_GPU_DEVICES = ("/dev/nvidia*", "/dev/dri", "/dev/kfd")

# Environment variables naming files the notebooks read (weights, data, caches). The kernel's
# /tmp is private, so a path under /tmp would vanish inside the sandbox: such paths are bound
# read-only into it.
KIT_ROOT = Path(__file__).resolve().parents[1]  # holds src/, grader/ and data/

READ_ENV = ("KIT_RESNET18_WEIGHTS", "KIT_DATA_DIR", "TORCH_HOME", "XDG_CACHE_HOME", "HF_HOME")


@functools.cache
def probe_bwrap() -> str | None:
    """Run ``bwrap ... true`` once with the options the grader uses.

    Returns:
        None when bubblewrap works here, else the reason it cannot be used.
    """
    exe = shutil.which("bwrap")
    if exe is None:
        return "bubblewrap (bwrap) is not installed; on Debian/Ubuntu: apt-get install bubblewrap"
    argv = [exe, *_common_args(), "--", "true"]
    try:
        done = subprocess.run(argv, check=False, capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired) as error:
        return f"bwrap could not be started: {error}"
    if done.returncode != 0:
        detail = done.stderr.strip().splitlines()[-1] if done.stderr.strip() else f"exit code {done.returncode}"
        return f"bwrap does not work on this machine ({detail}); unprivileged user namespaces may be disabled"
    return None


def sandbox_info(requested: bool | None) -> SandboxInfo:
    """Decide whether to sandbox.

    Args:
        requested: True (must sandbox; the caller reports an error if it cannot), False (do not),
            None (sandbox when bubblewrap works).

    Returns:
        `SandboxInfo` with ``enabled`` and a one-line explanation for the report.
    """
    if requested is False:
        return SandboxInfo(enabled=False, detail="sandbox turned off (--no-sandbox)")
    problem = probe_bwrap()
    if problem is None:
        return SandboxInfo(enabled=True, detail="bubblewrap: no network, writes only in the scratch copy")
    return SandboxInfo(enabled=False, detail=problem)


def _common_args(*, tmp_bytes: int = 256 * 2**20) -> list[str]:
    args = [
        "--ro-bind",
        "/",
        "/",
        "--dev",
        "/dev",
        "--proc",
        "/proc",
        "--size",
        str(tmp_bytes),
        "--tmpfs",
        "/tmp",
        "--size",
        str(tmp_bytes),
        "--tmpfs",
        "/dev/shm",
        "--unshare-net",
        "--unshare-pid",
        "--unshare-ipc",
        "--unshare-uts",
        "--die-with-parent",
    ]
    for pattern in _GPU_DEVICES:
        for device in sorted(glob.glob(pattern)):
            args += ["--dev-bind", device, device]
    return args


def bwrap_argv(command: list[str], *, writable: Path, cwd: Path, tmp_bytes: int = 2**30) -> list[str]:
    """Wrap ``command`` so that it runs confined.

    Args:
        command: the kernel's command line.
        writable: the one real folder the command may write to (the scratch folder).
        cwd: where the command starts (inside ``writable``).
        tmp_bytes: size cap of the private ``/tmp`` and ``/dev/shm``. They are memory the
            memory watchdog does not see, so keep this well below the memory limit.

    Returns:
        The full ``bwrap`` command line.
    """
    writable = Path(os.path.realpath(writable))
    # The kit's own code and the Python environment may live under /tmp too (a CI clone, a
    # virtualenv), which the private /tmp would hide: bind them back, read-only.
    folders = [KIT_ROOT, Path(sys.prefix), Path(sys.base_prefix)]
    for name in READ_ENV:
        value = os.environ.get(name)
        if value:
            path = Path(os.path.realpath(value))
            folders.append(path if path.is_dir() else path.parent)  # a weights file has a sidecar
    readable = []
    for folder in dict.fromkeys(Path(os.path.realpath(f)) for f in folders):
        if folder.is_dir() and folder != Path("/"):
            readable += ["--ro-bind", str(folder), str(folder)]
    return [
        shutil.which("bwrap") or "bwrap",
        *_common_args(tmp_bytes=tmp_bytes),
        *readable,
        "--bind",
        str(writable),
        str(writable),
        "--chdir",
        os.path.realpath(cwd),
        # In its own PID namespace the kernel's parent is bwrap's init (pid 1); ipykernel would
        # take that for "my parent died" and exit. --die-with-parent does that job instead.
        "--setenv",
        "JPY_PARENT_PID",
        "1",
        "--",
        *command,
    ]
