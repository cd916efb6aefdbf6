"""Boot-diagnostics blob naming, exactly as Azure names them.

Container `bootdiagnostics-<first 9 characters of the VM name, lowercased>-<vmId>`, blobs
`<vmName>.<vmId>.serialconsole.log` and `<vmName>.<vmId>.screenshot.bmp`.
"""

from __future__ import annotations

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
    return f"bootdiagnostics-{vm_name[:9].lower()}-{vm_id}"


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
