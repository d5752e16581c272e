"""One owner for a notebook kernel's life: start it confined, run cells, probe it, revive it, close it.

A `KernelSession` holds everything a kernel needs and leaves nothing behind:

* a private runtime folder (mode 0700, one per kernel): its connection file and ZeroMQ sockets,
  the start-up file, the probes' exchange files. Confined, the kernel sees this folder and its
  scratch folder, nothing of another kernel (`grader.confine.sandbox`);
* a cleared environment: variables the grader sets itself (paths, locale, threads, seeds),
  never the grader's own (`kernel_env`);
* a `grader.confine.limits.ProcessBox`: memory, processes, CPU time, disk, enforced by the operating
  system where it can; when the session closes, every process the kernel started is killed;
* seeds and figure capture before the first cell (`grader.run.kernel_side.setup`);
* bounded output: at most ``Limits.output_mib`` for the whole notebook, a third of it per cell,
  and the kernel process's own stdout and stderr kept as a short tail.

The command line is built here, not read from an installed kernelspec, so grading does not depend
on which kernels the machine has registered.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import itertools
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import psutil
from jupyter_client import AsyncKernelManager
from jupyter_client.kernelspec import KernelSpec
from jupyter_core.utils import ensure_event_loop, run_sync

from grader.confine.limits import ProcessBox, threads_per_process
from grader.confine.process import OutputTail, confine, describe_exit, exit_signal
from grader.confine.sandbox import SANDBOX_HOME, Mounts
from grader.confine.tree import process_tree
from grader.options import WALL_FACTOR, Limits
from grader.paths import KERNEL_SIDE, KIT_ROOT
from grader.results import CellRun, RunFailure, SandboxInfo
from grader.run import kernel_side

if TYPE_CHECKING:
    from nbclient import NotebookClient

# nbformat and nbclient are imported where they are used, after the kernel process is launched:
# their import time then overlaps the kernel's start-up.

__all__ = ["CellOutcome", "CodeOutcome", "KernelSession", "Limits", "ProbeAnswer", "kernel_env"]

_QUIET = logging.getLogger("grader.nbclient")
_QUIET.setLevel(logging.CRITICAL)

# How long an interrupted cell may take to stop before its kernel is killed: generous, because
# what follows (go on with the next cell, or stop the run) must not depend on how busy the machine is.
INTERRUPT_GRACE_S = 30.0
PROBE_TIMEOUT_S = 120.0
LOG_TAIL_BYTES = 64 * 2**10
# Variables of the grader's environment a kernel may see: which devices and how many threads.
PASSED_THROUGH = ("CUDA_VISIBLE_DEVICES", "OMP_NUM_THREADS", "MKL_NUM_THREADS", "LD_LIBRARY_PATH")


@dataclass
class CodeOutcome:
    """What running grader code in the kernel gave: ``status`` is ok / error / timeout / died."""

    status: str
    stdout: str = ""
    error_name: str = ""
    error_message: str = ""


@dataclass
class CellOutcome:
    """How a cell's execution ended (see `KernelSession.execute_cell`) and the CPU time it used.

    ``wall`` is True when the wall-clock backstop, not the CPU budget, stopped it (it waited).
    """

    status: str
    cpu_seconds: float = 0.0
    wall: bool = False


class _CpuMeter(threading.Thread):
    """Interrupts the running cell once the kernel's box has used ``budget`` CPU seconds since
    the cell started; kills the box when the cell does not stop within `INTERRUPT_GRACE_S`."""

    def __init__(self, session: KernelSession, budget: float, *, interval: float = 0.2) -> None:
        super().__init__(daemon=True, name="cell-cpu")
        self.session, self.budget, self.interval = session, budget, interval
        self.box = session.box
        self.start_cpu = self.box.cpu_seconds() if self.box is not None else 0.0
        self.end_cpu: float | None = None
        self.fired = self.killed = False
        self._done = threading.Event()

    def used(self) -> float:
        end = self.end_cpu if self.end_cpu is not None else (self.box.cpu_seconds() if self.box else 0.0)
        return max(0.0, end - self.start_cpu)

    def run(self) -> None:
        if self.box is None:
            return
        while not self._done.wait(self.interval):
            if self.box.cpu_seconds() - self.start_cpu > self.budget:
                self.fired = True
                self.session.signal_kernel(signal.SIGINT)
                if not self._done.wait(INTERRUPT_GRACE_S):
                    self.killed = True
                    self.session.kill()
                return

    def stop(self) -> None:
        if self.end_cpu is None and self.box is not None:
            self.end_cpu = self.box.cpu_seconds()
        self._done.set()


@dataclass
class ProbeAnswer:
    """The answer to one probe: ``value`` (plain data) when ``ok``, else ``error`` says why."""

    ok: bool
    value: dict[str, Any] = field(default_factory=dict)
    error: str = ""


def kernel_env(*, runtime: Path, seed: int, sandboxed: bool, extra: dict[str, str]) -> dict[str, str]:
    """The kernel's whole environment: set by the grader, nothing inherited but `PASSED_THROUGH`."""
    home = SANDBOX_HOME if sandboxed else str(runtime / "home")
    tmp = "/tmp" if sandboxed else str(runtime / "tmp")
    python_path = [str(KIT_ROOT)]  # `src` importable even where the kit is not pip-installed
    import site

    if site.ENABLE_USER_SITE and os.path.isdir(site.getusersitepackages()):
        python_path.append(site.getusersitepackages())  # $HOME changes: say where the user site is
    env = {
        "PATH": os.pathsep.join([str(Path(sys.executable).parent), "/usr/local/bin", "/usr/bin", "/bin"]),
        "HOME": home,
        "USER": "student",
        "LOGNAME": "student",
        "TMPDIR": tmp,
        "LANG": "C.UTF-8",
        "LC_ALL": "C.UTF-8",
        "PYTHONPATH": os.pathsep.join(python_path),
        "PYTHONHASHSEED": str(seed),
        "PYTHONDONTWRITEBYTECODE": "1",
        "IPYTHONDIR": str(runtime / "ipython"),  # a fresh profile: no start-up files of anyone
        "JUPYTER_RUNTIME_DIR": str(runtime),
        "JUPYTER_CONFIG_DIR": str(runtime / "jupyter"),
        "XDG_CACHE_HOME": f"{home}/.cache",
        "TORCH_HOME": f"{home}/.cache/torch",
        "CUBLAS_WORKSPACE_CONFIG": ":4096:8",  # required by torch for deterministic cuBLAS
        # Progress bars refresh every few seconds, not ten times a second: each refresh is a
        # message the grader records, and it competes with the training for the CPU.
        "TQDM_MININTERVAL": "5",
        "PYDEVD_DISABLE_FILE_VALIDATION": "1",
    }
    env.update({name: os.environ[name] for name in PASSED_THROUGH if os.environ.get(name)})
    threads = str(threads_per_process())  # never more threads than the cores the grader may use
    env.update(OMP_NUM_THREADS=threads, MKL_NUM_THREADS=threads, OPENBLAS_NUM_THREADS=threads)
    env.update(extra)
    return env


