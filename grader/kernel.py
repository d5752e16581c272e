"""A fresh IPython kernel per notebook: seeded, watched for memory, confined, probed.

* Seeds: a start-up file the kernel runs before the notebook's first cell (not a cell of the
  notebook) seeds ``random`` at once and ``numpy`` / ``torch`` when the notebook imports them,
  and turns on torch's deterministic algorithms (``warn_only``).
* Memory: a watchdog thread sums the resident memory of the kernel's process tree (DataLoader
  workers included) every 0.1 s and kills the tree above the limit. ``RLIMIT_AS`` is not used:
  torch reserves far more address space than it touches, so any useful cap breaks it.
* Sandbox: with bubblewrap (`grader.sandbox`) the kernel has no network, so the grader talks to
  it over ZeroMQ's IPC transport (Unix sockets in the scratch folder) instead of TCP; unconfined
  kernels use TCP on the loopback, which also works on Windows.
* The command line is built here, not read from an installed kernelspec, so grading does not
  depend on which kernels the machine has registered.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import psutil
from jupyter_client import AsyncKernelManager
from jupyter_client.kernelspec import KernelSpec
from jupyter_core.utils import ensure_event_loop, run_sync

from grader.results import SandboxInfo
from grader.sandbox import bwrap_argv, sandbox_info

if TYPE_CHECKING:
    from nbclient import NotebookClient

# nbformat and nbclient are imported where they are used, after the kernel process is launched:
# their import time then overlaps the kernel's start-up.

__all__ = ["GIB", "CodeOutcome", "Kernel", "Limits", "MemoryWatchdog", "start_kernel"]

GIB = 2**30
_REPO_ROOT = Path(__file__).resolve().parents[1]

_QUIET = logging.getLogger("grader.nbclient")
_QUIET.setLevel(logging.CRITICAL)

# How long an interrupted cell may take to stop before its kernel is killed.
INTERRUPT_GRACE_S = 5.0


@dataclass(frozen=True)
class Limits:
    """Resource limits for one notebook.

    Attributes:
        cell_timeout: seconds one cell may run.
        timeout: seconds the whole notebook may run (kernel start excluded).
        memory_gib: resident memory of the kernel's process tree, in GiB.
        startup_timeout: seconds a kernel may take to start.
    """

    cell_timeout: float = 900.0  # the reference CNN trains in one cell: minutes on a shared 2-core CPU
    timeout: float = 1800.0
    memory_gib: float = 6.0
    startup_timeout: float = 60.0

    def __post_init__(self) -> None:
        for name in ("cell_timeout", "timeout", "memory_gib", "startup_timeout"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or isinstance(value, bool) or value <= 0:
                raise ValueError(f"Limits.{name} must be a positive number, got {value!r}")


_SETUP_CODE = """\
# Run by the grader's kernel before the notebook's first cell.
def _grader_setup(seed):
    import importlib.abc, importlib.util, random, sys

    def seed_numpy(numpy):
        numpy.random.seed(seed)

    def seed_torch(torch):
        torch.manual_seed(seed)
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False

    random.seed(seed)
    seeders = {"numpy": seed_numpy, "torch": seed_torch}
    for name in list(seeders):
        if name in sys.modules:
            seeders.pop(name)(sys.modules[name])

    class SeedOnImport(importlib.abc.MetaPathFinder):
        # numpy and torch take seconds to import: seed them when the notebook imports them
        # (before any of its code runs) instead of importing them for every notebook.
        def find_spec(self, name, path=None, target=None):
            seeder = seeders.pop(name, None)
            if seeder is None:
                return None
            if not seeders:
                sys.meta_path.remove(self)
            spec = importlib.util.find_spec(name)
            if spec is None or spec.loader is None:
                return spec
            exec_module = spec.loader.exec_module

            def exec_and_seed(module):
                exec_module(module)
                seeder(module)

            spec.loader.exec_module = exec_and_seed
            return spec

    if seeders:
        sys.meta_path.insert(0, SeedOnImport())

