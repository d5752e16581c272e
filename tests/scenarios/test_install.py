"""Confinement wherever the kit is installed: a virtualenv whose Python is not the system's, and a
kit installed into that virtualenv's site-packages (as ``pip install .`` lays it out) rather than
run from a checkout. The kernel must start, import ``src``, and not see the ``grader`` package."""

from __future__ import annotations

import json
import shutil
import subprocess
import sysconfig
from pathlib import Path

import pytest
from grader_notebooks import write_notebook
from virtualenvs import make_virtualenv, site_packages

from grader.confine.sandbox import probe_bwrap
from grader.paths import GRADER_DIR, SRC_DIR

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(probe_bwrap() is not None, reason=f"bubblewrap unusable here: {probe_bwrap()}"),
]


def test_a_kit_installed_in_a_virtualenv_confines_its_kernels(tmp_path):
    venv = tmp_path / "venv"
    python = make_virtualenv(venv)  # the kit's dependencies come from the running environment
    purelib = site_packages(python)
    assert purelib != Path(sysconfig.get_paths()["purelib"])
    for package in (SRC_DIR, GRADER_DIR):  # the installed layout: both packages in site-packages
        shutil.copytree(package, purelib / package.name, ignore=shutil.ignore_patterns("__pycache__"))
    notebook = write_notebook(
        tmp_path / "work" / "probe.ipynb",
        "import src, sys\nprint(src.__file__)\nprint(sys.prefix)",
        "try:\n    import grader.cli\n    print('grader visible')\nexcept ImportError:\n    print('no grader')",
    )
    out = tmp_path / "out"
    done = subprocess.run(
        [str(python), "-m", "grader", "grade", str(notebook), "--require-sandbox", "--out", str(out),
         "--hidden-seed", "1", "--cell-timeout", "60", "--timeout", "120"],
        cwd=tmp_path, capture_output=True, text=True, timeout=600, check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    executed = json.loads((out / "probe" / "probe.ipynb").read_text())
    printed = ["".join("".join(o.get("text", "")) for o in cell["outputs"]) for cell in executed["cells"]]
    assert printed[0].splitlines() == [str(purelib / "src" / "__init__.py"), str(venv)]
    assert printed[1].strip() == "no grader"
    assert "sandboxed (bubblewrap" in (out / "probe" / "report.md").read_text()
