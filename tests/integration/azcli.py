"""The real Azure CLI (`azure-cli` from PyPI) for the integration tests: installed once into a
virtualenv of its own, outside the clone and the project's venv, keyed by version, and run
with a config directory per signed-in principal, as separate users' machines would be.

The first run on a machine installs it (about 3 minutes, 220 packages); later runs reuse it.
"""

from __future__ import annotations

import fcntl
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

#: The azure-cli the tests drive. Raising it installs the new version beside the old one.
AZURE_CLI_VERSION = "2.91.0"
INSTALL_TIMEOUT_S = 1200


def cache_root() -> Path:
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "serial-console-lab"


def ensure_azure_cli(version: str = AZURE_CLI_VERSION) -> Path:
    """The `az` of a virtualenv holding azure-cli==`version`, installed if missing. A lock
    keeps two runs from installing at once; a stamp written last marks a finished install."""
    venv = cache_root() / f"azure-cli-{version}"
    az, stamp = venv / "bin" / "az", venv / ".installed"
    if stamp.exists() and az.exists():
        return az
    venv.parent.mkdir(parents=True, exist_ok=True)
    with open(venv.parent / f"azure-cli-{version}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if stamp.exists() and az.exists():
            return az
        base_python = getattr(sys, "_base_executable", None) or "python3"
        started = time.monotonic()
        for cmd in ([base_python, "-m", "venv", "--clear", str(venv)],
                    [str(venv / "bin" / "pip"), "install", "-q", "--disable-pip-version-check",
                     f"azure-cli=={version}"]):  # fmt: skip
            done = subprocess.run(cmd, capture_output=True, text=True, timeout=INSTALL_TIMEOUT_S,
                                  stdin=subprocess.DEVNULL)  # fmt: skip
            if done.returncode != 0:
                raise RuntimeError(f"installing azure-cli {version} into {venv} failed: "
                                   f"{' '.join(cmd)} exited {done.returncode}:\n"
                                   f"{done.stderr[-3000:]}")  # fmt: skip
        stamp.write_text(f"installed in {time.monotonic() - started:.0f} s\n")
    return az


@dataclass
class AzResult:
    returncode: int
    stdout: str
    stderr: str
    seconds: float


class Az:
    """One user's `az`: its own config directory (clouds, sign-in, token cache)."""

    def __init__(self, az: Path, config_dir: Path, ca_bundle: Path) -> None:
        self.az, self.config_dir = az, config_dir
        config_dir.mkdir(parents=True, exist_ok=True)
        self.env = {
            **os.environ,
            "AZURE_CONFIG_DIR": str(config_dir),
            # The lab's CA: the only other setting a user needs (both HTTP and the websocket).
            "REQUESTS_CA_BUNDLE": str(ca_bundle),
            "WEBSOCKET_CLIENT_CA_BUNDLE": str(ca_bundle),
            # No telemetry or survey prompts: nothing but the lab may be contacted.
            "AZURE_CORE_COLLECT_TELEMETRY": "false",
            "AZURE_CORE_SURVEY_MESSAGE": "false",
            "AZURE_CORE_NO_COLOR": "true",
        }

    def __call__(self, *args: str, check: bool = True, timeout: float = 300) -> AzResult:
        started = time.monotonic()
        done = subprocess.run([str(self.az), *args], capture_output=True, text=True,
                              env=self.env, timeout=timeout, stdin=subprocess.DEVNULL)  # fmt: skip
        result = AzResult(done.returncode, done.stdout, done.stderr, time.monotonic() - started)
        if check and done.returncode != 0:
            raise AssertionError(f"az {' '.join(args)} exited {done.returncode}:\n"
                                 f"{done.stderr[-3000:]}")  # fmt: skip
        return result
