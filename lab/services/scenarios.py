"""Training scenarios: the catalogue under `scenarios/`, their broken disks (the base image
with the scenario's breaks applied offline, cached), the VM a trainee works on, hints, and the
results of every attempt (kept in `<data dir>/state/scenarios.json`).

A scenario's VM is `scenarios/<name>` (resource group `scenarios`) with boot diagnostics on,
so its console, boot log, SysRq and NMI work as for any VM. Its checks run over the console
(`lab.client.checks`); their results come back here to be kept.
"""

from __future__ import annotations

import asyncio
import builtins
import hashlib
import logging
import time
from dataclasses import asdict
from typing import Any

from typing_extensions import TypedDict

from lab.domain.definitions import scenario_vm_model
from lab.domain.errors import Conflict, InvalidInput, NotFound
from lab.domain.labfile import DEFAULT_SUBSCRIPTION_ID
from lab.domain.scenario import (
    AppendFile,
    Break,
    ChangeMode,
    CheckResult,
    FillDisk,
    KernelArg,
    MakeLink,
    RemovePath,
    ReplaceText,
    Scenario,
    WriteFile,
    parse_scenario,
)
from lab.domain.vm import VmView
from lab.services.context import LabContext
from lab.services.vms import VmService
from lab.storage.diskedit import RootFs, edit_disk
from lab.storage.images.derived import derive
from lab.storage.state import StateFile

log = logging.getLogger(__name__)

GROUP = "scenarios"
_KEY = "scenarioAttempts"
GRUB_CFG = "/boot/grub/grub.cfg"


class AttemptRecord(TypedDict):
    """What every kept attempt must have (the state file's check; attempts hold more)."""

    scenario: str
    startedAt: float


def apply_break(fs: RootFs, step: Break) -> None:
    """One break, edited into the guest's root filesystem."""
    match step:
        case WriteFile():
            fs.write(step.write, step.content.encode(), mode=int(step.mode, 8))
        case AppendFile():
            old = fs.read(step.append) if fs.exists(step.append) else b""
            fs.write(step.append, old + step.content.encode(), mode=_perms(fs, step.append))
        case ReplaceText():
            text = fs.read(step.replace)
            if step.old.encode() not in text:
                raise InvalidInput(f"break 'replace' of {step.replace}: {step.old!r} is not in "
                                   "the file", target=step.replace)  # fmt: skip
            fs.write(step.replace, text.replace(step.old.encode(), step.new.encode()),
                     mode=_perms(fs, step.replace))  # fmt: skip
        case RemovePath():
            fs.remove(step.remove)
        case ChangeMode():
            fs.chmod(step.chmod, int(step.mode, 8))
        case MakeLink():
            fs.symlink(step.symlink, step.target)
        case FillDisk():
            fs.fill(step.fill, step.leave_mib * 1024 * 1024)
        case KernelArg():
            cfg = fs.read(GRUB_CFG).decode()
            lines = [
                f"{line.rstrip()} {step.kernel_arg}" if line.lstrip().startswith("linux") else line
                for line in cfg.splitlines()
            ]
            fs.write(GRUB_CFG, ("\n".join(lines) + "\n").encode(), mode=_perms(fs, GRUB_CFG))


def _perms(fs: RootFs, path: str) -> int:
    return fs.mode(path) & 0o7777 if fs.exists(path) else 0o644


