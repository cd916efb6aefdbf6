"""The one error tree of the lab.

Every error the lab raises on purpose is a `LabError`: it carries an Azure error `code`, the
HTTP status the API answers with, an optional `target` (the field or resource it is about), and
wraps its cause. The API renders it once (`lab/api/errors.py`), as Azure's `{"error": {...}}`
body; the CLI prints the message and exits with `exit_code`.

As moto has one exception class per AWS error code, the lab has one class per Azure error code:
the code is the class's, never a string at the raise site. This module holds the base classes
and the codes the domain, the services, the stores and the CLI raise; the codes only the
Azure-compatible API speaks (ARM's authentication, Azure Storage's data plane, the portal) are
in `lab/api/azure/errors.py`. No other module defines a `LabError` (tests/unit/test_errors.py).
"""

from __future__ import annotations

import errno
from typing import ClassVar


class LabError(Exception):
    """Base of every deliberate lab error."""

    code: ClassVar[str] = "InternalError"
    status: ClassVar[int] = 500
    exit_code: ClassVar[int] = 1

    def __init__(self, message: str, *, target: str | None = None, code: str | None = None) -> None:
        # `code` is for an error relayed from elsewhere, whose code the lab did not choose (the
        # CLI's RemoteError carries the daemon's); the lab's own errors take their class's.
        super().__init__(message)
        self.message = message
        self.target = target
        if code is not None:
            self.code = code  # type: ignore[misc]

    def to_dict(self) -> dict[str, object]:
        return {"code": self.code, "message": self.message, "target": self.target, "details": []}


class InvalidInput(LabError):
    """A request or a file the lab cannot accept as written."""

    code = "InvalidParameter"
    status = 400
    exit_code = 2


class LabFileError(InvalidInput):
    """A lab definition (YAML) that is not valid; the message names file, line and field."""

    code = "InvalidLabDefinition"

    def __init__(self, message: str, *, source: str, line: int | None, field: str | None) -> None:
        where = f"{source}:{line}" if line is not None else source
        prefix = f"{where}: {field}: " if field else f"{where}: "
        super().__init__(prefix + message, target=field)
        self.source = source
        self.line = line
        self.field = field


class ScenarioFileError(LabFileError):
    """A scenario file (`scenarios/<name>/scenario.yaml`) that is not valid; located likewise."""

    code = "InvalidScenario"


class NotFound(LabError):
    code = "ResourceNotFound"
    status = 404
    exit_code = 3


class Conflict(LabError):
    """The resource is in a state that does not allow the operation (e.g. a power op in flight)."""

    code = "Conflict"
    status = 409
    exit_code = 4


class StateError(Conflict):
    """An operation asked for in the wrong power state (like qemu.qmp's StateError)."""

    code = "OperationNotAllowed"

    def __init__(
        self, operation: str, actual: str, allowed: tuple[str, ...], *, target: str
    ) -> None:
        super().__init__(
            f"Operation '{operation}' is not allowed on VM '{target}' while it is {actual}; "
            f"allowed when: {', '.join(allowed)}.",
            target=target,
        )
        self.operation = operation
        self.actual = actual
        self.allowed = allowed


class HypervisorError(LabError):
    """libvirt or QEMU failed; wraps the libvirt error."""

    code = "HypervisorError"
    status = 500


class HypervisorUnavailable(HypervisorError):
    code = "ServiceUnavailable"
    status = 503
    exit_code = 5


class ImageError(LabError):
    code = "ImageBuildFailed"
    status = 500


class CorruptState(LabError):
    """A file of lab state (JSON under `<data dir>`) that is cut short or not what the lab
    wrote; the message names the file, what is wrong with it and how to recover. The lab never
    silently starts over with empty state."""

    code = "CorruptState"
    status = 500
    exit_code = 6


class DaemonUnavailable(LabError):
    """The CLI could not reach the lab daemon."""

    code = "DaemonUnavailable"
    status = 503
    exit_code = 5


class DiskFull(LabError):
    """A write to the data dir failed for want of space: nothing half-written is kept (state
    files are replaced whole), so the request can simply be retried once there is room."""

    code = "InsufficientStorage"
    status = 507
    exit_code = 7


class LabFileUnreadable(LabError):
    """The CLI could not read the lab file it was given."""

    code = "InvalidLabFile"


class LocalFileError(LabError):
    """A file of this machine a CLI command itself could not read or write (a lab file, a
    certificate, the data dir): where and why, not a traceback."""

    code = "OSError"


# -- one class per Azure error code ---------------------------------------------------------------
# The request or file as written -----------------------------------------------------------------


class InvalidResourceName(InvalidInput):
    code = "InvalidResourceName"


class InvalidRange(InvalidInput):
    """A read that starts past the end of a blob or a serial log."""

    code = "InvalidRange"


class OperationNotSupported(InvalidInput):
    code = "OperationNotSupported"


class StorageAccountNotFound(InvalidInput):
    """The boot-diagnostics storage account a VM names does not exist (ARM answers 400, and so
    does the serial console's prerequisite check)."""

    code = "StorageAccountNotFound"


