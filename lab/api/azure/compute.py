"""Microsoft.Compute/virtualMachines: wire shapes and read routes (GET, list, instanceView)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request, Response

from lab.api.azure.common import ApiVersion, Caller, arm_paths, lab_of, require_action
from lab.api.azure.operations import start_operation
from lab.api.security.tokens import Principal
from lab.domain.errors import NotFound
from lab.domain.power import PowerOperation, require_state
from lab.domain.vm import VmView

router = APIRouter()


def blob_uri(request: Request, account: str, container: str, blob: str) -> str:
    """Path-style blob URIs on the lab's own endpoint (as Azurite does for local storage)."""
    base = str(request.base_url).rstrip("/")
    return f"{base}/{account}/{container}/{blob}"


def custom_size(vcpus: int, memory_mib: int) -> str:
    """A lab VM with a custom size reports it in a size-like name (Azure has no such size)."""
    return f"Lab_{vcpus}vCPU_{memory_mib}MiB"


def instance_view(request: Request, view: VmView) -> dict[str, Any]:
    lab = lab_of(request)
    model = view.model
    result: dict[str, Any] = {
        "computerName": view.identity.name,
        "osName": model.os_type,
        "statuses": [
            {"code": "ProvisioningState/succeeded", "level": "Info",
             "displayStatus": "Provisioning succeeded"},
            {"code": f"PowerState/{view.power_state.value}", "level": "Info",
             "displayStatus": view.power_state.azure_display},
        ],
    }  # fmt: skip
    if model.boot_diagnostics.enabled:
        b = lab.ctx.boot_blobs(view.identity, model)
        result["bootDiagnostics"] = {
            "serialConsoleLogBlobUri": blob_uri(request, b.account, b.container, b.serial_log),
            "consoleScreenshotBlobUri": blob_uri(request, b.account, b.container, b.screenshot),
        }
    return result


def vm_resource(request: Request, view: VmView, *, expand: bool = False) -> dict[str, Any]:
    ident, model = view.identity, view.model
    properties: dict[str, Any] = {
        "vmId": ident.vm_id,
        "provisioningState": "Succeeded",
        "hardwareProfile": {
            "vmSize": model.size_name or custom_size(model.vcpus, model.memory_mib)
        },
        "storageProfile": {
            "imageReference": {"publisher": "SerialConsoleLab", "offer": model.image,
                               "sku": model.image, "version": "latest"},
            "osDisk": {"osType": model.os_type, "name": f"{ident.name}_OsDisk",
                       "createOption": "FromImage"},
        },
        "osProfile": {"computerName": ident.name, "adminUsername": model.admin_username,
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


def _find(request: Request, subscription: str, group: str, name: str) -> VmView:
    lab = lab_of(request)
    for view in lab.vms.list():
        ident = view.identity
        if (ident.subscription_id.lower(), ident.resource_group.lower(), ident.name.lower()) == (
            subscription.lower(), group.lower(), name.lower()
        ):  # fmt: skip
            return view
    raise NotFound(
        f"The Resource 'Microsoft.Compute/virtualMachines/{name}' under resource group "
        f"'{group}' was not found.",
        target=name,
    )


def _in_subscription(request: Request, subscription: str, group: str | None) -> list[VmView]:
    return [
        v for v in lab_of(request).vms.list()
        if v.identity.subscription_id.lower() == subscription.lower()
        and (group is None or v.identity.resource_group.lower() == group.lower())
    ]  # fmt: skip


@router.get("/subscriptions/{subscription}/providers/Microsoft.Compute/virtualMachines")
def list_all(request: Request, subscription: str, _v: ApiVersion, _c: Caller) -> dict[str, Any]:
    return {
        "value": [vm_resource(request, v) for v in _in_subscription(request, subscription, None)]
    }


for _path in arm_paths("/providers/Microsoft.Compute/virtualMachines"):

    @router.get(_path)
    def list_group(
        request: Request, subscription: str, group: str, _v: ApiVersion, _c: Caller
    ) -> dict[str, Any]:
        views = _in_subscription(request, subscription, group)
        return {"value": [vm_resource(request, v) for v in views]}

    @router.get(_path + "/{name}")
    def get_vm(
        request: Request, subscription: str, group: str, name: str, _v: ApiVersion, _c: Caller,
    ) -> dict[str, Any]:  # fmt: skip
        expand = request.query_params.get("$expand", "").lower() == "instanceview"
        return vm_resource(request, _find(request, subscription, group, name), expand=expand)

    @router.get(_path + "/{name}/instanceView")
    def get_instance_view(
        request: Request, subscription: str, group: str, name: str, _v: ApiVersion, _c: Caller,
    ) -> dict[str, Any]:  # fmt: skip
        return instance_view(request, _find(request, subscription, group, name))


#: ARM action name (also the RBAC action's name) -> power operation.
_ACTIONS = {
    "start": PowerOperation.START,
    "powerOff": PowerOperation.POWER_OFF,
    "restart": PowerOperation.RESTART,
    "deallocate": PowerOperation.DEALLOCATE,
    "reimage": PowerOperation.REIMAGE,
    # Azure moves the VM to another host; the lab's equivalent is a new QEMU process.
    "redeploy": PowerOperation.POWER_CYCLE,
}


def _start_action(request: Request, view: VmView, action: str, principal: Principal) -> Response:
    operation = _ACTIONS[action]
    require_action(
        principal, f"Microsoft.Compute/virtualMachines/{action}/action", view.identity.resource_id
    )
    # The state guard answers at once (409), as Azure does, rather than as a failed operation.
    require_state(operation, view.power_state, vm=view.identity.name)
    skip = request.query_params.get("skipShutdown", "false").lower() == "true"
    work = lab_of(request).vms.perform(operation, view, skip_shutdown=skip)
    return start_operation(request, view.model.location, work)


for _path in arm_paths("/providers/Microsoft.Compute/virtualMachines/{name}/{action}"):

    @router.post(_path)
    async def vm_action(  # async: the operation's task runs on the server's event loop
        request: Request, subscription: str, group: str, name: str, action: str,
        _v: ApiVersion, principal: Caller,
    ) -> Response:  # fmt: skip
        if action not in _ACTIONS:
            raise NotFound(
                f"No action '{action}' on virtualMachines; the lab serves: {', '.join(_ACTIONS)}.",
                target=action,
            )
        return _start_action(request, _find(request, subscription, group, name), action, principal)
