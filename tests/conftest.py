"""Suite-wide test settings."""

from __future__ import annotations

import os

from hypothesis import settings

# The suite's time budget (tests/budget.py): its hooks, registered as this conftest's own.
from tests.timebudget import pytest_addoption, pytest_configure  # noqa: F401

# CI explores the same examples on every run (reproducible); local runs keep exploring new ones.
settings.register_profile("ci", derandomize=True)
if os.environ.get("CI"):
    settings.load_profile("ci")
