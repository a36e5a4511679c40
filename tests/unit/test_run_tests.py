"""make test's verdict over its two pytest runs (scripts/run_tests.py)."""

import pytest
from run_tests import NOTHING_COLLECTED, verdict

pytestmark = pytest.mark.unit


def test_the_whole_suite_passes_only_when_both_runs_pass() -> None:
    assert verdict(0, 0, narrowed=False) == 0
    assert verdict(1, 0, narrowed=False) == 1
    assert verdict(0, 1, narrowed=False) == 1


def test_a_run_that_collects_nothing_fails_the_whole_suite() -> None:
    # Distributed tests that vanished must not pass CI silently.
    assert verdict(0, NOTHING_COLLECTED, narrowed=False) == 1
    assert verdict(NOTHING_COLLECTED, 0, narrowed=False) == 1


def test_a_narrowed_selection_may_leave_one_side_empty_but_not_both() -> None:
    assert verdict(0, NOTHING_COLLECTED, narrowed=True) == 0
    assert verdict(NOTHING_COLLECTED, 0, narrowed=True) == 0
    assert verdict(1, NOTHING_COLLECTED, narrowed=True) == 1
    assert verdict(NOTHING_COLLECTED, NOTHING_COLLECTED, narrowed=True) == 1
