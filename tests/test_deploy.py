"""The Slurm job array and the Kubernetes Indexed Job that grade a class beyond one machine: their
syntax, and a dry run of their shard arithmetic (a stand-in ``python`` records the command each
task would run). Neither is submitted here: there is no Slurm or Kubernetes cluster on this machine."""

from __future__ import annotations

import os
import re
import stat
import subprocess
from pathlib import Path

import pytest
import yaml

from grader.batch import BatchItem, parse_shard, shard
from grader.paths import KIT_ROOT

SLURM = KIT_ROOT / "deploy" / "slurm" / "grade-class.sbatch"
KUBERNETES = KIT_ROOT / "deploy" / "kubernetes" / "grade-class.yaml"


@pytest.fixture
def fake_python(tmp_path) -> tuple[Path, Path]:
    """A ``python`` that appends its arguments to a file instead of grading."""
    bin_dir, calls = tmp_path / "bin", tmp_path / "calls.txt"
    bin_dir.mkdir()
    script = bin_dir / "python"
    script.write_text(f'#!/bin/sh\necho "$@" >> {calls}\n')
    script.chmod(script.stat().st_mode | stat.S_IEXEC)
    return bin_dir, calls


def shards_of(calls: Path) -> list[str]:
    return [re.search(r"--shard (\S+)", line).group(1) for line in calls.read_text().splitlines()]


def covers_the_class(shards: list[str]) -> None:
    """The tasks' shards split a class of 7 into disjoint parts that cover it."""
    items = [BatchItem(Path(n), n, Path(n), "") for n in "abcdefg"]
    parts = [[i.name for i in shard(items, *parse_shard(text))] for text in shards]
    assert sorted(sum(parts, [])) == list("abcdefg")


def test_the_slurm_script_is_valid_bash_with_sbatch_directives():
    assert subprocess.run(["bash", "-n", str(SLURM)], check=False).returncode == 0
    directives = [line for line in SLURM.read_text().splitlines() if line.startswith("#SBATCH")]
    assert directives and all(re.fullmatch(r"#SBATCH --[a-z-]+=\S+", line) for line in directives)
    assert "#SBATCH --array=1-8" in directives


@pytest.mark.parametrize("first", [1, 0])
def test_slurm_array_tasks_grade_one_shard_each(tmp_path, fake_python, first):
    bin_dir, calls = fake_python
    count = 3
    for task in range(first, first + count):
        env = {
            **os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "GRADER_HIDDEN_SEED": "5",
            "SLURM_ARRAY_TASK_ID": str(task), "SLURM_ARRAY_TASK_MIN": str(first),
            "SLURM_ARRAY_TASK_COUNT": str(count), "SLURM_CPUS_PER_TASK": "2",
        }
        done = subprocess.run(["bash", str(SLURM), "submissions"], cwd=tmp_path, env=env, capture_output=True, text=True)
        assert done.returncode == 0, done.stderr
    assert shards_of(calls) == ["1/3", "2/3", "3/3"]
    covers_the_class(shards_of(calls))
    assert all("--require-sandbox" in line and "--jobs 2" in line for line in calls.read_text().splitlines())


def test_slurm_refuses_to_grade_without_the_hidden_seed(tmp_path, fake_python):
    bin_dir, calls = fake_python
    env = {k: v for k, v in os.environ.items() if k != "GRADER_HIDDEN_SEED"}
    env.update(PATH=f"{bin_dir}:{os.environ['PATH']}", SLURM_ARRAY_TASK_ID="1", SLURM_ARRAY_TASK_COUNT="2")
    done = subprocess.run(["bash", str(SLURM), "submissions"], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert done.returncode != 0 and "GRADER_HIDDEN_SEED" in done.stderr and not calls.exists()


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
