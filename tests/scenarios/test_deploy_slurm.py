"""The Slurm job array graded on a real Slurm: a one-node cluster (munged, slurmctld, slurmd)
started on this machine by ``deploy/slurm/local-cluster.sh`` for these tests, then stopped.

A class of four 01 notebooks (three reference solutions, one whose simplest convolution returns
zeros) is submitted from a copy of the kit in a temporary folder, the way an instructor does it
(``deploy/slurm/submit.sh``: an array of 2 tasks, then the merge with ``--dependency=afterok``).
The merged gradebook must equal one machine's ``grade`` of the same class, row for row; one task
run again alone must grade nothing twice. Where this machine cannot run Slurm (no packages, the
daemons do not come up) the tests are skipped with the reason.
"""

from __future__ import annotations

import csv
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import nbformat
import pytest

from grader.confine.sandbox import probe_bwrap
from grader.paths import KIT_ROOT, SOLUTIONS_DIR

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(probe_bwrap() is not None, reason=f"bubblewrap unusable here: {probe_bwrap()}"),
]

CLUSTER_SCRIPT = KIT_ROOT / "deploy" / "slurm" / "local-cluster.sh"
HIDDEN_SEED = "424242"
SHARDS = 2
# Both tasks at once on a 2-core machine; memory is not a consumable on the local cluster.
TASK_OPTIONS = ["--cpus-per-task=1", "--mem=1G"]
JOB_TIMEOUT_S = 600  # each 01 notebook grades in 10-20 s here; the array and the merge take about a minute
COMPARED = ("points", "max_points", "percent", "total", "total_max", "status", "sandboxed", "01_convolution")


@pytest.fixture(scope="module")
def cluster(tmp_path_factory) -> dict[str, str]:
    """A running one-node Slurm cluster: the environment that reaches it (``SLURM_CONF``)."""
    needed = ["munged", "mungekey", "slurmctld", "slurmd", "sbatch", "squeue", "scontrol"]
    search = os.environ["PATH"] + os.pathsep + "/usr/sbin"
    missing = [name for name in needed if shutil.which(name, path=search) is None]
    if missing:
        pytest.skip(f"Slurm cannot run here: not installed: {', '.join(missing)} (apt-get install slurm-wlm munge)")
    folder = tmp_path_factory.mktemp("slurm")  # short: munged's socket path must fit in 108 bytes
    started = subprocess.run(
        ["bash", str(CLUSTER_SCRIPT), "start", str(folder)], capture_output=True, text=True, timeout=120
    )
    if started.returncode in (3, 4):  # packages missing, a daemon did not come up: this machine, not the kit
        pytest.skip(f"Slurm cannot run here: {started.stderr.strip()[-2000:]}")
    assert started.returncode == 0, started.stdout + started.stderr
    env = {
        **os.environ,
        "SLURM_CONF": str(folder / "slurm.conf"),
        "GRADER_HIDDEN_SEED": HIDDEN_SEED,
        # The jobs' `python` is this one (as an activated virtualenv would be); Slurm passes PATH on.
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{search}",
    }
    env.pop("PYTHONPATH", None)
    try:
        yield env
    finally:
        subprocess.run(["bash", str(CLUSTER_SCRIPT), "stop", str(folder)], timeout=120, check=False)
        assert not folder.exists(), "stop left the cluster's folder behind"


@pytest.fixture
def kit(tmp_path) -> Path:
    """A copy of this kit's files (tracked and new, not ignored ones) elsewhere: a fresh clone."""
    target = tmp_path / "clone"
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=KIT_ROOT, capture_output=True, text=True, check=True,
    ).stdout
    for name in filter(None, listed.split("\0")):
        source = KIT_ROOT / name
        if source.is_file():  # a deleted file is still listed until committed
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target / name)
    return target


def make_class(root: Path) -> Path:
    """alice, bob and dave hand in the reference notebook; carol's simplest convolution returns zeros."""
    for name in ("alice", "bob", "carol", "dave"):
        (root / name).mkdir(parents=True)
        shutil.copy(SOLUTIONS_DIR / "01_convolution.ipynb", root / name / "01_convolution.ipynb")
    notebook = nbformat.read(SOLUTIONS_DIR / "01_convolution.ipynb", as_version=4)
    [cell] = [c for c in notebook.cells if c.source.startswith("def custom_conv_2d_simplest_case")]
    cell.source = (
        "def custom_conv_2d_simplest_case(x, kernel, bias):\n"
        "    return np.zeros((x.shape[0] - kernel.shape[0] + 1, x.shape[1] - kernel.shape[1] + 1))\n"
    )
    nbformat.write(notebook, root / "carol" / "01_convolution.ipynb")
    return root