_grader_setup({seed})
del _grader_setup
"""


class MemoryWatchdog(threading.Thread):
    """Poll the resident memory of a process tree; kill the tree when it passes the limit.

    Memory is read every ``interval`` seconds; the list of processes (listing children scans
    all of /proc, ~5 ms) is refreshed every ``tree_interval`` seconds, so a new DataLoader
    worker is watched within that time.
    """

    def __init__(self, pid: int, limit_bytes: int, *, interval: float = 0.1, tree_interval: float = 1.0) -> None:
        super().__init__(daemon=True, name=f"memory-watchdog-{pid}")
        self.pid = pid
        self.limit_bytes = limit_bytes
        self.interval = interval
        self.tree_interval = tree_interval
        self.peak = 0
        self.exceeded: int | None = None  # the resident size that triggered the kill
        self._stop_event = threading.Event()

    def _tree(self) -> list[psutil.Process]:
        try:
            root = psutil.Process(self.pid)
            return [root, *root.children(recursive=True)]
        except psutil.Error:
            return []

    def run(self) -> None:
        tree: list[psutil.Process] = []
        refreshed = 0.0
        while not self._stop_event.wait(self.interval):
            if time.monotonic() - refreshed >= self.tree_interval:
                tree, refreshed = self._tree(), time.monotonic()
                if not tree:
                    return
            rss = 0
            for process in tree:
                try:
                    rss += process.memory_info().rss
                except psutil.Error:
                    refreshed = 0.0  # a process ended: list the tree again next time
            self.peak = max(self.peak, rss)
            if rss > self.limit_bytes:
                self.exceeded = rss
                for process in reversed(self._tree() or tree):  # children first, so none is re-parented and missed
                    try:
                        process.kill()
                    except psutil.Error:
                        pass
                return

    def stop(self) -> None:
        self._stop_event.set()


@dataclass
class CodeOutcome:
    """What running grader code in the kernel gave: ``status`` is ok / error / timeout / died."""

    status: str
    stdout: str = ""
    error_name: str = ""
    error_message: str = ""


class _KernelManager(AsyncKernelManager):
    """A kernel manager whose kernel command line is built by the grader, not read from a
    kernelspec, so it can be wrapped in bwrap and given the seeding start-up file."""

    grader_argv: tuple[str, ...] = ()

    @property
    def kernel_spec(self) -> KernelSpec:
        # "message" interrupts go over the control channel, so they reach the kernel inside
        # bwrap's PID namespace; signals to the bwrap process would not.
        return KernelSpec(
            argv=list(self.grader_argv),
            display_name="grader",
            language="python",
            interrupt_mode="message",
        )


class Kernel:
    """A fresh IPython kernel for one notebook: started in ``workdir``, seeded, watched for
    memory and, when ``sandbox.enabled``, confined by bubblewrap.

    Use `start_kernel` to create one. The process starts at once; `ready` waits for it.
    """

    def __init__(self, *, workdir: Path, seed: int, limits: Limits, sandbox: SandboxInfo) -> None:
        Path(workdir).mkdir(parents=True, exist_ok=True)
        self.workdir = Path(os.path.realpath(workdir))
        self.seed = seed
        self.limits = limits
        self.sandbox = sandbox
        # Sockets, connection file, start-up file and probe exchange files. A short path:
        # Unix socket paths are limited to about 100 bytes.
        self.runtime_dir = Path(tempfile.mkdtemp(prefix="gk-", dir=self.workdir.parent))
        if sandbox.enabled and len(str(self.runtime_dir)) > 90:
            raise ValueError(
                f"scratch folder path too long for Unix sockets ({self.runtime_dir}); set TMPDIR to a shorter folder"
            )
        setup = self.runtime_dir / "setup.py"
        setup.write_text(_SETUP_CODE.replace("{seed}", repr(int(seed))))
        command = [
            sys.executable,
            "-m",
            "ipykernel_launcher",
            "-f",
            "{connection_file}",
            f"--IPKernelApp.exec_files={setup}",
            "--HistoryManager.hist_file=:memory:",
        ]
        if sandbox.enabled:
            # /tmp and /dev/shm are memory the watchdog cannot see: a quarter of the limit.
            tmp_bytes = int(limits.memory_gib * GIB / 4)
            command = bwrap_argv(command, writable=self.workdir.parent, cwd=self.workdir, tmp_bytes=tmp_bytes)
        # Inside bwrap's network namespace the kernel cannot reach the grader's TCP loopback:
        # Unix sockets in the shared scratch folder instead. Unconfined (and on Windows), TCP.
        transport, ip = ("ipc", str(self.runtime_dir / "k")) if sandbox.enabled else ("tcp", "127.0.0.1")
        self.km = _KernelManager(transport=transport, ip=ip, connection_file=str(self.runtime_dir / "kernel.json"))
        self.km.grader_argv = tuple(command)
        self.watchdog: MemoryWatchdog | None = None
        self._log: Any = None
        self._client: NotebookClient | None = None
        self._started = False

    def _env(self) -> dict[str, str]:
        env = dict(os.environ)
        env.update(
            PYTHONHASHSEED=str(self.seed),
            # A fresh IPython profile: no start-up files from the grading account.
            IPYTHONDIR=str(self.runtime_dir / "ipython"),
            # Required by torch for deterministic cuBLAS.
            CUBLAS_WORKSPACE_CONFIG=":4096:8",
            PYTHONDONTWRITEBYTECODE="1",
        )
        mpl = _matplotlib_cache()
        if mpl is not None:
            target = self.runtime_dir / "matplotlib"
            shutil.copytree(mpl, target, dirs_exist_ok=True)
            env["MPLCONFIGDIR"] = str(target)
        # Progress bars refresh every few seconds, not ten times a second: each refresh is a
        # message the grader records, and it competes with the training for the CPU.
        env.setdefault("TQDM_MININTERVAL", "5")
        env.pop("JPY_PARENT_PID", None)
        env.pop("MPLBACKEND", None)  # ipykernel's inline backend is what puts figures in the notebook
        # The kernel starts in the scratch copy: make the kit's own `src` importable from there
        # even where the kit is not pip-installed.
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [env.get("PYTHONPATH"), str(_REPO_ROOT)]))
        return env

    def start(self) -> None:
        """Launch the kernel process (returns before the kernel is ready)."""
        if self._started:
            return
        self._started = True
        # The kernel process's own output (not the notebook's): ipykernel's log, a crash's
        # "Fatal Python error". Kept for `death_reason`, out of the grader's terminal.
        self._log = open(self.runtime_dir / "kernel.log", "wb")
        run_sync(self.km.start_kernel)(
            env=self._env(), cwd=str(self.workdir), stdout=self._log, stderr=subprocess.STDOUT
        )
        pid = self.km.provisioner.process.pid  # bwrap's pid when sandboxed: the whole tree is watched
        self.watchdog = MemoryWatchdog(pid, int(self.limits.memory_gib * GIB))
        self.watchdog.start()

    def _connect(self) -> NotebookClient:
        # One client per kernel, for the notebook and the probes alike: clients made by the same
        # kernel manager share a session identity, so a second one would steal the first's replies.
        if self._client is None:
            import nbformat

            self.start()
            self._client = _bounded_client_class()(
                nbformat.v4.new_notebook(),
                km=self.km,
                allow_errors=True,
                interrupt_on_timeout=False,
                startup_timeout=int(self.limits.startup_timeout),
                record_timing=False,
                resources={"metadata": {"path": str(self.workdir)}},
                log=_QUIET,  # timeouts and deaths are reported in the results, not logged
            )
            self._client.start_new_kernel_client()
        return self._client

    def wait_ready(self) -> None:
        """Wait until the kernel answers (raises RuntimeError if it dies or never answers)."""
        self._connect()

    def execute_cell(self, notebook: Any, index: int, *, timeout: float, store_history: bool = True) -> str:
        """Execute ``notebook.cells[index]``, its outputs going into the cell.

        Args:
            notebook: the notebook holding the cell.
            index: the cell's position.
            timeout: seconds; on expiry the kernel is interrupted.
            store_history: False for grader code (no execution count used).

        Returns:
            ``"ok"`` (ran; it may have raised, see the cell's outputs), ``"timeout"`` (interrupted,
            the kernel answers again), ``"stuck"`` (did not stop when interrupted: killed) or
            ``"died"``.
        """
        from nbclient.exceptions import CellTimeoutError, DeadKernelError

        client = self._connect()
        client.nb = notebook
        client.timeout = max(1, int(timeout))
        try:
            client.execute_cell(notebook.cells[index], index, store_history=store_history)
        except CellTimeoutError:
            _cancel_pending_tasks()
            self.interrupt()
            if self._wait_responsive():
                return "timeout"
            self.kill()
            return "stuck"
        except DeadKernelError:
            _cancel_pending_tasks()
            return "died"
        return "ok"

    def is_alive(self) -> bool:
        return self._started and bool(run_sync(self.km.is_alive)())

    def interrupt(self) -> None:
        try:
            run_sync(self.km.interrupt_kernel)()
        except Exception:  # a dead kernel cannot be interrupted; the caller checks liveness
            pass

    def run_code(self, code: str, *, timeout: float) -> CodeOutcome:
        """Run grader code in the kernel's namespace (not stored in history).

        Args:
            code: Python source.
            timeout: seconds; on expiry the kernel is interrupted (killed if it does not stop).

        Returns:
            `CodeOutcome`; never raises for what the code or the kernel did.
        """
        if not self.is_alive():
            return CodeOutcome("died", error_message=self.death_reason())
        import nbformat

        notebook = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(code)])
        try:
            status = self.execute_cell(notebook, 0, timeout=timeout, store_history=False)
        except Exception as error:  # the kernel never answered
            return CodeOutcome("died", error_message=f"could not reach the kernel: {error}")
        if status == "died":
            return CodeOutcome("died", error_message=self.death_reason())
        if status in ("timeout", "stuck"):
            return CodeOutcome("timeout", error_message=f"no answer within {timeout:g} s")
        outputs = notebook.cells[0].outputs
        stdout = "".join(o.get("text", "") for o in outputs if o.output_type == "stream" and o.name == "stdout")
        for output in outputs:
            if output.output_type == "error":
                return CodeOutcome("error", stdout, output.ename, output.evalue)
        return CodeOutcome("ok", stdout)

    def _wait_responsive(self, grace: float = INTERRUPT_GRACE_S) -> bool:
        """After an interrupt: True when the kernel runs a no-op within ``grace`` seconds."""
        import nbformat
        from nbclient.exceptions import CellTimeoutError, DeadKernelError

        notebook = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("pass")])
        client = self._connect()
        client.nb = notebook
        client.timeout = max(1, int(grace))
        try:
            client.execute_cell(notebook.cells[0], 0, store_history=False)
        except (CellTimeoutError, DeadKernelError):
            _cancel_pending_tasks()
            return False
        return True

    def death_reason(self) -> str:
        """Why the kernel is gone, in words (memory limit, exit code or signal)."""
        if self.watchdog is not None and self.watchdog.exceeded is not None:
            return (
                f"memory limit of {self.limits.memory_gib:g} GiB exceeded (the kernel was using "
                f"{self.watchdog.exceeded / GIB:.2f} GiB when it was stopped)"
            )
        fatal = self._fatal_log_line()
        if fatal:
            return f"the kernel crashed: {fatal}"
        code = None
        process = getattr(self.km.provisioner, "process", None) if self.km.provisioner else None
        if process is not None:
            code = process.poll()
        if code is None:
            return "the kernel died"
        if code < 0 or code > 128:
            number = -code if code < 0 else code - 128
            try:
                name = signal.Signals(number).name
            except ValueError:
                name = f"signal {number}"
            hint = " (often the system running out of memory)" if number == signal.SIGKILL else ""
            return f"the kernel was killed by {name}{hint}"
        return f"the kernel exited with code {code} (os._exit or sys.exit in a cell?)"

    def _fatal_log_line(self) -> str:
        """The kernel process's last "Fatal Python error" or "Segmentation fault" line, if any."""
        try:
            text = (self.runtime_dir / "kernel.log").read_text(errors="replace")
        except OSError:
            return ""
        lines = [
            line.strip() for line in text.splitlines() if "Fatal Python error" in line or "Segmentation fault" in line
        ]
        return lines[-1] if lines else ""

    def kill(self) -> None:
        if self.watchdog is not None:
            tree = self.watchdog._tree()
            for process in reversed(tree):
                try:
                    process.kill()
                except psutil.Error:
                    pass

    def shutdown(self) -> None:
        """Stop the kernel and remove its runtime folder. Safe to call twice."""
        if self.watchdog is not None:
            self.watchdog.stop()
        if self._client is not None:
            close_client(self._client)
            self._client = None
        if self._started:
            # Kill rather than ask: nothing in a grading kernel needs a clean exit, and
            # jupyter_client's shutdown polls for the process's end in 0.1 s steps.
            self.kill()
            process = getattr(self.km.provisioner, "process", None) if self.km.provisioner else None
            if process is not None:
                try:
                    process.wait(timeout=5)
                except Exception:
                    pass
            try:
                run_sync(self.km.cleanup_resources)()
            except Exception:
                pass
        if self._log is not None:
            self._log.close()
        shutil.rmtree(self.runtime_dir, ignore_errors=True)

    @property
    def peak_memory(self) -> int:
        return self.watchdog.peak if self.watchdog is not None else 0


