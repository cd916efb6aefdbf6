"""The trainee's scenario panel: a started scenario's ticket, its timer, hints on request and
"Check my fix", over HTTPS with the same bearer tokens and RBAC as the Azure API.

Azure has no such resource, so these are the lab's own routes, under the portal's prefix.
Reading a scenario needs read access to its VM; a hint or a check needs what the serial
console needs (`serialPorts/connect/action` on the VM), since both are part of working on it.
The checks' commands and expectations are not sent: they would give the answer away.
"""

from __future__ import annotations

import time
from dataclasses import asdict
from typing import Any

from fastapi import APIRouter, Request

from lab.api.azure.common import Caller, lab_of, require_action
from lab.api.azure.serialconsole import CONNECT_ACTION
from lab.domain.labfile import DEFAULT_SUBSCRIPTION_ID
from lab.domain.resource_ids import VMS, vm_id
from lab.services.scenarios import GROUP

router = APIRouter(prefix="/_portal/api/scenarios", include_in_schema=False)
_READ = f"{VMS}/read"


def _vm_id(name: str) -> str:
    # Scenario VMs live in the lab's default subscription, resource group `scenarios`.
    return vm_id(DEFAULT_SUBSCRIPTION_ID, GROUP, name)


def _panel(request: Request, name: str) -> dict[str, Any]:
    lab = lab_of(request)
    scenario = lab.scenarios.get(name)
    status = lab.scenarios.status(name)
    attempt = status.get("attempt") or {}
    used = int(attempt.get("hintsUsed", 0))
    return {
        "name": name, "title": scenario.title, "level": scenario.level,
        "story": scenario.story.strip(), "objective": scenario.objective.strip(),
        "timeLimitMinutes": scenario.time_limit_minutes, "vmId": _vm_id(name),
        "powerState": status.get("vm"),
        "startedAt": attempt.get("startedAt"), "solvedAt": attempt.get("solvedAt"),
        "seconds": attempt.get("seconds"), "now": time.time(),
        "hints": {"shown": scenario.hints[:used], "total": len(scenario.hints)},
        "checks": [c.name for c in scenario.checks],
        "lastResults": attempt.get("checks"),
    }  # fmt: skip


# The reads are sync routes (in the thread pool): each looks at the scenario VMs' states, a
# libvirt call that can take seconds while libvirtd starts domains, and the panel polls them.
@router.get("")
def list_scenarios(request: Request, principal: Caller) -> dict[str, Any]:
    """The started scenarios whose VM the caller may read."""
    lab = lab_of(request)
    started = lab.scenarios.started()
    value = [
        {"name": s.name, "title": s.title, "level": s.level, "vmId": _vm_id(s.name)}
        for s in lab.scenarios.catalogue()
        if principal.may(_READ, _vm_id(s.name)) and s.name.lower() in started
    ]
    return {"value": value}


@router.get("/{name}")
def get_scenario(request: Request, name: str, principal: Caller) -> dict[str, Any]:
    require_action(principal, _READ, _vm_id(name))
    return _panel(request, name)


@router.post("/{name}/hint")
async def hint(request: Request, name: str, principal: Caller) -> dict[str, Any]:
    require_action(principal, CONNECT_ACTION, _vm_id(name))
    number, total, text = lab_of(request).scenarios.hint(name)
    return {"number": number, "of": total, "hint": text}


@router.post("/{name}/check")
async def check(request: Request, name: str, principal: Caller) -> dict[str, Any]:
    """Run the checks in the guest over its serial console (this takes the console over for
    the time of the checks, as `lab scenario check` does) and keep the results."""
    require_action(principal, CONNECT_ACTION, _vm_id(name))
    results, attempt = await lab_of(request).scenario_checks.check(name)
    return {
        "passed": all(r.passed for r in results),
        "results": [asdict(r) for r in results],  # the attempt stores the same shape
        "solvedAt": attempt.get("solvedAt"), "seconds": attempt.get("seconds"),
    }  # fmt: skip
