"""Routes of the daemon API for training scenarios. Thin: parse, call the service, serialise."""

from __future__ import annotations

from dataclasses import asdict
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request

from lab.api.app_state import lab_of
from lab.api.daemon.schemas import vm_json
from lab.domain.classroom import trainee_group
from lab.domain.errors import NotFound
from lab.services.scenarios import GROUP

router = APIRouter(prefix="/v1/scenarios")


def _group(request: Request, user: str | None = Query(None)) -> str:
    """`?user=U`: the scenario VM of trainee U (in their resource group); else the lab's own
    (resource group `scenarios`)."""
    if user is None:
        return GROUP
    if lab_of(request).identity.user(user) is None:
        raise NotFound(f"no user '{user}' (`lab user ls`)", target=user)
    return trainee_group(user)


Group = Annotated[str, Depends(_group)]


@router.get("")
def list_scenarios(request: Request, group: Group) -> list[dict[str, Any]]:
    lab = lab_of(request)
    started = lab.scenarios.started(group)
    return [
        {"name": s.name, "title": s.title, "level": s.level, "image": s.image,
         "timeLimitMinutes": s.time_limit_minutes, "started": s.name.lower() in started}
        for s in lab.scenarios.catalogue()
    ]  # fmt: skip


@router.get("/report")
def report(request: Request, user: str | None = Query(None)) -> list[dict[str, Any]]:
    """Every attempt (of every group), or a user's."""
    lab = lab_of(request)
    return lab.scenarios.attempts(None if user is None else _group(request, user))


@router.get("/{name}")
def status(request: Request, name: str, group: Group) -> dict[str, Any]:
    return lab_of(request).scenarios.status(name, group)


@router.get("/{name}/definition")
def definition(request: Request, name: str) -> dict[str, Any]:
    """The scenario as its file defines it."""
    return lab_of(request).scenarios.get(name).model_dump(mode="json", by_alias=True)


@router.post("/{name}/start")
async def start(request: Request, name: str, group: Group,
                user: str | None = Query(None),
                vcpus: int | None = Query(None, ge=1, le=8)) -> dict[str, Any]:  # fmt: skip
    lab = lab_of(request)
    return vm_json(await lab.scenarios.start(name, group=group, user=user, vcpus=vcpus))


@router.post("/{name}/reset")
async def reset(request: Request, name: str, group: Group) -> dict[str, Any]:
    return vm_json(await lab_of(request).scenarios.reset(name, group))


@router.post("/{name}/stop")
async def stop(request: Request, name: str, group: Group) -> dict[str, str]:
    await lab_of(request).scenarios.stop(name, group)
    return {"status": "stopped"}


@router.post("/{name}/hint")
def hint(request: Request, name: str, group: Group) -> dict[str, Any]:
    number, total, text = lab_of(request).scenarios.hint(name, group)
    return {"number": number, "of": total, "hint": text}


@router.post("/{name}/check")
async def check(request: Request, name: str, group: Group,
                boot_timeout: float | None = Query(None, alias="bootTimeout", gt=0, le=3600),
                ) -> dict[str, Any]:  # fmt: skip
    """Run the checks in the guest over its serial console (taking the console over while
    they run) and keep the results in the attempt."""
    results, attempt = await lab_of(request).scenario_checks.check(name, boot_timeout, group)
    return {
        "passed": all(r.passed for r in results),
        "results": [asdict(r) for r in results],  # the attempt stores the same shape
        "attempt": attempt,
    }
