"""The kernel session (`grader.run.kernel`) on real kernels: the environment it is given, its
seeds, what it says when its kernel dies, and that closing it leaves nothing behind."""

from __future__ import annotations

import signal
import time

import psutil
from grader_notebooks import write_notebook

from grader.confine.sandbox import sandbox_info
from grader.options import Limits
from grader.run import kernel as kernel_module
from grader.run.execute import copy_notebook, execute_notebook
from grader.run.kernel import KernelSession, kernel_env


def test_the_kernel_environment_is_made_by_the_grader(tmp_path, monkeypatch):
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "do-not-pass")
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    env = kernel_env(runtime=tmp_path, seed=3, sandboxed=True, extra={"KIT_DATA_DIR": "/data"})
    assert "AWS_SECRET_ACCESS_KEY" not in env and "GRADER_HIDDEN_SEED" not in env
    assert env["OMP_NUM_THREADS"] == "1" and env["KIT_DATA_DIR"] == "/data" and env["HOME"] == "/tmp/home"
    assert env["PYTHONHASHSEED"] == "3"



def test_seeds_hold_even_when_the_kernel_drew_numbers_before_the_first_cell(tmp_path):
    path = write_notebook(tmp_path / "submission" / "nb.ipynb", "import random\nprint(repr(random.random()))")
    workdir = tmp_path / "scratch" / "work"
    kernel = KernelSession(workdir=workdir, seed=5, limits=Limits(cell_timeout=20, timeout=60), sandbox=sandbox_info(None))
    kernel.start()
    kernel.wait_ready()
    assert kernel.run_code("import random\nrandom.random(); random.random()", timeout=20).status == "ok"
    with execute_notebook(copy_notebook(path, workdir), workdir=workdir, kernel=kernel) as result_run:
        import random

        random.seed(5)
        assert result_run.result.notebook.cells[0].outputs[0]["text"].strip() == repr(random.random())


def test_a_session_closes_everything_it_started(tmp_path):
    session = KernelSession(workdir=tmp_path / "work", sandbox=sandbox_info(None),
                            limits=Limits(cell_timeout=30, timeout=60, memory_gib=2))
    session.start()
    session.wait_ready()
    runtime = session.runtime_dir
    assert runtime.stat().st_mode & 0o077 == 0  # private: only the grader (and this kernel) get in
    pid = session.km.provisioner.process.pid
    session.close()
    assert not runtime.exists()
    assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE


def test_a_kernel_killed_by_a_signal_is_said_to_be_and_its_box_is_not_blamed(tmp_path):
    session = KernelSession(workdir=tmp_path / "work", sandbox=sandbox_info(None), limits=Limits(memory_gib=2))
    try:
        session.start()
        session.wait_ready()
        assert session.death_reason() == "the kernel died"  # still running: no return code yet
        session.signal_kernel(signal.SIGKILL)
        process = session.km.provisioner.process
        deadline = time.monotonic() + 30
        while process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not session.is_alive()
        assert session.box.reason() == ""
        assert session.death_reason() == "the kernel was killed by SIGKILL (often the system running out of memory)"
    finally:
        session.close()


def test_the_matplotlib_cache_is_primed_once_per_grader_process():
    kernel_module._matplotlib_cache.cache_clear()
    first = kernel_module._matplotlib_cache()
    assert kernel_module._matplotlib_cache() is first
    assert kernel_module._matplotlib_cache.cache_info().hits == 1
    assert first is None or any(first.glob("fontlist-*.json"))
