"""grader.options: the limits, the hidden-seed policy per kind of grading, and when confinement is
required. Each policy is decided here once; the commands only print what it says."""

from __future__ import annotations

import pytest

from grader import options
from grader.options import (
    DEMO_SEED_SOURCE,
    HIDDEN_SEED_ENV,
    PUBLIC_SEED,
    Limits,
    OptionError,
    configured_hidden_seed,
    confinement,
    hidden_seed,
)


@pytest.fixture
def no_seed_configured(monkeypatch, tmp_path):
    monkeypatch.delenv(HIDDEN_SEED_ENV, raising=False)
    monkeypatch.setattr(options, "HIDDEN_SEED_FILE", tmp_path / "hidden_seed.txt")
    return tmp_path / "hidden_seed.txt"


def test_hidden_seed_comes_from_flag_then_environment_then_file_and_is_never_made_up(monkeypatch, no_seed_configured):
    assert configured_hidden_seed(None) == (None, "")
    no_seed_configured.write_text("31337  # the instructor's\n")
    assert configured_hidden_seed(None) == (31337, "hidden_seed.txt")
    monkeypatch.setenv(HIDDEN_SEED_ENV, "99")
    assert configured_hidden_seed(None) == (99, f"${HIDDEN_SEED_ENV}")
    assert configured_hidden_seed(5) == (5, "--hidden-seed")


def test_a_class_without_a_configured_seed_is_refused_with_the_three_ways_to_give_one(no_seed_configured):
    with pytest.raises(OptionError, match="--hidden-seed N, set \\$GRADER_HIDDEN_SEED, or write"):
        hidden_seed("class")


def test_each_kind_of_grading_gets_its_seed_when_none_is_configured(no_seed_configured):
    assert hidden_seed("demo") == (PUBLIC_SEED + 1, DEMO_SEED_SOURCE)
    assert hidden_seed("self-check", 5) == (None, "")  # a self-check has no hidden cases at all
    one, source = hidden_seed("submission")
    two, _ = hidden_seed("submission")
    assert one != two and "random" in source  # never a fixed seed a student could learn
    seed, source = hidden_seed("pull request")
    assert isinstance(seed, int) and source == "a random seed for this run"


def test_a_configured_seed_wins_for_every_kind_that_has_hidden_cases(no_seed_configured):
    for grading in ("demo", "class", "submission", "pull request"):
        assert hidden_seed(grading, 7) == (7, "--hidden-seed")


def test_confinement_is_required_to_grade_student_work_and_optional_for_the_demo():
    broken, works = (lambda: "bwrap is not installed"), (lambda: None)
    with pytest.raises(OptionError, match="needs confinement, and bwrap is not installed. FIX"):
        confinement(None, optional=False, probe=broken, fix="FIX")
    with pytest.raises(OptionError):
        confinement(True, optional=True, probe=broken, fix="FIX")  # --require-sandbox
    demo = confinement(None, optional=True, probe=broken, fix="FIX")
    assert demo.sandbox is None and "unconfined" in demo.warning
    assert confinement(None, optional=False, probe=works, fix="FIX") == options.Confinement(True)
    off = confinement(False, optional=False, probe=broken, fix="FIX")
    assert off.sandbox is False and "--no-sandbox" in off.warning


def test_limits_refuse_what_no_process_could_run_under():
    with pytest.raises(ValueError, match="Limits.timeout must be a positive number"):
        Limits(timeout=0)
    with pytest.raises(ValueError, match="Limits.processes"):
        Limits(processes=True)
    assert Limits(timeout=10).cpu_seconds > 10  # the rlimit is a last resort above the budget
