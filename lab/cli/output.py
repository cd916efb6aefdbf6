"""Printing: tables and progress for people, JSON for scripts, errors to stderr."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

out = Console()
err = Console(stderr=True)

_STATE_STYLE = {"running": "green", "stopped": "red", "deallocated": "dim"}


def print_json(data: Any) -> None:
    print(json.dumps(data, indent=2))


def vm_table(vms: list[dict[str, Any]], actions: dict[str, str] | None = None) -> Table:
    table = Table(show_edge=False, pad_edge=False)
    for col in ("NAME", "RESOURCE GROUP", "POWER STATE", "IMAGE", "SIZE", "VM ID"):
        table.add_column(col)
    if actions:
        table.add_column("ACTION")
    for vm in vms:
        state = vm["powerState"]
        if vm.get("stopReason") and state != "running":
            state += f" ({vm['stopReason']})"
        style = _STATE_STYLE.get(vm["powerState"], "yellow")
        size = vm.get("size") or f"{vm['vcpus']} vCPU, {vm['memoryMiB']} MiB"
        row = [vm["name"], vm["resourceGroup"], f"[{style}]{state}[/]", vm["image"], size,
               vm["vmId"]]  # fmt: skip
        if actions:
            row.append(actions.get(vm["vmId"], ""))
        table.add_row(*row)
    return table


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