class _KernelManager(AsyncKernelManager):
    """A kernel manager whose kernel command line is built by the grader, not read from a
    kernelspec, so it can be confined and given the start-up file."""

    grader_argv: tuple[str, ...] = ()

    @property
    def kernel_spec(self) -> KernelSpec:
        # "message" interrupts go over the control channel, so they reach the kernel inside
        # bwrap's PID namespace; signals to the bwrap process would not.
        return KernelSpec(
            argv=list(self.grader_argv), display_name="grader", language="python", interrupt_mode="message"
        )


class KernelSession:
    """A fresh IPython kernel for one notebook, from start to close.

    Args:
        workdir: the notebook's scratch folder: its working directory, and the only real folder
            it may write (with its runtime folder).
        seed: seed for ``random``, ``numpy`` and ``torch``.
        limits: time, memory, processes, disk, output.
        sandbox: whether to confine it (`grader.confine.sandbox.sandbox_info`).
        readonly: files the notebook reads that the grader prepared (data, weights), bound
            read-only at their own paths.
        env: variables naming them (``KIT_DATA_DIR``, ``KIT_RESNET18_WEIGHTS``).
        runtime_root: where the private runtime folder goes (a short path: Unix socket paths are
            limited to about 100 bytes).

    The process starts with `start` (returns at once); `wait_ready` waits for it.
    """

    def __init__(
        self,
        *,
        workdir: Path,
        seed: int = 0,
        limits: Limits = Limits(),
        sandbox: SandboxInfo,
        readonly: tuple[Path, ...] = (),
        env: dict[str, str] | None = None,
        runtime_root: Path | None = None,
    ) -> None:
        Path(workdir).mkdir(parents=True, exist_ok=True)
        self.workdir = Path(os.path.realpath(workdir))
        self.seed = seed
        self.limits = limits
        self.sandbox = sandbox
        self.readonly = tuple(readonly)
        self.extra_env = dict(env or {})
        self.runtime_root = runtime_root
        self._reset()

    def _reset(self) -> None:
        """The state of one kernel process (a revived session gets fresh state)."""
        self.km: _KernelManager | None = None
        self.box: ProcessBox | None = None
        self.runtime_dir: Path | None = None
        self._log: OutputTail | None = None
        self._client: NotebookClient | None = None
        self._probes = itertools.count()
        # What this kernel has run, so that `revive` can run it again in a fresh one.
        self._notebook: Any = None
        self._ran: list[int] = []
        self.replay_problem = ""
        self.garbled = ""  # why the kernel was killed for messages the grader could not read

    # ------------------------------------------------------------------ start

    def start(self) -> None:
        """Launch the kernel process, confined and within its limits (returns before it is ready)."""
        if self.km is not None:
            return
        self.runtime_dir = Path(tempfile.mkdtemp(prefix="gk-", dir=self.runtime_root))  # mode 0700
        if self.sandbox.enabled and len(str(self.runtime_dir)) > 80:
            raise ValueError(
                f"runtime folder path too long for Unix sockets ({self.runtime_dir}); set TMPDIR to a shorter folder"
            )
        shutil.copy(KERNEL_SIDE, self.runtime_dir / "kernel_side.py")
        startup = self.runtime_dir / "startup.py"
        startup.write_text(_STARTUP.format(path=str(self.runtime_dir / "kernel_side.py"), seed=int(self.seed)))
        mpl = _matplotlib_cache()
        if mpl is not None:
            shutil.copytree(mpl, self.runtime_dir / "matplotlib")
        if not self.sandbox.enabled:
            for private in ("home", "tmp"):
                (self.runtime_dir / private).mkdir()
        env = kernel_env(runtime=self.runtime_dir, seed=self.seed, sandboxed=self.sandbox.enabled, extra=self.extra_env)
        env["MPLCONFIGDIR"] = str(self.runtime_dir / "matplotlib")
        command = [
            sys.executable,
            "-m",
            "ipykernel_launcher",
            "-f",
            "{connection_file}",
            f"--IPKernelApp.exec_files={startup}",
            "--HistoryManager.hist_file=:memory:",
        ]
        argv, self.box = confine(
            command, env, name="kernel", limits=self.limits, sandboxed=self.sandbox.enabled,
            mounts=Mounts(readonly=list(self.readonly), writable=[self.workdir, self.runtime_dir]),
            cwd=self.workdir, scratch=self.runtime_dir, watch_dirs=(self.workdir,),
        )
        # Inside bwrap's network namespace the kernel cannot reach the grader's TCP loopback:
        # Unix sockets in its runtime folder instead. Unconfined, TCP on the loopback.
        if self.sandbox.enabled:
            transport, ip = "ipc", str(self.runtime_dir / "k")
        else:
            transport, ip = "tcp", "127.0.0.1"
        self.km = _KernelManager(transport=transport, ip=ip, connection_file=str(self.runtime_dir / "kernel.json"))
        self.km.grader_argv = tuple(argv)
        run_sync(self.km.start_kernel)(
            env=env, cwd=str(self.workdir), stdout=subprocess.PIPE, stderr=subprocess.STDOUT
        )
        process = self.km.provisioner.process
        self._log = OutputTail(process.stdout, size=LOG_TAIL_BYTES, name="kernel-log")
        self._log.start()
        self.box.started(process.pid)

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
            self._client.output_limit = int(self.limits.output_mib * 2**20)
            self._client.start_new_kernel_client()
        return self._client

    def wait_ready(self) -> None:
        """Wait until the kernel answers (raises RuntimeError if it dies or never answers)."""
        self._connect()

    # ------------------------------------------------------------------ running cells

    def execute_cell(
        self, notebook: Any, index: int, *, cpu_budget: float, wall_budget: float | None = None, store_history: bool = True
    ) -> CellOutcome:
        """Execute ``notebook.cells[index]``, its outputs going into the cell.

        The cell may use ``cpu_budget`` CPU seconds (the kernel and every process and thread it
        started, `ProcessBox.cpu_seconds`); past that it is interrupted. A cell that waits
        instead of computing is interrupted after ``wall_budget`` seconds on the wall clock
        (default `WALL_FACTOR` times the CPU budget).

        Returns:
            A `CellOutcome`: ``"ok"`` (ran; it may have raised, see the cell's outputs),
            ``"timeout"`` (interrupted, the kernel answers again), ``"stuck"`` (did not stop when
            interrupted: killed) or ``"died"``; and the CPU seconds it used.
        """
        from nbclient.exceptions import CellTimeoutError, DeadKernelError

        client = self._connect()
        client.nb = notebook
        client.timeout = max(1, int(wall_budget if wall_budget is not None else cpu_budget * WALL_FACTOR))
        meter = _CpuMeter(self, cpu_budget)
        meter.start()
        status = "ok"
        try:
            client.execute_cell(notebook.cells[index], index, store_history=store_history)
        except CellTimeoutError:
            _cancel_pending_tasks()
            meter.stop()
            self.interrupt()
            status = "timeout" if self._wait_responsive() else "stuck"
            if status == "stuck":
                self.kill()
        except DeadKernelError:
            _cancel_pending_tasks()
            status = "died"
        except Exception as error:  # noqa: BLE001  a message the client cannot read: the kernel is not to be trusted
            # The notebook's code runs in the kernel and can garble its messages (json.dumps
            # replaced, bytes on its sockets); the client then raises anything. The kernel is
            # killed and the cell counts as one that killed it: a graded failure, never a grader error.
            _cancel_pending_tasks()
            self.garbled = f"the kernel sent a message the grader could not read ({type(error).__name__})"
            self.kill()
            status = "died"
        finally:
            meter.stop()
        if meter.fired:  # over its CPU budget: interrupted (or killed when it would not stop)
            status = "stuck" if status == "died" or meter.killed else "timeout"
        return CellOutcome(status, meter.used(), wall=status == "timeout" and not meter.fired)

    def run_cells(self, notebook: Any, indices: list[int]) -> tuple[list[CellRun], RunFailure | None, bool]:
        """Execute the given code cells in order within the limits.

        Returns:
            ``(cell runs, failure or None, kernel_usable)``. The failure is the one that stopped
            the run, else the first cell timeout.
        """
        limits = self.limits
        self._notebook = notebook
        runs = [CellRun(i, _first_line(notebook.cells[i].source), "not_run") for i in indices]
        try:
            self.wait_ready()
        except Exception as error:
            reason = self.death_reason() if not self.is_alive() else str(error)
            return runs, RunFailure("kernel_start", f"the kernel did not start: {reason}"), False
        # Seeds last: whatever ran in the kernel since it started (ipykernel, the grader's set-up,
        # a package that draws at import) leaves the first cell the exact streams of seed(N).
        self.run_code(f"__import__('sys').modules['_kit_kernel_side'].seed({int(self.seed)})", timeout=60)
        used = 0.0  # CPU seconds of the cells so far: the notebook's budget counts these
        wall_deadline = time.monotonic() + WALL_FACTOR * limits.timeout  # stops a notebook that waits
        failure: RunFailure | None = None
        for run in runs:
            cell = notebook.cells[run.index]
            remaining = limits.timeout - used
            if remaining < 1 or time.monotonic() > wall_deadline - 1:
                message = (
                    f"the notebook's limit of {limits.timeout:g} CPU-s was used up before {run.describe()}"
                )
                return runs, RunFailure("notebook_timeout", message, run.index), True
            budget = min(limits.cell_timeout, remaining)
            started = time.monotonic()
            wall = min(budget * WALL_FACTOR, wall_deadline - time.monotonic())
            outcome = self.execute_cell(notebook, run.index, cpu_budget=budget, wall_budget=wall)
            status = outcome.status
            run.elapsed = time.monotonic() - started
            run.cpu_seconds = outcome.cpu_seconds
            used += outcome.cpu_seconds
            run.status = "ok"
            if status in ("timeout", "stuck"):
                whole = budget < limits.cell_timeout
                run.status, run.error_name = "timeout", "Timeout"
                if outcome.wall:
                    run.error_message = (
                        f"the cell waited longer than {budget * WALL_FACTOR:g} s without using its CPU budget "
                        "(input(), a sleep, a lock?)"
                    )
                elif whole or remaining - outcome.cpu_seconds < 1:
                    run.error_message = f"the notebook's limit of {limits.timeout:g} CPU-s ran out in this cell"
                else:
                    run.error_message = f"the cell used more than its limit of {limits.cell_timeout:g} CPU-s"
                if status == "stuck":
                    run.error_message += " and did not stop when interrupted"
                cell.outputs.append(_error_output("TimeoutError", run.error_message))
                stop = whole or status == "stuck"
                if stop or failure is None:
                    kind = "notebook_timeout" if whole else "cell_timeout"
                    failure = RunFailure(kind, f"{run.describe()}: {run.error_message}", run.index)
                if stop:
                    return runs, failure, status != "stuck"
                continue  # an interrupted cell is like a cell that raised: go on
            if status == "died":
                memory = self.box is not None and self.box.memory_killed()
                run.status = "died"
                run.error_name = "MemoryLimit" if memory else "DeadKernel"
                run.error_message = self.death_reason()
                cell.outputs.append(_error_output(run.error_name, run.error_message))
                failure = RunFailure("memory" if memory else "died", f"{run.describe()}: {run.error_message}", run.index)
                return runs, failure, False
            for output in cell.outputs:
                if output.output_type == "error":
                    run.status = "error"
                    run.error_name = output.get("ename", "")
                    run.error_message = output.get("evalue", "")
                    break
            self._ran.append(run.index)  # ran to its end (raising or not): a revived kernel runs it again
        return runs, failure, True

    def run_code(self, code: str, *, timeout: float) -> CodeOutcome:
        """Run grader code in the kernel's namespace (not stored in history); never raises."""
        if not self.is_alive():
            return CodeOutcome("died", error_message=self.death_reason())
        import nbformat

        notebook = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(code)])
        try:
            status = self.execute_cell(notebook, 0, cpu_budget=timeout, store_history=False).status
        except Exception as error:  # the kernel never answered
            return CodeOutcome("died", error_message=f"could not reach the kernel: {error}")
        if status == "died":
            return CodeOutcome("died", error_message=self.death_reason())
        if status in ("timeout", "stuck"):
            return CodeOutcome("timeout", error_message=f"no answer within {timeout:g} CPU-s")
        outputs = notebook.cells[0].outputs
        stdout = "".join(o.get("text", "") for o in outputs if o.output_type == "stream" and o.name == "stdout")
        for output in outputs:
            if output.output_type == "error":
                return CodeOutcome("error", stdout, output.ename, output.evalue)
        return CodeOutcome("ok", stdout)

    # ------------------------------------------------------------------ probing

    def ask(self, function: str, *, timeout: float = PROBE_TIMEOUT_S, **inputs: Any) -> ProbeAnswer:
        """Call ``grader.run.kernel_side.<function>(namespace, **inputs)`` inside the kernel.

        Inputs and answer cross as files in the runtime folder, written with ``torch.save`` and
        read back with ``torch.load(weights_only=True)``, which rebuilds tensors, numbers, strings
        and containers but cannot run code. Never raises for what happens in the kernel.
        """
        if function not in kernel_side.PROBES:
            raise ValueError(f"grader.run.kernel_side has no probe {function!r}")
        import torch  # here, not at the top: a notebook without probes grades without torch

        number = next(self._probes)
        in_path = self.runtime_dir / f"probe-{number}-in.pt"
        out_path = self.runtime_dir / f"probe-{number}-out.pt"
        torch.save(inputs, in_path)
        code = f"__import__('sys').modules['_kit_kernel_side'].answer({function!r}, {str(in_path)!r}, {str(out_path)!r})"
        outcome = self.run_code(code, timeout=timeout)
        try:
            if outcome.status != "ok":
                detail = outcome.error_message
                if outcome.status == "error":
                    detail = f"{outcome.error_name}: {outcome.error_message}"
                elif outcome.status == "timeout":
                    detail = f"no answer within {timeout:g} CPU-s (the kernel was interrupted)"
                return ProbeAnswer(False, error=detail)
            try:
                if out_path.is_symlink() or out_path.stat().st_size > 2**30:
                    raise ValueError("not a plain file of reasonable size")
                value = torch.load(out_path, weights_only=True)
            except Exception as error:
                return ProbeAnswer(False, error=f"the kernel's answer could not be read safely ({error})")
            if not isinstance(value, dict):
                return ProbeAnswer(False, error=f"the kernel's answer is a {type(value).__name__}, not a dict")
            return ProbeAnswer(True, value)
        finally:
            in_path.unlink(missing_ok=True)
            out_path.unlink(missing_ok=True)

    # ------------------------------------------------------------------ health

    def is_alive(self) -> bool:
        return self.km is not None and bool(run_sync(self.km.is_alive)())

    def signal_kernel(self, number: int) -> None:
        """Send a signal to the kernel's Python process (inside the sandbox, through its host pid)."""
        process = getattr(self.km.provisioner, "process", None) if self.km and self.km.provisioner else None
        if process is None:
            return
        for candidate in reversed(process_tree(process.pid)):  # the kernel is the deepest: not bwrap
            try:
                argv = candidate.cmdline()
                if "ipykernel_launcher" in argv and not os.path.basename(argv[0]).startswith("bwrap"):
                    candidate.send_signal(number)
                    return
            except (psutil.Error, IndexError):
                continue

    def interrupt(self) -> None:
        try:
            run_sync(self.km.interrupt_kernel)()
        except Exception:  # a dead kernel cannot be interrupted; the caller checks liveness
            pass

    def _wait_responsive(self, grace: float = INTERRUPT_GRACE_S) -> bool:
        """After an interrupt: True when the kernel runs a no-op within ``grace`` seconds."""
        import nbformat
        notebook = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("pass")])
        client = self._connect()
        client.nb = notebook
        client.timeout = max(1, int(grace))
        try:
            client.execute_cell(notebook.cells[0], 0, store_history=False)
        except Exception:  # noqa: BLE001  timed out, dead, or messages the client cannot read
            _cancel_pending_tasks()
            return False
        return True

    def death_reason(self) -> str:
        """Why the kernel is gone, in words (a limit, a crash, an exit code or a signal)."""
        if self.garbled:
            return self.garbled
        if self.box is not None:
            reason = self.box.reason()
            if reason:
                return reason
        fatal = self._fatal_log_line()
        if fatal:
            return f"the kernel crashed: {fatal}"
        code = None
        process = getattr(self.km.provisioner, "process", None) if self.km and self.km.provisioner else None
        if process is not None:
            code = process.poll()
        if code is None:
            return "the kernel died"
        number = exit_signal(code)
        if number is None:
            return f"the kernel {describe_exit(code)} (os._exit or sys.exit in a cell?)"
        hint = " (often the system running out of memory)" if number == signal.SIGKILL else ""
        return f"the kernel was {describe_exit(code)}{hint}"

    def _fatal_log_line(self) -> str:
        """The kernel process's last "Fatal Python error" or "Segmentation fault" line, if any."""
        text = self._log.text() if self._log is not None else ""
        lines = [
            line.strip()[:200] for line in text.splitlines() if "Fatal Python error" in line or "Segmentation fault" in line
        ]
        return lines[-1] if lines else ""

    @property
    def peak_memory(self) -> int:
        return self.box.peak_memory if self.box is not None else 0

    # ------------------------------------------------------------------ ending

    def kill(self) -> None:
        if self.box is not None:
            self.box.kill()

    def revive(self) -> bool:
        """Replace a dead kernel by a fresh one that has run the same cells again (on a copy of
        the notebook: the executed notebook keeps the first run's outputs). Returns whether the
        fresh kernel is usable."""
        import nbformat

        notebook, ran = self._notebook, list(self._ran)
        self.close()
        self._reset()
        if notebook is None:
            return False
        copy = nbformat.from_dict(json.loads(json.dumps(notebook)))
        clear_outputs(copy)
        _, failure, usable = self.run_cells(copy, ran)
        self.replay_problem = failure.message if failure is not None and not usable else ""
        return usable

    def close(self) -> None:
        """Stop the kernel, kill every process it started, remove its runtime folder. Safe to call twice."""
        if self._client is not None:
            _close_client(self._client)
            self._client = None
        if self.box is not None:
            self.box.close()  # kills the whole tree: nothing in a grading kernel needs a clean exit
        if self.km is not None:
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
        if self.runtime_dir is not None:
            shutil.rmtree(self.runtime_dir, ignore_errors=True)
            self.runtime_dir = None

    def __enter__(self) -> KernelSession:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


