"""Microsoft.Compute/virtualMachines: wire shapes, reads (GET, list, instanceView), power
actions as long-running operations, and retrieveBootDiagnosticsData (SAS-signed blob URIs)."""

from __future__ import annotations

import contextlib
import re
from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse

from lab.api.azure.arm_bodies import image_reference
from lab.api.azure.common import (
    ApiVersion,
    Caller,
    arm_paths,
    blob_uri,
    lab_of,
    require_action,
)
from lab.api.azure.operations import start_operation
from lab.api.security import sas
from lab.api.security.tokens import Principal
from lab.domain.boot_diagnostics import MANAGED_ACCOUNT
from lab.domain.errors import BootDiagnosticsDisabled, InvalidInput, LabError, NotFound
from lab.domain.guest_health import HangWarning
from lab.domain.power import (
    Operation,
    PowerState,
    Target,
    arm_actions,
    by_arm_action,
    require_state,
)
from lab.domain.resource_ids import VMS, placed, vm_id
from lab.domain.vm import VmView
from lab.domain.vm_agent import Extension, Status

router = APIRouter()


def custom_size(vcpus: int, memory_mib: int) -> str:
    """A lab VM with a custom size reports it in a size-like name (Azure has no such size)."""
    return f"Lab_{vcpus}vCPU_{memory_mib}MiB"


def instance_view(request: Request, view: VmView) -> dict[str, Any]:
    lab = lab_of(request)
    model = view.model
    result: dict[str, Any] = {
        "computerName": view.identity.host_name,
        "osName": model.os_type,
        "hyperVGeneration": model.hyper_v_generation,
        "statuses": [
            {"code": "ProvisioningState/succeeded", "level": "Info",
             "displayStatus": "Provisioning succeeded"},
            {"code": f"PowerState/{view.power_state.value}", "level": "Info",
             "displayStatus": view.power_state.azure_display},
        ],
    }  # fmt: skip
    if view.stop_reason:
        # Why a VM stopped that nobody stopped (a crash, a killed QEMU): the status's message,
        # which Azure's InstanceViewStatus has for this kind of detail.
        running = view.power_state is PowerState.RUNNING
        result["statuses"][1]["message"] = (
            f"The VM is {view.stop_reason}." if running else f"The VM stopped: {view.stop_reason}."
        )
    if view.hang is not None:
        result["vmHealth"] = vm_health(view.hang)
    extensions = lab.vm_agent.extensions(view)
    if extensions:
        result["extensions"] = [extension_instance_view(e) for e in extensions]
    # Where the guest runs: the lab's host name (Azure has no field for a shared host's name).
    result["hostId"] = view.host
    if view.identity.scale_set is not None and view.identity.instance_id is not None:
        with contextlib.suppress(LabError):
            scale_set = lab.lookup.scale_set(view.identity.scale_set, view.identity.resource_group)
            count = lab.scale_sets.fault_domain_count(scale_set)
            result["platformFaultDomain"] = int(view.identity.instance_id) % count
    if model.boot_diagnostics.enabled and is_managed(model.boot_diagnostics.storage_account):
        # As Azure: managed storage's blobs are reached through retrieveBootDiagnosticsData's
        # SAS URIs only; the instance view names none (the Azure CLI relies on that).
        result["bootDiagnostics"] = {}
    elif model.boot_diagnostics.enabled:
        b = lab.ctx.boot_blobs(view.identity, model)
        result["bootDiagnostics"] = {
            "serialConsoleLogBlobUri": blob_uri(request, b.account, b.container, b.serial_log),
            "consoleScreenshotBlobUri": blob_uri(request, b.account, b.container, b.screenshot),
        }
    return result


def status_dict(status: Status) -> dict[str, str]:
    """An `InstanceViewStatus`."""
    return {"code": status.code, "level": status.level, "displayStatus": status.display_status,
            "message": status.message}  # fmt: skip


def extension_instance_view(ext: Extension) -> dict[str, Any]:
    """An extension in an instance view (the VM's `extensions[]`, or the extension's own)."""
    return {"name": ext.name, "type": f"{ext.publisher}.{ext.type}",
            "typeHandlerVersion": ext.type_handler_version,
            "statuses": [status_dict(ext.status)] if ext.status else []}  # fmt: skip


def is_managed(account: str | None) -> bool:
    return account is None or account == MANAGED_ACCOUNT


def vm_health(hang: HangWarning) -> dict[str, Any]:
    """A guest whose kernel says it is hung, in the instance view's `vmHealth` (what Azure
    fills from a health probe): unhealthy, with the console line that said so."""
    since = datetime.fromtimestamp(hang.since, UTC).isoformat().replace("+00:00", "Z")
    return {"status": {"code": "HealthState/unhealthy", "level": "Warning",
                       "displayStatus": "The guest is hung", "message": hang.message,
                       "time": since}}  # fmt: skip


