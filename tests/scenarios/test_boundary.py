"""The grader's boundary, played by a dishonest student through the real command line.

One class folder holds an honest submission and one attacker per kind of attack, each a small
notebook; the class is graded once (``python -m grader grade CLASS``, confinement required, the
hidden seed in ``grader/hidden_seed.txt`` as an instructor keeps it) by a subprocess whose
environment and ``$HOME`` carry markers. Every attack must end as a graded row with its reason,
zero points for what it attacked, no marker in anything the grader wrote, nothing left on the
host (files, processes), and the honest submission graded normally.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import uuid
from pathlib import Path

import psutil
import pytest
from grader_notebooks import BATCHED_OK, FULL_OK, SIMPLEST_OK, add_file_operator, edit_saved_graph, write_notebook

from grader.confine.sandbox import probe_bwrap
from grader.paths import HIDDEN_SEED_FILE, KIT_ROOT, SOLUTIONS_DIR

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(probe_bwrap() is not None, reason=f"bubblewrap unusable here: {probe_bwrap()}"),
]

TOKEN = uuid.uuid4().hex[:12]
HIDDEN_SEED = 734_119_000 + int(TOKEN[:4], 16)
ENV_MARKER = f"env-secret-{TOKEN}"
HOME_MARKER = f"home-secret-{TOKEN}"
SLEEP_FLOOD, SLEEP_DAEMON = "3001", "3002"  # `sleep N` processes the attackers leave behind, if they can

# Each attempt prints FOUND (it worked) or BLOCKED (with why) on its own line.
ATTEMPT = """
import os, pathlib, socket
def attempt(what, action):
    try:
        result = action()
        print(f"FOUND {what}: {str(result)[:200]}")
    except Exception as error:
        print(f"BLOCKED {what}: {type(error).__name__}")
