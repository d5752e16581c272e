"""Confinement of one kernel at a time: what the kernel sees, what happens where bubblewrap is
missing. The limits are in ``test_limits.py``, the kernel's environment in
``tests/unit/run/test_kernel.py``, the attacks through the command line in ``test_grader_boundary.py``."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from grader_notebooks import write_notebook

from grader.confine.sandbox import Mounts, bwrap_argv, probe_bwrap, python_paths, sandbox_info
from grader.options import Limits
from grader.paths import KIT_ROOT, SRC_DIR
from grader.run.execute import copy_notebook, execute_notebook

needs_bwrap = pytest.mark.skipif(probe_bwrap() is not None, reason=f"bubblewrap unusable here: {probe_bwrap()}")


def run_cells(tmp_path, *cells, sandbox=True, limits=Limits(cell_timeout=30, timeout=90, memory_gib=2)):
    path = write_notebook(tmp_path / "submission" / "nb.ipynb", *cells)
    workdir = tmp_path / "scratch" / "work"
    return execute_notebook(copy_notebook(path, workdir), workdir=workdir, limits=limits, sandbox=sandbox)


def printed(run, index: int) -> str:
    return "".join(o.get("text", "") for o in run.result.notebook.cells[index].outputs).strip()


@needs_bwrap
def test_the_kernel_sees_python_and_src_only(tmp_path):
    kit = str(KIT_ROOT)
    with run_cells(
        tmp_path,
        f"import os\nprint(sorted(os.listdir({kit!r})))",
        "import src.engine, torch\nprint('engine ok')",
        "try:\n    import grader\n    print('grader visible')\nexcept ImportError:\n    print('no grader')",
        "print(sorted(os.listdir('/')))",
        f"print(os.path.exists({str(Path.home())!r} + '/.bashrc'), os.environ['HOME'])",
    ) as run:
        assert printed(run, 0) == "['src']"
        assert printed(run, 1).startswith("engine ok") and printed(run, 2) == "no grader"
        assert "run" not in printed(run, 3) and "home" not in printed(run, 3)
        assert printed(run, 4) == "False /tmp/home"
        assert run.result.sandbox.enabled


def test_bwrap_binds_an_allow_list_not_the_root(tmp_path):
    argv = bwrap_argv(["true"], mounts=Mounts(readonly=[tmp_path / "data"], writable=[tmp_path]), cwd=tmp_path,
                      scratch=tmp_path)
    binds = [(argv[i], argv[i + 1], argv[i + 2]) for i, arg in enumerate(argv) if arg in ("--ro-bind", "--bind")]
    sources = [source for _, source, _ in binds]
    assert "/" not in sources and str(Path.home()) not in sources
    assert os.path.realpath(SRC_DIR) in sources and str(KIT_ROOT) not in sources
    assert all(not Path(s).is_relative_to(KIT_ROOT) or Path(s).is_relative_to(SRC_DIR) for s in sources)
    assert ("--bind", os.path.realpath(tmp_path), os.path.realpath(tmp_path)) in binds
    # The interpreter's own prefix is bound even when it lives in $HOME (pyenv, a virtualenv).
    assert all(any(Path(prefix).is_relative_to(s) for s in sources) for prefix in python_paths())
    assert argv.index("--tmpfs") < min(i for i, arg in enumerate(argv) if arg == "--bind")


def test_unsandboxed_run_says_so(tmp_path):
    info = sandbox_info(False)
    assert not info.enabled and "NOT sandboxed" in info.describe() and "--no-sandbox" in info.describe()
    with run_cells(tmp_path, "import os\nprint(os.environ['HOME'])", sandbox=False) as run:
        assert run.result.sandbox.enabled is False
        assert run.result.cells[0].status == "ok" and printed(run, 0) != str(Path.home())


def test_missing_bubblewrap_is_explained(monkeypatch):
    from grader.confine import sandbox

    sandbox.probe_bwrap.cache_clear()
    monkeypatch.setattr(sandbox.shutil, "which", lambda name: None)
    try:
        info = sandbox.sandbox_info(None)
        assert not info.enabled and "not installed" in info.detail
        assert "apt-get install bubblewrap" in sandbox.SANDBOX_FIX and "--no-sandbox" in sandbox.SANDBOX_FIX
    finally:
        monkeypatch.undo()
        sandbox.probe_bwrap.cache_clear()
