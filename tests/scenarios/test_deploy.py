"""The Slurm job array and the Kubernetes Indexed Job that grade a class beyond one machine: their
syntax, and a dry run of their shard arithmetic (a stand-in ``python`` records the command each
task would run; a stand-in ``sbatch`` records what ``submit.sh`` submits). The Slurm files also
run on a real, local Slurm in ``tests/scenarios/test_deploy_slurm.py``; Kubernetes cannot run here.
"""

from __future__ import annotations

import os
import re
import shutil
import stat
import subprocess
from pathlib import Path

import pytest
import yaml

from grader.classroom.batch import BatchItem, parse_shard, shard
from grader.paths import KIT_ROOT

SLURM = KIT_ROOT / "deploy" / "slurm" / "grade-class.sbatch"
SLURM_MERGE = KIT_ROOT / "deploy" / "slurm" / "merge-class.sbatch"
SLURM_SUBMIT = KIT_ROOT / "deploy" / "slurm" / "submit.sh"
KUBERNETES = KIT_ROOT / "deploy" / "kubernetes" / "grade-class.yaml"


def stand_in(bin_dir: Path, name: str, calls: Path, answer: str = "") -> None:
    """A command ``name`` that appends its arguments to ``calls``; with an ``answer`` (sbatch's
    job id) it prints that and records its working folder first."""
    bin_dir.mkdir(exist_ok=True)
    script = bin_dir / name
    record = f'echo "$PWD" "$@" >> {calls}\necho {answer}\n' if answer else f'echo "$@" >> {calls}\n'
    script.write_text("#!/bin/sh\n" + record)
    script.chmod(script.stat().st_mode | stat.S_IEXEC)


@pytest.fixture
def fake_python(tmp_path) -> tuple[Path, Path]:
    """A ``python`` that appends its arguments to a file instead of grading, run in a folder that
    looks like the kit's (the Slurm jobs check that they run in one)."""
    bin_dir, calls = tmp_path / "bin", tmp_path / "calls.txt"
    stand_in(bin_dir, "python", calls)
    (tmp_path / "grader").mkdir()
    (tmp_path / "grader" / "__main__.py").touch()
    return bin_dir, calls


def task_env(bin_dir: Path, task: int, count: int, **more: str) -> dict[str, str]:
    """What Slurm gives one task of an array of ``count`` (and the class's hidden seed)."""
    return {
        **os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "GRADER_HIDDEN_SEED": "5",
        "SLURM_ARRAY_TASK_ID": str(task), "SLURM_ARRAY_TASK_COUNT": str(count), "SLURM_CPUS_PER_TASK": "2", **more,
    }


def shards_of(calls: Path) -> list[str]:
    return [re.search(r"--shard (\S+)", line).group(1) for line in calls.read_text().splitlines()]


def covers_the_class(shards: list[str]) -> None:
    """The tasks' shards split a class of 7 into disjoint parts that cover it."""
    items = [BatchItem(Path(n), n, Path(n), "") for n in "abcdefg"]
    parts = [[i.name for i in shard(items, *parse_shard(text))] for text in shards]
    assert sorted(sum(parts, [])) == list("abcdefg")


@pytest.mark.parametrize("script", [SLURM, SLURM_MERGE, SLURM_SUBMIT], ids=lambda p: p.name)
def test_the_slurm_scripts_are_valid_bash_with_sbatch_directives(script):
    assert subprocess.run(["bash", "-n", str(script)], check=False).returncode == 0
    directives = [line for line in script.read_text().splitlines() if line.startswith("#SBATCH")]
    assert all(re.fullmatch(r"#SBATCH --[a-z-]+=\S+", line) for line in directives)
    if script == SLURM:
        assert "#SBATCH --array=1-8" in directives
    if script == SLURM_MERGE:  # a failed task cancels the merge rather than leaving it pending forever
        assert "#SBATCH --kill-on-invalid-dep=yes" in directives


