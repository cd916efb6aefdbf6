"""The one error tree of the lab.

Every error the lab raises on purpose is a `LabError`: it carries an Azure error `code`, the
HTTP status the API answers with, an optional `target` (the field or resource it is about), and
wraps its cause. The API renders it once, as Azure's `{"error": {...}}` body; the CLI prints the
message and exits with `exit_code`.
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


#: The errnos that mean "no room to write".
_NO_SPACE = (errno.ENOSPC, errno.EDQUOT)


def disk_full(exc: OSError) -> DiskFull | None:
    """The lab's error for an OSError that means the disk is full; None for any other."""
    if exc.errno not in _NO_SPACE:
        return None
    where = f" writing {exc.filename}" if exc.filename else ""
    return DiskFull(
        f"No space left on the lab's disk{where} ({exc.strerror}). Nothing was changed; free "
        "some space in the lab's data dir (`df` shows it) and retry. Running VMs and their "
        "consoles keep working."
    )
