"""Routes of the daemon API. Thin: parse, call a service, serialise."""

from __future__ import annotations

import io
import json
import os
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Query, Request, WebSocket
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel

from lab import __version__
from lab.api.console_ws import serve_console
from lab.api.daemon.schemas import reconcile_json, vm_json
from lab.console.broker import SessionMode
from lab.domain.errors import InvalidInput, LabError, NotFound
from lab.domain.power import PowerOperation
from lab.services.consoles import SysRqMethod
from lab.services.lab import Lab


class LabFileBody(BaseModel):
    source: str
    text: str


class SysRqBody(BaseModel):
    keys: str
    method: SysRqMethod = SysRqMethod.SENDKEY
    user: str = "local"


OnReady = Callable[[Lab], Awaitable[None]]


def create_app(lab: Lab, on_ready: OnReady | None = None) -> FastAPI:
    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        lab.vms.adopt_running()
        if on_ready is not None:
            await on_ready(lab)
        yield
        lab.consoles.close_all()

    app = FastAPI(title="Serial Console Lab daemon", version=__version__, lifespan=lifespan)
    app.state.lab = lab

    @app.exception_handler(LabError)
    async def lab_error(_request: Request, exc: LabError) -> JSONResponse:
        return JSONResponse({"error": exc.to_dict()}, status_code=exc.status)

    _routes(app)
    return app


def get_lab(request: Request) -> Lab:
    lab: Lab = request.app.state.lab
    return lab


LabDep = Annotated[Lab, Depends(get_lab)]
ResourceGroup = Annotated[str | None, Query(alias="resourceGroup")]

_ACTIONS = ("start", "powerOff", "restart", "reset", "powerCycle", "deallocate", "reimage")


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
    def list_vms(lab: LabDep) -> list[dict[str, Any]]:
        return [vm_json(v) for v in lab.vms.list()]

    @app.get("/v1/vms/{name}")
    def get_vm(lab: LabDep, name: str, rg: ResourceGroup = None) -> dict[str, Any]:
        return vm_json(lab.vms.find(name, rg))

    # Specific routes before the generic `{action}` one, which would swallow them.
    @app.post("/v1/vms/{name}/sysrq")
    async def sysrq(
        lab: LabDep, name: str, body: SysRqBody, rg: ResourceGroup = None
    ) -> dict[str, str]:
        view = lab.vms.find(name, rg)
        keys = await lab.consoles.sysrq(view, body.keys, method=body.method, user=body.user)
        return {"keys": keys, "method": body.method.value}

    @app.post("/v1/vms/{name}/nmi")
    async def nmi(
        lab: LabDep, name: str, rg: ResourceGroup = None, user: str = "local"
    ) -> dict[str, str]:
        await lab.consoles.nmi(lab.vms.find(name, rg), user=user)
        return {"status": "sent"}

    @app.get("/v1/audit")
    def audit(lab: LabDep) -> list[dict[str, Any]]:
        return lab.consoles.audit.entries()

    @app.post("/v1/vms/{name}/{action}")
    async def vm_action(
        lab: LabDep,
        name: str,
        action: str,
        rg: ResourceGroup = None,
        skip_shutdown: Annotated[bool, Query(alias="skipShutdown")] = False,
    ) -> dict[str, Any]:
        if action not in _ACTIONS:
            raise NotFound(f"unknown VM action '{action}'; one of: {', '.join(_ACTIONS)}")
        view = lab.vms.find(name, rg)
        operation = PowerOperation(action)  # the action names are PowerOperation values
        return vm_json(await lab.vms.perform(operation, view, skip_shutdown=skip_shutdown))

    @app.delete("/v1/vms/{name}", status_code=204)
    async def delete_vm(lab: LabDep, name: str, rg: ResourceGroup = None) -> Response:
        await lab.vms.delete(lab.vms.find(name, rg))
        return Response(status_code=204)

    @app.post("/v1/up")
    async def up(lab: LabDep, body: LabFileBody) -> list[dict[str, Any]]:
        return reconcile_json(await lab.reconciler.up(lab.parse(body.text, body.source)))

    @app.post("/v1/down")
    async def down(lab: LabDep, body: LabFileBody) -> list[dict[str, Any]]:
        return reconcile_json(await lab.reconciler.down(lab.parse(body.text, body.source)))

    @app.get("/v1/vms/{name}/boot-log")
    def boot_log(
        lab: LabDep,
        name: str,
        rg: ResourceGroup = None,
        start: int = 0,
        length: int | None = None,
    ) -> Response:
        blob = lab.boot_diagnostics.serial_log(lab.vms.find(name, rg), start, length)
        headers = {"X-Lab-Start": str(blob.start), "X-Lab-Next": str(blob.next),
                   "X-Lab-Size": str(blob.size)}  # fmt: skip
        return Response(blob.data, media_type="application/octet-stream", headers=headers)

    @app.get("/v1/vms/{name}/screenshot")
    async def screenshot(lab: LabDep, name: str, rg: ResourceGroup = None) -> Response:
        image = await lab.boot_diagnostics.screenshot(lab.vms.find(name, rg))
        png = io.BytesIO()
        image.save(png, format="PNG")
        return Response(png.getvalue(), media_type="image/png")

    @app.websocket("/v1/vms/{name}/console")
    async def console(
        ws: WebSocket,
        name: str,
        rg: ResourceGroup = None,
        mode: SessionMode = SessionMode.INTERACTIVE,
        user: str = "local",
        replay: int | None = None,
    ) -> None:
        lab: Lab = ws.app.state.lab
        try:
            if replay is not None and replay < 0:
                raise InvalidInput("replay must be >= 0", target="replay")
            view = lab.vms.find(name, rg)
            broker, sub = lab.consoles.open_session(view, mode, user, replay)
        except LabError as exc:
            # Accept, then say why: a client sees the lab's message, not a bare 403.
            await ws.accept()
            await ws.send_text(json.dumps({"type": "error", **exc.to_dict()}))
            await ws.close(code=4000 + exc.status, reason=exc.code)
            return
        idle = lab.settings.idle_timeout_minutes * 60
        await ws.accept()
        await serve_console(ws, lab.consoles, view, broker, sub, idle)
