"""Printing: tables and progress for people, JSON for scripts, errors to stderr."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

out = Console()
err = Console(stderr=True)

_STATE_STYLE = {"running": "green", "stopped": "red", "deallocated": "dim"}


def print_json(data: Any) -> None:
    print(json.dumps(data, indent=2))


def _state(row: dict[str, Any]) -> str:
    """A power state, coloured, with why it stopped when it was not asked to."""
    state = row["powerState"]
    if row.get("stopReason"):  # why it stopped, or why a running VM is paused
        state += f" ({escape(row['stopReason'])})"
    if row.get("warning"):  # a running guest whose kernel says it is hung
        state += f" [bold]WARNING: {escape(row['warning'])}[/bold]"
    return f"[{_STATE_STYLE.get(row['powerState'], 'yellow')}]{state}[/]"


def _size(row: dict[str, Any]) -> str:
    return row.get("size") or f"{row['vcpus']} vCPU, {row['memoryMiB']} MiB"


def vm_table(vms: list[dict[str, Any]], actions: dict[str, str] | None = None) -> Table:
    table = Table(show_edge=False, pad_edge=False)
    # The host only once there is more than one to be on.
    hosts = any(vm.get("host", "local") != "local" for vm in vms)
    for col in ("NAME", "RESOURCE GROUP", "POWER STATE", "IMAGE", "SIZE", "VM ID"):
        table.add_column(col)
    if hosts:
        table.add_column("HOST")
    if actions:
        table.add_column("ACTION")
    for vm in vms:
        row = [vm["name"], vm["resourceGroup"], _state(vm), vm["image"], _size(vm), vm["vmId"]]
        if hosts:
            row.append(vm.get("host", "local"))
        if actions:
            row.append(actions.get(vm["vmId"], ""))
        table.add_row(*row)
    return table


def scale_set_table(sets: list[dict[str, Any]]) -> Table:
    table = Table(show_edge=False, pad_edge=False)
    for col in ("SCALE SET", "RESOURCE GROUP", "CAPACITY", "INSTANCES", "UPGRADE MODE",
                "MODEL", "IMAGE", "SIZE"):  # fmt: skip
        table.add_column(col)
    for s in sets:
        states: dict[str, int] = {}
        for i in s["instances"]:
            states[i["powerState"]] = states.get(i["powerState"], 0) + 1
        summary = ", ".join(f"{n} {state}" for state, n in states.items()) or "none"
        behind = sum(1 for i in s["instances"] if not i["latestModelApplied"])
        model = f"v{s['modelVersion']}" + (f" ({behind} behind)" if behind else "")
        table.add_row(s["name"], s["resourceGroup"], str(s["capacity"]), summary,
                      s["upgradeMode"], model, s["image"], _size(s))  # fmt: skip
    return table


def instance_rows(sets: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The instances of scale sets (`/v1/vmss`), each with its set and resource group."""
    return [{**i, "scaleSet": s["name"], "resourceGroup": s["resourceGroup"]}
            for s in sets for i in s["instances"]]  # fmt: skip


def instance_table(rows: list[dict[str, Any]], title: str | None = None) -> Table:
    """Scale-set instances: rows of `instance_rows`, or VM rows (`/v1/vms`) of instances."""
    latest = any("latestModelApplied" in r for r in rows)
    table = Table(show_edge=False, pad_edge=False, title=title, title_justify="left")
    for col in ("NAME", "SCALE SET", "INSTANCE ID", "RESOURCE GROUP", "POWER STATE",
                "COMPUTER NAME", *(["LATEST MODEL"] if latest else []), "VM ID"):  # fmt: skip
        table.add_column(col)
    for r in rows:
        row = [r["name"], r["scaleSet"], r["instanceId"], r["resourceGroup"], _state(r),
               r["computerName"]]  # fmt: skip
        if latest:
            row.append("yes" if r.get("latestModelApplied") else "[yellow]no[/]")
        table.add_row(*row, r["vmId"])
    return table


def print_machines(rows: list[dict[str, Any]]) -> None:
    """`/v1/vms?includeInstances=true`: the VMs, then the scale-set instances if there are any."""
    out.print(vm_table([r for r in rows if not r.get("scaleSet")]))
    instances = [r for r in rows if r.get("scaleSet")]
    if instances:
        out.print()
        out.print(instance_table(instances, title="scale-set instances (`lab vmss ls`)"))


def print_scale_sets(sets: list[dict[str, Any]]) -> None:
    """Scale sets, then their instances."""
    out.print(scale_set_table(sets))
    rows = instance_rows(sets)
    if rows:
        out.print()
        out.print(instance_table(rows))


@contextmanager
def progress_bar(title: str) -> Iterator[Callable[[str, float], None]]:
    with Progress(
        TextColumn("[bold]{task.description}"), BarColumn(), TextColumn("{task.percentage:>3.0f}%"),
        TimeElapsedColumn(), console=err, transient=False,
    ) as progress:  # fmt: skip
        task = progress.add_task(title, total=1.0)

        def update(step: str, fraction: float) -> None:
            progress.update(task, description=f"{title}: {step}", completed=fraction)

        yield update


def host_table(hosts: list[dict[str, Any]]) -> Table:
    table = Table(show_edge=False, pad_edge=False)
    for col in ("HOST", "STATE", "URI", "VMS", "VCPUS USED/MAX", "MEMORY MIB USED/MAX"):
        table.add_column(col)
    for h in hosts:
        state = h["state"] + (f": {h['problem']}" if h.get("problem") else "")
        table.add_row(h["name"], state, h["uri"], str(h["vms"]),
                      f"{h['usedVcpus']}/{h['maxVcpus'] if h['maxVcpus'] is not None else '?'}",
                      f"{h['usedMemoryMiB']}/"
                      f"{h['maxMemoryMiB'] if h['maxMemoryMiB'] is not None else '?'}")  # fmt: skip
    return table
