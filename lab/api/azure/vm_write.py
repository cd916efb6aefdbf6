"""Microsoft.Compute/virtualMachines PUT, PATCH and DELETE.

PUT creates a real VM from an image of the lab's catalogue (`imageReference.offer` or `.sku`
names it, as the lab's GET reports it), validated by the same rules as a lab file, and answers
201 with the long-running operation's headers. On an existing VM, PUT and PATCH change what
Azure lets change after create: tags and whether boot diagnostics is on. DELETE is a
long-running operation too; deleting a VM that does not exist answers 204, as ARM does.
"""

from __future__ import annotations

import asyncio
import re
from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, ValidationError

from lab.api.azure.arm_bodies import (
    arm_fields,
    arm_size,
    check_storage_account,
    guest_fields,
    obj,
    validated,
)
from lab.api.azure.common import ApiVersion, Caller, arm_paths, lab_of, require_action
from lab.api.azure.compute import find_vm, find_vm_now, vm_resource
from lab.api.azure.operations import start_operation
from lab.domain.definitions import boot_diagnostics_model, vm_model
from lab.domain.errors import InvalidInput, NotFound
from lab.domain.labfile import BootDiagnosticsDef, VirtualMachineDef
from lab.domain.resource_ids import VMS, vm_id
from lab.domain.vm import BootDiagnosticsModel, VmModel, VmView
from lab.services.lab import Lab

router = APIRouter()
_VMS = VMS
#: Where each lab-file field lives in an ARM VirtualMachine body (for error targets).
_ARM_FIELD = {"name": "name", "size": "properties.hardwareProfile.vmSize", "tags": "tags",
              **arm_fields("properties")}  # fmt: skip
#: Stands in for the password on an update, which Azure does not take again.
_KEPT_PASSWORD = "Kept-Passw0rd"


class VmBody(BaseModel):
    """The parts of an ARM VirtualMachine the lab uses; other fields are accepted and ignored."""

    model_config = ConfigDict(extra="allow")
    location: str | None = None
    tags: dict[str, str] | None = None
    properties: dict[str, Any] = {}


def lab_definition(name: str, body: VmBody, lab: Lab, password: str | None) -> VirtualMachineDef:
    """The lab-file form of an ARM body, validated by the lab file's rules."""
    props = body.properties
    data: dict[str, Any] = {
        "name": name,
        "size": arm_size(obj(props, "hardwareProfile", "properties").get("vmSize")),
        "tags": body.tags or {},
        **guest_fields(props, "properties"),
    }
    if password is not None:
        data["adminPassword"] = password
    return validated(VirtualMachineDef, data, lab, _ARM_FIELD)


def _location(body: VmBody, default: str | None) -> str:
    location = body.location or default
    if not location or not re.fullmatch(r"[a-z0-9]+", location):
        raise InvalidInput("location is required: an Azure region such as westeurope",
                           target="location")  # fmt: skip
    return location


for _path in arm_paths(f"/providers/{_VMS}/{{name}}"):

    @router.put(_path)
    async def put_vm(  # async: a create runs as a task on the server's event loop
        request: Request, subscription: str, group: str, name: str, body: VmBody,
        _v: ApiVersion, principal: Caller,
    ) -> Response:  # fmt: skip
        require_action(principal, f"{_VMS}/write", vm_id(subscription, group, name))
        lab = lab_of(request)
        current = await _existing(request, subscription, group, name)
        if current is not None:
            defn = lab_definition(name, body, lab, _KEPT_PASSWORD)
            model = vm_model(defn, _location(body, current.model.location))
            check_storage_account(lab, model)
            updated = await asyncio.to_thread(lab.vms.update, current, model)  # libvirt: a thread
            return JSONResponse(vm_resource(request, updated))
        defn = lab_definition(name, body, lab, None)
        model = vm_model(defn, _location(body, None))
        check_storage_account(lab, model)
        creating = _creating(subscription, group, name, body, model)
        create = lab.vms.create_from_definition(subscription, group, name, model,
                                                password=defn.admin_password)  # fmt: skip
        return start_operation(request, model.location, create, status=201, body=creating)

    @router.patch(_path)
    def patch_vm(
        request: Request, subscription: str, group: str, name: str, body: VmBody,
        _v: ApiVersion, principal: Caller,
    ) -> dict[str, Any]:  # fmt: skip
        require_action(principal, f"{_VMS}/write", vm_id(subscription, group, name))
        lab = lab_of(request)
        view = find_vm(request, subscription, group, name)
        model = view.model
        bd = obj(obj(body.properties, "diagnosticsProfile", "properties"), "bootDiagnostics",
                  "properties.diagnosticsProfile")  # fmt: skip
        if bd:
            enabled = bd.get("enabled", model.boot_diagnostics.enabled)
            if not isinstance(enabled, bool):
                raise InvalidInput(
                    "bootDiagnostics.enabled must be true or false",
                    target="properties.diagnosticsProfile.bootDiagnostics.enabled",
                )
            uri = bd.get("storageUri", model.boot_diagnostics.storage_uri)
            defn_bd = {"enabled": enabled, "storageUri": uri}
            model = model.model_copy(update={"boot_diagnostics": _boot_diagnostics(defn_bd)})
        if body.tags is not None:
            model = model.model_copy(update={"tags": body.tags})
        check_storage_account(lab, model)
        return vm_resource(request, lab.vms.update(view, model))

    @router.delete(_path)
    async def delete_vm(
        request: Request, subscription: str, group: str, name: str, _v: ApiVersion,
        principal: Caller,
    ) -> Response:  # fmt: skip
        require_action(principal, f"{_VMS}/delete", vm_id(subscription, group, name))
        view = await _existing(request, subscription, group, name)
        if view is None:
            return Response(status_code=204)
        return start_operation(request, view.model.location, lab_of(request).vms.delete(view))


async def _existing(request: Request, subscription: str, group: str, name: str) -> VmView | None:
    """The VM, or None where PUT creates and DELETE answers 204."""
    try:
        return await find_vm_now(request, subscription, group, name)
    except NotFound:
        return None


def _boot_diagnostics(raw: dict[str, Any]) -> BootDiagnosticsModel:
    """Validated as in a lab file (an http:// storageUri is refused there, with Azure's 400)."""
    try:
        return boot_diagnostics_model(BootDiagnosticsDef.model_validate(raw, by_alias=True))
    except ValidationError as exc:
        target = "properties.diagnosticsProfile.bootDiagnostics.storageUri"
        raise InvalidInput(exc.errors()[0]["msg"], target=target) from None


def _creating(subscription: str, group: str, name: str, body: VmBody,
              model: VmModel) -> dict[str, Any]:  # fmt: skip
    """The 201 body of a create: the request's resource, provisioning."""
    props = {k: v for k, v in body.properties.items() if k != "osProfile"}
    props["provisioningState"] = "Creating"
    return {"id": vm_id(subscription, group, name), "name": name, "type": _VMS,
            "location": model.location, "tags": model.tags, "properties": props}  # fmt: skip