MAX_OUTPUT_BYTES = 10 * 2**20  # per cell; beyond this a cell's output is dropped


def _bounded_client_class() -> type:
    """nbclient's client keeping at most `MAX_OUTPUT_BYTES` of output per cell, so that a cell
    printing in a loop until its time limit cannot fill the grader's memory."""
    import nbformat
    from nbclient import NotebookClient

    class BoundedClient(NotebookClient):
        _outs_id: int = 0
        _outs_bytes: int = 0

        def output(self, outs, msg, display_id, cell_index):  # type: ignore[no-untyped-def]
            if id(outs) != self._outs_id:  # a new cell (or a new run of one)
                self._outs_id, self._outs_bytes = id(outs), 0
            content = msg.get("content", {})
            size = len(content.get("text", "")) + sum(len(str(v)) for v in content.get("data", {}).values())
            room = MAX_OUTPUT_BYTES - self._outs_bytes
            self._outs_bytes += size
            if size <= room:
                return super().output(outs, msg, display_id, cell_index)
            if room > 0 and "text" in content:  # keep the beginning of a long stream
                msg = {**msg, "content": {**content, "text": content["text"][:room]}}
                super().output(outs, msg, display_id, cell_index)
            if room > 0:
                note = f"\n[grader: this cell printed more than {MAX_OUTPUT_BYTES // 2**20} MB; the rest was dropped]\n"
                outs.append(nbformat.v4.new_output("stream", name="stderr", text=note))
            return None

    return BoundedClient


