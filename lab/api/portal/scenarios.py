"""The trainee's scenarios in the portal: the catalogue, Start (queued when the lab is full),
and the panel beside a scenario VM's console (ticket, timer, hints on request, "Check my fix",
reset), over HTTPS with the same bearer tokens and RBAC as the Azure API.

Azure has no such resource, so these are the lab's own routes, under the portal's prefix. A
scenario VM is `<group>/<name>`: a trainee's lives in their own resource group, the lab
owner's in `scenarios`. Each route checks the Azure action its work needs on that VM:
reading the panel needs `virtualMachines/read`; a hint or a check what the serial console
needs (`serialPorts/connect/action`), since both are part of working on it; Start needs
`virtualMachines/write`, and reset and stop what reimage and delete need. An instructor of
the trainee's class may also reset (`lab.api.portal.classes.instructs`). The checks' commands
and expectations are not sent: they would give the answer away.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import asdict
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from lab.api.azure.common import Caller, lab_of, require_action
from lab.api.azure.serialconsole import CONNECT_ACTION
from lab.api.portal.classes import instructs, own_group
from lab.api.security.tokens import Principal
from lab.domain.classroom import scenario_vm_id
from lab.domain.resource_ids import VMS
from lab.services.lab import Lab
from lab.services.scenarios import start_key

log = logging.getLogger(__name__)

router = APIRouter(prefix="/_portal/api/scenarios", include_in_schema=False)
READ, WRITE, DELETE = f"{VMS}/read", f"{VMS}/write", f"{VMS}/delete"
REIMAGE = f"{VMS}/reimage/action"
#: Starts begun from the portal run on after the request; kept so they are not collected.
_STARTS: set[asyncio.Task[Any]] = set()


def _queue(lab: Lab, group: str, name: str) -> dict[str, Any] | None:
    place = lab.admission.position(start_key(group, name))
    if place is None:
        return None
    return {"position": place[0], "estimateSeconds": place[1],
            "waitingFor": lab.admission.waiting_for}  # fmt: skip


def _audit(lab: Lab, event: str, principal: Principal, group: str, name: str,
           **detail: Any) -> None:  # fmt: skip
    lab.consoles.audit.record(event, vm=f"{group}/{name}", user=principal.name,
                              scenario=name, group=group, **detail)  # fmt: skip


def _panel(lab: Lab, group: str, name: str) -> dict[str, Any]:
    scenario = lab.scenarios.get(name)
    status = lab.scenarios.status(name, group)
    attempt = status.get("attempt") or {}
    used = int(attempt.get("hintsUsed", 0))
    return {
        "name": name, "group": group, "title": scenario.title, "level": scenario.level,
        "story": scenario.story.strip(), "objective": scenario.objective.strip(),
        "timeLimitMinutes": scenario.time_limit_minutes, "vmId": scenario_vm_id(group, name),
        "powerState": status.get("vm"), "starting": lab.scenarios.starting(group, name),
        "queue": _queue(lab, group, name), "startError": lab.scenarios.start_errors.get(
            start_key(group, name)),
        "startedAt": attempt.get("startedAt"), "solvedAt": attempt.get("solvedAt"),
        "seconds": attempt.get("seconds"), "now": time.time(),
        "hints": {"shown": scenario.hints[:used], "total": len(scenario.hints)},
        "hintsUsed": used, "resets": attempt.get("resets", 0),
        "checks": [c.name for c in scenario.checks],
        "lastResults": attempt.get("checks"),
    }  # fmt: skip


# The reads are sync routes (in the thread pool): each looks at the scenario VMs' states, a
# libvirt call that can take seconds while libvirtd starts domains, and the panel polls them.
@router.get("")
def catalogue(request: Request, principal: Caller) -> dict[str, Any]:
    """Every scenario, for the caller's own group (a trainee's; `scenarios` for others): title,
    level, minutes, and, where the caller may read its VM there, whether it is started, queued
    or done."""
    lab = lab_of(request)
    group = own_group(lab, principal)
    started = lab.scenarios.started(group)
    solved = {a["scenario"] for a in lab.scenarios.attempts(group) if a.get("solvedAt")}
    value = []
    for s in lab.scenarios.catalogue():
        row: dict[str, Any] = {"name": s.name, "title": s.title, "level": s.level,
                               "image": s.image, "timeLimitMinutes": s.time_limit_minutes,
                               "vmId": scenario_vm_id(group, s.name)}  # fmt: skip
        if principal.may(READ, row["vmId"]):
            row.update(started=s.name.lower() in started, done=s.name in solved,
                       starting=lab.scenarios.starting(group, s.name),
                       queue=_queue(lab, group, s.name))  # fmt: skip
        value.append(row)
    return {"group": group, "value": value}


@router.get("/{group}/{name}")
def get_scenario(request: Request, group: str, name: str, principal: Caller) -> dict[str, Any]:
    require_action(principal, READ, scenario_vm_id(group, name))
    return _panel(lab_of(request), group, name)


@router.post("/{group}/{name}/start")
async def start(request: Request, group: str, name: str, principal: Caller) -> JSONResponse:
    """Start the caller's copy: answered at once (202) with its place in the queue, if any;
    the VM is made and booted after the answer, and the panel shows its progress."""
    require_action(principal, WRITE, scenario_vm_id(group, name))
    lab = lab_of(request)
    lab.scenarios.get(name)  # an unknown scenario: 404 now, not later in the panel
    if lab.scenarios.starting(group, name) or await lab.scenarios.vm_now(name, group):
        return JSONResponse(_panel(lab, group, name), status_code=200)
    task = asyncio.create_task(lab.scenarios.start_recorded(name, group=group,
                                                            user=principal.name))  # fmt: skip
    _STARTS.add(task)
    task.add_done_callback(_STARTS.discard)
    await asyncio.sleep(0)  # let it reach the queue, so the answer says where it stands
    _audit(lab, "scenario-start", principal, group, name)
    return JSONResponse(await asyncio.to_thread(_panel, lab, group, name), status_code=202)


@router.post("/{group}/{name}/hint")
def hint(request: Request, group: str, name: str, principal: Caller) -> dict[str, Any]:
    require_action(principal, CONNECT_ACTION, scenario_vm_id(group, name))
    lab = lab_of(request)
    number, total, text = lab.scenarios.hint(name, group)
    _audit(lab, "scenario-hint", principal, group, name, hint=number)
    return {"number": number, "of": total, "hint": text}


@router.post("/{group}/{name}/check")
async def check(request: Request, group: str, name: str, principal: Caller) -> dict[str, Any]:
    """Run the checks in the guest over its serial console (this takes the console over for
    the time of the checks, as `lab scenario check` does) and keep the results."""
    require_action(principal, CONNECT_ACTION, scenario_vm_id(group, name))
    lab = lab_of(request)
    results, attempt = await lab.scenario_checks.check(name, group=group)
    passed = all(r.passed for r in results)
    _audit(lab, "scenario-check", principal, group, name, passed=passed)
    return {
        "passed": passed,
        "results": [asdict(r) for r in results],  # the attempt stores the same shape
        "solvedAt": attempt.get("solvedAt"), "seconds": attempt.get("seconds"),
    }  # fmt: skip


@router.post("/{group}/{name}/reset")
async def reset(request: Request, group: str, name: str, principal: Caller) -> dict[str, Any]:
    """Back to the broken state (a fresh overlay, booted again): the trainee, or an
    instructor of their class."""
    lab = lab_of(request)
    if not await asyncio.to_thread(instructs, lab, principal, group):
        require_action(principal, REIMAGE, scenario_vm_id(group, name))
    await lab.scenarios.reset(name, group)
    _audit(lab, "scenario-reset", principal, group, name)
    return await asyncio.to_thread(_panel, lab, group, name)


@router.post("/{group}/{name}/stop")
async def stop(request: Request, group: str, name: str, principal: Caller) -> dict[str, Any]:
    require_action(principal, DELETE, scenario_vm_id(group, name))
    lab = lab_of(request)
    await lab.scenarios.stop(name, group)
    _audit(lab, "scenario-stop", principal, group, name)
    return await asyncio.to_thread(_panel, lab, group, name)
