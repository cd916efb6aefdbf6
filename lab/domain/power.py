"""The VM power-state machine, with Azure's states and a guard for each operation.

Azure reports `PowerState/<state>`; transitional states (`starting`, `stopping`,
`deallocating`) exist while an operation runs. An operation asked for in a state that does not
allow it raises `StateError` (like qemu.qmp's `StateError(required, actual)`); any operation
while another is in flight is a 409 conflict, so two power operations never interleave.
"""

from __future__ import annotations

from enum import StrEnum

from lab.domain.errors import Conflict, StateError


class PowerState(StrEnum):
    STARTING = "starting"
    RUNNING = "running"
    STOPPING = "stopping"
    STOPPED = "stopped"
    DEALLOCATING = "deallocating"
    DEALLOCATED = "deallocated"

    @property
    def is_transitional(self) -> bool:
        return self in TRANSITIONAL

    @property
    def azure_display(self) -> str:
        """The `displayStatus` Azure shows, e.g. "VM running"."""
        return f"VM {self.value}"


TRANSITIONAL = frozenset({PowerState.STARTING, PowerState.STOPPING, PowerState.DEALLOCATING})

_AT_REST_ON = (PowerState.RUNNING,)
_AT_REST = (PowerState.RUNNING, PowerState.STOPPED, PowerState.DEALLOCATED)


class PowerOperation(StrEnum):
    START = "start"
    POWER_OFF = "powerOff"
    RESTART = "restart"
    RESET = "reset"
    POWER_CYCLE = "powerCycle"
    DEALLOCATE = "deallocate"
    REIMAGE = "reimage"
    REDEPLOY = "redeploy"
    DELETE = "delete"


#: Which at-rest states each operation accepts. `start` on a running VM and `powerOff` on a
#: stopped one are no-ops in Azure, so they are allowed (and do nothing).
ALLOWED: dict[PowerOperation, tuple[PowerState, ...]] = {
    PowerOperation.START: _AT_REST,
    PowerOperation.POWER_OFF: _AT_REST,
    PowerOperation.RESTART: _AT_REST_ON,
    PowerOperation.RESET: _AT_REST_ON,
    PowerOperation.POWER_CYCLE: _AT_REST_ON,
    PowerOperation.DEALLOCATE: _AT_REST,
    PowerOperation.REIMAGE: _AT_REST,
    PowerOperation.REDEPLOY: _AT_REST,
    PowerOperation.DELETE: _AT_REST,
}

#: The transitional state a VM shows while the operation runs.
TRANSITION: dict[PowerOperation, PowerState] = {
    PowerOperation.START: PowerState.STARTING,
    PowerOperation.POWER_OFF: PowerState.STOPPING,
    PowerOperation.RESTART: PowerState.STARTING,
    PowerOperation.RESET: PowerState.STARTING,
    PowerOperation.POWER_CYCLE: PowerState.STARTING,
    PowerOperation.DEALLOCATE: PowerState.DEALLOCATING,
    PowerOperation.REIMAGE: PowerState.STARTING,
    PowerOperation.REDEPLOY: PowerState.STARTING,
    PowerOperation.DELETE: PowerState.STOPPING,
}


def require_state(operation: PowerOperation, actual: PowerState, *, vm: str) -> None:
    """Raise unless `operation` may run on a VM that is `actual`."""
    if actual.is_transitional:
        raise Conflict(
            f"Operation '{operation.value}' on VM '{vm}' conflicts with an operation in progress "
            f"(the VM is {actual.value}); retry when it has finished.",
            target=vm,
        )
    allowed = ALLOWED[operation]
    if actual not in allowed:
        raise StateError(operation.value, actual.value, tuple(s.value for s in allowed), target=vm)
