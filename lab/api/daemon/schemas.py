"""Wire shapes of the daemon API (camelCase JSON)."""

from __future__ import annotations

from typing import Any

from lab.domain.vm import VmView
from lab.services.reconcile import ReconcileResult


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
        "image": model.image,
        "size": model.size_name,
        "vcpus": model.vcpus,
        "memoryMiB": model.memory_mib,
        "osType": model.os_type,
        "adminUsername": model.admin_username,
        "bootDiagnostics": {
            "enabled": model.boot_diagnostics.enabled,
            "storageUri": model.boot_diagnostics.storage_uri,
            "storageAccount": model.boot_diagnostics.storage_account,
        },
        "tags": model.tags,
    }


def reconcile_json(results: list[ReconcileResult]) -> list[dict[str, Any]]:
    return [{"action": r.action, "vm": vm_json(r.vm)} for r in results]