def _cancel_pending_tasks() -> None:
    """Cancel nbclient's polling tasks left behind by a timed-out or dead cell.

    nbclient leaves the output-polling task of a timed-out cell running; on the next cell it
    would compete for the kernel's messages and drop some of them.
    """
    loop = ensure_event_loop()
    pending = [task for task in asyncio.all_tasks(loop) if not task.done()]
    for task in pending:
        task.cancel()
    if pending:
        loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))


def close_client(client: NotebookClient) -> None:
    """Stop a client's channels (the kernel keeps running)."""
    if client.kc is not None:
        result = client.kc.stop_channels()
        if inspect.isawaitable(result):
            run_sync(lambda: result)()
        client.kc = None


_MPL_CACHE: Path | None | bool = False


def _matplotlib_cache() -> Path | None:
    """A primed matplotlib config folder to copy into each kernel.

    matplotlib builds a font list on first import (seconds) and falls back to a throw-away
    folder, with a warning, when its config folder is not writable, as in the sandbox. The
    grader builds it once in its cache folder; each kernel gets a writable copy.
    """
    global _MPL_CACHE
    if _MPL_CACHE is not False:
        return _MPL_CACHE  # type: ignore[return-value]
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "cnn-course-kit" / "matplotlib"
    if not any(cache.glob("fontlist-*.json")):
        try:
            cache.mkdir(parents=True, exist_ok=True)
            subprocess.run(
                [sys.executable, "-c", "import matplotlib.font_manager"],
                env={**os.environ, "MPLCONFIGDIR": str(cache)},
                check=False,
                capture_output=True,
                timeout=120,
            )
        except Exception:
            pass
    _MPL_CACHE = cache if any(cache.glob("fontlist-*.json")) else None
    return _MPL_CACHE  # type: ignore[return-value]


def start_kernel(*, workdir: Path, seed: int = 0, limits: Limits = Limits(), sandbox: bool | None = None) -> Kernel:
    """Launch a kernel for one notebook without waiting for it to be ready.

    Starting the next notebook's kernel while the current one runs hides its start-up time.

    Args:
        workdir: the notebook's scratch folder (its working directory). Its parent must be a
            scratch folder too: the kernel may write there (sockets, probe files).
        seed: seed for ``random``, ``numpy`` and ``torch``.
        limits: memory limit (watched from the start) and start-up timeout.
        sandbox: True / False / None (use bubblewrap when it works).

    Returns:
        The `Kernel`, its process started.
    """
    info = sandbox_info(sandbox)
    if sandbox is True and not info.enabled:
        raise RuntimeError(f"sandbox required but unavailable: {info.detail}")
    kernel = Kernel(workdir=workdir, seed=seed, limits=limits, sandbox=info)
    kernel.start()
    return kernel
