"""Training scenarios: the catalogue under `scenarios/`, their broken disks (the base image
with the scenario's breaks applied offline, cached), the VM a trainee works on, hints, and the
results of every attempt (kept in `<data dir>/state/scenarios.json`).

A scenario's VM is `<group>/<name>`: resource group `scenarios` for whoever runs the lab, or a
trainee's own group (`lab.domain.classroom`), so many trainees run the same scenario at once,
each on an overlay of the one broken disk. Boot diagnostics are on, so its console, boot log,
SysRq and NMI work as for any VM. Attempts (hints, checks, resets, times) are per group. Its
checks run over the console (`lab.client.checks`); their results come back here to be kept.
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import hashlib
import logging
import threading
import time
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import asdict
from typing import Any

from typing_extensions import TypedDict

from lab.domain.definitions import scenario_vm_model
from lab.domain.errors import Conflict, InvalidInput, LabError, NotFound
from lab.domain.labfile import DEFAULT_SUBSCRIPTION_ID
from lab.domain.resource_ids import same
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
from lab.domain.vm import VmView, domain_name
from lab.services.admission import Admission
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
    def __init__(self, ctx: LabContext, vms: VmService, state: StateFile,
                 admission: Admission | None = None) -> None:  # fmt: skip
        self.ctx = ctx
        self.vms = vms
        self.state = state
        self.admission = admission
        #: Starts under way (queued, or their disk or VM being made), as `<group>/<name>`.
        self._starting: set[str] = set()
        #: Why the last start of `<group>/<name>` failed, for starts nobody waited on.
        self.start_errors: dict[str, str] = {}
        self._prepare_lock = threading.Lock()
        self._prepare_locks: dict[str, threading.Lock] = {}
        #: Called with a group whenever one of its attempts changes (the instructor's live
        #: table listens); called on the event loop or a worker thread, so they must not block.
        self.listeners: list[Callable[[str], None]] = []
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
    def vm(self, name: str, group: str = GROUP) -> VmView | None:
        return _scenario_vm(self.vms.list(), name, group)

    def started(self, group: str = GROUP) -> set[str]:
        """The (lowercased) names of the scenarios whose VM exists in `group`: one listing."""
        return {v.identity.name.lower() for v in self.vms.list()
                if v.identity.key[0] == group.lower()}  # fmt: skip

    async def vm_now(self, name: str, group: str = GROUP) -> VmView | None:
        """`vm` for a coroutine (see `VmService.machines_now`)."""
        return _scenario_vm(await self.vms.list_now(), name, group)

    def prepare(self, scenario: Scenario) -> str:
        """The scenario's image (built once): its base image with the breaks applied. The base
        must be built (`lab scenario start` builds it first, with progress). A class starting
        the same scenario at once waits for one build, not one each."""
        with self._prepare_lock:
            lock = self._prepare_locks.setdefault(scenario.name, threading.Lock())
        with lock:
            return self._prepare(scenario)

    def _prepare(self, scenario: Scenario) -> str:
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

    async def start(self, name: str, *, group: str = GROUP, user: str | None = None,
                    vcpus: int | None = None) -> VmView:  # fmt: skip
        """Derive the broken disk (cached, shared by every group), create the VM in `group`
        and boot it. `user`: whose attempt it is (a trainee). `vcpus`: the VM's, when not the
        scenario's (the test suite runs two 1-vCPU guests at once on 2 cores)."""
        scenario = self.get(name)
        key = start_key(group, name)
        if key in self._starting:
            raise Conflict(f"Scenario '{name}' is starting already{_in(group)}.", target=name)
        self._starting.add(key)  # before the first await: a second start is refused above
        try:
            if await self.vm_now(name, group) is not None:
                raise Conflict(f"Scenario '{name}' is already started{_in(group)}; reset starts "
                               "it over, stop ends it.", target=name)  # fmt: skip
            self._changed(group)
            started = time.monotonic()
            image = await asyncio.to_thread(self.prepare, scenario)
            log.info("scenario %s: broken disk %s ready in %.1f s", name, image,
                     time.monotonic() - started)  # fmt: skip
            model = scenario_vm_model(scenario, image, vcpus)
            domain = domain_name(self.ctx.lab_id, group, name)
            async with self._admitted(key, model.memory_mib, domain):
                view = await self.vms.create_from_definition(
                    DEFAULT_SUBSCRIPTION_ID, group, name, model,
                    password=scenario.admin.password)  # fmt: skip
        finally:
            self._starting.discard(key)
        self._new_attempt(scenario, group, user)
        return view

    async def start_recorded(self, name: str, *, group: str, user: str | None) -> None:
        """`start` for a caller that does not wait for it (the portal's Start): a failure is
        kept in `start_errors` for the panel to show, until the next start."""
        key = start_key(group, name)
        self.start_errors.pop(key, None)
        try:
            await self.start(name, group=group, user=user)
        except LabError as exc:
            self.start_errors[key] = exc.message
            self._changed(group)
        except Exception:
            log.exception("starting scenario %s in %s failed", name, group)
            self.start_errors[key] = "the start failed: the lab daemon's log says why"
            self._changed(group)

    def starting(self, group: str, name: str) -> bool:
        return start_key(group, name) in self._starting

    def starting_in(self, group: str) -> builtins.list[str]:
        """The scenarios whose start is under way in `group`, by name."""
        prefix = start_key(group, "")
        return sorted(k[len(prefix):] for k in self._starting if k.startswith(prefix))

    def _admitted(self, key: str, memory_mib: int,
                  domain: str) -> AbstractAsyncContextManager[object]:  # fmt: skip
        if self.admission is None:
            return contextlib.nullcontext()
        return self.admission.admit(key, memory_mib, domain)

    async def reset(self, name: str, group: str = GROUP) -> VmView:
        """Back to the broken state: a fresh overlay on the broken disk, booted again."""
        view = await self._require_vm(name, group)
        view = await self.vms.reimage(view)
        if view.power_state.value != "running":
            view = await self.vms.start(view)
        self._update(name, group, lambda a: a.update(resets=a.get("resets", 0) + 1))
        return view

    async def stop(self, name: str, group: str = GROUP) -> None:
        await self.vms.delete(await self._require_vm(name, group))
        self._update(name, group, lambda a: a.setdefault("stoppedAt", time.time()))

    async def _require_vm(self, name: str, group: str) -> VmView:
        self.get(name)
        view = await self.vm_now(name, group)
        if view is None:
            raise Conflict(f"Scenario '{name}' is not started{_in(group)}; start it first.",
                           target=name)  # fmt: skip
        return view

    # -- hints and results ------------------------------------------------------------------------
    def hint(self, name: str, group: str = GROUP) -> tuple[int, int, str]:
        """The next hint: (its number, how many there are, its text)."""
        scenario = self.get(name)
        attempt = self._current(name, group)
        used = int(attempt.get("hintsUsed", 0))
        if not scenario.hints:
            raise NotFound(f"Scenario '{name}' has no hints.", target=name)
        if used >= len(scenario.hints):
            return len(scenario.hints), len(scenario.hints), scenario.hints[-1]
        self._update(name, group, lambda a: a.update(hintsUsed=used + 1))
        return used + 1, len(scenario.hints), scenario.hints[used]

    def record_checks(self, name: str, results: builtins.list[CheckResult],
                      group: str = GROUP) -> dict[str, Any]:  # fmt: skip
        passed = all(r.passed for r in results)

        def store(a: dict[str, Any]) -> None:
            a["checks"] = [asdict(r) for r in results]
            a["checkRuns"] = a.get("checkRuns", 0) + 1
            if passed and "solvedAt" not in a:
                a["solvedAt"] = time.time()
                a["seconds"] = round(a["solvedAt"] - a["startedAt"], 1)

        self._update(name, group, store)
        return self._current(name, group)

    def attempts(self, group: str | None = None) -> builtins.list[dict[str, Any]]:
        """Every attempt (oldest first), or those of one group."""
        kept = self.state.read().get(_KEY, [])
        return [a for a in kept if group is None or same(attempt_group(a), group)]

    def forget(self, group: str) -> builtins.list[dict[str, Any]]:
        """Remove a group's attempts (its class ended); returns them, to be kept elsewhere."""
        kept = self.attempts()
        gone = [a for a in kept if same(attempt_group(a), group)]
        self.state.update(_KEY, [a for a in kept if not same(attempt_group(a), group)])
        return gone

    def status(self, name: str, group: str = GROUP) -> dict[str, Any]:
        scenario = self.get(name)
        view = self.vm(name, group)
        attempt = self._current(name, group, missing_ok=True)
        return {"name": name, "group": group, "title": scenario.title, "level": scenario.level,
                "objective": scenario.objective, "timeLimitMinutes": scenario.time_limit_minutes,
                "vm": None if view is None else view.power_state.value,
                "attempt": attempt, "hints": len(scenario.hints)}  # fmt: skip

    def _new_attempt(self, scenario: Scenario, group: str, user: str | None) -> None:
        attempts = self.attempts()
        attempt = {"scenario": scenario.name, "title": scenario.title, "group": group,
                   "startedAt": time.time(), "hintsUsed": 0, "resets": 0,
                   "timeLimitMinutes": scenario.time_limit_minutes}  # fmt: skip
        if user:
            attempt["user"] = user
        attempts.append(attempt)
        self.state.update(_KEY, attempts)
        self._changed(group)

    def _current(self, name: str, group: str, missing_ok: bool = False) -> dict[str, Any]:
        for attempt in reversed(self.attempts(group)):
            if attempt["scenario"] == name:
                return attempt
        if missing_ok:
            return {}
        raise Conflict(f"Scenario '{name}' was never started{_in(group)}; start it first.",
                       target=name)  # fmt: skip

    def _update(self, name: str, group: str, change: Any) -> None:
        attempts = self.attempts()
        for attempt in reversed(attempts):
            if attempt["scenario"] == name and same(attempt_group(attempt), group):
                change(attempt)
                break
        else:
            raise Conflict(f"Scenario '{name}' was never started{_in(group)}.", target=name)
        self.state.update(_KEY, attempts)
        self._changed(group)

    def _changed(self, group: str) -> None:
        for listener in list(self.listeners):
            try:
                listener(group)
            except Exception:  # a listener's bug must not fail the trainee's request
                log.exception("scenario listener failed")


def start_key(group: str, name: str) -> str:
    """How admission's queue and the starts under way name a scenario VM."""
    return f"{group.lower()}/{name}"


def attempt_group(attempt: dict[str, Any]) -> str:
    """An attempt's resource group (attempts kept before groups existed were in `scenarios`)."""
    return str(attempt.get("group") or GROUP)


def _in(group: str) -> str:
    return "" if same(group, GROUP) else f" in resource group '{group}'"


def _scenario_vm(views: list[VmView], name: str, group: str = GROUP) -> VmView | None:
    return next((v for v in views if v.identity.key == (group.lower(), name.lower())), None)
