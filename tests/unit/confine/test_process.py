"""What kernels and workers share (`grader.confine.process`): the output tail, how a process's
end is described, and a command wrapped in its sandbox and its box. Real processes throughout."""

from __future__ import annotations

import signal
import subprocess
import sys

import pytest

from grader.confine.process import OutputTail, confine, describe_exit, exit_signal, signal_name
from grader.confine.sandbox import Mounts, probe_bwrap
from grader.options import Limits


def test_the_tail_keeps_only_the_end_of_a_long_output_and_never_blocks_the_process():
    """300 KB through a pipe whose buffer holds 64 KB: without the tail draining it, the child
    would block on a full pipe and never exit."""
    code = "import sys\nfor i in range(3000):\n    sys.stdout.write(f'{i:05d}' + 'x' * 95 + '\\n')\nprint('the end')"
    process = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    tail = OutputTail(process.stdout, size=1000)
    tail.start()
    assert process.wait(timeout=30) == 0
    tail.join(timeout=5)
    text = tail.text()
    assert len(text.encode()) == 1000 and text.endswith("the end\n")
    assert "02999" in text and "00000" not in text


def test_the_tail_reads_undecodable_bytes_as_replacement_characters():
    process = subprocess.Popen(
        [sys.executable, "-c", "import sys; sys.stdout.buffer.write(b'ok \\xff\\xfe')"], stdout=subprocess.PIPE
    )
    tail = OutputTail(process.stdout)
    tail.start()
    process.wait(timeout=30)
    tail.join(timeout=5)
    assert tail.text() == "ok \ufffd\ufffd"


@pytest.mark.parametrize(
    ("code", "expected"),
    [
        (0, "exited with code 0"),
        (3, "exited with code 3"),
        (128, "exited with code 128"),
        (-9, "killed by SIGKILL"),
        (137, "killed by SIGKILL"),  # 128 + 9: a shell's (or bubblewrap's) way of passing it on
        (-11, "killed by SIGSEGV"),
        (128 + 99, "killed by signal 99"),
    ],
)
def test_how_a_process_ended_is_said_in_words(code, expected):
    assert describe_exit(code) == expected


def test_a_real_process_killed_by_a_signal_is_described_by_that_signal():
    process = subprocess.Popen([sys.executable, "-c", "import os, signal; os.kill(os.getpid(), signal.SIGTERM)"])
    code = process.wait(timeout=30)
    assert exit_signal(code) == signal.SIGTERM and describe_exit(code) == "killed by SIGTERM"
    shell = subprocess.run(["sh", "-c", f"{sys.executable} -c 'import os; os.kill(os.getpid(), 9)'"], check=False)
    assert describe_exit(shell.returncode) == "killed by SIGKILL" and signal_name(9) == "SIGKILL"


@pytest.mark.parametrize("sandboxed", [False, pytest.param(True, marks=pytest.mark.skipif(
    probe_bwrap() is not None, reason=f"bubblewrap unusable here: {probe_bwrap()}"))])
def test_a_confined_command_runs_with_its_own_environment_inside_its_box(tmp_path, monkeypatch, sandboxed):
    monkeypatch.setenv("GRADER_SECRET", "not for the student")
    code = "import os; print(os.environ.get('ONLY'), 'GRADER_SECRET' in os.environ, os.getcwd())"
    env = {"PATH": "/usr/bin:/bin", "ONLY": "this"}
    command, box = confine(
        [sys.executable, "-I", "-c", code], env, name="test", limits=Limits(memory_gib=1, processes=32),
        sandboxed=sandboxed, mounts=Mounts(writable=[tmp_path]), cwd=tmp_path, scratch=tmp_path,
        watch_dirs=(tmp_path,),
    )
    try:
        assert ("bwrap" in command[command.index("--") + 1]) is sandboxed
        process = subprocess.Popen(command, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        box.started(process.pid)
        output, _ = process.communicate(timeout=60)
        assert process.returncode == 0, output
        assert output.decode().strip() == f"this False {tmp_path}"
        assert box.cpu_seconds() > 0
    finally:
        box.close()
