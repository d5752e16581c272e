"""Run one of the grader's verification workers in a fresh confined process.

A worker (``grader/evidence/workers/*.py``) is a standalone script: it reads a request, computes on
something the student made (a saved model, convolution functions re-created from the notebook)
and writes its answers. It runs with the same confinement as a notebook's kernel
(`grader.confine.sandbox`: no network, only the Python environment, ``src/`` and the files named in the
request) and within a `grader.confine.limits.ProcessBox` (memory, processes, CPU time). Whatever happens
in it, a hang, a crash, a memory blow-up, the grader's own process is untouched.

Two shapes:

* `run_worker`: one request, one answer (the model worker). The grader gets a `WorkerResult`
  saying what happened, and reads the answers back as JSON and as tensors through
  ``torch.load(weights_only=True)``.
* `Runner`: a process kept to answer requests one at a time (the convolution worker), each within
  a CPU budget the grader measures from outside. A runner that overran a budget, or that the
  grader cannot trust any more, is killed and never asked again: the caller starts a fresh one.

Budgets count CPU seconds of the whole box (`grader.confine.limits.ProcessBox.cpu_seconds`); the wall
clock only backs them up (`grader.options.WALL_FACTOR` times larger), for a process that waits.
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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from grader.confine.limits import ProcessBox, threads_per_process
from grader.confine.process import OutputTail, confine, describe_exit
from grader.confine.sandbox import SANDBOX_HOME, Mounts
from grader.options import WALL_FACTOR, Limits
from grader.paths import KIT_ROOT
from grader.results import SandboxInfo

__all__ = ["Runner", "RunnerReply", "WorkerResult", "run_worker"]

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
        cpu_seconds: CPU time it used.
    """

    status: str
    answers: dict[str, Any] = field(default_factory=dict)
    tensors: dict[str, Any] = field(default_factory=dict)
    reason: str = ""
    log: str = ""
    elapsed: float = 0.0
    cpu_seconds: float = 0.0


def _read_plain(path: Path) -> bytes | None:
    if path.is_symlink() or not path.is_file() or path.stat().st_size > MAX_ANSWER_BYTES:
        return None
    return path.read_bytes()


def _spawn(
    script: Path,
    request: dict[str, Any],
    *,
    name: str,
    limits: Limits,
    sandbox: SandboxInfo,
    inputs: dict[str, Path] | None = None,
    readonly: tuple[Path, ...] = (),
    masked: tuple[Path, ...] = (),
    threads: int | None = None,
    pass_fds: tuple[int, ...] = (),
    stdin: Any = subprocess.DEVNULL,
) -> tuple[subprocess.Popen, ProcessBox, Path]:
    """Start ``script`` confined: a private folder (mode 0700) with the script, its inputs and
    ``request.json``; bwrap; a `ProcessBox`. The caller closes the box and removes the folder."""
    folder = _private_folder(script, request, inputs)
    box: ProcessBox | None = None
    try:
        argv = [sys.executable, "-I", str(folder / script.name), str(folder / "request.json")]
        command, box = confine(
            argv, _worker_env(folder, sandboxed=sandbox.enabled, threads=threads), name=name, limits=limits,
            sandboxed=sandbox.enabled, mounts=Mounts(readonly=list(readonly), writable=[folder], masked=list(masked)),
            cwd=folder, scratch=folder, watch_dirs=(folder,),
        )
        process = subprocess.Popen(
            command, cwd=folder, stdin=stdin, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, pass_fds=pass_fds
        )
        box.started(process.pid)
        return process, box, folder
    except BaseException:
        if box is not None:
            box.close()
        shutil.rmtree(folder, ignore_errors=True)
        raise


def _private_folder(script: Path, request: dict[str, Any], inputs: dict[str, Path] | None) -> Path:
    """A new folder (mode 0700) holding the script, plain copies of its inputs and ``request.json``
    (the request, with the inputs' paths inside and the kit's root)."""
    folder = Path(tempfile.mkdtemp(prefix="gw-"))  # private (0700)
    try:
        shutil.copy(script, folder / script.name)
        placed = {}
        for label, source in (inputs or {}).items():
            shutil.copyfile(source, folder / label)  # a plain copy: the worker may not reach the original
            placed[label] = str(folder / label)
        (folder / "request.json").write_text(json.dumps({**request, "inputs": placed, "kit_root": str(KIT_ROOT)}))
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise
    return folder


