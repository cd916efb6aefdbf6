"""The hypervisor interface the services use; the libvirt driver and the fake implement it."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Protocol

from lab.domain.hosts import LOCAL, HostSize
from lab.domain.vm import VmIdentity, VmModel


class DomainState(StrEnum):
    RUNNING = "running"
    PAUSED = "paused"
    SHUTOFF = "shutoff"
    CRASHED = "crashed"
    OTHER = "other"


@dataclass(frozen=True)
class DomainInfo:
    name: str
    identity: VmIdentity
    model: VmModel
    deallocated: bool
    state: DomainState
    #: libvirt's reason for the state, in words ("destroyed", "crashed", "shutdown", ...).
    reason: str
    #: The host that holds the domain (`HostRouter` sets it).
    host: str = LOCAL
    #: Why the host cannot be reached now ("" when it can): state and reason are then the last
    #: ones seen.
    unreachable: str = ""


#: The reason of a domain QEMU paused because a write to one of its disks failed: with the
#: disks in the data dir, that is a full data dir (QEMU's default for ENOSPC: stop the guest
#: rather than fail its write). The lab resumes it once there is space (`ConsoleKeeper`).
PAUSED_ON_IO_ERROR = (
    "paused by QEMU: a write to its disk failed (is the data dir's disk full?); it resumes "
    "when there is space"
)


class ConsoleStream(Protocol):
    """A VM's serial chardev opened through the hypervisor."""

    def write(self, data: bytes) -> None: ...

    def close(self) -> None: ...


LifecycleCallback = Callable[[str, DomainState, str], None]


class Hypervisor(Protocol):
    def accel(self) -> str: ...

    def size(self) -> HostSize:
        """The host's cores and memory."""
        ...

    def set_accel(self, domain_type: str) -> None:
        """Use `kvm` or `qemu` (TCG) for the domains defined from now on."""
        ...

    def list_domains(self, lab_id: str) -> list[DomainInfo]: ...

    def domain(self, name: str) -> DomainInfo: ...

    def define(self, xml: str) -> None: ...

    def undefine(self, name: str) -> None: ...

    def set_metadata(self, name: str, element: str) -> None: ...

    def start(self, name: str, *, paused: bool) -> None: ...

    def resume(self, name: str) -> None: ...

    def shutdown(self, name: str) -> None: ...

    def destroy(self, name: str) -> None: ...

    def reset(self, name: str) -> None: ...

    def reboot(self, name: str) -> None: ...

    def open_console(
        self, name: str, on_data: Callable[[bytes], None], on_close: Callable[[], None]
    ) -> ConsoleStream: ...

    def screenshot(self, name: str) -> bytes: ...

    def send_keys(self, name: str, keycodes: list[int], hold_ms: int = 100) -> None: ...

    def send_break(self, name: str) -> None: ...

    def inject_nmi(self, name: str) -> None: ...

    def agent_command(self, name: str, command: dict[str, Any], timeout_s: int) -> Any:
        """Send one QEMU guest agent command (`{"execute": ..., "arguments": ...}`) and return
        its `return` value; `VmAgentNotReady` when no agent answers."""
        ...

    def set_user_password(self, name: str, user: str, password: str) -> None:
        """Set an existing guest user's password through the guest agent (libvirt's
        `virDomainSetUserPassword`); `VmAgentNotReady` when no agent answers."""
        ...

    def on_lifecycle(self, callback: LifecycleCallback) -> None: ...