class ScenarioService:
    def __init__(self, ctx: LabContext, vms: VmService, state: StateFile) -> None:
        self.ctx = ctx
        self.vms = vms
        self.state = state
        state.section(_KEY, list[AttemptRecord], "the scenario attempts")

    # -- the catalogue ----------------------------------------------------------------------------
    def catalogue(self) -> builtins.list[Scenario]:
        root = self.ctx.settings.scenarios_dir
        if not root.is_dir():
            return []
        return [self.get(d.name) for d in sorted(root.iterdir()) if (d / "scenario.yaml").is_file()]

    def get(self, name: str) -> Scenario:
        path = self.ctx.settings.scenarios_dir / name / "scenario.yaml"
        if "/" in name or not path.is_file():
            known = ", ".join(s.name for s in self.catalogue()) if "/" not in name else ""
            raise NotFound(f"No scenario '{name}'; scenarios: {known or 'none'} "
                           "(`lab scenario ls`).", target=name)  # fmt: skip
        return parse_scenario(path.read_text(), name=name, source=str(path))

    # -- the VM ---------------------------------------------------------------------------------
    def vm(self, name: str) -> VmView | None:
        return _scenario_vm(self.vms.list(), name)

    def started(self) -> set[str]:
        """The (lowercased) names of the scenarios whose VM exists: one listing for all."""
        return {v.identity.name.lower() for v in self.vms.list() if v.identity.key[0] == GROUP}

    async def vm_now(self, name: str) -> VmView | None:
        """`vm` for a coroutine (see `VmService.machines_now`)."""
        return _scenario_vm(await self.vms.list_now(), name)

    def prepare(self, scenario: Scenario) -> str:
        """The scenario's image (built once): its base image with the breaks applied. The base
        must be built (`lab scenario start` builds it first, with progress)."""
        self.ctx.images.get(scenario.image)
        key = hashlib.sha256(scenario.model_dump_json(include={"breaks"}).encode()).hexdigest()

        def make_disk(base: Any, out: Any) -> None:
            def edit(fs: RootFs) -> None:
                for step in scenario.breaks:
                    apply_break(fs, step)

            edit_disk(base, out, edit)

        image = f"scn-{scenario.name}"
        derive(self.ctx.images, scenario.image, image, key, make_disk)
        return image

    async def start(self, name: str, *, vcpus: int | None = None) -> VmView:
        """Derive the broken disk (cached), create the VM and boot it. `vcpus`: the VM's, when
        not the scenario's (the test suite runs two 1-vCPU guests at once on 2 cores)."""
        scenario = self.get(name)
        if await self.vm_now(name) is not None:
            raise Conflict(f"Scenario '{name}' is already started; `lab scenario reset {name}` "
                           f"starts it over, `lab scenario stop {name}` ends it.",
                           target=name)  # fmt: skip
        started = time.monotonic()
        image = await asyncio.to_thread(self.prepare, scenario)
        log.info("scenario %s: broken disk %s ready in %.1f s", name, image,
                 time.monotonic() - started)  # fmt: skip
        view = await self.vms.create_from_definition(
            DEFAULT_SUBSCRIPTION_ID, GROUP, name, scenario_vm_model(scenario, image, vcpus),
            password=scenario.admin.password)  # fmt: skip
        self._new_attempt(scenario)
        return view

    async def reset(self, name: str) -> VmView:
        """Back to the broken state: a fresh overlay on the broken disk, booted again."""
        view = await self._require_vm(name)
        view = await self.vms.reimage(view)
        if view.power_state.value != "running":
            view = await self.vms.start(view)
        self._update(name, lambda a: a.update(resets=a.get("resets", 0) + 1))
        return view

    async def stop(self, name: str) -> None:
        await self.vms.delete(await self._require_vm(name))
        self._update(name, lambda a: a.setdefault("stoppedAt", time.time()))

    async def _require_vm(self, name: str) -> VmView:
        self.get(name)
        view = await self.vm_now(name)
        if view is None:
            raise Conflict(f"Scenario '{name}' is not started; `lab scenario start {name}`.",
                           target=name)  # fmt: skip
        return view

    # -- hints and results ------------------------------------------------------------------------
    def hint(self, name: str) -> tuple[int, int, str]:
        """The next hint: (its number, how many there are, its text)."""
        scenario = self.get(name)
        attempt = self._current(name)
        used = int(attempt.get("hintsUsed", 0))
        if not scenario.hints:
            raise NotFound(f"Scenario '{name}' has no hints.", target=name)
        if used >= len(scenario.hints):
            return len(scenario.hints), len(scenario.hints), scenario.hints[-1]
        self._update(name, lambda a: a.update(hintsUsed=used + 1))
        return used + 1, len(scenario.hints), scenario.hints[used]

    def record_checks(self, name: str, results: builtins.list[CheckResult]) -> dict[str, Any]:
        passed = all(r.passed for r in results)

        def store(a: dict[str, Any]) -> None:
            a["checks"] = [asdict(r) for r in results]
            a["checkRuns"] = a.get("checkRuns", 0) + 1
            if passed and "solvedAt" not in a:
                a["solvedAt"] = time.time()
                a["seconds"] = round(a["solvedAt"] - a["startedAt"], 1)

        self._update(name, store)
        return self._current(name)

    def attempts(self) -> builtins.list[dict[str, Any]]:
        return list(self.state.read().get(_KEY, []))

    def status(self, name: str) -> dict[str, Any]:
        scenario = self.get(name)
        view = self.vm(name)
        attempt = self._current(name, missing_ok=True)
        return {"name": name, "title": scenario.title, "level": scenario.level,
                "objective": scenario.objective, "timeLimitMinutes": scenario.time_limit_minutes,
                "vm": None if view is None else view.power_state.value,
                "attempt": attempt, "hints": len(scenario.hints)}  # fmt: skip

    def _new_attempt(self, scenario: Scenario) -> None:
        attempts = self.attempts()
        attempts.append({"scenario": scenario.name, "title": scenario.title,
                         "startedAt": time.time(), "hintsUsed": 0, "resets": 0,
                         "timeLimitMinutes": scenario.time_limit_minutes})  # fmt: skip
        self.state.update(_KEY, attempts)

    def _current(self, name: str, missing_ok: bool = False) -> dict[str, Any]:
        for attempt in reversed(self.attempts()):
            if attempt["scenario"] == name:
                return attempt
        if missing_ok:
            return {}
        raise Conflict(f"Scenario '{name}' was never started; `lab scenario start {name}`.",
                       target=name)  # fmt: skip

    def _update(self, name: str, change: Any) -> None:
        attempts = self.attempts()
        for attempt in reversed(attempts):
            if attempt["scenario"] == name:
                change(attempt)
                break
        else:
            raise Conflict(f"Scenario '{name}' was never started.", target=name)
        self.state.update(_KEY, attempts)


def _scenario_vm(views: list[VmView], name: str) -> VmView | None:
    return next((v for v in views if v.identity.key == (GROUP, name.lower())), None)
