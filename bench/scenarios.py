"""Training scenarios: the `debian` image's build time (cold and cached), and per scenario the
time from `lab scenario start` to GRUB's menu and to `login:` (or to the sign that the broken
guest is stuck, which is what most scenarios boot into).

What is measured:
- **Image build, cold**: `lab image build debian` into an empty temporary image cache (the
  whole recipe: mmdebstrap, customize, disk, qcow2), then **cached**: the same command again on
  that cache. Skipped with --skip-cold (the cached figure is then measured on the shared cache).
- **Per scenario**, on the bench's own daemon (temporary data dir, the shared image cache):
  from sending `POST /v1/scenarios/NAME/start` (what `lab scenario start NAME` sends: it derives
  the broken disk, at most once per scenario content, then creates and starts the VM) to
  - `running`: the POST's answer (the VM is created and its CPUs run);
  - `GRUB menu`: GRUB's menu text read on a view-only console session opened right after the
    answer, with replay, so a menu drawn before the session opened is still seen (then the
    figure is an upper bound and marked `*`);
  - `login/stuck`: `login: `, or the first sign the checks treat as "stuck" (emergency mode,
    a panic, the initramfs shell, the scenario's own signs), with what it was; a guest that
    shows neither within the scenario's `bootTimeoutSeconds` is reported so (no getty at all).
  Each scenario is stopped (its VM deleted) before the next starts, so one runs at a time.

    .venv/bin/python bench/scenarios.py [--scenario NAME ...] [--skip-cold] [--keep-data]
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import benchlab
from pexpect import TIMEOUT

from lab.client import connect
from lab.client.grub import MENU
from lab.client.session import LOGIN_PROMPT
from lab.domain.guest_health import STUCK_SIGNS
from lab.domain.scenario import Scenario, parse_scenario
from lab.settings import REPO_ROOT

GROUP = "scenarios"
BUILD_TIMEOUT_S = 1800
BOOT_TIMEOUT_S = 400
#: A menu seen this soon after the session opened was (maybe) drawn before it: from replay.
REPLAY_WINDOW_S = 0.3


def note(message: str) -> None:
    benchlab.note("scenarios", message)


def build_seconds(bench: benchlab.BenchLab, image_cache: Path) -> float:
    """`lab image build debian` on `image_cache` (a build runs in the CLI: no daemon)."""
    env = {**bench.env, "LAB_IMAGE_CACHE": str(image_cache)}
    started = time.monotonic()
    subprocess.run([bench.lab_bin, "image", "build", "debian"], env=env, check=True,
                   stdout=subprocess.DEVNULL, timeout=BUILD_TIMEOUT_S)  # fmt: skip
    return time.monotonic() - started


def measure_builds(bench: benchlab.BenchLab, skip_cold: bool) -> dict[str, float]:
    if skip_cold:
        note("image build: cached only (--skip-cold), on the shared cache")
        return {"cached": build_seconds(bench, bench.settings.image_cache_dir)}
    cache = Path(tempfile.mkdtemp(prefix="lab-bench-imagecache-"))
    try:
        note(f"image build: cold, into {cache}")
        cold = build_seconds(bench, cache)
        note(f"image build: cold took {cold:.1f} s; now cached")
        return {"cold": cold, "cached": build_seconds(bench, cache)}
    finally:
        shutil.rmtree(cache, ignore_errors=True)


class ScenarioBench(benchlab.BenchLab):
    """The bench's daemon with no lab file of its own: scenarios make their own VMs."""

    def up(self) -> None:
        pass

    def down(self) -> None:
        for row in self.client.json("GET", "/v1/scenarios"):
            if row["started"]:
                self.lab("scenario", "stop", row["name"], check=False)


def load(name: str) -> Scenario:
    path = REPO_ROOT / "scenarios" / name / "scenario.yaml"
    return parse_scenario(path.read_text(), name=name, source=str(path))


def measure_scenario(bench: ScenarioBench, name: str) -> dict[str, Any]:
    scenario = load(name)
    signs = {**STUCK_SIGNS, **scenario.stuck}
    started = time.monotonic()
    bench.client.json("POST", f"/v1/scenarios/{name}/start")
    row: dict[str, Any] = {"scenario": name, "running": time.monotonic() - started}
    try:
        with connect(name, mode="view", resource_group=GROUP, settings=bench.settings,
                     replay=65536, user="bench", timeout=BOOT_TIMEOUT_S) as session:  # fmt: skip
            opened = time.monotonic()
            session.expect(MENU)
            row["menu"] = time.monotonic() - started
            row["menu_from_replay"] = time.monotonic() - opened < REPLAY_WINDOW_S
            # A guest that shows neither (no getty at all) is given what the checks give it.
            index = session.expect([LOGIN_PROMPT, *signs, TIMEOUT],
                                   timeout=scenario.boot_timeout_seconds)  # fmt: skip
            row["end"] = time.monotonic() - started
            row["reached"] = ("login:" if index == 0 else
                              f"no sign in {scenario.boot_timeout_seconds} s" if index > len(signs)
                              else list(signs.values())[index - 1])  # fmt: skip
    finally:
        bench.lab("scenario", "stop", name, check=False)
    return row


def print_report(builds: dict[str, float], rows: list[dict[str, Any]], accel: str) -> None:
    print(f"accelerator: {accel}; one scenario at a time; seconds from `lab scenario start`")
    for kind, seconds in builds.items():
        print(f"image build debian ({kind}): {seconds:.1f} s")
    print(f"{'scenario':<18} {'running':>8} {'GRUB menu':>10} {'login/stuck':>12}  reached")
    for r in rows:
        menu = f"{r['menu']:.1f}{'*' if r['menu_from_replay'] else ' '}"
        print(f"{r['scenario']:<18} {r['running']:>8.1f} {menu:>10} {r['end']:>12.1f}  "
              f"{r['reached']}")  # fmt: skip
    if any(r["menu_from_replay"] for r in rows):
        print("* the menu was already on the console when the session opened: an upper bound")
    print(json.dumps({"builds": builds, "scenarios": rows}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scenario", action="append", help="only these (repeatable)")
    parser.add_argument("--skip-cold", action="store_true", help="no cold image build")
    parser.add_argument("--keep-data", action="store_true", help="keep the temp data dir")
    # Figures only: no target to miss (make bench-check passes --check to every bench).
    parser.add_argument("--check", action="store_true", help="accepted; this bench has no target")
    args = parser.parse_args()
    benchlab.exit_on_sigterm()
    names = args.scenario or sorted(
        p.parent.name for p in (REPO_ROOT / "scenarios").glob("*/scenario.yaml"))
    bench = ScenarioBench("scenarios", "", keep=args.keep_data)
    rows: list[dict[str, Any]] = []
    status: dict[str, Any] = {}
    try:
        builds = measure_builds(bench, args.skip_cold)
        # The shared cache must hold the image the scenarios derive from (cached: a second).
        build_seconds(bench, bench.settings.image_cache_dir)
        status = bench.start()
        for name in names:
            note(f"{name}: start")
            rows.append(measure_scenario(bench, name))
            note(f"{name}: {rows[-1]['reached']} after {rows[-1]['end']:.1f} s")
    except Exception:
        bench.note_daemon_failure()
        raise
    finally:
        bench.close()
    print_report(builds, rows, status.get("accel", "?"))


if __name__ == "__main__":
    sys.exit(main())