def vm_resource(request: Request, view: VmView, *, expand: bool = False) -> dict[str, Any]:
    ident, model = view.identity, view.model
    properties: dict[str, Any] = {
        "vmId": ident.vm_id,
        "provisioningState": "Succeeded",
        "hardwareProfile": {
            "vmSize": model.size_name or custom_size(model.vcpus, model.memory_mib)
        },
        "storageProfile": {
            "imageReference": image_reference(model.image, model.hyper_v_generation),
            "osDisk": {"osType": model.os_type, "name": f"{ident.name}_OsDisk",
                       "createOption": "FromImage"},
        },
        "osProfile": {"computerName": ident.host_name, "adminUsername": model.admin_username,
                      "linuxConfiguration": {"disablePasswordAuthentication": False}},
        "diagnosticsProfile": {"bootDiagnostics": {
            "enabled": model.boot_diagnostics.enabled,
            "storageUri": model.boot_diagnostics.storage_uri,
        }},
    }  # fmt: skip
    if expand:
        properties["instanceView"] = instance_view(request, view)
    return {
        "id": ident.resource_id,
        "name": ident.name,
        "type": "Microsoft.Compute/virtualMachines",
        "location": model.location,
        "tags": model.tags,
        "properties": properties,
    }


_READ = f"{VMS}/read"


def wants_instance_view(request: Request) -> bool:
    """`$expand=instanceView` (any case), on a VM's or an instance's GET or list."""
    return request.query_params.get("$expand", "").lower() == "instanceview"


def lists_status(request: Request) -> bool:
    """`statusOnly=true` on a VM list: each VM with its instance view (power state), as ARM
    answers it; the portal's resource list polls this rather than one GET per VM."""
    return request.query_params.get("statusOnly", "").lower() == "true"


def find_vm(request: Request, subscription: str, group: str, name: str) -> VmView:
    """The VM, for a sync route (in the thread pool)."""
    return lab_of(request).lookup.vm_at(subscription, group, name)


async def find_vm_now(request: Request, subscription: str, group: str, name: str) -> VmView:
    """The VM, for an async route (see `VmService.machines_now`)."""
    return await lab_of(request).lookup.vm_at_now(subscription, group, name)


async def readable_vm(
    request: Request, principal: Principal, subscription: str, group: str, name: str,
    action: str = _READ,
) -> VmView:  # fmt: skip
    """The VM, once the caller may perform `action` (a read by default) on it. Authorization
    comes first, as in ARM: a caller without access learns nothing, not even whether it exists."""
    require_action(principal, action, vm_id(subscription, group, name))
    return await find_vm_now(request, subscription, group, name)


#: The one `$filter` a VM list takes (`az vm list --vmss`): `'virtualMachineScaleSet/id' eq
#: '<id>'`, quoted or not.
_SCALE_SET_FILTER = re.compile(r"^\s*'?virtualMachineScaleSet/id'?\s+eq\s+'([^']*)'\s*$", re.I)


def _scale_set_filter(request: Request) -> str | None:
    """The scale-set id a VM list is narrowed to, or None; another `$filter` is refused."""
    raw = request.query_params.get("$filter")
    if raw is None or not raw.strip():
        return None
    m = _SCALE_SET_FILTER.match(raw)
    if m is None:
        raise InvalidInput(f"The $filter '{raw}' is not supported on a VM list; the lab takes "
                           "'virtualMachineScaleSet/id' eq '<scale set id>'.",
                           target="$filter")  # fmt: skip
    return m.group(1)


async def _visible(
    request: Request, principal: Principal, subscription: str, group: str | None
) -> list[VmView]:
    """The VMs of a subscription (or group) the caller may read: lists leave the others out,
    as ARM does. A scale-set `$filter` keeps the VMs of that set: the lab's sets are Uniform,
    whose instances are listed under the set, so it keeps none, as Azure does for them."""
    scale_set = _scale_set_filter(request)
    return [
        v for v in await lab_of(request).vms.list_now()
        if placed(v.identity.subscription_id, v.identity.resource_group,
                  in_subscription=subscription, in_group=group)
        and principal.may(_READ, v.identity.resource_id)
        and scale_set is None  # no listed VM belongs to a (Uniform) set
    ]  # fmt: skip


# The read routes are async and answer pre-encoded JSON: a sync route's hop through the thread
# pool cost a third of the server's time under 50 concurrent clients (bench/api.py: 1,000 ->
# 1,500 requests/s). Their one libvirt call (every domain's state, metadata cached by the
# driver) runs in a thread shared by the requests that arrive meanwhile (`VmService.list_now`):
# sub-millisecond while libvirtd is idle, it took up to 2 s while libvirtd started other
# domains, and on the event loop that froze every request and console.
@router.get("/subscriptions/{subscription}/providers/Microsoft.Compute/virtualMachines")
async def list_all(
    request: Request, subscription: str, _v: ApiVersion, principal: Caller
) -> JSONResponse:
    views = await _visible(request, principal, subscription, None)
    expand = lists_status(request)
    return JSONResponse({"value": [vm_resource(request, v, expand=expand) for v in views]})