def _worker_env(folder: Path, *, sandboxed: bool, threads: int | None) -> dict[str, str]:
    """A worker's whole environment: set by the grader, threads capped (``threads``, default
    `threads_per_process`)."""
    env = {
        "PATH": os.pathsep.join([str(Path(sys.executable).parent), "/usr/bin", "/bin"]),
        "HOME": SANDBOX_HOME if sandboxed else str(folder),
        "TMPDIR": "/tmp" if sandboxed else str(folder),
        "LANG": "C.UTF-8",
        "PYTHONHASHSEED": "0",
        "MPLBACKEND": "agg",
        **{k: os.environ[k] for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "CUDA_VISIBLE_DEVICES") if k in os.environ},
    }
    threads = threads or threads_per_process()  # never more threads than the cores the grader may use
    env.update({k: str(threads) for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")})
    return env


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
) -> WorkerResult:
    """Run ``script`` on ``request`` in a fresh confined process.

    Args:
        script: the worker file (copied into the worker's private folder and run from there).
        request: JSON-ready data, written to ``request.json`` next to the script.
        name: a short label (cgroup, messages).
        limits: memory and processes (``limits.memory_gib``), disk of its folder.
        sandbox: confine it (bubblewrap) or not.
        timeout: CPU seconds for the whole run (its wall-clock backstop is `WALL_FACTOR` times more).
        inputs: files copied into the worker's folder under the given names (``{"model.pt2": path}``);
            their paths inside are added to the request as ``request["inputs"]``.
        readonly: host files the worker reads in place (data, weights), bound read-only.

    Returns:
        A `WorkerResult`; never raises for what the worker did.
    """
    started = time.monotonic()
    process, box, folder = _spawn(script, request, name=name, limits=limits, sandbox=sandbox, inputs=inputs, readonly=readonly)
    try:
        status, reason, log = _wait(process, box, timeout=timeout)
        return WorkerResult(
            status,
            answers=_read_answers(folder / "answers.json"),
            tensors=_read_tensors(folder / "tensors.pt"),
            reason=reason,
            log=log,
            elapsed=time.monotonic() - started,
            cpu_seconds=box.cpu_seconds(),
        )
    finally:
        box.close()
        shutil.rmtree(folder, ignore_errors=True)


def _read_answers(path: Path) -> dict[str, Any]:
    """A worker's ``answers.json``: a JSON object, else nothing (missing, too big, not an object)."""
    raw = _read_plain(path)
    try:
        answers = json.loads(raw) if raw else {}
    except ValueError:
        return {}
    return answers if isinstance(answers, dict) else {}


def _read_tensors(path: Path) -> dict[str, Any]:
    """A worker's ``tensors.pt``, loaded with ``weights_only=True`` (data only, never code), else nothing."""
    raw = _read_plain(path)
    if not raw:
        return {}
    import io

    import torch

    try:
        loaded = torch.load(io.BytesIO(raw), weights_only=True)
    except Exception:
        return {}
    return loaded if isinstance(loaded, dict) else {}


def _wait(process: subprocess.Popen, box: ProcessBox, *, timeout: float) -> tuple[str, str, str]:
    """Wait for the worker; kill it past its CPU budget or its wall-clock backstop, or when the
    box killed it.

    Returns:
        ``(status, reason, the end of its output)``.
    """
    tail = OutputTail(process.stdout, name="worker-output")
    tail.start()
    start_cpu = box.cpu_seconds()
    deadline = time.monotonic() + timeout * WALL_FACTOR
    status, reason = "ok", ""
    while process.poll() is None:
        used = box.cpu_seconds() - start_cpu
        if used > timeout:
            status, reason = "timeout", f"used more than its {timeout:g} CPU-s"
            break
        if time.monotonic() > deadline:
            status, reason = "timeout", f"no answer within {timeout * WALL_FACTOR:g} s while using {used:.0f} CPU-s"
            break
        time.sleep(0.05)
    if status != "ok":
        box.kill()
    process.wait()
    tail.join(timeout=5)
    if status == "ok" and process.returncode != 0:
        status = "died"
        reason = box.reason() or describe_exit(process.returncode)
    return status, reason, tail.text()


@dataclass
class RunnerReply:
    """One answer of a `Runner`.

    Attributes:
        status: ``ok`` (a message came), ``timeout`` (over its CPU budget or its wall-clock
            backstop: the runner was killed), ``died`` (it ended without answering).
        message: the JSON object it sent (``ok`` only); the runner may run student code, so
            nothing in it is trusted beyond its shape.
        cpu_seconds: CPU time the runner used between the request and the answer.
        reason: why there is no message.
    """

    status: str
    message: dict[str, Any] = field(default_factory=dict)
    cpu_seconds: float = 0.0
    reason: str = ""


class Runner:
    """A confined worker that answers requests one at a time, each within a CPU budget.

    Requests are lines on its stdin (and files the caller puts in `folder` first); answers are
    JSON lines on a pipe of their own (its file descriptor is ``request["reply_fd"]``), so that
    what the code it runs prints cannot be taken for an answer. After a ``timeout`` or ``died``
    the runner is closed and must not be used again.

    Args:
        script, request, name, limits, sandbox, inputs, readonly: as for `run_worker`.
        masked: host folders hidden in its sandbox (replaced by empty ones).
        threads: CPU threads its libraries may start (``OMP_NUM_THREADS``...).
    """

    MAX_LINE = 64 * 2**10

    def __init__(
        self,
        script: Path,
        request: dict[str, Any],
        *,
        name: str,
        limits: Limits,
        sandbox: SandboxInfo,
        inputs: dict[str, Path] | None = None,
        readonly: tuple[Path, ...] = (),
        masked: tuple[Path, ...] = (),
        threads: int = 1,
    ) -> None:
        read_end, write_end = os.pipe()
        try:
            self.process, self.box, self.folder = _spawn(
                script, {**request, "reply_fd": write_end}, name=name, limits=limits, sandbox=sandbox,
                inputs=inputs, readonly=readonly, masked=masked, threads=threads, pass_fds=(write_end,),
                stdin=subprocess.PIPE,
            )
        except BaseException:
            os.close(read_end)
            raise
        finally:
            os.close(write_end)
        self._replies = os.fdopen(read_end, "rb", buffering=0)
        self._lines: list[bytes] = []
        self._buffer = bytearray()
        self._ready = threading.Event()
        self._lock = threading.Lock()
        self._reader = threading.Thread(target=self._read, daemon=True, name=f"runner-{name}")
        self._reader.start()
        self._tail = OutputTail(self.process.stdout, name="worker-output")
        self._tail.start()
        self.closed = False

    def _read(self) -> None:
        while True:
            try:
                chunk = self._replies.read(65536)
            except OSError:
                chunk = b""
            with self._lock:
                if not chunk:
                    self._lines.append(b"")  # end of answers
                    self._ready.set()
                    return
                self._buffer.extend(chunk)
                while b"\n" in self._buffer:
                    line, _, rest = bytes(self._buffer).partition(b"\n")
                    self._buffer = bytearray(rest)
                    self._lines.append(line[: self.MAX_LINE] or b"{}")
                if len(self._buffer) > self.MAX_LINE:  # a line without end: cut, never grow
                    self._lines.append(bytes(self._buffer[: self.MAX_LINE]))
                    self._buffer.clear()
                if self._lines:
                    self._ready.set()

    def send(self, line: str) -> None:
        """Write one request line (the runner may have ended: then the next `receive` says so)."""
        try:
            self.process.stdin.write(line.encode() + b"\n")
            self.process.stdin.flush()
        except (OSError, ValueError):
            pass

    def receive(self, *, cpu_budget: float, wall_budget: float | None = None) -> RunnerReply:
        """The next answer, waiting at most ``cpu_budget`` CPU seconds of the runner (and
        ``wall_budget`` seconds, default `WALL_FACTOR` times the CPU budget)."""
        if self.closed:
            return RunnerReply("died", reason="the runner was closed")
        start_cpu = self.box.cpu_seconds()
        wall = wall_budget if wall_budget is not None else cpu_budget * WALL_FACTOR
        deadline = time.monotonic() + wall
        while True:
            with self._lock:
                line = self._lines.pop(0) if self._lines else None
                if not self._lines:
                    self._ready.clear()
            used = self.box.cpu_seconds() - start_cpu
            if line is not None:
                if line == b"":
                    self.process.wait()
                    reason = self.box.reason() or describe_exit(self.process.returncode)
                    self.close()
                    return RunnerReply("died", cpu_seconds=used, reason=reason)
                try:
                    message = json.loads(line)
                except ValueError:
                    message = None
                return RunnerReply("ok", message if isinstance(message, dict) else {}, cpu_seconds=used)
            if used > cpu_budget:
                self.close()
                return RunnerReply("timeout", cpu_seconds=used, reason=f"used more than {cpu_budget:g} CPU-s")
            if time.monotonic() > deadline:
                self.close()
                return RunnerReply("timeout", cpu_seconds=used, reason=f"no answer within {wall:g} s")
            self._ready.wait(0.02)

    @property
    def log(self) -> str:
        """The end of what the runner printed, for the grader's own diagnostics (never a report)."""
        return self._tail.text()

    def close(self) -> None:
        """Kill the runner and everything it started, remove its folder. Safe to call twice."""
        if self.closed:
            return
        self.closed = True
        self.box.close()
        try:
            self.process.stdin.close()
        except OSError:
            pass
        self.process.wait()
        self._reader.join(timeout=5)
        self._tail.join(timeout=5)
        self._replies.close()
        shutil.rmtree(self.folder, ignore_errors=True)

