"""The student's set-up, as a new student does it: a fresh virtualenv, `pip install -e ".[lab]"`
in the student repository, then JupyterLab and a kernel whose progress bars are widgets.

The virtualenv sees the packages of the Python running the tests (`virtualenvs.make_virtualenv`)
so that torch, 5 GB, is not installed again; the ``lab`` extra's packages are installed into it
from the package index.
"""

from __future__ import annotations

import json
import subprocess

import pytest
from virtualenvs import make_virtualenv

from grader.release.student_repo import write_student_repo

pytestmark = pytest.mark.slow


def test_the_student_install_gives_jupyterlab_and_widget_progress_bars(tmp_path):
    repo = tmp_path / "student"
    write_student_repo(repo)
    venv = tmp_path / "venv"
    python = str(make_virtualenv(venv, with_pip=True))
    report = tmp_path / "install.json"
    done = subprocess.run(
        [python, "-m", "pip", "install", "--quiet", "--report", str(report), "-e", f"{repo}[lab]"],
        capture_output=True, text=True, timeout=900, check=False,
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    requested = json.loads(report.read_text())["install"]
    [kit] = [item for item in requested if item["metadata"]["name"] == "cnn-course-kit"]
    assert {"jupyterlab", "ipywidgets"} <= {r.split(">")[0].split(";")[0].strip() for r in kit["metadata"]["requires_dist"]}
    reinstalled = {"torch", "torchvision"} & {item["metadata"]["name"] for item in requested}
    assert not reinstalled, f"pip installed {sorted(reinstalled)} again: the virtualenv does not see the running environment"
    version = subprocess.run([python, "-m", "jupyterlab", "--version"], capture_output=True, text=True, check=False)
    assert version.returncode == 0 and version.stdout.strip().startswith("4."), version.stderr

    from jupyter_client import KernelManager
    from jupyter_client.kernelspec import KernelSpec

    class VenvKernel(KernelManager):  # the kernel a student's Jupyter starts: this virtualenv's Python
        @property
        def kernel_spec(self) -> KernelSpec:
            return KernelSpec(argv=[python, "-m", "ipykernel_launcher", "-f", "{connection_file}"], language="python")

    manager = VenvKernel()
    manager.start_kernel(cwd=str(repo / "assignments"))
    client = manager.client()
    client.start_channels()
    try:
        client.wait_for_ready(timeout=120)
        code = (
            "import ipywidgets, src.engine\nfrom tqdm.auto import tqdm\nimport tqdm.notebook as notebook\n"
            "print(sys.prefix, 'widgets' if issubclass(tqdm, notebook.tqdm) and notebook.IProgress else 'text')"
        )
        printed = []

        def hook(message):
            content = message["content"]
            printed.append(content.get("text", "") + content.get("evalue", ""))

        client.execute_interactive("import sys\n" + code, timeout=120, output_hook=hook)
        assert "".join(printed).split() == [str(venv), "widgets"], printed
    finally:
        client.stop_channels()
        manager.shutdown_kernel(now=True)