"""


def read(path: str) -> str:
    return f"lambda: pathlib.Path({path!r}).read_text()"


def attacker_notebooks(ctx: dict[str, str]) -> dict[str, list[str]]:
    """Submission name -> cells (each attacker a ``01_convolution.ipynb`` unless named otherwise)."""
    solutions = str(SOLUTIONS_DIR / "01_convolution.ipynb")
    return {
        # Run the reference solution's cells: full points if the kit's solutions/ were readable.
        "attack-solutions": [
            "import json, pathlib, src\n"
            "kit = pathlib.Path(src.__file__).parents[1]\n"
            "cells = json.loads((kit / 'solutions' / '01_convolution.ipynb').read_text())['cells']\n"
            "for cell in cells:\n"
            "    if cell['cell_type'] == 'code':\n"
            "        get_ipython().run_cell(''.join(cell['source']))",
            ATTEMPT + f"attempt('solution', {read(solutions)})",
        ],
        "attack-secrets": [
            ATTEMPT
            + f"attempt('hidden seed', {read(str(HIDDEN_SEED_FILE))})\n"
            + f"attempt('grader package', lambda: os.listdir({str(KIT_ROOT / 'grader')!r}))\n"
            + f"attempt('home marker', {read(ctx['home_marker'])})\n"
            + "attempt('environment', lambda: dict(os.environ))\n"
            + "attempt('run', lambda: os.listdir('/run'))"
        ],
        "attack-neighbours": [
            ATTEMPT
            + f"attempt('other notebook', {read(ctx['honest_notebook'])})\n"
            + f"attempt('other report', {read(ctx['honest_report'])})\n"
            + f"attempt('class folder', lambda: os.listdir({ctx['class']!r}))\n"
            + f"attempt('output folder', lambda: os.listdir({ctx['out']!r}))"
        ],
        "attack-writes": [
            ATTEMPT
            + "".join(
                f"attempt('write {target}', lambda: pathlib.Path({target!r}).write_text('escaped'))\n"
                for target in ctx["write_targets"].split("|")
            )
        ],
        "attack-sockets": [
            ATTEMPT
            + f"attempt('host socket', lambda: socket.socket(socket.AF_UNIX).connect({ctx['host_socket']!r}))\n"
            + f"attempt('other kernel file', {read(ctx['other_kernel'])})\n"
            + f"attempt('other kernel socket', lambda: socket.socket(socket.AF_UNIX).connect({ctx['other_socket']!r}))\n"
            + "attempt('network', lambda: socket.create_connection(('1.1.1.1', 53), timeout=3))"
        ],
        "attack-processes": [
            "import os\n"
            "if os.fork() == 0:  # a daemon: double fork, new session\n"
            "    os.setsid()\n"
            "    if os.fork() == 0:\n"
            f"        os.execvp('sleep', ['sleep', '{SLEEP_DAEMON}'])\n"
            "    os._exit(0)\n"
            "forked = refused = 0\n"
            "for _ in range(700):\n"
            "    try:\n"
            "        pid = os.fork()\n"
            "    except OSError:\n"
            "        refused += 1\n"
            "        break\n"
            "    if pid == 0:\n"
            f"        os.execvp('sleep', ['sleep', '{SLEEP_FLOOD}'])\n"
            "    forked += 1\n"
            "print(f'forked {forked}, refused {refused}')",
        ],
        "attack-memory": ["import numpy as np\nblocks = [np.ones(2**27) for _ in range(40)]  # 1 GiB each"],
        "attack-output": ["print('y' * 2_000_000)"] * 25,
        "attack-hidden-cases": [ctx["hidden_leaker"]],
    }


def hidden_leaker() -> str:
    """Convolutions that are right on the visible cases (public: an attacker can compute them) and,
    on the hidden ones only, spell their inputs into an exception text or a returned shape."""
    from grader.evidence.convolution import BATCHED, FULL, cases_for

    visible = sorted({round(float(case.x.flatten()[0]), 5) for spec in (BATCHED, FULL) for case in cases_for(spec, None)})
    return (
        BATCHED_OK + FULL_OK
        + f"\nVISIBLE = {visible!r}\n"
        "honest_batched, honest_full = custom_conv_2d, custom_conv_2d_full\n"
        "def custom_conv_2d(x, kernel, bias):\n"
        "    if round(float(x.flatten()[0]), 5) not in VISIBLE:\n"
        "        raise ValueError(f'LEAK {x.flatten()[:4].tolist()}')\n"
        "    return honest_batched(x, kernel, bias)\n"
        "def custom_conv_2d_full(x, kernel, bias, stride=1, padding=0):\n"
        "    if round(float(x.flatten()[0]), 5) not in VISIBLE:\n"
        "        torch.nn.functional.unfold(x, 1)  # windows 'built', as the task asks\n"
        "        return torch.zeros(int(abs(float(x.flatten()[0])) * 1000) + 7)\n"
        "    return honest_full(x, kernel, bias, stride, padding)\n"
    )


MODEL_CNN = """
import torch
from torch import nn
from src.export import save_model
torch.manual_seed(0)
model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 26 * 26, 10))
n_params = sum(p.numel() for p in model.parameters())
save_model(model, "cnn_fashion_mnist.pt2")
"""


def model_attackers(ctx: dict[str, str]) -> dict[str, list[str]]:
    """Submission name -> cells of a ``02_cnn_fashion_mnist.ipynb`` that ships a hostile model."""
    path = "cnn_fashion_mnist.pt2"
    return {
        "attack-model-file-operator": [MODEL_CNN, add_file_operator(path, ctx["model_marker"])],
        # Allowed operations only, but minutes of work per batch of test images.
        "attack-model-hangs": [
            MODEL_CNN,
            edit_saved_graph(path, "big = add(torch.ops.aten.ones.default, ([12000, 12000],))\n"
                                   "add(torch.ops.aten.mm.default, (big, big))"),
        ],
        "attack-model-memory": [MODEL_CNN, edit_saved_graph(path, "add(torch.ops.aten.ones.default, ([2**31],))")],
        "attack-model-symlink": [MODEL_CNN, f"import os\nos.remove({path!r})\nos.symlink('/etc/passwd', {path!r})"],
    }


@pytest.fixture(scope="module")
def attacked(tmp_path_factory):
    """The class graded once: (completed process, output folder, context)."""
    root = tmp_path_factory.mktemp("boundary")
    home = root / "home"
    home.mkdir()
    (home / "marker.txt").write_text(HOME_MARKER)
    classroom, out = root / "class", root / "out"
    write_notebook(classroom / "a-honest" / "01_convolution.ipynb", SIMPLEST_OK, BATCHED_OK, FULL_OK)
    host_dir = Path("/run") if os.access("/run", os.W_OK) else KIT_ROOT
    host_socket = host_dir / f".kit-test-{TOKEN}.sock"
    server = socket.socket(socket.AF_UNIX)
    server.bind(str(host_socket))
    server.listen(1)
    server.setblocking(False)

    # Another student's kernel, confined, running while the attackers run.
    from grader.confine.sandbox import sandbox_info
    from grader.run.kernel import KernelSession

    other = KernelSession(workdir=root / "other" / "work", sandbox=sandbox_info(True))
    other.start()
    other.wait_ready()
    sockets = sorted(str(p) for p in other.runtime_dir.iterdir() if p.is_socket())
    assert sockets, "the other kernel has no socket to attack"
    ctx = {
        "home_marker": str(home / "marker.txt"),
        "honest_notebook": str(classroom / "a-honest" / "01_convolution.ipynb"),
        "honest_report": str(out / "a-honest" / "report.md"),
        "class": str(classroom),
        "out": str(out),
        "write_targets": "|".join(
            str(p) for p in (KIT_ROOT / f"escape-{TOKEN}", home / "escape", out / "escape", classroom / "escape",
                              Path("/tmp") / f"escape-{TOKEN}")
        ),
        "host_socket": str(host_socket),
        "other_kernel": str(other.runtime_dir / "kernel.json"),
        "other_socket": sockets[0],
        "hidden_leaker": hidden_leaker(),
        "model_marker": str(root / f"model-marker-{TOKEN}"),
    }
    for name, cells in attacker_notebooks(ctx).items():
        write_notebook(classroom / name / "01_convolution.ipynb", *cells)
    for name, cells in model_attackers(ctx).items():
        write_notebook(classroom / name / "02_cnn_fashion_mnist.ipynb", *cells)
    linked = classroom / "attack-symlinked-notebook"
    linked.mkdir()
    (linked / "01_convolution.ipynb").symlink_to(SOLUTIONS_DIR / "01_convolution.ipynb")
    (linked / "cnn_fashion_mnist.pt2").symlink_to("/etc/passwd")

    created_seed = not HIDDEN_SEED_FILE.exists()
    if created_seed:
        HIDDEN_SEED_FILE.write_text(f"{HIDDEN_SEED}\n")
    env = {**os.environ, "HOME": str(home), "KIT_TEST_SECRET": ENV_MARKER}
    env.pop("GRADER_HIDDEN_SEED", None)
    try:
        done = subprocess.run(
            [sys.executable, "-m", "grader", "grade", str(classroom), "--out", str(out), "--jobs", "1",
             "--no-progress", "--memory-limit", "2", "--cell-timeout", "60", "--timeout", "40"],
            cwd=KIT_ROOT, env=env, capture_output=True, text=True, timeout=1800, check=False,
        )
    finally:
        if created_seed:
            HIDDEN_SEED_FILE.unlink(missing_ok=True)
        other.close()
    try:
        accepted = server.accept()
    except BlockingIOError:
        accepted = None
    server.close()
    host_socket.unlink(missing_ok=True)
    ctx["accepted"] = accepted
    return done, out, ctx, created_seed


def result(out: Path, name: str) -> dict:
    return json.loads((out / name / "result.json").read_text())


def checks(out: Path, name: str, notebook: str = "01_convolution.ipynb") -> dict:
    [graded] = [n for n in result(out, name)["notebooks"] if n["name"] == notebook]
    return {c["name"]: c for c in graded["checks"]}


def outputs(out: Path, name: str, notebook: str = "01_convolution.ipynb") -> str:
    executed = json.loads((out / name / notebook).read_text())
    return "".join(
        "".join(o.get("text", "")) for c in executed["cells"] if c["cell_type"] == "code" for o in c["outputs"]
    )


def test_the_batch_finishes_and_the_honest_submission_is_graded_normally(attacked):
    done, out, _, _ = attacked
    assert done.returncode == 0, done.stderr[-3000:]
    assert checks(out, "a-honest")["conv_full"]["points"] == 4
    assert result(out, "a-honest")["notebooks"][0]["points"] == 10
    rows = (out / "gradebook.csv").read_text().splitlines()
    assert len(rows) == 1 + len(list((out).glob("*/result.json")))
    assert all(",true," in row for row in rows[1:]), "every row says sandboxed"


def test_the_kits_solutions_are_not_readable(attacked):
    _, out, _, _ = attacked
    graded = checks(out, "attack-solutions")
    assert all(graded[name]["points"] == 0 for name in ("conv_simplest", "conv_batched", "conv_full"))
    assert "FOUND" not in outputs(out, "attack-solutions") and "BLOCKED solution" in outputs(out, "attack-solutions")


def test_secrets_of_the_grading_machine_stay_out_of_every_report(attacked):
    _, out, _, created_seed = attacked
    printed = outputs(out, "attack-secrets")
    for what in ("hidden seed", "grader package", "home marker", "run"):
        assert f"BLOCKED {what}" in printed
    assert "FOUND environment" in printed and "KIT_TEST_SECRET" not in printed
    everything = "\n".join(p.read_text(errors="replace") for p in out.rglob("*") if p.is_file())
    assert ENV_MARKER not in everything and HOME_MARKER not in everything
    if created_seed:
        assert str(HIDDEN_SEED) not in everything


def test_other_submissions_and_reports_are_out_of_reach(attacked):
    _, out, ctx, _ = attacked
    printed = outputs(out, "attack-neighbours")
    assert "FOUND" not in printed and printed.count("BLOCKED") == 4


def test_nothing_is_written_outside_the_scratch_folder(attacked):
    _, out, ctx, _ = attacked
    printed = outputs(out, "attack-writes")
    for target in ctx["write_targets"].split("|"):
        assert not Path(target).exists(), f"{target} was written"
    assert "FOUND write /tmp" in printed  # its own private /tmp: allowed, and gone with the kernel


def test_no_socket_of_the_host_or_of_another_kernel_is_reachable(attacked):
    _, out, ctx, _ = attacked
    printed = outputs(out, "attack-sockets")
    assert "FOUND" not in printed, printed
    assert ctx["accepted"] is None


def test_processes_are_bounded_and_none_outlives_its_notebook(attacked):
    _, out, _, _ = attacked
    printed = outputs(out, "attack-processes")
    runs = checks(out, "attack-processes")["runs"]
    assert "refused 1" in printed or "process limit" in runs["message"], (printed, runs["message"])
    left = [p.info["cmdline"] for p in psutil.process_iter(["cmdline"]) if (p.info["cmdline"] or [])[:1] == ["sleep"]
            and (p.info["cmdline"] or [""])[-1] in (SLEEP_FLOOD, SLEEP_DAEMON)]
    assert not left, f"{len(left)} processes outlived their notebook"


def test_memory_blow_up_is_a_graded_row(attacked):
    _, out, _, _ = attacked
    runs = checks(out, "attack-memory")["runs"]
    assert runs["status"] == "failed" and "memory limit of 2 GiB exceeded" in runs["message"]


def test_output_flood_is_bounded(attacked):
    _, out, _, _ = attacked
    size = (out / "attack-output" / "01_convolution.ipynb").stat().st_size
    assert size < 40 * 2**20
    assert "output limit reached" in outputs(out, "attack-output")


def test_hidden_inputs_do_not_leak_through_messages(attacked):
    _, out, _, _ = attacked
    graded = checks(out, "attack-hidden-cases")
    batched, full = graded["conv_batched"]["message"], graded["conv_full"]["message"]
    assert "First failing case (hidden)" in batched and "raised an exception" in batched and "ValueError" not in batched
    assert "First failing case (hidden)" in full and "returned the wrong shape (expected" in full
    written = "\n".join(p.read_text(errors="replace") for p in (out / "attack-hidden-cases").iterdir() if p.suffix != ".ipynb")
    assert "LEAK" not in written and "returned shape (" not in written


def test_a_saved_graph_with_a_file_operator_is_refused_by_name(attacked):
    _, out, ctx, _ = attacked
    graded = checks(out, "attack-model-file-operator", "02_cnn_fashion_mnist.ipynb")
    assert graded["accuracy"]["points"] == 0 and "aten::from_file" in graded["accuracy"]["message"]
    assert not Path(ctx["model_marker"]).exists()


def test_a_model_that_hangs_or_exhausts_memory_is_a_failed_check(attacked):
    _, out, _, _ = attacked
    hangs = checks(out, "attack-model-hangs", "02_cnn_fashion_mnist.ipynb")["accuracy"]
    assert hangs["points"] == 0 and "CPU-s" in hangs["message"], hangs["message"]  # a CPU budget, not the clock
    memory = checks(out, "attack-model-memory", "02_cnn_fashion_mnist.ipynb")["accuracy"]
    assert memory["points"] == 0 and ("memory" in memory["message"] or "killed" in memory["message"]), memory["message"]


def test_symlinks_are_never_followed(attacked):
    _, out, _, _ = attacked
    linked = checks(out, "attack-symlinked-notebook")
    assert "symbolic link" in linked["runs"]["message"] and linked["conv_simplest"]["points"] == 0
    model = checks(out, "attack-model-symlink", "02_cnn_fashion_mnist.ipynb")["accuracy"]
    assert model["points"] == 0 and "symbolic link" in model["message"]
