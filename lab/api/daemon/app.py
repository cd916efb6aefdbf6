"""Routes of the daemon API. Thin: parse, call a service, serialise."""

from __future__ import annotations

import asyncio
import contextlib
import io
import os
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Query, WebSocket
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict, Field

from lab import __version__
from lab.api.app_state import lab_of
from lab.api.console_ws import refuse, serve_console
from lab.api.daemon import classes, hosts, identity, scenarios
from lab.api.daemon.schemas import reconcile_json, scale_set_json, vm_json
from lab.api.errors import deny, install_error_handlers
from lab.api.security.origin import refuse_every_origin
from lab.console.broker import SessionMode
from lab.domain.errors import InvalidInput, LabError, NotFound
from lab.domain.power import PowerOperation, by_lab_action, lab_actions
from lab.domain.scale_set import MAX_CAPACITY, ScaleSetModel
from lab.domain.vm import VmView
from lab.services.consoles import SysRqMethod
from lab.services.lab import Lab


class LabFileBody(BaseModel):
    source: str
    text: str


class SysRqBody(BaseModel):
    keys: str
    method: SysRqMethod = SysRqMethod.SENDKEY
    user: str = "local"


class CapacityBody(BaseModel):
    capacity: int


class InstanceIdsBody(BaseModel):
    """Which instances of a scale set; null (or no body) means every instance."""

    model_config = ConfigDict(populate_by_name=True)

    instance_ids: list[int | str] | None = Field(default=None, alias="instanceIds")


OnReady = Callable[[Lab], Awaitable[None]]


def create_app(lab: Lab, on_ready: OnReady | None = None) -> FastAPI:
    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        # Adopt the running VMs (attach their brokers, no reboot), then keep them attached:
        # a libvirtd restart under the daemon ends every chardev stream.
        await lab.console_keeper.check_once()
        keeper = asyncio.create_task(lab.console_keeper.run())
        mirrors = asyncio.create_task(lab.vms.log_mirrors.run())
        if on_ready is not None:
            await on_ready(lab)
        try:
            yield
        finally:
            for task in (keeper, mirrors):
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            lab.consoles.close_all()

    app = FastAPI(title="Serial Console Lab daemon", version=__version__, lifespan=lifespan)
    app.state.lab = lab

    install_error_handlers(app, exit_code=True)
    _routes(app)
    app.include_router(scenarios.router)
    app.include_router(classes.router)
    app.include_router(identity.router)
    app.include_router(hosts.router)
    return app


LabDep = Annotated[Lab, Depends(lab_of)]
ResourceGroup = Annotated[str | None, Query(alias="resourceGroup")]
#: On the per-VM routes: `{name}` is a scale set and the target is its instance with this id.
InstanceId = Annotated[str | None, Query(alias="instanceId")]
SkipShutdown = Annotated[bool, Query(alias="skipShutdown")]



async def resolved_vm(lab: Lab, name: str, rg: str | None, instance_id: str | None) -> VmView:
    """The target of a per-VM route (`Lookup.target`), its libvirt calls in a thread (libvirtd
    can take seconds while it starts other domains; on the event loop that froze every console)."""
    return await asyncio.to_thread(lab.lookup.target, name, rg, instance_id)


def power_operation(action: str) -> PowerOperation:
    found = by_lab_action(action)
    if found is None:
        raise NotFound(f"unknown action '{action}'; one of: {', '.join(lab_actions())}")
    return found.op


def instance_ids(body: InstanceIdsBody | None) -> list[str] | None:
    """The ids a body names, as strings, each once; None (every instance) without a body."""
    if body is None or body.instance_ids is None:
        return None
    if not body.instance_ids:
        raise InvalidInput("instanceIds is empty; name at least one instance, or send null "
                           "(or no body) for every instance", target="instanceIds")  # fmt: skip
    return list(dict.fromkeys(str(i).strip() for i in body.instance_ids))


def check_capacity(capacity: int) -> int:
    if not 0 <= capacity <= MAX_CAPACITY:
        raise InvalidInput(f"capacity must be 0 to {MAX_CAPACITY}, not {capacity}",
                           target="capacity")  # fmt: skip
    return capacity


