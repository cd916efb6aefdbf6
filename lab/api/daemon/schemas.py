"""Wire shapes of the daemon API (camelCase JSON)."""

from __future__ import annotations

from typing import Any

from lab.domain.scale_set import ScaleSetModel
from lab.domain.vm import BootDiagnosticsModel, VmView
from lab.services.reconcile import ReconcileResult
from lab.services.scale_sets import ScaleSetService


def vm_json(view: VmView) -> dict[str, Any]:
    ident, model = view.identity, view.model
    return {
        "name": ident.name,
        "resourceGroup": ident.resource_group,
        "subscriptionId": ident.subscription_id,
        "vmId": ident.vm_id,
        "id": ident.resource_id,
        "domain": ident.domain_name,
        "powerState": view.power_state.value,
        "stopReason": view.stop_reason,
        "warning": _warning(view),
        # Set for a scale-set instance (its name is then `<scaleSet>_<instanceId>`).
        "scaleSet": ident.scale_set,
        "instanceId": ident.instance_id,
        "computerName": ident.host_name,
        "image": model.image,
        "size": model.size_name,
        "vcpus": model.vcpus,
        "memoryMiB": model.memory_mib,
        "osType": model.os_type,
        "adminUsername": model.admin_username,
        "bootDiagnostics": _boot_diagnostics_json(model.boot_diagnostics),
        "tags": model.tags,
        "host": view.host,
    }


def _warning(view: VmView) -> str | None:
    """What is wrong with a running guest (its kernel says it is hung), for `lab ls`."""
    return view.hang.message if view.hang is not None else None


def _boot_diagnostics_json(bd: BootDiagnosticsModel) -> dict[str, Any]:
    return {"enabled": bd.enabled, "storageUri": bd.storage_uri,
            "storageAccount": bd.storage_account}  # fmt: skip


def instance_json(model: ScaleSetModel, view: VmView) -> dict[str, Any]:
    ident = view.identity
    return {
        "instanceId": ident.instance_id,
        "name": ident.name,
        "computerName": ident.host_name,
        "powerState": view.power_state.value,
        "stopReason": view.stop_reason,
        "warning": _warning(view),
        "latestModelApplied": ScaleSetService.latest_model_applied(model, view),
        "modelVersion": view.model.model_version,
        "vmId": ident.vm_id,
        "id": ident.resource_id,
        "domain": ident.domain_name,
    }


def scale_set_json(model: ScaleSetModel, instances: list[VmView]) -> dict[str, Any]:
    profile = model.profile
    return {
        "name": model.name,
        "resourceGroup": model.resource_group,
        "subscriptionId": model.subscription_id,
        "id": model.resource_id,
        "uniqueId": model.unique_id,
        "location": model.location,
        "capacity": model.capacity,
        "upgradeMode": model.upgrade_mode.value,
        "modelVersion": model.model_version,
        "computerNamePrefix": model.computer_name_prefix,
        "image": profile.image,
        "size": profile.size_name,
        "vcpus": profile.vcpus,
        "memoryMiB": profile.memory_mib,
        "osType": profile.os_type,
        "adminUsername": profile.admin_username,
        "bootDiagnostics": _boot_diagnostics_json(profile.boot_diagnostics),
        "tags": model.tags,
        "instances": [instance_json(model, v) for v in instances],
    }


def reconcile_json(results: list[ReconcileResult]) -> list[dict[str, Any]]:
    return [{"action": r.action, "vm": vm_json(r.vm)} for r in results]
