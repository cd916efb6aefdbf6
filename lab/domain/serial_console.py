"""Serial console rules: serial ports of a VM and the prerequisites of a connection.

The prerequisites are the ones Azure documents, checked in the order the service checks them,
each failing with the message users of the cloud service see.
"""

from __future__ import annotations

from enum import StrEnum

from pydantic import BaseModel, ConfigDict

from lab.domain.errors import (
    ConsoleDisabled,
    ConsoleNeedsBootDiagnostics,
    InvalidInput,
    InvalidStorageUri,
    KeyBasedAuthenticationNotPermitted,
    SerialPortDisabled,
    StorageAccountNotFound,
    StorageForbidden,
    VmNotRunning,
)
from lab.domain.power import PowerState
from lab.domain.storage_account import StorageAccount
from lab.domain.vm import VmView

#: The serial ports a VM has: COM1/ttyS0 is port "0" (Azure connects to it).
PORTS = ("0",)


class PortState(StrEnum):
    ENABLED = "enabled"
    DISABLED = "disabled"


class SerialPort(BaseModel):
    model_config = ConfigDict(frozen=True)

    #: The parent resource's id (a VM, or a scale-set instance).
    parent_id: str
    name: str
    state: PortState = PortState.ENABLED


def check_port_name(port: str) -> None:
    if port not in PORTS:
        raise InvalidInput(
            f"Serial port '{port}' does not exist; a VM has serial port 0 (COM1, ttyS0).",
            target="serialPort",
        )


def check_connect(
    view: VmView,
    *,
    console_disabled: bool,
    account: StorageAccount | None,
    port: SerialPort | None,
) -> None:
    """Raise the first documented prerequisite the connection fails, or return."""
    name = view.identity.name
    if console_disabled:
        raise ConsoleDisabled(
            "Azure Serial Console is not enabled for this subscription. Enable it with "
            "'az serial-console enable' (POST .../consoleServices/default/enableConsole).",
            target=view.identity.subscription_id,
        )
    bd = view.model.boot_diagnostics
    if not bd.enabled:
        raise ConsoleNeedsBootDiagnostics(
            f"Azure Serial Console requires boot diagnostics to be enabled on '{name}'. Enable "
            "boot diagnostics (diagnosticsProfile.bootDiagnostics.enabled) and try again.",
            target=name,
        )
    if bd.storage_uri is not None and bd.storage_uri.lower().startswith("http://"):
        raise InvalidStorageUri(
            f"The boot diagnostics storage URI of '{name}' ({bd.storage_uri}) uses http; "
            "Azure Serial Console requires an https:// storage URI.",
            target="storageUri",
        )
    if view.power_state is not PowerState.RUNNING:
        raise VmNotRunning(
            f"Azure Serial Console requires a virtual machine to be running; '{name}' is "
            f"{view.power_state.value}. Start the virtual machine and try again.",
            target=name,
        )
    if account is None:
        raise StorageAccountNotFound(
            f"The storage account '{bd.storage_account}' used for boot diagnostics on '{name}' "
            "could not be found. Verify that boot diagnostics is enabled for this VM and that "
            "the storage account exists.",
            target=bd.storage_account,
        )
    if account.firewall_on:
        raise StorageForbidden(
            f'A "Forbidden" response was encountered when accessing this VM\'s boot diagnostic '
            f"storage account '{account.name}': its firewall denies access "
            "(networkRuleSet.defaultAction is Deny). Allow access, or use managed storage.",
            target=account.name,
        )
    if not account.allow_shared_key_access:
        raise KeyBasedAuthenticationNotPermitted(
            f"Azure Serial Console cannot use the boot diagnostics storage account "
            f"'{account.name}': 'Allow storage account key access' is disabled "
            "(allowSharedKeyAccess is false). Enable it, or use managed storage.",
            target=account.name,
        )
    if port is not None and port.state is PortState.DISABLED:
        raise SerialPortDisabled(
            f"Serial port '{port.name}' of '{name}' is disabled; enable it "
            '(PUT .../serialPorts/0 with {"properties": {"state": "enabled"}}).',
            target=port.name,
        )