def scale_set_reply(lab: Lab, model: ScaleSetModel) -> dict[str, Any]:
    """The set as it is now (state file and live instance states)."""
    current = lab.scale_sets.get(model.resource_group, model.name)
    return scale_set_json(current, lab.scale_sets.instances(current))


async def scale_set_reply_now(lab: Lab, model: ScaleSetModel) -> dict[str, Any]:
    """`scale_set_reply` for an async route (see `resolved_vm`)."""
    return await asyncio.to_thread(scale_set_reply, lab, model)


def _routes(app: FastAPI) -> None:
    @app.get("/v1/status")
    def status(lab: LabDep) -> dict[str, Any]:
        s = lab.settings
        return {
            "version": __version__,
            "pid": os.getpid(),
            "labId": lab.ctx.lab_id,
            "dataDir": str(s.data_dir),
            "libvirtUri": s.libvirt_uri,
            "accel": lab.ctx.hypervisor.accel(),
            "accelReason": lab.accel_reason,
        }

    @app.get("/v1/vms")
    def list_vms(
        lab: LabDep,
        include_instances: Annotated[bool, Query(alias="includeInstances")] = False,
    ) -> list[dict[str, Any]]:
        views = lab.vms.machines() if include_instances else lab.vms.list()
        return [vm_json(v) for v in views]

    @app.get("/v1/vms/{name}")
    def get_vm(
        lab: LabDep, name: str, rg: ResourceGroup = None, instance_id: InstanceId = None
    ) -> dict[str, Any]:
        return vm_json(lab.lookup.target(name, rg, instance_id))

    # Specific routes before the generic `{action}` one, which would swallow them.
    @app.post("/v1/vms/{name}/sysrq")
    async def sysrq(
        lab: LabDep, name: str, body: SysRqBody, rg: ResourceGroup = None,
        instance_id: InstanceId = None,
    ) -> dict[str, str]:  # fmt: skip
        view = await resolved_vm(lab, name, rg, instance_id)
        keys = await lab.consoles.sysrq(view, body.keys, method=body.method, user=body.user)
        return {"keys": keys, "method": body.method.value}

    @app.post("/v1/vms/{name}/nmi")
    async def nmi(
        lab: LabDep, name: str, rg: ResourceGroup = None, instance_id: InstanceId = None,
        user: str = "local",
    ) -> dict[str, str]:  # fmt: skip
        await lab.consoles.nmi(await resolved_vm(lab, name, rg, instance_id), user=user)
        return {"status": "sent"}

    @app.get("/v1/audit")
    def audit(lab: LabDep, user: str | None = None) -> list[dict[str, Any]]:
        return lab.consoles.audit.entries(user)

    @app.post("/v1/vms/{name}/{action}")
    async def vm_action(
        lab: LabDep, name: str, action: str, rg: ResourceGroup = None,
        instance_id: InstanceId = None, skip_shutdown: SkipShutdown = False,
    ) -> dict[str, Any]:  # fmt: skip
        operation = power_operation(action)
        view = await resolved_vm(lab, name, rg, instance_id)
        return vm_json(await lab.vms.perform(operation, view, skip_shutdown=skip_shutdown))

    @app.delete("/v1/vms/{name}", status_code=204)
    async def delete_vm(
        lab: LabDep, name: str, rg: ResourceGroup = None, instance_id: InstanceId = None
    ) -> Response:
        view = await resolved_vm(lab, name, rg, instance_id)
        if view.identity.scale_set is None:
            await lab.vms.delete(view)
        else:  # as in Azure, deleting an instance lowers the set's capacity
            model = lab.lookup.scale_set(view.identity.scale_set, view.identity.resource_group)
            await lab.scale_sets.delete_instances(model, [view.identity.instance_id or ""])
        return Response(status_code=204)

    _scale_set_routes(app)

    @app.post("/v1/up")
    async def up(lab: LabDep, body: LabFileBody) -> list[dict[str, Any]]:
        return reconcile_json(await lab.reconciler.up(lab.parse(body.text, body.source)))

    @app.post("/v1/down")
    async def down(lab: LabDep, body: LabFileBody) -> list[dict[str, Any]]:
        return reconcile_json(await lab.reconciler.down(lab.parse(body.text, body.source)))

    @app.get("/v1/vms/{name}/boot-log")
    def boot_log(
        lab: LabDep, name: str, rg: ResourceGroup = None, instance_id: InstanceId = None,
        start: int = 0, length: int | None = None,
    ) -> Response:  # fmt: skip
        view = lab.lookup.target(name, rg, instance_id)
        blob = lab.boot_diagnostics.serial_log(view, start, length)
        headers = {"X-Lab-Start": str(blob.start), "X-Lab-Next": str(blob.next),
                   "X-Lab-Size": str(blob.size)}  # fmt: skip
        return Response(blob.data, media_type="application/octet-stream", headers=headers)

    @app.get("/v1/vms/{name}/screenshot")
    async def screenshot(
        lab: LabDep, name: str, rg: ResourceGroup = None, instance_id: InstanceId = None
    ) -> Response:
        image = await lab.boot_diagnostics.screenshot(await resolved_vm(lab, name, rg, instance_id))
        png = io.BytesIO()
        image.save(png, format="PNG")
        return Response(png.getvalue(), media_type="image/png")

    @app.websocket("/v1/vms/{name}/console")
    async def console(
        ws: WebSocket,
        name: str,
        rg: ResourceGroup = None,
        instance_id: InstanceId = None,
        mode: SessionMode = SessionMode.INTERACTIVE,
        user: str = "local",
        replay: int | None = None,
    ) -> None:
        lab = lab_of(ws)
        try:
            refuse_every_origin(ws.headers.get("origin"), "The lab daemon's console websocket")
        except LabError as exc:
            await deny(ws, exc)
            return
        try:
            if replay is not None and replay < 0:
                raise InvalidInput("replay must be >= 0", target="replay")
            view = await resolved_vm(lab, name, rg, instance_id)
            broker, sub = lab.consoles.open_session(view, mode, user, replay)
        except LabError as exc:
            # Accept, then say why: a client sees the lab's message, not a bare 403.
            await ws.accept()
            await refuse(ws, exc)
            return
        idle = lab.settings.idle_timeout_minutes * 60
        await ws.accept()
        await serve_console(ws, lab.consoles, view, broker, sub, idle)


