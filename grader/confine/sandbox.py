"""Confine a process with bubblewrap: a filesystem built from an allow-list, no network.

The confined process (a notebook's kernel, a verification worker) sees only:

* the system's runtime, read-only: ``/usr``, ``/bin``, ``/sbin``, ``/lib*`` and a few files of
  ``/etc`` (the dynamic linker's cache, fonts, certificates, time zone); ``/etc/passwd`` and
  ``/etc/group`` are made up, naming only the sandbox's user;
* the Python environment, read-only: the interpreter's prefixes (a pyenv or a virtualenv under
  ``$HOME`` included) and the folders on ``sys.path``; where the kit itself is installed there
  (``pip install .``), its ``grader`` package is hidden under an empty folder;
* the kit's ``src/`` and nothing else of the kit, read-only, at its own path;
* the files the grader names (`Mounts.readonly`): Fashion-MNIST, the ResNet-18 weights;
* its writable folders (`Mounts.writable`): the scratch copy, its private runtime folder;
* a private ``/tmp`` (also its ``$HOME``) and ``/dev/shm``, size-capped;
* its own PID, IPC, UTS and network namespaces (only its own loopback), a new session (no
  terminal to inject keys into), and it dies with the grader.

No other submission, no output folder, no ``solutions/``, no ``grader/`` (nor the hidden seed), no
``$HOME`` of the grading account, no host socket under ``/run``.

bubblewrap is Linux-only and needs unprivileged user namespaces (or root). Where it is missing
or does not work, `probe_bwrap` says why; grading then stops unless the instructor turns
confinement off (see `grader.cli`).
"""

from __future__ import annotations

import functools
import glob
import os
import shutil
import site
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

from grader.paths import GRADER_DIR, KIT_ROOT, SRC_DIR
from grader.results import SandboxInfo

__all__ = ["SANDBOX_FIX", "Mounts", "bwrap_argv", "installed_paths", "probe_bwrap", "python_paths", "sandbox_info"]

SANDBOX_USER = "student"
SANDBOX_HOME = "/tmp/home"

_SYSTEM_DIRS = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32")
_ETC = (
    "ld.so.cache", "ld.so.conf", "ld.so.conf.d", "alternatives", "localtime", "timezone", "fonts",
    "ssl", "ca-certificates", "mime.types", "nsswitch.conf", "matplotlibrc", "os-release",
)
# Device nodes a GPU kernel needs; bound only where they exist.
_GPU_DEVICES = ("/dev/nvidia*", "/dev/dri", "/dev/kfd")

SANDBOX_FIX = (
    "Install bubblewrap (Debian/Ubuntu: sudo apt-get install bubblewrap); on Ubuntu 24.04 also allow "
    "its user namespaces: sudo sysctl -w kernel.apparmor_restrict_unprivileged_userns=0. To grade "
    "without confinement anyway (student code then runs with your rights), pass --no-sandbox: every "
    "report and the gradebook say so."
)


@dataclass
class Mounts:
    """What a confined process sees besides the system and the Python environment.

    Attributes:
        readonly: host files or folders, bound read-only at the same path.
        writable: host folders bound read-write at the same path.
        files: text files made up for the sandbox: ``{path inside: content}``, written into
            ``scratch`` first.
        masked: host folders or files that must not exist inside: each is covered by an empty,
            read-only folder (a library the process must not have, see `installed_paths`).
    """

    readonly: list[Path] = field(default_factory=list)
    writable: list[Path] = field(default_factory=list)
    files: dict[str, str] = field(default_factory=dict)
    masked: list[Path] = field(default_factory=list)