def logs(kit: Path, env: dict[str, str]) -> str:
    """The jobs' logs and the end of the daemons' logs, to read a failure."""
    parts = [f"--- {path}\n{path.read_text(errors='replace')}" for path in sorted((kit / "out" / "logs").glob("*"))]
    for path in sorted(Path(env["SLURM_CONF"]).parent.glob("log/*.log")):
        parts.append(f"--- {path} (last lines)\n" + "\n".join(path.read_text(errors="replace").splitlines()[-30:]))
    return "\n".join(parts)


def sbatch(env: dict[str, str], kit: Path, *args: str) -> str:
    done = subprocess.run(["sbatch", "--parsable", *args], cwd=kit, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip().split(";")[0]


def wait_for(env: dict[str, str], kit: Path, *jobs: str) -> dict[str, tuple[str, str]]:
    """Wait until ``jobs`` (and each array's tasks) have ended; their state and exit code by id."""
    deadline = time.monotonic() + JOB_TIMEOUT_S
    while True:
        queued = subprocess.run(
            ["squeue", "--noheader", "--format=%i %T %r", f"--jobs={','.join(jobs)}"],
            env=env, capture_output=True, text=True, timeout=60,
        )
        assert queued.returncode == 0, queued.stderr
        if not queued.stdout.strip():
            break
        if time.monotonic() > deadline:
            subprocess.run(["scancel", *jobs], env=env, check=False)
            pytest.fail(f"still queued after {JOB_TIMEOUT_S} s:\n{queued.stdout}\n{logs(kit, env)}")
        time.sleep(1)
    ended = {}
    for job in jobs:
        shown = subprocess.run(
            ["scontrol", "--oneliner", "show", "job", job], env=env, capture_output=True, text=True, timeout=60
        )
        assert shown.returncode == 0, shown.stderr
        for line in shown.stdout.splitlines():
            fields = dict(re.findall(r"(\w+)=(\S*)", line))
            task = fields.get("ArrayTaskId", "N/A")
            ended[job if task == "N/A" else f"{job}_{task}"] = (fields["JobState"], fields["ExitCode"])
    return ended


def gradebook(folder: Path) -> dict[str, dict[str, str]]:
    with (folder / "gradebook.csv").open(newline="", encoding="utf-8") as handle:
        return {row["submission"]: {key: row[key] for key in COMPARED} for row in csv.DictReader(handle)}


def checks(folder: Path) -> dict[str, list[tuple[str, str, float]]]:
    """Every check's verdict, by submission: what must not depend on where it was graded."""
    verdicts = {}
    for path in sorted(folder.glob("*/result.json")):
        result = json.loads(path.read_text())
        verdicts[path.parent.name] = [
            (check["name"], check["status"], check["points"])
            for notebook in result["notebooks"]
            for check in notebook["checks"]
        ]
    return verdicts


def results(kit: Path) -> dict[str, tuple[int, str]]:
    """Each shard's result files: (modification time, graded_at) by shard/submission."""
    shards = kit / "out" / "shards"
    return {
        str(path.parent.relative_to(shards)): (path.stat().st_mtime_ns, json.loads(path.read_text())["graded_at"])
        for path in shards.glob("*/*/result.json")
    }


def test_the_array_and_its_merge_grade_the_class_as_one_machine_does(cluster, kit, tmp_path):
    env = cluster
    class_dir = make_class(tmp_path / "class")
    start = time.monotonic()
    submitted = subprocess.run(  # from elsewhere: the script finds the kit by its own path
        ["bash", str(kit / "deploy" / "slurm" / "submit.sh"), str(class_dir), str(SHARDS), *TASK_OPTIONS],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60,
    )
    assert submitted.returncode == 0, submitted.stdout + submitted.stderr
    array, merge = submitted.stdout.split()
    # The merge waits for the whole array, however fast the scheduler is.
    queued = subprocess.run(["squeue", "--noheader", f"--jobs={merge}", "--format=%T %r"], env=env,
                            capture_output=True, text=True, timeout=60).stdout.split()
    assert queued == ["PENDING", "Dependency"], queued
    ended = wait_for(env, kit, array, merge)
    elapsed = time.monotonic() - start
    failure = logs(kit, env)
    assert ended == {
        f"{array}_1": ("COMPLETED", "0:0"), f"{array}_2": ("COMPLETED", "0:0"), merge: ("COMPLETED", "0:0")
    }, failure

    # Every task graded its own shard, with the class's hidden seed from the environment.
    shards = kit / "out" / "shards"
    assert sorted(p.name for p in shards.iterdir()) == ["1", "2"], failure
    assert sorted(gradebook(shards / "1")) == ["alice", "carol"] and sorted(gradebook(shards / "2")) == ["bob", "dave"]
    for task in (1, 2):
        log = (kit / "out" / "logs" / f"grade-{array}_{task}.log").read_text()
        assert f"shard {task}/{SHARDS}: 2 of 4 submissions" in log and "seed from $GRADER_HIDDEN_SEED" in log, log

    single = tmp_path / "single"
    start_single = time.monotonic()
    graded = subprocess.run(
        [sys.executable, "-m", "grader", "grade", str(class_dir), "--hidden-seed", HIDDEN_SEED, "--out", str(single),
         "--jobs", str(SHARDS), "--require-sandbox", "--no-progress"],
        cwd=kit, env=env, capture_output=True, text=True, timeout=JOB_TIMEOUT_S,
    )
    elapsed_single = time.monotonic() - start_single
    assert graded.returncode == 0, graded.stdout + graded.stderr
    merged = kit / "out" / "class"
    assert gradebook(merged) == gradebook(single), failure
    assert checks(merged) == checks(single)
    book = gradebook(merged)
    assert book["alice"]["01_convolution"] == book["bob"]["01_convolution"] == book["dave"]["01_convolution"] == "10"
    assert float(book["carol"]["01_convolution"]) < 10 and {row["sandboxed"] for row in book.values()} == {"true"}
    print(f"\nSlurm: array of {SHARDS} tasks and its merge, 4 submissions: {elapsed:.0f} s from submission to the "
          f"merged gradebook; one machine, --jobs {SHARDS}: {elapsed_single:.0f} s")

    # Task 1 again, alone: the same shard, nothing graded twice, and the merge after it.
    before = results(kit)
    assert len(before) == 4
    start_again = time.monotonic()
    again = sbatch(env, kit, "--array=1", *TASK_OPTIONS, "deploy/slurm/grade-class.sbatch", str(class_dir), str(SHARDS))
    merge_again = sbatch(env, kit, f"--dependency=afterok:{again}", "deploy/slurm/merge-class.sbatch", str(SHARDS))
    ended = wait_for(env, kit, again, merge_again)
    elapsed_again = time.monotonic() - start_again
    assert ended == {f"{again}_1": ("COMPLETED", "0:0"), merge_again: ("COMPLETED", "0:0")}, logs(kit, env)
    log = (kit / "out" / "logs" / f"grade-{again}_1.log").read_text()
    assert f"shard 1/{SHARDS}: 2 of 4 submissions" in log and "2 of 2 already graded" in log, log
    assert sorted(re.findall(r"^(\w+): .*graded before", log, re.MULTILINE)) == ["alice", "carol"], log
    assert results(kit) == before
    assert sorted(p.name for p in shards.iterdir()) == ["1", "2"]
    assert gradebook(merged) == gradebook(single)
    print(f"Slurm: task 1 again, alone, and the merge: {elapsed_again:.0f} s, nothing graded")


def test_a_failed_task_cancels_the_merge_instead_of_leaving_it_waiting(cluster, kit):
    env = cluster
    (kit / "out" / "logs").mkdir(parents=True)
    array = sbatch(env, kit, "--array=1-2", *TASK_OPTIONS, "deploy/slurm/grade-class.sbatch", "no-such-class", "2")
    merge = sbatch(env, kit, f"--dependency=afterok:{array}", "deploy/slurm/merge-class.sbatch", "2")
    ended = wait_for(env, kit, array, merge)
    assert ended[f"{array}_1"][0] == ended[f"{array}_2"][0] == "FAILED", logs(kit, env)
    assert ended[merge][0] == "CANCELLED", logs(kit, env)
    assert "no such file or folder: no-such-class" in (kit / "out" / "logs" / f"grade-{array}_1.log").read_text()
    assert not (kit / "out" / "class").exists()
