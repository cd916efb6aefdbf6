"""The VM power-state machine, with Azure's states, and the catalogue of power operations
(`OPERATIONS`): one row per operation, read by every front end, with its guard.

Azure reports `PowerState/<state>`; transitional states (`starting`, `stopping`,
`deallocating`) exist while an operation runs. An operation asked for in a state that does not
allow it raises `StateError` (like qemu.qmp's `StateError(required, actual)`); any operation
while another is in flight is a 409 conflict, so two power operations never interleave.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from lab.domain.errors import Conflict, StateError
from lab.domain.resource_ids import same


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


class Target(StrEnum):
    """What an operation runs on."""

    VM = "vm"
    INSTANCE = "instance"


BOTH = frozenset(Target)


@dataclass(frozen=True)
class Operation:
    """One power operation, everything every front end needs to know of it. A row of
    `OPERATIONS`: the daemon API, the Azure routers, the console gateway, the CLI and
    `VmService.perform` all read the table, so an operation is added or changed here (and in
    its `VmService` method), nowhere else."""

    op: PowerOperation
    #: The at-rest states it may start from (`start` on a running VM and `powerOff` on a
    #: stopped one are no-ops in Azure, so they are allowed and do nothing).
    allowed: tuple[PowerState, ...]
    #: The transitional state a VM shows while it runs.
    transition: PowerState
    #: The `VmService` method that runs it (a coroutine taking the VM's view).
    method: str
    #: `lab vm <verb>` and `lab vmss <verb>`, with its help; None: no CLI verb of its own.
    cli_verb: str | None = None
    cli_help: str = ""
    #: The ARM action (`POST .../virtualMachines/{name}/{action}`, any case; the RBAC action is
    #: `<resource type>/<action>/action`); None: not an Azure action.
    arm_action: str | None = None
    #: The serial-console gateway's admin command that runs it, if any.
    gateway_command: str | None = None
    #: VMs, scale-set instances, or both (every operation today; a set's action runs it on
    #: its instances).
    applies_to: frozenset[Target] = BOTH

    def rbac_action(self, resource_type: str) -> str:
        """The RBAC action that allows it on `resource_type` (`Microsoft.Compute/virtualMachines`,
        `.../virtualMachineScaleSets`, `.../virtualMachineScaleSets/virtualMachines`)."""
        if self.arm_action is None:
            raise ValueError(f"{self.op.value} is not an Azure action")
        return f"{resource_type}/{self.arm_action}/action"

    @property
    def lab_action(self) -> str:
        """Its name in the daemon API (`POST /v1/vms/{name}/{action}`)."""
        return self.op.value


OPERATIONS: tuple[Operation, ...] = (
    Operation(PowerOperation.START, _AT_REST, PowerState.STARTING, "start",
              "start", "Power on.", arm_action="start"),
    Operation(PowerOperation.POWER_OFF, _AT_REST, PowerState.STOPPING, "power_off",
              "stop", "Power off (graceful ACPI shutdown with a timeout, then hard off).",
              arm_action="powerOff"),
    Operation(PowerOperation.RESTART, _AT_REST_ON, PowerState.STARTING, "restart",
              "restart", "Graceful reboot (the guest gets the ACPI power button).",
              arm_action="restart"),
    Operation(PowerOperation.RESET, _AT_REST_ON, PowerState.STARTING, "reset",
              "reset", "Hard reset, like the power button; the console stays connected.",
              gateway_command="reset"),
    Operation(PowerOperation.POWER_CYCLE, _AT_REST_ON, PowerState.STARTING, "power_cycle",
              "power-cycle", "Pull the plug and power on again (a new QEMU process)."),
    Operation(PowerOperation.DEALLOCATE, _AT_REST, PowerState.DEALLOCATING, "deallocate",
              "deallocate", "Stop and release the host resources.", arm_action="deallocate"),
    Operation(PowerOperation.REIMAGE, _AT_REST, PowerState.STARTING, "reimage",
              "reimage", "Reset the disk to its image (a running VM restarts).",
              arm_action="reimage"),
    # Azure moves the VM to a new host and powers it on; on one host, a new QEMU process.
    Operation(PowerOperation.REDEPLOY, _AT_REST, PowerState.STARTING, "redeploy",
              "redeploy", "Move to another host (the most free; the disk goes along) and power "
              "on; with one host, or a VM pinned to its host, a new QEMU process.",
              arm_action="redeploy"),
    # Deleting has its own routes and verbs (HTTP DELETE, `lab vm delete`): no action name.
    Operation(PowerOperation.DELETE, _AT_REST, PowerState.STOPPING, "delete"),
)  # fmt: skip

_BY_OP = {o.op: o for o in OPERATIONS}
#: Views of the table, by what each front end looks operations up by.
ALLOWED: dict[PowerOperation, tuple[PowerState, ...]] = {o.op: o.allowed for o in OPERATIONS}
TRANSITION: dict[PowerOperation, PowerState] = {o.op: o.transition for o in OPERATIONS}


def operation(op: PowerOperation) -> Operation:
    return _BY_OP[op]


def by_arm_action(action: str, target: Target = Target.VM) -> Operation | None:
    """The operation of an ARM action named in any case (`poweroff`, `Restart`), as ARM takes
    them, on `target`; None for no such action."""
    return next((o for o in OPERATIONS if o.arm_action and target in o.applies_to
                 and same(o.arm_action, action)), None)  # fmt: skip


def arm_actions(target: Target = Target.VM) -> list[str]:
    return [o.arm_action for o in OPERATIONS if o.arm_action and target in o.applies_to]


def by_lab_action(action: str) -> Operation | None:
    """An operation of the daemon API (those with a CLI verb), by its name."""
    return next((o for o in OPERATIONS if o.cli_verb and o.lab_action == action), None)


def lab_actions() -> list[str]:
    return [o.lab_action for o in OPERATIONS if o.cli_verb]


def cli_operations() -> list[Operation]:
    return [o for o in OPERATIONS if o.cli_verb]


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
