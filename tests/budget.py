"""The suite's time budget, in one place: CI stops a run at 90 minutes, and `make test` must stay
within 35 on a 2-core machine of this kind. The integration groups (guests booting under TCG)
are what grows, so they are what is budgeted: `INTEGRATION_BUDGET_MINUTES`. Setup, lint and the
unit tests add about 4 minutes; a run near the budget is a run to look at.

Machines of this kind differ by up to 50% in TCG speed. So that a slow machine does not fail a
suite that fits on the machine the budget was set on, the budget grows with a speed factor: a
fixed single-threaded CPU loop timed at the start of the run (`anchor_seconds`), against its
time on that machine (`ANCHOR_REFERENCE_S`), clamped to 1.0-1.5. A faster machine never gets a
smaller budget, and no machine gets more than 1.5 times it.

A run over budget fails (`tests/timebudget.py`, a pytest plugin), naming the slowest tests, so
a slow new test shows up in the submission that adds it rather than as a CI timeout later.
"""

from __future__ import annotations

import time

#: What the integration groups together may take on the machine the budget was set on.
INTEGRATION_BUDGET_MINUTES = 35.0
#: `anchor_seconds()` on that machine (the best of several runs, nothing else running).
ANCHOR_REFERENCE_S = 0.10
#: How much slower than that machine a machine of this kind may be.
MAX_FACTOR = 1.5
_ANCHOR_LOOPS = 2_000_000


def anchor_seconds(runs: int = 5) -> float:
    """The best time of a fixed integer loop: single-threaded CPU speed, what TCG depends on."""
    best = float("inf")
    for _ in range(runs):
        started = time.perf_counter()
        total = 0
        for i in range(_ANCHOR_LOOPS):
            total += i & 7
        best = min(best, time.perf_counter() - started)
    return best


def speed_factor(anchor: float) -> float:
    """How much more time this machine gets than the budget's: 1.0 to `MAX_FACTOR`."""
    return min(MAX_FACTOR, max(1.0, anchor / ANCHOR_REFERENCE_S))


def budget_seconds(anchor: float, minutes: float = INTEGRATION_BUDGET_MINUTES) -> float:
    return minutes * 60 * speed_factor(anchor)