class RoleDefinitionDoesNotExist(InvalidInput):
    """A role name the lab does not know (in a lab file, `lab role assign`, an assignment PUT);
    the ARM read of an unknown role definition id is the API's 404 `RoleDefinitionNotFound`."""

    code = "RoleDefinitionDoesNotExist"


class RoleDefinitionLimitExceeded(InvalidInput):
    code = "RoleDefinitionLimitExceeded"


class InvalidActionOrNotAction(InvalidInput):
    code = "InvalidActionOrNotAction"


class InvalidRoleAssignmentScope(InvalidInput):
    code = "InvalidRoleAssignmentScope"


# Not there --------------------------------------------------------------------------------------


class BlobNotFound(NotFound):
    code = "BlobNotFound"


class PrincipalNotFound(NotFound):
    code = "PrincipalNotFound"


class RoleAssignmentNotFound(NotFound):
    code = "RoleAssignmentNotFound"


class CodeExpired(NotFound):
    """A device-code sign-in that is not (or no longer) waiting."""

    code = "CodeExpired"


class SessionGone(LabError):
    """A serial-console connection string that expired, was used, or is someone else's."""

    code = "SessionNotFound"
    status = 404


# Not in this state ------------------------------------------------------------------------------


class RoleAssignmentExists(Conflict):
    code = "RoleAssignmentExists"


class StorageAccountAlreadyTaken(Conflict):
    code = "StorageAccountAlreadyTaken"


class AllocationFailed(Conflict):
    """No host has room for the guest (Azure's code for exhausted capacity)."""

    code = "AllocationFailed"


class VmAgentNotReady(Conflict):
    """The guest agent does not answer (none installed, stopped, or the guest not up): what
    Azure says when a VM's agent has not reported, for an extension or a Run Command."""

    code = "VMAgentStatusCommunicationError"


class HostUnreachable(HypervisorUnavailable):
    """A host's libvirtd cannot be reached; the message names the host and its URI."""

    code = "HostUnreachable"


class PropertyChangeNotAllowed(Conflict):
    code = "PropertyChangeNotAllowed"


class BootDiagnosticsDisabled(Conflict):
    """Boot diagnostics data asked of a VM that has boot diagnostics off (ARM's 409); the serial
    console's prerequisite of the same code is `ConsoleNeedsBootDiagnostics` (a 400)."""

    code = "BootDiagnosticsDisabled"


class VmNotRunning(Conflict):
    code = "VmNotRunning"


class SerialPortDisabled(Conflict):
    code = "SerialPortDisabled"


# The serial console's prerequisites (lab/domain/serial_console.py checks them) ------------------


class ConsolePrerequisiteFailed(LabError):
    """The serial console cannot connect to this VM; the message says which rule failed."""

    code = "SerialConsolePrerequisiteFailed"
    status = 400


class ConsoleNeedsBootDiagnostics(ConsolePrerequisiteFailed):
    code = "BootDiagnosticsDisabled"


class InvalidStorageUri(ConsolePrerequisiteFailed):
    code = "InvalidStorageUri"


class ConsoleDisabled(LabError):
    code = "SerialConsoleDisabled"
    status = 403


class StorageForbidden(LabError):
    code = "StorageAccountForbidden"
    status = 403


class KeyBasedAuthenticationNotPermitted(StorageForbidden):
    """Shared Key use of an account with `allowSharedKeyAccess: false` (the serial console's
    prerequisite, and Azure Storage's answer to a Shared Key read)."""

    code = "KeyBasedAuthenticationNotPermitted"


#: The errnos that mean "no room to write".
_NO_SPACE = (errno.ENOSPC, errno.EDQUOT)


def as_lab_error(exc: BaseException) -> LabError | None:
    """The lab's error for an exception that reached a front end (an API handler, a background
    operation, the CLI): a `LabError` as it is, an OSError that means the disk is full as
    `DiskFull`, anything else None (the caller's own fallback: a 500, a failed operation)."""
    if isinstance(exc, LabError):
        return exc
    if not isinstance(exc, OSError) or exc.errno not in _NO_SPACE:
        return None
    where = f" writing {exc.filename}" if exc.filename else ""
    return DiskFull(
        f"No space left on the lab's disk{where} ({exc.strerror}). Nothing was changed; free "
        "some space in the lab's data dir (`df` shows it) and retry. Running VMs and their "
        "consoles keep working."
    )


class RemoteError(LabError):
    """An error the daemon answered with (rebuilt by the CLI's client from the body); it exits
    as the daemon's body says (its `exitCode`), or, from an older daemon, as its HTTP status
    suggests."""

    def __init__(self, status: int, code: str, message: str, target: str | None,
                 exit_code: int | None = None) -> None:  # fmt: skip
        super().__init__(message, target=target, code=code)
        self.status = status  # type: ignore[misc]
        by_status = {c.status: c.exit_code
                     for c in (InvalidInput, NotFound, Conflict, HypervisorUnavailable, DiskFull)}
        self.exit_code = (exit_code if exit_code is not None  # type: ignore[misc]
                          else by_status.get(status, LabError.exit_code))  # fmt: skip
