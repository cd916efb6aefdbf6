"""The suite's time budget (tests/budget.py, tests/timebudget.py): integration tests over it
fail a run that passed, with the slowest tests named; a slower machine gets more time."""

from __future__ import annotations

import pytest

from tests.budget import ANCHOR_REFERENCE_S, MAX_FACTOR, budget_seconds, speed_factor

SUITE = """
import time
import pytest

@pytest.mark.integration
def test_boots_a_guest():
    time.sleep(0.3)

def test_unit():
    pass
"""


def run(pytester: pytest.Pytester, minutes: float) -> pytest.RunResult:
    pytester.makeini("[pytest]\nmarkers =\n    integration: boots guests\n")
    pytester.makepyfile(test_suite=SUITE)
    return pytester.runpytest("-p", "tests.timebudget",
                              f"--integration-budget-minutes={minutes}")  # fmt: skip


def test_a_run_whose_integration_tests_exceed_the_budget_fails(pytester: pytest.Pytester) -> None:
    result = run(pytester, minutes=0.001)  # 0.06 s, at most 0.09 s on a slow machine
    result.assert_outcomes(passed=2)
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.stdout.fnmatch_lines([
        "*test_suite.py::test_boots_a_guest*",
        "integration tests: 0.0 min of a 0.0 min budget*OVER BUDGET",
        "FAILED: the integration tests take longer than their budget*",
    ])  # fmt: skip


def test_a_run_within_the_budget_passes_and_names_its_slowest_tests(
    pytester: pytest.Pytester,
) -> None:
    result = run(pytester, minutes=1)
    assert result.ret == pytest.ExitCode.OK
    result.stdout.fnmatch_lines(["*time budget*", "*s  test_suite.py::test_boots_a_guest",
                                 "integration groups: test_suite.py 0.0 min",
                                 "*within budget"])  # fmt: skip


@pytest.mark.parametrize(("anchor", "factor"), [
    (ANCHOR_REFERENCE_S / 2, 1.0),      # a faster machine gets no less than the budget
    (ANCHOR_REFERENCE_S * 1.2, 1.2),
    (ANCHOR_REFERENCE_S * 3, MAX_FACTOR),
])  # fmt: skip
def test_a_slower_machine_gets_more_time_up_to_the_limit(anchor: float, factor: float) -> None:
    assert speed_factor(anchor) == pytest.approx(factor)
    assert budget_seconds(anchor, minutes=10) == pytest.approx(600 * factor)