for _path in arm_paths("/providers/Microsoft.Compute/virtualMachines"):

    @router.get(_path)
    async def list_group(
        request: Request, subscription: str, group: str, _v: ApiVersion, principal: Caller
    ) -> JSONResponse:
        views = await _visible(request, principal, subscription, group)
        expand = lists_status(request)
        return JSONResponse({"value": [vm_resource(request, v, expand=expand) for v in views]})

    @router.get(_path + "/{name}")
    async def get_vm(
        request: Request, subscription: str, group: str, name: str, _v: ApiVersion,
        principal: Caller,
    ) -> JSONResponse:  # fmt: skip
        expand = wants_instance_view(request)
        view = await readable_vm(request, principal, subscription, group, name)
        return JSONResponse(vm_resource(request, view, expand=expand))

    @router.get(_path + "/{name}/instanceView")
    async def get_instance_view(
        request: Request, subscription: str, group: str, name: str, _v: ApiVersion,
        principal: Caller,
    ) -> JSONResponse:  # fmt: skip
        action = f"{VMS}/instanceView/read"
        view = await readable_vm(request, principal, subscription, group, name, action)
        return JSONResponse(instance_view(request, view))

    @router.post(_path + "/{name}/retrieveBootDiagnosticsData")
    async def retrieve_boot_diagnostics_data(
        request: Request, subscription: str, group: str, name: str, _v: ApiVersion,
        principal: Caller,
    ) -> dict[str, Any]:  # fmt: skip
        action = f"{VMS}/retrieveBootDiagnosticsData/action"
        view = await readable_vm(request, principal, subscription, group, name, action)
        return boot_diagnostics_data(request, view)


def _sas_minutes(request: Request) -> int:
    raw = request.query_params.get("sasUriExpirationTimeInMinutes", "120")
    try:
        minutes = int(raw)
    except ValueError:
        minutes = 0
    if not 1 <= minutes <= 1440:
        raise InvalidInput(
            f"sasUriExpirationTimeInMinutes is {raw!r}; it must be a whole number of minutes "
            "from 1 to 1440 (default 120).",
            target="sasUriExpirationTimeInMinutes",
        )
    return minutes


def boot_diagnostics_data(request: Request, view: VmView) -> dict[str, Any]:
    """The blob URIs of the serial log and screenshot, each with a read SAS."""
    minutes = _sas_minutes(request)
    if not view.model.boot_diagnostics.enabled:
        raise BootDiagnosticsDisabled(
            f"Boot diagnostics is not enabled for virtual machine '{view.identity.name}'.",
            target=view.identity.name,
        )
    b = lab_of(request).ctx.boot_blobs(view.identity, view.model)
    secret: bytes = request.app.state.storage_secret

    def signed(blob: str) -> str:
        query = sas.sign(secret, b.account, b.container, blob, minutes=minutes)
        return f"{blob_uri(request, b.account, b.container, blob)}?{query}"

    return {
        "consoleScreenshotBlobUri": signed(b.screenshot),
        "serialConsoleLogBlobUri": signed(b.serial_log),
    }


def arm_operation(action: str, target: Target) -> Operation:
    """The power operation of an ARM action named in any case, or a 404 naming the actions
    the lab serves on `target`."""
    found = by_arm_action(action, target)
    if found is None:
        on = "virtualMachines" if target is Target.VM else "a scale-set instance"
        raise NotFound(f"No action '{action}' on {on}; the lab serves: "
                       f"{', '.join(arm_actions(target))}.", target=action)  # fmt: skip
    return found


def start_power_action(request: Request, view: VmView, operation: Operation) -> Response:
    """A power action on a VM or an instance, as a long-running operation."""
    # The state guard answers at once (409), as Azure does, rather than as a failed operation.
    require_state(operation.op, view.power_state, vm=view.identity.name)
    skip = request.query_params.get("skipShutdown", "false").lower() == "true"
    work = lab_of(request).vms.perform(operation.op, view, skip_shutdown=skip)
    return start_operation(request, view.model.location, work)


for _path in arm_paths("/providers/Microsoft.Compute/virtualMachines/{name}/{action}"):

    @router.post(_path)
    async def vm_action(  # async: the operation's task runs on the server's event loop
        request: Request, subscription: str, group: str, name: str, action: str,
        _v: ApiVersion, principal: Caller,
    ) -> Response:  # fmt: skip
        operation = arm_operation(action, Target.VM)
        rbac = operation.rbac_action(VMS)
        view = await readable_vm(request, principal, subscription, group, name, rbac)
        return start_power_action(request, view, operation)
