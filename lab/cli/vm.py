"""`lab vm ...`: power operations with Azure's meaning."""

from __future__ import annotations

from typing import Any

import click

from lab.cli import output
from lab.cli.common import (
    client,
    handle_errors,
    instance_id_option,
    resource_group_option,
    target_name,
    vm_params,
)
from lab.domain.power import PowerOperation, cli_operations, operation

_OPTIONS = [
    click.argument("name"),
    resource_group_option,
    instance_id_option,
    click.option("--json", "as_json", is_flag=True),
]


def _with_options(func: Any) -> Any:
    for option in reversed(_OPTIONS):
        func = option(func)
    return func


def _act(
    action: str, name: str, resource_group: str | None, instance_id: int | None, as_json: bool,
    **params: str,
) -> None:  # fmt: skip
    query = {**vm_params(resource_group, instance_id), **params}
    vm = client().json("POST", f"/v1/vms/{name}/{action}", params=query)
    if as_json:
        output.print_json(vm)
    else:
        output.out.print(output.vm_table([vm]))


@click.group()
def vm() -> None:
    """Power operations on one VM (or, with --instance-id, one scale-set instance)."""


def _simple(action: str, command: str, help_text: str) -> None:
    @vm.command(command, help=help_text)
    @_with_options
    @handle_errors
    def run(name: str, resource_group: str | None, instance_id: int | None, as_json: bool) -> None:
        _act(action, name, resource_group, instance_id, as_json)


# One verb per row of the operation catalogue; `stop` takes --skip-shutdown besides.
for _op in cli_operations():
    if _op.op is not PowerOperation.POWER_OFF:
        _simple(_op.lab_action, str(_op.cli_verb), _op.cli_help)


@vm.command("stop", help=operation(PowerOperation.POWER_OFF).cli_help)
@_with_options
@click.option("--skip-shutdown", is_flag=True, help="Power off at once, without ACPI shutdown.")
@handle_errors
def stop(
    name: str, resource_group: str | None, instance_id: int | None, as_json: bool,
    skip_shutdown: bool,
) -> None:  # fmt: skip
    _act(PowerOperation.POWER_OFF.value, name, resource_group, instance_id, as_json,
         skipShutdown=str(skip_shutdown).lower())  # fmt: skip


@vm.command("delete")
@click.argument("name")
@resource_group_option
@instance_id_option
@handle_errors
def delete(name: str, resource_group: str | None, instance_id: int | None) -> None:
    """Delete the VM and its disk; its boot-diagnostics log is kept. A scale-set instance
    (--instance-id) is deleted from its set, whose capacity goes down by one."""
    client().request("DELETE", f"/v1/vms/{name}", params=vm_params(resource_group, instance_id))
    output.err.print(f"deleted {target_name(name, instance_id)}")
