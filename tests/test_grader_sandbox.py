"""The sandbox: with bubblewrap the kernel writes only in its scratch copy and has no network.
Without bubblewrap (or with --no-sandbox) the result says the kernel was not confined."""

from __future__ import annotations

from pathlib import Path

import pytest
from grader_notebooks import write_notebook

from grader.execute import copy_to_scratch, execute_notebook
from grader.kernel import Limits
from grader.sandbox import probe_bwrap, sandbox_info

needs_bwrap = pytest.mark.skipif(probe_bwrap() is not None, reason=f"bubblewrap unusable here: {probe_bwrap()}")

PROBE_CELLS = (
    # Each cell prints OK or the error it hit; none of them may raise.
    (
        "def attempt(action):\n    try:\n        action()\n        print('OK')\n"
        "    except OSError as error:\n        print(type(error).__name__, error.errno)"
    ),
    "attempt(lambda: open('inside.txt', 'w').write('mine'))",
    "attempt(lambda: open({outside!r}, 'w').write('escaped'))",
    "attempt(lambda: open({repo_file!r}, 'w').write('escaped'))",
    "import socket\nattempt(lambda: socket.create_connection(('1.1.1.1', 53), timeout=3))",
    "attempt(lambda: socket.getaddrinfo('pypi.org', 443))",
)


def _run_probe(tmp_path: Path, *, sandbox: bool):
    outside = tmp_path / "outside.txt"
    repo_file = Path(__file__).resolve().parent / f".sandbox-escape-{tmp_path.name}"
    cells = [cell.format(outside=str(outside), repo_file=str(repo_file)) for cell in PROBE_CELLS]
    path = write_notebook(tmp_path / "submission" / "nb.ipynb", *cells)
    workdir = copy_to_scratch(path.parent, tmp_path / "scratch" / "work")
    with execute_notebook(path, workdir=workdir, limits=Limits(cell_timeout=30, timeout=90), sandbox=sandbox) as run:
        lines = [
            "".join(o.get("text", "") for o in run.result.notebook.cells[i].outputs).strip()
            for i in range(1, len(cells))
        ]
        info = run.result.sandbox
    escaped = outside.exists() or repo_file.exists()
    repo_file.unlink(missing_ok=True)
    return lines, info, escaped, workdir


@needs_bwrap
def test_sandboxed_kernel_writes_only_in_its_scratch_copy_and_has_no_network(tmp_path):
    (inside, _, repo, connect, resolve), info, escaped, workdir = _run_probe(tmp_path, sandbox=True)
    assert info.enabled and "bubblewrap" in info.describe()
    assert inside == "OK" and (workdir / "inside.txt").read_text() == "mine"
    assert repo.startswith("OSError 30")  # the machine is a read-only file system
    assert not escaped  # a write under /tmp lands in the kernel's private tmpfs, and vanishes
    assert connect != "OK"  # no route: the kernel has only its own loopback
    assert resolve != "OK"


def test_unsandboxed_run_says_so(tmp_path):
    info = sandbox_info(False)
    assert not info.enabled and "NOT sandboxed" in info.describe()
    path = write_notebook(tmp_path / "nb.ipynb", "x = 1")
    with execute_notebook(path, workdir=tmp_path / "s" / "w", sandbox=False) as run:
        assert run.result.sandbox.enabled is False
        assert run.result.cells[0].status == "ok"


def test_missing_bubblewrap_is_explained(monkeypatch):
    from grader import sandbox

    sandbox.probe_bwrap.cache_clear()
    monkeypatch.setattr(sandbox.shutil, "which", lambda name: None)
    try:
        info = sandbox.sandbox_info(None)
        assert not info.enabled and "apt-get install bubblewrap" in info.detail
    finally:
        monkeypatch.undo()
        sandbox.probe_bwrap.cache_clear()
