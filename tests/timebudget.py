"""A pytest plugin (loaded by tests/conftest.py) that keeps the suite within its time budget
(`tests/budget.py`): it adds up the time of every integration test (setup, call and teardown,
so shared fixtures that boot guests count where they run), prints that against the budget with
the 10 slowest tests at the end of the run, and fails the run when the integration groups
together take longer than the budget.

`--integration-budget-minutes M` sets another budget for a run (before the speed factor); with
`LAB_TEST_TIMES=FILE` the figures are also written to FILE as JSON (`.ci/run` prints them).
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

from tests.budget import INTEGRATION_BUDGET_MINUTES, anchor_seconds, budget_seconds, speed_factor

SLOWEST = 10
OVER = ("FAILED: the integration tests take longer than their budget; make the new or slow "
        "tests above share booted guests or use the tiny image, or change the budget in "
        "tests/budget.py with the measurement that justifies it")  # fmt: skip


class TimeBudget:
    """One run's budget and the time each test took."""

    def __init__(self, minutes: float) -> None:
        self.minutes = minutes
        # Timed first, while nothing of the suite runs yet.
        self.anchor = anchor_seconds()
        self.budget_s = budget_seconds(self.anchor, minutes)
        self.started = time.monotonic()
        self.seconds: dict[str, float] = {}
        self.integration: set[str] = set()

    @property
    def integration_s(self) -> float:
        return sum(self.seconds[t] for t in self.integration)

    @property
    def over(self) -> bool:
        return self.integration_s > self.budget_s

    def slowest(self) -> list[tuple[str, float]]:
        return sorted(self.seconds.items(), key=lambda kv: -kv[1])[:SLOWEST]

    def groups(self) -> list[tuple[str, float]]:
        """Seconds per integration module (a group shares its booted guests), most first."""
        totals: dict[str, float] = {}
        for test in self.integration:
            module = test.split("::")[0]
            totals[module] = totals.get(module, 0.0) + self.seconds[test]
        return sorted(totals.items(), key=lambda kv: -kv[1])

    def summary(self) -> str:
        verdict = "OVER BUDGET" if self.over else "within budget"
        return (f"integration tests: {self.integration_s / 60:.1f} min of a "
                f"{self.budget_s / 60:.1f} min budget ({self.minutes:g} min x speed factor "
                f"{speed_factor(self.anchor):.2f}, CPU anchor {self.anchor:.3f} s): "
                f"{verdict}")  # fmt: skip

    def write(self, path: Path) -> None:
        path.write_text(json.dumps({
            "wallSeconds": round(time.monotonic() - self.started, 1),
            "integrationSeconds": round(self.integration_s, 1),
            "budgetSeconds": round(self.budget_s, 1),
            "speedFactor": round(speed_factor(self.anchor), 2),
            "overBudget": self.over,
            "slowest": [[t, round(s, 1)] for t, s in self.slowest()],
            "groups": [[m, round(s, 1)] for m, s in self.groups()],
        }, indent=2))  # fmt: skip

    # -- hooks ----------------------------------------------------------------------------------
    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        self.seconds[report.nodeid] = self.seconds.get(report.nodeid, 0.0) + report.duration
        if "integration" in report.keywords:
            self.integration.add(report.nodeid)

    def pytest_terminal_summary(self, terminalreporter: pytest.TerminalReporter) -> None:
        if not self.seconds:
            return
        terminalreporter.write_sep("=", "time budget (tests/budget.py)")
        for test, seconds in self.slowest():
            terminalreporter.write_line(f"{seconds:8.1f} s  {test}")
        if self.integration:
            terminalreporter.write_line("integration groups: " + ", ".join(
                f"{m.rsplit('/', 1)[-1]} {s / 60:.1f} min" for m, s in self.groups()))  # fmt: skip
        terminalreporter.write_line(self.summary(), red=self.over, bold=self.over)
        if self.over:
            terminalreporter.write_line(OVER, red=True)
        if path := os.environ.get("LAB_TEST_TIMES"):
            self.write(Path(path))

    @pytest.hookimpl(trylast=True)
    def pytest_sessionfinish(self, session: pytest.Session) -> None:
        if self.over and session.exitstatus == pytest.ExitCode.OK:
            session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--integration-budget-minutes", type=float, default=INTEGRATION_BUDGET_MINUTES,
        help="fail the run when the integration tests take longer than this (times the "
             "machine's speed factor; default: tests/budget.py)",
    )  # fmt: skip


def pytest_configure(config: pytest.Config) -> None:
    # One budget per run (pytester's inner runs that load this plugin get their own).
    config.pluginmanager.register(TimeBudget(config.getoption("integration_budget_minutes")))
