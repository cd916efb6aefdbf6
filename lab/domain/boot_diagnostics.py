"""Boot-diagnostics blob naming, exactly as Azure names them.

Container `bootdiagnostics-<first 9 characters of the VM name, lowercased, without characters a
container name cannot hold>-<vmId>`, blobs
`<vmName>.<vmId>.serialconsole.log` and `<vmName>.<vmId>.screenshot.bmp`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

#: The storage account used when boot diagnostics is on with managed storage (storageUri null).
MANAGED_ACCOUNT = "labmanageddiag"


@dataclass(frozen=True)
class BootDiagnosticsBlobs:
    account: str
    container: str
    serial_log: str
    screenshot: str


def container_name(vm_name: str, vm_id: str) -> str:
    # Container names allow only lower-case letters, digits and single hyphens: a scale-set
    # instance's '_' (and a VM name's '.') are left out, as are doubled hyphens.
    short = re.sub(r"-{2,}", "-", re.sub(r"[^a-z0-9-]", "", vm_name.lower()[:9]))
    return f"bootdiagnostics-{short.strip('-') or 'vm'}-{vm_id}"


def blobs_for(account: str, vm_name: str, vm_id: str) -> BootDiagnosticsBlobs:
    return BootDiagnosticsBlobs(
        account=account,
        container=container_name(vm_name, vm_id),
        serial_log=f"{vm_name}.{vm_id}.serialconsole.log",
        screenshot=f"{vm_name}.{vm_id}.screenshot.bmp",
    )


def account_from_storage_uri(uri: str) -> str:
    """`https://acct.blob.core.windows.net/` -> `acct`."""
    host = uri.split("://", 1)[-1].split("/", 1)[0]
    return host.split(".", 1)[0].lower()
