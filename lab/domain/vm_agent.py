"""What Azure's VM agent does for a Linux VM, as the lab serves it through QEMU's guest agent:
the VM access extension's password reset, and Run Command's `RunShellScript`. Pure: parsing
what a client sends, and the results in Azure's shapes.

What `az vm user update -u U -p P` sends is a PUT of the extension `VMAccessForLinux`
(publisher `Microsoft.OSTCExtensions`) with protected settings `{username, password}`; what
`az vm run-command invoke --command-id RunShellScript --scripts ...` sends is a POST of
`{commandId, script: [lines], parameters: [{name, value}]}`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Final

from lab.domain import names
from lab.domain.errors import InvalidInput

VMACCESS_PUBLISHER: Final = "Microsoft.OSTCExtensions"
VMACCESS_TYPE: Final = "VMAccessForLinux"
#: The VM access extension's settings the lab carries out; Azure's others (ssh_key, reset_ssh,
#: remove_user, expiration, check_disk, repair_disk) are refused by name, not ignored.
VMACCESS_SUPPORTED: Final = ("username", "password")
RUN_SHELL_SCRIPT: Final = "RunShellScript"
#: A parameter becomes an environment variable of the script, as on Azure's Linux agent.
_PARAMETER_NAME: Final = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}")


@dataclass(frozen=True)
class Status:
    """An `InstanceViewStatus`."""

    code: str
    display_status: str
    message: str
    level: str = "Info"

    def to_dict(self) -> dict[str, str]:
        return {"code": self.code, "level": self.level, "displayStatus": self.display_status,
                "message": self.message}  # fmt: skip


@dataclass(frozen=True)
class Extension:
    """A VM extension as the lab keeps it: never its protected settings."""

    name: str
    publisher: str
    type: str
    type_handler_version: str
    auto_upgrade_minor_version: bool = True
    settings: dict[str, Any] = field(default_factory=dict)
    provisioning_state: str = "Creating"
    status: Status | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name, "publisher": self.publisher, "type": self.type,
            "typeHandlerVersion": self.type_handler_version,
            "autoUpgradeMinorVersion": self.auto_upgrade_minor_version,
            "settings": self.settings, "provisioningState": self.provisioning_state,
            "status": self.status.to_dict() if self.status else None,
        }  # fmt: skip

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Extension:
        status = data.get("status")
        return cls(
            name=data["name"], publisher=data["publisher"], type=data["type"],
            type_handler_version=data["typeHandlerVersion"],
            auto_upgrade_minor_version=bool(data.get("autoUpgradeMinorVersion", True)),
            settings=dict(data.get("settings") or {}),
            provisioning_state=data.get("provisioningState", "Succeeded"),
            status=Status(status["code"], status["displayStatus"], status["message"],
                          status.get("level", "Info")) if status else None,
        )  # fmt: skip


def succeeded(message: str) -> Status:
    return Status("ProvisioningState/succeeded", "Provisioning succeeded", message)


def failed(message: str) -> Status:
    return Status("ProvisioningState/failed", "Provisioning failed", message, level="Error")


@dataclass(frozen=True)
class PasswordReset:
    username: str
    password: str = field(repr=False)


def vmaccess_request(publisher: str, type_: str, protected: Any) -> PasswordReset:
    """The password reset a VM access extension PUT asks for, or a clear refusal."""
    if (publisher.casefold(), type_.casefold()) != (VMACCESS_PUBLISHER.casefold(),
                                                   VMACCESS_TYPE.casefold()):  # fmt: skip
        raise InvalidInput(
            f"The lab runs one extension: publisher '{VMACCESS_PUBLISHER}', type "
            f"'{VMACCESS_TYPE}' (the VM access extension's password reset); not '{publisher}' "
            f"'{type_}'.", target="properties.type")  # fmt: skip
    if not isinstance(protected, dict):
        raise InvalidInput("properties.protectedSettings must be an object with 'username' and "
                           "'password'.", target="properties.protectedSettings")  # fmt: skip
    other = sorted(k for k in protected if k not in VMACCESS_SUPPORTED)
    if other:
        raise InvalidInput(
            f"The lab's VM access extension resets a password only; it does not do "
            f"{', '.join(repr(k) for k in other)}.", target="properties.protectedSettings")
    user, password = protected.get("username"), protected.get("password")
    if not isinstance(user, str) or not isinstance(password, str) or not password:
        raise InvalidInput("properties.protectedSettings needs 'username' and 'password' "
                           "(strings).", target="properties.protectedSettings")  # fmt: skip
    names.validate_admin_username(user, target="protectedSettings.username")
    names.validate_admin_password(password, target="protectedSettings.password")
    return PasswordReset(user, password)


@dataclass(frozen=True)
class ShellScript:
    script: str
    env: dict[str, str]


def run_command_request(body: Any) -> ShellScript:
    """The script a Run Command POST asks for, or a clear refusal."""
    if not isinstance(body, dict):
        raise InvalidInput("The body must be a JSON object: {commandId, script, parameters}.")
    command = body.get("commandId")
    if not isinstance(command, str) or command.casefold() != RUN_SHELL_SCRIPT.casefold():
        raise InvalidInput(f"commandId '{command}' is not one the lab runs: it runs "
                           f"'{RUN_SHELL_SCRIPT}' (a Linux VM's).", target="commandId")  # fmt: skip
    script = body.get("script") or []
    if not isinstance(script, list) or not all(isinstance(line, str) for line in script):
        raise InvalidInput("script must be a list of lines (strings).", target="script")
    env: dict[str, str] = {}
    for n, p in enumerate(body.get("parameters") or []):
        name = p.get("name") if isinstance(p, dict) else None
        if not isinstance(name, str) or not _PARAMETER_NAME.fullmatch(name):
            raise InvalidInput(f"parameters[{n}].name must be a shell variable name.",
                               target=f"parameters[{n}].name")  # fmt: skip
        env[name] = str(p.get("value", ""))
    return ShellScript("\n".join(script) + "\n", env)


def run_command_outcome(exit_code: int, stdout: str, stderr: str) -> Status:
    """A Run Command's outcome as Azure's Linux agent words it: the output in one status
    message, `[stdout]` then `[stderr]`; a script that exits non-zero is a failed provisioning
    that says its exit status."""
    output = f"\n[stdout]\n{stdout}\n[stderr]\n{stderr}"
    if exit_code == 0:
        return succeeded(f"Enable succeeded: {output}")
    return failed("Enable failed: failed to execute command: command terminated with "
                  f"exit status={exit_code}{output}")  # fmt: skip
