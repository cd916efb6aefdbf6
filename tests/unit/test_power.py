"""The power-state guard: every (operation, state) pair."""

from __future__ import annotations

import itertools

import pytest

from lab.domain.errors import Conflict, LabError, StateError
from lab.domain.power import ALLOWED, TRANSITION, PowerOperation, PowerState, require_state

AT_REST = (PowerState.RUNNING, PowerState.STOPPED, PowerState.DEALLOCATED)
TRANSITIONAL = (PowerState.STARTING, PowerState.STOPPING, PowerState.DEALLOCATING)
ONLY_RUNNING = {PowerOperation.RESTART, PowerOperation.RESET, PowerOperation.POWER_CYCLE}

#: The expected table, written out independently of `ALLOWED`.
EXPECTED_ALLOWED = {
    (op, state): (state is PowerState.RUNNING if op in ONLY_RUNNING else True)
    for op, state in itertools.product(PowerOperation, AT_REST)
}

PAIRS = list(itertools.product(PowerOperation, PowerState))


def test_states_are_exactly_at_rest_or_transitional() -> None:
    assert set(PowerState) == set(AT_REST) | set(TRANSITIONAL)
    assert all(s.is_transitional for s in TRANSITIONAL)
    assert not any(s.is_transitional for s in AT_REST)
    assert PowerState.RUNNING.azure_display == "VM running"


def test_every_operation_has_a_rule_and_a_transitional_state() -> None:
    assert set(ALLOWED) == set(PowerOperation)
    assert set(TRANSITION) == set(PowerOperation)
    assert all(state.is_transitional for state in TRANSITION.values())


@pytest.mark.parametrize(("op", "state"), PAIRS, ids=[f"{o.value}-{s.value}" for o, s in PAIRS])
def test_guard(op: PowerOperation, state: PowerState) -> None:
    if state.is_transitional:
        with pytest.raises(Conflict) as conflict:
            require_state(op, state, vm="vm1")
        assert type(conflict.value) is Conflict  # not a StateError: it is "retry later"
        assert conflict.value.status == 409
        assert conflict.value.code == "Conflict"
        assert conflict.value.target == "vm1"
        assert op.value in conflict.value.message
        assert state.value in conflict.value.message
    elif EXPECTED_ALLOWED[(op, state)]:
        require_state(op, state, vm="vm1")
    else:
        with pytest.raises(StateError) as refused:
            require_state(op, state, vm="vm1")
        err = refused.value
        assert err.status == 409
        assert err.code == "OperationNotAllowed"
        assert (err.operation, err.actual, err.allowed) == (op.value, state.value, ("running",))
        assert err.target == "vm1"
        assert err.message == (
            f"Operation '{op.value}' is not allowed on VM 'vm1' while it is {state.value}; "
            "allowed when: running."
        )


def test_state_error_lists_every_allowed_state() -> None:
    err = StateError("start", "stopping", ("running", "stopped", "deallocated"), target="web-1")
    assert "'start'" in err.message and "'web-1'" in err.message and "stopping" in err.message
    assert "allowed when: running, stopped, deallocated." in err.message
    assert err.to_dict() == {
        "code": "OperationNotAllowed",
        "message": err.message,
        "target": "web-1",
        "details": [],
    }
    assert isinstance(err, Conflict) and isinstance(err, LabError)
    assert err.exit_code == 4


def test_the_operation_catalogue_is_what_every_front_end_reads() -> None:
    """One row per operation; each row's method exists on VmService, its verb in both CLI
    groups, its ARM action is found in any case, and the daemon takes exactly the verbs."""
    import inspect

    from lab.api.azure.gateway import _COMMANDS
    from lab.api.daemon.app import power_operation
    from lab.cli.vm import vm
    from lab.cli.vmss import vmss
    from lab.domain.power import OPERATIONS, PowerOperation, by_arm_action, cli_operations
    from lab.services.vms import VmService

    assert sorted(o.op for o in OPERATIONS) == sorted(PowerOperation)
    for row in OPERATIONS:
        assert inspect.iscoroutinefunction(getattr(VmService, row.method)), row
    for row in cli_operations():
        assert row.cli_verb in vm.commands and row.cli_verb in vmss.commands, row
        assert vm.commands[row.cli_verb].help == row.cli_help
        assert power_operation(row.lab_action) is row.op
        if row.arm_action:
            assert by_arm_action(row.arm_action.upper()) is row
    assert by_arm_action("redeploy") is not None
    assert by_arm_action("redeploy").op is PowerOperation.REDEPLOY  # type: ignore[union-attr]
    assert by_arm_action("reset") is None  # not an Azure action
    assert "reset" in _COMMANDS
