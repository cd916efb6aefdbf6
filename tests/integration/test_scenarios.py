"""Every training scenario, with a real Debian guest: it starts broken (its checks fail), its
reference solution fixes it through the serial console alone (its checks pass), and a reset
brings the broken state back. Slow under TCG: one marked group (`slow`), timings printed."""

from __future__ import annotations

import importlib.util
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from lab.console import connect
from lab.settings import REPO_ROOT, Settings
from tests.integration.labharness import LabHarness, report_figures

pytestmark = [pytest.mark.integration, pytest.mark.slow]

SCENARIOS = sorted(p.parent.name for p in (REPO_ROOT / "scenarios").glob("*/scenario.yaml"))
TIMINGS: dict[str, dict[str, float]] = {}


@pytest.fixture(scope="module")
def debian_lab(tmp_path_factory: pytest.TempPathFactory,
               request: pytest.FixtureRequest) -> Iterator[LabHarness]:  # fmt: skip
    # A daemon of its own: a trainee's commands (sshd's first start makes its host keys) may
    # run longer than the short idle timeout the other integration tests use.
    data_dir = Path(tmp_path_factory.mktemp("scenarios"))
    lab = LabHarness(data_dir=data_dir, image_cache=Settings().image_cache_dir, idle_minutes=20)
    started = time.monotonic()
    try:
        lab.cli("image", "build", "debian", timeout=1800)  # shared by every scenario: cached
        TIMINGS["image build"] = {"seconds": round(time.monotonic() - started, 1)}
        lab.start_daemon()
        yield lab
    finally:
        lab.cleanup()
        TIMINGS["whole group"] = {"seconds": round(time.monotonic() - started, 1)}
        report_timings(request.config)


def report_timings(config: pytest.Config) -> None:
    lines = [f"{name}: {json.dumps(times)}" for name, times in TIMINGS.items()]
    report_figures(config, "scenario timings (s, since each scenario's start)", lines)


def check(lab: LabHarness, name: str) -> dict[str, Any]:
    done = lab.cli("scenario", "check", name, "--json", check=False, timeout=600)
    assert done.returncode in (0, 1), done.stderr
    result: dict[str, Any] = json.loads(done.stdout)
    return result


class CliControls:
    """A solution's VmControls: the lab's CLI, as a trainee would use it."""

    def __init__(self, lab: LabHarness, name: str) -> None:
        self.lab, self.vm = lab, [name, "-g", "scenarios"]

    def reset(self) -> None:
        self.lab.cli("vm", "reset", *self.vm)

    def sysrq(self, keys: str) -> None:
        self.lab.cli("sysrq", *self.vm, keys)

    def nmi(self) -> None:
        self.lab.cli("nmi", *self.vm, "--yes")


def solve(lab: LabHarness, name: str, transcript: Path) -> None:
    path = REPO_ROOT / "scenarios" / name / "solution.py"
    spec = importlib.util.spec_from_file_location(f"solution_{name.replace('-', '_')}", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)

    with transcript.open("w", encoding="utf-8", errors="replace") as log, \
            connect(name, resource_group="scenarios", settings=lab.settings, timeout=60,
                    user="reference-solution", logfile=log) as session:  # fmt: skip
        module.solve(session, CliControls(lab, name))
        time.sleep(1)


def tail(path: Path, size: int = 3000) -> str:
    """The end of a console transcript, for a failure's message."""
    text = path.read_text(errors="replace") if path.exists() else "(no transcript)"
    return text[-size:]


@pytest.mark.parametrize("name", SCENARIOS)
def test_scenario_is_broken_then_solved_then_reset(debian_lab: LabHarness, name: str) -> None:
    lab, t = debian_lab, time.monotonic()
    times: dict[str, float] = {}
    transcript = lab.data_dir / f"{name}.solution.log"
    lab.cli("scenario", "start", name, timeout=900)
    try:
        before = check(lab, name)
        times["start+check"] = round(time.monotonic() - t, 1)
        assert not before["passed"], f"{name}: checks pass before any fix: {before['results']}"
        try:
            solve(lab, name, transcript)
        except Exception as exc:
            raise AssertionError(f"{name}: the reference solution failed ({exc!r}); "
                                 f"its console ended with:\n{tail(transcript)}") from exc
        after = check(lab, name)
        times["solved"] = round(time.monotonic() - t, 1)
        assert after["passed"], (f"{name}: the reference solution did not fix it: "
                                 f"{after['results']}\nits console ended with:\n{tail(transcript)}")
        assert after["attempt"]["solvedAt"]
        lab.cli("scenario", "reset", name, timeout=300)
        again = check(lab, name)
        times["reset+check"] = round(time.monotonic() - t, 1)
        assert not again["passed"], f"{name}: reset did not bring the broken state back"
    finally:
        lab.cli("scenario", "stop", name, check=False)
        TIMINGS[name] = times
