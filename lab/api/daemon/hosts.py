"""Routes of the daemon API for the lab's hosts. Thin: parse, call the service, serialise."""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter, Request
from pydantic import BaseModel, ConfigDict, Field

from lab.api.app_state import lab_of
from lab.domain.hosts import HostLoad
from lab.domain.resource_ids import same

router = APIRouter(prefix="/v1/hosts")


class HostBody(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    name: str
    uri: str
    max_vcpus: int | None = Field(None, alias="maxVcpus")
    max_memory_mib: int | None = Field(None, alias="maxMemoryMiB")
    data_dir: str | None = Field(None, alias="dataDir")


def host_json(load: HostLoad) -> dict[str, Any]:
    h = load.host
    state = "unreachable" if not load.reachable else "drained" if h.drained else "ready"
    return {
        "name": h.name, "uri": h.uri, "state": state, "problem": load.problem or None,
        "transport": h.transport or "local", "dataDir": h.data_dir or None,
        "cores": load.size.cores if load.size else None,
        "memoryMiB": load.size.memory_mib if load.size else None,
        "maxVcpus": load.max_vcpus if load.reachable else h.max_vcpus,
        "maxMemoryMiB": load.max_memory_mib if load.reachable else h.max_memory_mib,
        "usedVcpus": load.used_vcpus, "usedMemoryMiB": load.used_memory_mib, "vms": load.vms,
    }  # fmt: skip


async def _loads(request: Request) -> list[HostLoad]:
    return await asyncio.to_thread(lab_of(request).hosts.loads)


async def _one(request: Request, name: str) -> dict[str, Any]:
    for load in await _loads(request):
        if same(load.host.name, name):
            return host_json(load)
    lab_of(request).hosts.host(name)  # raises the located NotFound
    raise AssertionError


@router.get("")
async def list_hosts(request: Request) -> list[dict[str, Any]]:
    return [host_json(x) for x in await _loads(request)]


@router.post("", status_code=201)
async def add_host(request: Request, body: HostBody) -> dict[str, Any]:
    host, warnings = await lab_of(request).hosts.add(
        body.name, body.uri, max_vcpus=body.max_vcpus, max_memory_mib=body.max_memory_mib,
        data_dir=body.data_dir,
    )  # fmt: skip
    return {**await _one(request, host.name), "warnings": warnings}


@router.get("/{name}")
async def get_host(request: Request, name: str) -> dict[str, Any]:
    return await _one(request, name)


@router.post("/{name}/drain")
async def drain(request: Request, name: str) -> dict[str, Any]:
    lab_of(request).hosts.set_drained(name, True)
    return await _one(request, name)


@router.post("/{name}/undrain")
async def undrain(request: Request, name: str) -> dict[str, Any]:
    lab_of(request).hosts.set_drained(name, False)
    return await _one(request, name)


@router.delete("/{name}")
async def remove(request: Request, name: str, force: bool = False) -> dict[str, Any]:
    """Forget a host; with `force`, its VMs (and scale-set instances) are deleted first."""
    lab = lab_of(request)
    host = lab.hosts.host(name)
    placed = [v for v in await lab.vms.machines_now() if v.host == host.name]
    deleted = []
    if force:
        for view in placed:
            if view.identity.scale_set is None:
                await lab.vms.delete(view)
            else:
                model = lab.lookup.scale_set(view.identity.scale_set, view.identity.resource_group)
                await lab.scale_sets.delete_instances(model, [view.identity.instance_id or ""])
            deleted.append(view.identity.name)
        placed = []
    lab.hosts.remove(host.name, len(placed))
    return {"name": host.name, "deleted": deleted}
