"""The verification worker runner (`grader.confine.worker`) on tiny real workers: what a worker
gives back, what happens when it crashes, overruns or answers garbage, and a `Runner` answering
requests one at a time. Confined where bubblewrap works."""

from __future__ import annotations

import textwrap

import pytest

from grader.confine.sandbox import sandbox_info
from grader.confine.worker import Runner, run_worker
from grader.options import Limits

LIMITS = Limits(memory_gib=1, processes=32, disk_gib=0.1)


def worker(tmp_path, body: str):
    """A worker script: ``request`` is its request (a dict), ``folder`` its private folder."""
    script = tmp_path / "tiny_worker.py"
    script.write_text(
        "import json, os, sys, pathlib\nrequest = json.loads(pathlib.Path(sys.argv[1]).read_text())\n"
        "folder = pathlib.Path(sys.argv[1]).parent\n" + textwrap.dedent(body)
    )
    return script


def test_a_worker_answers_from_its_request_and_inputs_and_its_output_is_only_a_log(tmp_path):
    data = tmp_path / "data.txt"
    data.write_text("from the grader")
    script = worker(tmp_path, """
        text = open(request["inputs"]["data.txt"]).read()
        print("a line for the log")
        (folder / "answers.json").write_text(json.dumps({"x": request["x"] * 2, "text": text}))
        import torch
        torch.save({"t": torch.arange(3)}, folder / "tensors.pt")
    """)
    result = run_worker(script, {"x": 21}, name="tiny", limits=LIMITS, sandbox=sandbox_info(None), timeout=60,
                        inputs={"data.txt": data})
    assert result.status == "ok" and result.reason == "", result.log
    assert result.answers == {"x": 42, "text": "from the grader"}
    assert result.tensors["t"].tolist() == [0, 1, 2]
    assert "a line for the log" in result.log and result.cpu_seconds > 0 and result.elapsed > 0


def test_a_worker_that_dies_is_described_by_its_signal_and_keeps_what_it_wrote(tmp_path):
    script = worker(tmp_path, """
        (folder / "answers.json").write_text(json.dumps({"before": True}))
        import signal
        os.kill(os.getpid(), signal.SIGKILL)
    """)
    result = run_worker(script, {}, name="tiny", limits=LIMITS, sandbox=sandbox_info(None), timeout=60)
    assert result.status == "died" and result.reason == "killed by SIGKILL"
    assert result.answers == {"before": True}


def test_a_worker_over_its_cpu_budget_is_killed_and_garbage_answers_are_dropped(tmp_path):
    script = worker(tmp_path, """
        (folder / "answers.json").write_text("[1, 2, 3]")
        (folder / "tensors.pt").write_bytes(b"not a torch file")
        while True:
            pass
    """)
    result = run_worker(script, {}, name="tiny", limits=LIMITS, sandbox=sandbox_info(None), timeout=1)
    assert result.status == "timeout" and result.reason == "used more than its 1 CPU-s"
    assert result.answers == {} and result.tensors == {}
    assert 1 <= result.cpu_seconds < 10


def test_a_runner_answers_one_request_at_a_time_then_says_how_it_ended(tmp_path):
    script = worker(tmp_path, """
        replies = os.fdopen(request["reply_fd"], "w")
        for line in sys.stdin:
            print("not an answer")  # printed output never counts as an answer
            if line.strip() == "exit":
                sys.exit(3)
            replies.write(json.dumps({"echo": line.strip()}) + "\\n")
            replies.flush()
    """)
    runner = Runner(script, {}, name="tiny", limits=LIMITS, sandbox=sandbox_info(None))
    try:
        for word in ("one", "two"):
            runner.send(word)
            reply = runner.receive(cpu_budget=30)
            assert reply.status == "ok" and reply.message == {"echo": word}
        runner.send("exit")
        reply = runner.receive(cpu_budget=30)
        assert reply.status == "died" and reply.reason == "exited with code 3"
        assert runner.closed and runner.receive(cpu_budget=1).reason == "the runner was closed"
        assert "not an answer" in runner.log
    finally:
        runner.close()


@pytest.mark.parametrize(("body", "wall", "status", "reason"), [
    ("while True:\n    pass", 60, "timeout", "used more than 1 CPU-s"),
    ("import time\ntime.sleep(600)", 2, "timeout", "no answer within 2 s"),
])
def test_a_runner_that_does_not_answer_is_stopped_and_closed(tmp_path, body, wall, status, reason):
    runner = Runner(worker(tmp_path, body), {}, name="tiny", limits=LIMITS, sandbox=sandbox_info(None))
    try:
        reply = runner.receive(cpu_budget=1, wall_budget=wall)
        assert (reply.status, reply.reason) == (status, reason) and runner.closed
    finally:
        runner.close()
