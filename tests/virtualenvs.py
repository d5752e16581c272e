"""Virtualenvs for the tests that install the kit: each sees the packages of the Python that runs
the tests, whatever that Python is, so that torch (5 GB) is never installed again.

``python -m venv --system-site-packages`` is not enough: when the tests themselves run in a
virtualenv, it gives the *base* interpreter's site-packages, which need not hold the kit's
dependencies. Instead the new virtualenv gets a ``.pth`` file naming the running environment's
site-packages; they come after its own, so what is installed into the new virtualenv wins.
"""

from __future__ import annotations

import site
import subprocess
import sys
from pathlib import Path


def site_packages(python: Path) -> Path:
    """The folder where ``pip install`` puts pure-Python packages for ``python``."""
    code = "import sysconfig; print(sysconfig.get_paths()['purelib'])"
    return Path(subprocess.run([str(python), "-c", code], capture_output=True, text=True, check=True).stdout.strip())


def make_virtualenv(path: Path, *, with_pip: bool = False) -> Path:
    """Create a virtualenv at ``path`` that also imports the running environment's packages.

    Args:
        path: the folder to create.
        with_pip: install pip into it (a few seconds); only tests that ``pip install`` need it.

    Returns:
        The virtualenv's ``python``.
    """
    subprocess.run([sys.executable, "-m", "venv", *([] if with_pip else ["--without-pip"]), str(path)], check=True)
    python = path / "bin" / "python"
    running = [*site.getsitepackages(), *([site.getusersitepackages()] if site.ENABLE_USER_SITE else [])]
    pth = site_packages(python) / "running-environment.pth"
    pth.write_text("".join(f"{folder}\n" for folder in running if Path(folder).is_dir()))
    return python