@functools.cache
def probe_bwrap() -> str | None:
    """Run a trivial command confined the way the grader confines, once per process.

    Returns:
        None when bubblewrap works here, else the reason it cannot be used.
    """
    exe = shutil.which("bwrap")
    if exe is None:
        return "bubblewrap (bwrap) is not installed"
    binds = [arg for path in python_paths() for arg in ("--ro-bind", str(path), str(path))]
    # /tmp first: the Python environment may live under it (a virtualenv, a CI checkout).
    argv = [exe, *_namespaces(), *_system_binds(), "--tmpfs", "/tmp", *binds, "--", sys.executable, "-c", "pass"]
    try:
        done = subprocess.run(argv, check=False, capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as error:
        return f"bwrap could not be started: {error}"
    if done.returncode != 0:
        detail = done.stderr.strip().splitlines()[-1] if done.stderr.strip() else f"exit code {done.returncode}"
        return f"bwrap does not work on this machine ({detail}); unprivileged user namespaces may be disabled"
    return None


def sandbox_info(requested: bool | None) -> SandboxInfo:
    """Decide whether to confine.

    Args:
        requested: True (confine; the caller reports an error if it cannot), False (do not: the
            instructor said ``--no-sandbox``), None (confine when bubblewrap works).

    Returns:
        `SandboxInfo` with ``enabled`` and a one-line explanation for the report.
    """
    if requested is False:
        return SandboxInfo(enabled=False, detail="confinement turned off (--no-sandbox)")
    problem = probe_bwrap()
    if problem is None:
        return SandboxInfo(
            enabled=True,
            detail="bubblewrap: no network; sees only Python, src/, the data and its scratch folder",
        )
    return SandboxInfo(enabled=False, detail=problem)


@functools.cache
def python_paths() -> tuple[Path, ...]:
    """Folders the Python environment needs, outside the system's: prefixes and ``sys.path``.

    The kit's own folder is never one of them (``src/`` is bound on its own): a ``sys.path`` entry
    that is the kit (the current folder, an editable install's ``.pth``) is left out. A virtualenv
    inside the kit is kept, and so is a prefix that holds the kit (``pip install .`` puts it in
    ``site-packages``): `bwrap_argv` then hides the kit's own folders in it.
    """
    prefixes = [sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix]
    prefixes.append(str(Path(os.path.realpath(sys.executable)).parents[1]))
    entries = [entry for entry in sys.path if entry]
    if site.ENABLE_USER_SITE:
        entries.append(site.getusersitepackages())
    kit = Path(os.path.realpath(KIT_ROOT))
    kept_prefixes = [Path(os.path.realpath(p)) for p in prefixes]
    found: list[Path] = []
    for candidate in [*prefixes, *entries]:
        path = Path(os.path.realpath(candidate))
        if not path.is_dir() or path == Path("/") or path == kit:
            continue
        in_kit = kit in path.parents
        if in_kit and not any(path == p or p in path.parents for p in kept_prefixes):
            continue  # a folder of the kit on sys.path (tests/ under pytest): not the environment
        if any(str(path).startswith(system + "/") or str(path) == system for system in _SYSTEM_DIRS):
            continue  # bound with the system
        found.append(path)
    # Keep only the outermost folders: a bind of a parent covers its children.
    outermost = [p for p in found if not any(q != p and q in p.parents for q in found)]
    return tuple(dict.fromkeys(outermost))


def installed_paths(modules: tuple[str, ...]) -> tuple[Path, ...]:
    """Where the given top-level modules are installed (packages' folders, single-file modules,
    their vendored libraries), found without importing them."""
    import importlib.util

    found: list[Path] = []
    for name in modules:
        try:
            spec = importlib.util.find_spec(name)
        except (ImportError, ValueError):
            continue
        if spec is None:
            continue
        locations = list(spec.submodule_search_locations or []) or [spec.origin]  # a package's folder, else its file
        found += [Path(location) for location in locations if location and os.path.exists(location)]
        for location in locations:
            libs = Path(location or "").parent / f"{name}.libs"  # a wheel's vendored libraries
            if location and libs.is_dir():
                found.append(libs)
    return tuple(dict.fromkeys(found))


# The kit's folders a kernel must not see, wherever a bound folder would hold them.
_KIT_PRIVATE = ("grader", "solutions", "tests", "out", ".git", ".nox", "bench", "student")


def _hidden_kit_folders(bound: list[Path]) -> list[Path]:
    """Folders to hide under an empty one: the kit's own (`_KIT_PRIVATE`) where a bound folder
    holds the kit, and any installed copy of the ``grader`` package on ``sys.path``."""
    kit = Path(os.path.realpath(KIT_ROOT))
    hidden = []
    if any(folder == kit or folder in kit.parents for folder in bound):
        hidden += [kit / name for name in _KIT_PRIVATE if (kit / name).is_dir()]
    for entry in [*sys.path, site.getusersitepackages() if site.ENABLE_USER_SITE else ""]:
        candidate = Path(os.path.realpath(entry or ".")) / GRADER_DIR.name
        if entry and (candidate / "sandbox.py").is_file():  # ours by content: it carries this very file
            hidden.append(candidate)
    return [folder for folder in dict.fromkeys(hidden) if any(b == folder or b in folder.parents for b in bound)]


def _namespaces() -> list[str]:
    return [
        "--unshare-net", "--unshare-pid", "--unshare-ipc", "--unshare-uts", "--unshare-cgroup-try",
        "--hostname", "sandbox", "--new-session", "--die-with-parent", "--dev", "/dev", "--proc", "/proc",
    ]


def _system_binds() -> list[str]:
    args: list[str] = []
    for folder in _SYSTEM_DIRS:
        if os.path.islink(folder):
            args += ["--symlink", os.readlink(folder), folder]
        elif os.path.isdir(folder):
            args += ["--ro-bind", folder, folder]
    for name in _ETC:
        path = f"/etc/{name}"
        if os.path.exists(path):
            args += ["--ro-bind", path, path]
    return args


def _gpu_binds() -> list[str]:
    devices = [device for pattern in _GPU_DEVICES for device in sorted(glob.glob(pattern))]
    if not devices:
        return []
    args = ["--ro-bind", "/sys", "/sys"]  # CUDA reads the PCI topology
    for device in devices:
        args += ["--dev-bind", device, device]
    return args


def bwrap_argv(
    command: list[str],
    *,
    mounts: Mounts,
    cwd: Path,
    scratch: Path,
    tmp_bytes: int = 2**30,
) -> list[str]:
    """Wrap ``command`` so that it runs confined.

    Args:
        command: what to run inside.
        mounts: the process's own files and folders besides the system and Python.
        cwd: where the command starts (inside one of ``mounts.writable``).
        scratch: a grader-owned folder for the made-up files (``/etc/passwd``), not bound.
        tmp_bytes: size cap of the private ``/tmp`` and ``/dev/shm``.

    Returns:
        The full ``bwrap`` command line.
    """
    uid, gid = os.getuid(), os.getgid()
    made = {
        "/etc/passwd": f"{SANDBOX_USER}:x:{uid}:{gid}::{SANDBOX_HOME}:/bin/sh\n",
        "/etc/group": f"{SANDBOX_USER}:x:{gid}:\n",
        **mounts.files,
    }
    args = [shutil.which("bwrap") or "bwrap", *_namespaces(), *_system_binds(), *_gpu_binds()]
    if not _gpu_binds() and os.path.isdir("/sys/devices/system/cpu"):
        args += ["--ro-bind", "/sys/devices/system/cpu", "/sys/devices/system/cpu"]  # torch's CPU probe
    # The private /tmp first: the binds below may lie under /tmp (a clone, a virtualenv, the scratch).
    args += ["--size", str(tmp_bytes), "--tmpfs", "/tmp", "--size", str(tmp_bytes), "--tmpfs", "/dev/shm"]
    args += ["--dir", SANDBOX_HOME]
    for index, (inside, content) in enumerate(made.items()):
        host = scratch / f"etc-{index}"
        host.write_text(content)
        args += ["--ro-bind", str(host), inside]
    for path in python_paths():
        args += ["--ro-bind", str(path), str(path)]
    for folder in _hidden_kit_folders(list(python_paths())):
        args += ["--tmpfs", str(folder), "--remount-ro", str(folder)]
    args += ["--ro-bind", os.path.realpath(SRC_DIR), os.path.realpath(SRC_DIR)]
    for path in mounts.readonly:
        args += ["--ro-bind", os.path.realpath(path), str(Path(path).absolute())]
    for path in mounts.writable:
        real = os.path.realpath(path)
        args += ["--bind", real, real]
    for path in mounts.masked:
        real = os.path.realpath(path)
        if os.path.isdir(real):
            args += ["--tmpfs", real, "--remount-ro", real]
        elif os.path.exists(real):
            args += ["--ro-bind", "/dev/null", real]
    # In its own PID namespace the kernel's parent is bwrap's init (pid 1); ipykernel would take
    # that for "my parent died" and exit. --die-with-parent does that job instead.
    args += ["--chdir", os.path.realpath(cwd), "--setenv", "JPY_PARENT_PID", "1", "--", *command]
    return args