_STARTUP = """\
# Run by the grader's kernel before the notebook's first cell.
def _kit_grader_setup():
    import importlib.util, sys
    spec = importlib.util.spec_from_file_location("_kit_kernel_side", {path!r})
    module = importlib.util.module_from_spec(spec)
    sys.modules["_kit_kernel_side"] = module
    spec.loader.exec_module(module)
    module.setup({seed})

_kit_grader_setup()
del _kit_grader_setup
"""


def clear_outputs(notebook: Any) -> None:
    for cell in notebook.cells:
        if cell.cell_type == "code":
            cell.outputs = []
            cell.execution_count = None
            cell.metadata.pop("execution", None)


def _first_line(source: str) -> str:
    for line in source.splitlines():
        if line.strip():
            line = line.strip()
            return line if len(line) <= 60 else line[:57] + "..."
    return ""


def _error_output(name: str, message: str) -> Any:
    import nbformat

    return nbformat.v4.new_output("error", ename=name, evalue=message, traceback=[f"{name}: {message}"])


def _bounded_client_class() -> type:
    """nbclient's client keeping at most ``output_limit`` bytes of output for the whole notebook
    and a third of that per cell, so that a cell printing in a loop until its time limit cannot
    fill the grader's memory or the report."""
    import nbformat
    from nbclient import NotebookClient

    class BoundedClient(NotebookClient):
        output_limit: int = 32 * 2**20
        _outs_id: int = 0
        _cell_bytes: int = 0
        _total_bytes: int = 0
        _noted_id: int = 0

        def output(self, outs, msg, display_id, cell_index):  # type: ignore[no-untyped-def]
            if id(outs) != self._outs_id:  # a new cell (or a new run of one)
                self._outs_id, self._cell_bytes = id(outs), 0
            content = msg.get("content", {})
            size = len(content.get("text", "")) + sum(len(str(v)) for v in content.get("data", {}).values())
            size += sum(len(line) for line in content.get("traceback", []) or [])
            room = min(self.output_limit // 3 - self._cell_bytes, self.output_limit - self._total_bytes)
            self._cell_bytes += size
            self._total_bytes += min(size, max(room, 0))
            if size <= room:
                return super().output(outs, msg, display_id, cell_index)
            if room > 0 and "text" in content:  # keep the beginning of a long stream
                msg = {**msg, "content": {**content, "text": content["text"][:room]}}
                super().output(outs, msg, display_id, cell_index)
            if self._noted_id != id(outs):
                self._noted_id = id(outs)
                limit = self.output_limit / 2**20
                note = (
                    f"\n[grader: output limit reached ({limit / 3:.0f} MB per cell, {limit:.0f} MB per "
                    "notebook); the rest was dropped]\n"
                )
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


def _close_client(client: NotebookClient) -> None:
    """Stop a client's channels (the kernel keeps running)."""
    if client.kc is not None:
        result = client.kc.stop_channels()
        if inspect.isawaitable(result):
            run_sync(lambda: result)()
        client.kc = None


@functools.cache
def _matplotlib_cache() -> Path | None:
    """A primed matplotlib config folder to copy into each kernel.

    matplotlib builds a font list on first import (seconds) and falls back to a throw-away
    folder, with a warning, when its config folder is not writable. The grader builds it once in
    its cache folder; each kernel gets a writable copy.
    """
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
    return cache if any(cache.glob("fontlist-*.json")) else None