def _scale_set_routes(app: FastAPI) -> None:
    @app.get("/v1/vmss")
    def list_scale_sets(lab: LabDep, rg: ResourceGroup = None) -> list[dict[str, Any]]:
        return [scale_set_json(m, lab.scale_sets.instances(m))
                for m in lab.scale_sets.list(group=rg)]  # fmt: skip

    @app.get("/v1/vmss/{name}")
    def get_scale_set(lab: LabDep, name: str, rg: ResourceGroup = None) -> dict[str, Any]:
        return scale_set_reply(lab, lab.lookup.scale_set(name, rg))

    # Specific routes before the generic `{action}` one, which would swallow them.
    @app.post("/v1/vmss/{name}/scale")
    async def scale(
        lab: LabDep, name: str, body: CapacityBody, rg: ResourceGroup = None
    ) -> dict[str, Any]:
        model = lab.lookup.scale_set(name, rg)
        scaled = await lab.scale_sets.scale(model, check_capacity(body.capacity))
        return await scale_set_reply_now(lab, scaled)

    @app.post("/v1/vmss/{name}/update-instances")
    async def update_instances(
        lab: LabDep, name: str, body: InstanceIdsBody | None = None, rg: ResourceGroup = None
    ) -> dict[str, Any]:
        model = lab.lookup.scale_set(name, rg)
        await lab.scale_sets.upgrade(model, instance_ids(body))
        return await scale_set_reply_now(lab, model)

    @app.post("/v1/vmss/{name}/{action}")
    async def scale_set_action(
        lab: LabDep, name: str, action: str, body: InstanceIdsBody | None = None,
        rg: ResourceGroup = None, skip_shutdown: SkipShutdown = False,
    ) -> dict[str, Any]:  # fmt: skip
        operation = power_operation(action)
        model = lab.lookup.scale_set(name, rg)
        await lab.scale_sets.perform(model, operation, instance_ids(body),
                                     skip_shutdown=skip_shutdown)  # fmt: skip
        return await scale_set_reply_now(lab, model)
