"""Suite-wide test settings."""

from __future__ import annotations

import os

from hypothesis import settings

# CI explores the same examples on every run (reproducible); local runs keep exploring new ones.
settings.register_profile("ci", derandomize=True)
if os.environ.get("CI"):
    settings.load_profile("ci")
