"""Run one of the grader's verification workers in a fresh confined process.

A worker (``grader/workers/*.py``) is a standalone script: it reads a request, computes on
something the student made (a saved model, convolution functions re-created from the notebook)
and writes its answers. It runs with the same confinement as a notebook's kernel
(`grader.sandbox`: no network, only the Python environment, ``src/`` and the files named in the
request) and within a `grader.limits.ProcessBox` (memory, processes, time). Whatever happens in
it, a hang, a crash, a memory blow-up, the grader's own process is untouched: it gets a
`WorkerResult` saying what happened, and reads the answers back as JSON and as tensors through
``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from grader.limits import Limits, ProcessBox
from grader.paths import KIT_ROOT
from grader.results import SandboxInfo
from grader.sandbox import SANDBOX_HOME, Mounts, bwrap_argv

__all__ = ["WorkerResult", "run_worker"]

MAX_ANSWER_BYTES = 256 * 2**20


@dataclass
class WorkerResult:
    """What a worker gave back.

    Attributes:
        status: ``ok`` (it finished), ``timeout``, ``died`` (crashed or was killed; ``reason``).
        answers: its ``answers.json`` (whatever it wrote before it stopped).
        tensors: its ``tensors.pt``, loaded with ``weights_only=True``.
        reason: why it did not finish.
        log: the end of its stdout and stderr, for the grader's own diagnostics (never for a
            report: a worker may run student code).
        elapsed: seconds.
    """

    status: str
    answers: dict[str, Any] = field(default_factory=dict)
    tensors: dict[str, Any] = field(default_factory=dict)
    reason: str = ""
    log: str = ""
    elapsed: float = 0.0


def _read_plain(path: Path) -> bytes | None:
    if path.is_symlink() or not path.is_file() or path.stat().st_size > MAX_ANSWER_BYTES:
        return None
    return path.read_bytes()


def run_worker(
    script: Path,
    request: dict[str, Any],
    *,
    name: str,
    limits: Limits,
    sandbox: SandboxInfo,
    timeout: float,
    inputs: dict[str, Path] | None = None,
    readonly: tuple[Path, ...] = (),
    stop: Callable[[Path], str | None] | None = None,
) -> WorkerResult:
    """Run ``script`` on ``request`` in a fresh confined process.

    Args:
        script: the worker file (copied into the worker's private folder and run from there).
        request: JSON-ready data, written to ``request.json`` next to the script.
        name: a short label (cgroup, messages).
        limits: memory and processes (``limits.memory_gib``), disk of its folder.
        sandbox: confine it (bubblewrap) or not.
        timeout: seconds for the whole run.
        inputs: files copied into the worker's folder under the given names (``{"model.pt2": path}``);
            their paths inside are added to the request as ``request["inputs"]``.
        readonly: host files the worker reads in place (data, weights), bound read-only.
        stop: called every 50 ms with the worker's folder; a non-empty answer stops the worker
            (e.g. a function ran past its own time), and becomes the reason.

    Returns:
        A `WorkerResult`; never raises for what the worker did.
    """
    started = time.monotonic()
    folder = Path(tempfile.mkdtemp(prefix="gw-"))  # private (0700)
    box: ProcessBox | None = None
    try:
        shutil.copy(script, folder / script.name)
        placed = {}
        for label, source in (inputs or {}).items():
            shutil.copyfile(source, folder / label)  # a plain copy: the worker may not reach the original
            placed[label] = str(folder / label)
        (folder / "request.json").write_text(json.dumps({**request, "inputs": placed, "kit_root": str(KIT_ROOT)}))
        argv = [sys.executable, "-I", str(folder / script.name), str(folder / "request.json")]
        env = {
            "PATH": os.pathsep.join([str(Path(sys.executable).parent), "/usr/bin", "/bin"]),
            "HOME": SANDBOX_HOME if sandbox.enabled else str(folder),
            "TMPDIR": "/tmp" if sandbox.enabled else str(folder),
            "LANG": "C.UTF-8",
            "PYTHONHASHSEED": "0",
            "MPLBACKEND": "agg",
            **{k: os.environ[k] for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "CUDA_VISIBLE_DEVICES") if k in os.environ},
        }
        if sandbox.enabled:
            argv = bwrap_argv(
                argv,
                mounts=Mounts(readonly=list(readonly), writable=[folder]),
                cwd=folder,
                scratch=folder,
                tmp_bytes=int(limits.memory_gib * 2**30 / 4),
            )
        box = ProcessBox(name, limits, watch_dirs=(folder,))
        process = subprocess.Popen(
            box.command(argv, env), cwd=folder, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        box.started(process.pid)
        status, reason, log = _wait(process, box, folder, timeout=timeout, stop=stop)
        result = WorkerResult(status, reason=reason, log=log)
        raw = _read_plain(folder / "answers.json")
        try:
            result.answers = json.loads(raw) if raw else {}
            if not isinstance(result.answers, dict):
                result.answers = {}
        except ValueError:
            result.answers = {}
        raw_tensors = _read_plain(folder / "tensors.pt")
        if raw_tensors:
            import io

            import torch

            try:
                loaded = torch.load(io.BytesIO(raw_tensors), weights_only=True)
                result.tensors = loaded if isinstance(loaded, dict) else {}
            except Exception:
                result.tensors = {}
        result.elapsed = time.monotonic() - started
        return result
    finally:
        if box is not None:
            box.close()
        shutil.rmtree(folder, ignore_errors=True)


def _wait(
    process: subprocess.Popen, box: ProcessBox, folder: Path, *, timeout: float, stop: Callable[[Path], str | None] | None
) -> tuple[str, str, str]:
    """Wait for the worker; kill it on timeout, on ``stop``, or when the box killed it.

    Returns:
        ``(status, reason, the end of its output)``.
    """
    # Drain its output while it runs (a full pipe would block it); keep the end only.
    tail = bytearray()

    def drain() -> None:
        for chunk in iter(lambda: process.stdout.read1(65536), b""):
            tail.extend(chunk)
            del tail[:-8192]

    reader = threading.Thread(target=drain, daemon=True)
    reader.start()
    deadline = time.monotonic() + timeout
    status, reason = "ok", ""
    while process.poll() is None:
        if time.monotonic() > deadline:
            status, reason = "timeout", f"no answer within {timeout:g} s"
            break
        if stop is not None:
            why = stop(folder)
            if why:
                status, reason = "timeout", why
                break
        time.sleep(0.05)
    if status != "ok":
        box.kill()
    process.wait()
    reader.join(timeout=5)
    if status == "ok" and process.returncode != 0:
        status = "died"
        reason = box.reason() or _exit_reason(process.returncode)
    return status, reason, bytes(tail).decode(errors="replace")


def _exit_reason(code: int) -> str:
    import signal

    if code < 0 or code > 128:
        number = -code if code < 0 else code - 128
        try:
            return f"killed by {signal.Signals(number).name}"
        except ValueError:
            return f"killed by signal {number}"
    return f"exited with code {code}"