def test_slurm_array_tasks_grade_one_shard_each(tmp_path, fake_python):
    bin_dir, calls = fake_python
    for task in (1, 2, 3):
        done = subprocess.run(["bash", str(SLURM), "submissions", "3"], cwd=tmp_path, env=task_env(bin_dir, task, 3),
                              capture_output=True, text=True)
        assert done.returncode == 0, done.stderr
    assert shards_of(calls) == ["1/3", "2/3", "3/3"]
    covers_the_class(shards_of(calls))
    lines = calls.read_text().splitlines()
    assert all("--require-sandbox" in line and "--jobs 2" in line for line in lines)
    assert [re.search(r"--out (\S+)", line).group(1) for line in lines] == ["out/shards/1", "out/shards/2", "out/shards/3"]


def test_a_slurm_task_run_again_alone_grades_its_own_shard(tmp_path, fake_python):
    """``sbatch --array=2 ... submissions 3``: an array of one task, which is still shard 2 of 3."""
    bin_dir, calls = fake_python
    env = task_env(bin_dir, 2, 1, SLURM_ARRAY_TASK_MIN="2", SLURM_ARRAY_TASK_MAX="2")
    done = subprocess.run(["bash", str(SLURM), "submissions", "3"], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert shards_of(calls) == ["2/3"] and "--out out/shards/2" in calls.read_text()


@pytest.mark.parametrize(("task", "args", "message"), [
    (0, ["submissions", "3"], "the task ids are the shard numbers, 1 to N"),
    (4, ["submissions", "3"], "the task ids are the shard numbers, 1 to N"),
    (1, ["submissions"], "usage: sbatch --array=1-N"),
    (1, ["submissions", "three"], "the task ids are the shard numbers, 1 to N"),
])
def test_slurm_tasks_outside_the_shards_are_refused(tmp_path, fake_python, task, args, message):
    bin_dir, calls = fake_python
    done = subprocess.run(["bash", str(SLURM), *args], cwd=tmp_path, env=task_env(bin_dir, task, 3),
                          capture_output=True, text=True)
    assert done.returncode != 0 and message in done.stderr and not calls.exists()


def test_slurm_refuses_to_grade_without_the_hidden_seed(tmp_path, fake_python):
    bin_dir, calls = fake_python
    env = {k: v for k, v in task_env(bin_dir, 1, 2).items() if k != "GRADER_HIDDEN_SEED"}
    done = subprocess.run(["bash", str(SLURM), "submissions", "2"], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert done.returncode != 0 and "GRADER_HIDDEN_SEED" in done.stderr and not calls.exists()


def test_slurm_jobs_refuse_to_run_outside_the_kits_folder(tmp_path, fake_python):
    bin_dir, calls = fake_python
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    for script, args in ((SLURM, ["submissions", "2"]), (SLURM_MERGE, ["2"])):
        done = subprocess.run(["bash", str(script), *args], cwd=elsewhere, env=task_env(bin_dir, 1, 2),
                              capture_output=True, text=True)
        assert done.returncode == 2 and "is not the kit's folder" in done.stderr, done.stderr
    assert not calls.exists()


def test_the_slurm_merge_joins_exactly_the_n_shards(tmp_path, fake_python):
    bin_dir, calls = fake_python
    done = subprocess.run(["bash", str(SLURM_MERGE), "3"], cwd=tmp_path, env=task_env(bin_dir, 1, 1),
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert calls.read_text().split() == ["-m", "grader", "merge", "out/shards/1", "out/shards/2", "out/shards/3",
                                         "--out", "out/class"]


def test_slurm_submit_runs_the_merge_after_the_array(tmp_path):
    """``submit.sh``: the array of N tasks, then the merge with --dependency=afterok on it, both
    from the kit's folder (the script's ../..), whatever folder it is called from."""
    kit = tmp_path / "kit"
    (kit / "deploy" / "slurm").mkdir(parents=True)
    shutil.copy(SLURM_SUBMIT, kit / "deploy" / "slurm")
    bin_dir, calls = tmp_path / "bin", tmp_path / "sbatch.txt"
    stand_in(bin_dir, "sbatch", calls, answer="4242")
    (tmp_path / "class").mkdir()
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "GRADER_HIDDEN_SEED": "5"}
    submit = ["bash", str(kit / "deploy" / "slurm" / "submit.sh"), "class", "3"]
    done = subprocess.run(submit + ["--partition=short"], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["4242", "4242"]
    array, merge = calls.read_text().splitlines()
    assert array.split() == [str(kit), "--parsable", "--partition=short", "--array=1-3",
                             "deploy/slurm/grade-class.sbatch", str(tmp_path / "class"), "3"]
    assert merge.split() == [str(kit), "--parsable", "--partition=short", "--dependency=afterok:4242",
                             "deploy/slurm/merge-class.sbatch", "3"]
    assert (kit / "out" / "logs").is_dir()  # Slurm opens the jobs' logs there before they start
    without_seed = {k: v for k, v in env.items() if k != "GRADER_HIDDEN_SEED"}
    refused = subprocess.run(submit, cwd=tmp_path, env=without_seed, capture_output=True, text=True)
    assert refused.returncode != 0 and "GRADER_HIDDEN_SEED" in refused.stderr
    assert len(calls.read_text().splitlines()) == 2  # nothing more submitted


def test_the_local_slurm_cluster_never_takes_a_folder_it_did_not_make(tmp_path):
    """``stop`` removes the cluster's folder: ``start`` refuses one that already holds something."""
    script = KIT_ROOT / "deploy" / "slurm" / "local-cluster.sh"
    (tmp_path / "notes.txt").write_text("mine")
    done = subprocess.run(["bash", str(script), "start", str(tmp_path)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and "is not empty" in done.stderr
    stopped = subprocess.run(["bash", str(script), "stop", str(tmp_path)], capture_output=True, text=True, timeout=60)
    assert stopped.returncode == 0 and (tmp_path / "notes.txt").read_text() == "mine"


def test_the_kubernetes_job_is_an_indexed_job_with_one_shard_per_pod(tmp_path, fake_python):
    job = yaml.safe_load(KUBERNETES.read_text())
    assert job["apiVersion"] == "batch/v1" and job["kind"] == "Job"
    spec = job["spec"]
    assert spec["completionMode"] == "Indexed"
    [container] = spec["template"]["spec"]["containers"]
    env = {item["name"]: item for item in container["env"]}
    shards = int(env["SHARDS"]["value"])
    assert spec["completions"] == spec["parallelism"] == shards
    assert env["GRADER_HIDDEN_SEED"]["valueFrom"]["secretKeyRef"]["name"] == "grader-hidden-seed"
    assert env["OMP_NUM_THREADS"]["value"] == "1"  # the kernels' threads capped, as in a Slurm task
    mounts = {m["name"]: m for m in container["volumeMounts"]}
    assert mounts["submissions"]["readOnly"] is True
    assert container["command"] == ["bash", "-c"]
    bin_dir, calls = fake_python
    for index in range(shards):  # what each pod runs, with the index Kubernetes gives it
        run_env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "JOB_COMPLETION_INDEX": str(index),
                   "SHARDS": str(shards)}
        done = subprocess.run(["bash", "-c", container["args"][0]], env=run_env, capture_output=True, text=True)
        assert done.returncode == 0, done.stderr
    assert shards_of(calls) == [f"{i}/{shards}" for i in range(1, shards + 1)]
    covers_the_class(shards_of(calls))
    outs = [re.search(r"--out (\S+)", line).group(1) for line in calls.read_text().splitlines()]
    assert len(set(outs)) == shards  # one report folder per shard, for merge
