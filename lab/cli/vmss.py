"""`lab vmss ...`: scale sets: list, show, scale, upgrade instances, power operations.

`--instance-ids` takes several ids after one flag, as the Azure CLI's does
(`--instance-ids 0 1 2`); it also takes `0,1`, a repeated flag, or `*` for every instance.
Without it a command acts on every instance.
"""

from __future__ import annotations

import re
from typing import Any

import click

from lab.cli import output
from lab.cli.common import client, handle_errors, resource_group_option
from lab.domain.power import PowerOperation, cli_operations, operation

_IDS_FLAG = "--instance-ids"
#: An argument that reads as instance ids: `1`, `0,2`, `*`.
_IDS_ARG = re.compile(r"(\*|\d+)(,(\*|\d+))*,?")


def spread_instance_ids(args: list[str]) -> list[str]:
    """`--instance-ids 0 1 2` -> `--instance-ids 0 --instance-ids 1 --instance-ids 2`, for
    click's repeatable option. The first value is always taken (click checks it); further ones
    only while they read as ids, so `--instance-ids 0 1 NAME` leaves NAME alone."""
    spread: list[str] = []
    i = 0
    while i < len(args):
        arg = args[i]
        spread.append(arg)
        i += 1
        if arg == "--":
            return spread + args[i:]
        if arg == _IDS_FLAG and i < len(args):
            spread.append(args[i])
            i += 1
        elif not arg.startswith(_IDS_FLAG + "="):
            continue
        while i < len(args) and _IDS_ARG.fullmatch(args[i]):
            spread += [_IDS_FLAG, args[i]]
            i += 1
    return spread


class _InstanceIdsCommand(click.Command):
    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        return super().parse_args(ctx, spread_instance_ids(args))


def _parse_ids(
    _ctx: click.Context, _param: click.Parameter, values: tuple[str, ...]
) -> list[str] | None:
    """The ids given, each once, in order; None (every instance) for none or `*`."""
    ids = [v.strip() for value in values for v in value.split(",") if v.strip()]
    if not ids or "*" in ids:
        return None
    bad = [i for i in ids if not i.isdigit()]
    if bad:
        raise click.BadParameter(f"{', '.join(bad)}: an instance id is a number (0, 1, ...)")
    return list(dict.fromkeys(str(int(i)) for i in ids))


_instance_ids_option = click.option(
    _IDS_FLAG,
    "instance_ids",
    multiple=True,
    metavar="ID...",
    callback=_parse_ids,
    help="The instances to act on, e.g. `--instance-ids 0 2` (default: every instance).",
)
_json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON.")


def _params(resource_group: str | None, **extra: str) -> dict[str, str]:
    return {**({"resourceGroup": resource_group} if resource_group else {}), **extra}


def _print(scale_set: dict[str, Any], as_json: bool) -> None:
    if as_json:
        output.print_json(scale_set)
    else:
        output.print_scale_sets([scale_set])


@click.group()
def vmss() -> None:
    """Scale sets: instances, capacity, model upgrades and power operations."""


@vmss.command("ls")
@resource_group_option
@_json_option
@handle_errors
def ls(resource_group: str | None, as_json: bool) -> None:
    """List the scale sets and their instances."""
    sets = client().json("GET", "/v1/vmss", params=_params(resource_group))
    if as_json:
        output.print_json(sets)
    else:
        output.print_scale_sets(sets)


@vmss.command("show")
@click.argument("name")
@resource_group_option
@_json_option
@handle_errors
def show(name: str, resource_group: str | None, as_json: bool) -> None:
    """One scale set: its model, capacity and instances."""
    _print(client().json("GET", f"/v1/vmss/{name}", params=_params(resource_group)), as_json)


@vmss.command("scale")
@click.argument("name")
@click.option(
    "--capacity",
    type=click.IntRange(min=0),
    required=True,
    metavar="N",
    help="The number of instances (scaling in removes the highest ids first).",
)
@resource_group_option
@_json_option
@handle_errors
def scale(name: str, capacity: int, resource_group: str | None, as_json: bool) -> None:
    """Set the number of instances; new ones get new ids (ids are never reused)."""
    body = {"capacity": capacity}
    path = f"/v1/vmss/{name}/scale"
    _print(client().json("POST", path, params=_params(resource_group), json=body), as_json)


@vmss.command("update-instances", cls=_InstanceIdsCommand)
@click.argument("name")
@_instance_ids_option
@resource_group_option
@_json_option
@handle_errors
def update_instances(
    name: str, instance_ids: list[str] | None, resource_group: str | None, as_json: bool
) -> None:
    """Bring instances to the scale set's latest model (Azure's manualUpgrade)."""
    path = f"/v1/vmss/{name}/update-instances"
    body = {"instanceIds": instance_ids}
    _print(client().json("POST", path, params=_params(resource_group), json=body), as_json)


def _act(action: str, name: str, instance_ids: list[str] | None, resource_group: str | None,
         as_json: bool, **params: str) -> None:  # fmt: skip
    path = f"/v1/vmss/{name}/{action}"
    body = {"instanceIds": instance_ids}
    _print(client().json("POST", path, params=_params(resource_group, **params), json=body),
           as_json)  # fmt: skip


def _simple(action: str, command: str, help_text: str) -> None:
    @vmss.command(command, cls=_InstanceIdsCommand, help=help_text)
    @click.argument("name")
    @_instance_ids_option
    @resource_group_option
    @_json_option
    @handle_errors
    def run(
        name: str, instance_ids: list[str] | None, resource_group: str | None, as_json: bool
    ) -> None:
        _act(action, name, instance_ids, resource_group, as_json)


_ON_INSTANCES = "On the instances --instance-ids names (default: all)."
# One verb per row of the operation catalogue, on the instances; `stop` takes --skip-shutdown.
for _op in cli_operations():
    if _op.op is not PowerOperation.POWER_OFF:
        _simple(_op.lab_action, str(_op.cli_verb), f"{_op.cli_help} {_ON_INSTANCES}")


@vmss.command("stop", cls=_InstanceIdsCommand,
              help=f"{operation(PowerOperation.POWER_OFF).cli_help} {_ON_INSTANCES}")  # fmt: skip
@click.argument("name")
@_instance_ids_option
@resource_group_option
@_json_option
@click.option("--skip-shutdown", is_flag=True, help="Power off at once, without ACPI shutdown.")
@handle_errors
def stop(
    name: str, instance_ids: list[str] | None, resource_group: str | None, as_json: bool,
    skip_shutdown: bool,
) -> None:  # fmt: skip
    _act(PowerOperation.POWER_OFF.value, name, instance_ids, resource_group, as_json,
         skipShutdown=str(skip_shutdown).lower())  # fmt: skip
