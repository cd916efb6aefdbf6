"""Routes of the daemon API for training scenarios. Thin: parse, call the service, serialise."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from fastapi import APIRouter, Query, Request

from lab.api.app_state import lab_of
from lab.api.daemon.schemas import vm_json

router = APIRouter(prefix="/v1/scenarios")


@router.get("")
def list_scenarios(request: Request) -> list[dict[str, Any]]:
    lab = lab_of(request)
    started = lab.scenarios.started()
    return [
        {"name": s.name, "title": s.title, "level": s.level, "image": s.image,
         "timeLimitMinutes": s.time_limit_minutes, "started": s.name.lower() in started}
        for s in lab.scenarios.catalogue()
    ]  # fmt: skip


@router.get("/report")
def report(request: Request) -> list[dict[str, Any]]:
    return lab_of(request).scenarios.attempts()


@router.get("/{name}")
def status(request: Request, name: str) -> dict[str, Any]:
    return lab_of(request).scenarios.status(name)


@router.get("/{name}/definition")
def definition(request: Request, name: str) -> dict[str, Any]:
    """The scenario as its file defines it."""
    return lab_of(request).scenarios.get(name).model_dump(mode="json", by_alias=True)


@router.post("/{name}/start")
async def start(
    request: Request, name: str, vcpus: int | None = Query(None, ge=1, le=8)
) -> dict[str, Any]:
    return vm_json(await lab_of(request).scenarios.start(name, vcpus=vcpus))


@router.post("/{name}/reset")
async def reset(request: Request, name: str) -> dict[str, Any]:
    return vm_json(await lab_of(request).scenarios.reset(name))


@router.post("/{name}/stop")
async def stop(request: Request, name: str) -> dict[str, str]:
    await lab_of(request).scenarios.stop(name)
    return {"status": "stopped"}


@router.post("/{name}/hint")
def hint(request: Request, name: str) -> dict[str, Any]:
    number, total, text = lab_of(request).scenarios.hint(name)
    return {"number": number, "of": total, "hint": text}


@router.post("/{name}/check")
async def check(request: Request, name: str,
                boot_timeout: float | None = Query(None, alias="bootTimeout", gt=0, le=3600),
                ) -> dict[str, Any]:  # fmt: skip
    """Run the checks in the guest over its serial console (taking the console over while
    they run) and keep the results in the attempt."""
    results, attempt = await lab_of(request).scenario_checks.check(name, boot_timeout)
    return {
        "passed": all(r.passed for r in results),
        "results": [asdict(r) for r in results],  # the attempt stores the same shape
        "attempt": attempt,
    }
