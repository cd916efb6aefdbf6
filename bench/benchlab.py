"""What every bench needs from the lab: a daemon of its own on a temporary data dir.

A bench must not touch the user's lab (its VMs, its data dir, the default API port), so each
run starts `lab serve` with LAB_DATA_DIR on a fresh temporary dir, sharing only the image
cache (building the tiny image again would dominate a short run). `close()` undoes all of it,
also after a failure, so a failed run leaves no daemon, guest or data dir behind.

The benches are run as scripts (`python bench/api.py`), which puts bench/ on sys.path: they
import this module as `benchlab`, not as part of a package.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from lab.client.http import LabClient
from lab.settings import Settings

DAEMON_START_TIMEOUT = 120
#: How long the daemon may take to stop after SIGTERM before it is killed.
DAEMON_STOP_TIMEOUT = 30
LOG_TAIL_CHARS = 2000


def note(bench: str, message: str) -> None:
    """A progress line on stderr, so stdout carries only the figures."""
    print(f"[bench/{bench}] {message}", file=sys.stderr, flush=True)


def exit_on_sigterm() -> None:
    """Turn SIGTERM into SystemExit, so the benches' `finally` cleanup runs for it too."""
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))


def bench_env(data_dir: Path, image_cache: Path, api_port: int) -> dict[str, str]:
    """The environment of the bench's own daemon and `lab` commands."""
    return {
        **os.environ,
        "LAB_DATA_DIR": str(data_dir),
        "LAB_API_PORT": str(api_port),
        "LAB_IMAGE_CACHE": str(image_cache),
    }


def stop_process(proc: subprocess.Popen[bytes], timeout: float) -> None:
    """SIGTERM (what `lab shutdown` sends the daemon), then SIGKILL after `timeout` s."""
    if proc.poll() is None:
        proc.terminate()
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


class BenchLab:
    """The bench's daemon on a temp data dir with the bench's lab file; `close()` undoes all.

    Brings the lab up and down with the `lab` CLI; a bench that does it otherwise overrides
    `up()` and `down()`.
    """

    def __init__(self, name: str, lab_yaml: str, *, keep: bool = False, api_port: int = 0) -> None:
        """`api_port` 0: no HTTPS API, since most benches do not measure it and the default
        port may be taken by the user's own lab."""
        self.name = name
        self.keep = keep
        self.data_dir = Path(tempfile.mkdtemp(prefix=f"lab-bench-{name}-"))
        self.settings = Settings(data_dir=self.data_dir, image_cache=Settings().image_cache_dir)
        self.env = bench_env(self.data_dir, self.settings.image_cache_dir, api_port)
        # The venv's `lab`, whatever PATH says: the bench measures this checkout.
        self.lab_bin = str(Path(sys.executable).with_name("lab"))
        self.lab_yaml = lab_yaml
        self.lab_file = self.data_dir / f"bench-{name}.yaml"
        self.lab_file.write_text(lab_yaml)
        self.log_path = self.data_dir / "bench-daemon.log"
        self.client = LabClient(self.settings)
        self.daemon: subprocess.Popen[bytes] | None = None
        self.lab_up = False

    def note(self, message: str) -> None:
        note(self.name, message)

    def lab(self, *args: str, check: bool = True) -> str:
        """Run `lab ARGS` against the bench's daemon; its stdout."""
        done = subprocess.run([self.lab_bin, *args], env=self.env, capture_output=True,
                              text=True, timeout=300)  # fmt: skip
        if check and done.returncode != 0:
            raise RuntimeError(f"lab {' '.join(args)}: exit {done.returncode}: {done.stderr}")
        return done.stdout

    # -- start ----------------------------------------------------------------------------------
    def start(self) -> dict[str, Any]:
        """The daemon, then the lab; the daemon's /v1/status."""
        self.start_daemon()
        # Before `up`: a lab that came up only in part is taken down as well.
        self.lab_up = True
        self.up()
        status: dict[str, Any] = self.client.json("GET", "/v1/status")
        return status

    def start_daemon(self) -> None:
        """`lab serve` in the background, its output to a log file (see `daemon_log_tail`)."""
        with self.log_path.open("wb") as log:
            self.daemon = subprocess.Popen([sys.executable, "-m", "lab.cli", "serve"],
                                           env=self.env, stdout=log,
                                           stderr=subprocess.STDOUT)  # fmt: skip
        self.wait_daemon(self.daemon)

    def wait_daemon(self, daemon: subprocess.Popen[bytes]) -> None:
        deadline = time.monotonic() + DAEMON_START_TIMEOUT
        while not self.client.alive():
            if daemon.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the lab daemon did not come up:\n{self.daemon_log_tail()}")
            time.sleep(0.1)

    def up(self) -> None:
        self.lab("up", str(self.lab_file), "--json")

    # -- failure --------------------------------------------------------------------------------
    def daemon_log_tail(self) -> str:
        if not self.log_path.exists():
            return "(no log)"
        return self.log_path.read_text(errors="replace")[-LOG_TAIL_CHARS:]

    def note_daemon_failure(self) -> None:
        """What the daemon said, for a bench that failed: often the cause is there."""
        if self.daemon is not None:
            self.note(f"daemon exit status: {self.daemon.poll()}; log (tail):\n"
                      f"{self.daemon_log_tail()}")  # fmt: skip

    # -- cleanup --------------------------------------------------------------------------------
    def close(self) -> None:
        """The lab down, the daemon stopped, the data dir removed (unless kept)."""
        if self.lab_up:
            self.down()
            self.lab_up = False
        if self.daemon is not None:
            stop_process(self.daemon, DAEMON_STOP_TIMEOUT)
            self.daemon = None
        self.client.close()
        if self.keep:
            self.note(f"data dir kept: {self.data_dir}")
        else:
            shutil.rmtree(self.data_dir, ignore_errors=True)

    def down(self) -> None:
        # Cleanup goes on after a failed `lab down`: the daemon and the data dir must go anyway.
        try:
            self.lab("down", str(self.lab_file))
        except Exception as exc:
            self.note(f"lab down failed: {exc}")


class Targets:
    """A bench's targets: each is printed as "met" or "MISSED", and with `--check` a miss makes
    the bench exit 1 (`make bench` runs them without it and keeps printing)."""

    def __init__(self) -> None:
        self.missed: list[str] = []

    def verdict(self, name: str, ok: bool) -> str:
        if not ok:
            self.missed.append(name)
        return "met" if ok else "MISSED"

    @staticmethod
    def add_option(parser: Any) -> None:
        parser.add_argument("--check", action="store_true",
                            help="exit 1 when a target is missed")  # fmt: skip

    def exit_status(self, check: bool, bench: str) -> int:
        if self.missed:
            note(bench, f"targets missed: {', '.join(self.missed)}")
        return 1 if check and self.missed else 0
