"""`lab boot-log`, `lab screenshot` and `lab console`."""

from __future__ import annotations

import sys
import time
from pathlib import Path

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
from lab.domain.errors import LabError

_FOLLOW_POLL_S = 0.25


@click.command("boot-log")
@click.argument("name")
@resource_group_option
@instance_id_option
@click.option(
    "--start",
    type=int,
    default=0,
    show_default=True,
    help="Byte offset to start at (negative: that many bytes before the end).",
)
@click.option("-f", "--follow", is_flag=True, help="Keep printing new output until Ctrl+C.")
@handle_errors
def boot_log(
    name: str, resource_group: str | None, instance_id: int | None, start: int, follow: bool
) -> None:
    """Print the VM's serial log (boot diagnostics), every byte since its first power-on."""
    c = client()
    params: dict[str, str | int] = {**vm_params(resource_group, instance_id)}
    out = sys.stdout.buffer
    offset = start
    try:
        while True:
            r = c.request("GET", f"/v1/vms/{name}/boot-log", params={**params, "start": offset})
            out.write(r.content)
            out.flush()
            offset = int(r.headers["X-Lab-Next"])
            if offset < int(r.headers["X-Lab-Size"]):
                continue  # more than one read's worth is there: page on at once
            if not follow:
                return
            time.sleep(_FOLLOW_POLL_S)
    except KeyboardInterrupt:
        return


@click.command()
@click.argument("name")
@resource_group_option
@instance_id_option
@click.option(
    "-o",
    "--output",
    "out_path",
    type=click.Path(dir_okay=False),
    required=True,
    help="PNG file to write.",
)
@handle_errors
def screenshot(
    name: str, resource_group: str | None, instance_id: int | None, out_path: str
) -> None:
    """Save the VM's VGA screen as a PNG (also stored as its boot-diagnostics .bmp blob)."""
    params = vm_params(resource_group, instance_id)
    r = client().request("GET", f"/v1/vms/{name}/screenshot", params=params)
    Path(out_path).write_bytes(r.content)
    output.err.print(f"wrote {out_path} ({len(r.content)} bytes)")


@click.command()
@click.argument("name")
@resource_group_option
@instance_id_option
@click.option("--view", is_flag=True, help="Read-only: watch without taking the keyboard.")
@click.option(
    "--replay",
    type=int,
    default=None,
    help="Bytes of history to show first (default: the lab's replay setting).",
)
@handle_errors
def console(
    name: str, resource_group: str | None, instance_id: int | None, view: bool, replay: int | None
) -> None:
    """Interactive serial console. Ctrl+] then q quits."""
    from lab.cli.terminal import run_terminal

    mode = "view" if view else "interactive"
    c = client()
    params = vm_params(resource_group, instance_id)
    vm = c.json("GET", f"/v1/vms/{name}", params=params)  # fails early with the daemon's hint

    def admin(command: str, key: str | None) -> str:
        try:
            if command == "nmi":
                c.json("POST", f"/v1/vms/{name}/nmi", params=params)
                return "NMI sent successfully"
            if command == "reset":
                c.json("POST", f"/v1/vms/{name}/reset", params=params)
                return "Successfully Hard Reset VM"
            c.json("POST", f"/v1/vms/{name}/sysrq", params=params, json={"keys": key or ""})
            return "Successfully sent SysRq command"
        except LabError as exc:
            return f"[lab] {command} failed: {exc.message}"

    instance = None if instance_id is None else str(instance_id)
    with c.console(name, resource_group=resource_group, mode=mode, replay=replay,
                   instance_id=instance) as conn:  # fmt: skip
        output.err.print(
            f"[lab] connected to {vm['name']} ({mode}); Ctrl+] then q to quit", highlight=False
        )
        why = run_terminal(
            conn, read_only=view, admin=admin, is_windows=vm["osType"].lower() == "windows"
        )
    if why != "quit":
        sys.exit(1)


@click.command()
@click.argument("name")
@click.argument("keys")
@resource_group_option
@instance_id_option
@click.option(
    "--method",
    type=click.Choice(["sendkey", "break"]),
    default="sendkey",
    show_default=True,
    help="sendkey: alt+sysrq+key on the keyboard; break: a serial BREAK, then the key.",
)
@handle_errors
def sysrq(
    name: str, keys: str, resource_group: str | None, instance_id: int | None, method: str
) -> None:
    """Send a Magic SysRq key or sequence (e.g. h, or reisub) to a Linux VM."""
    params = vm_params(resource_group, instance_id)
    r = client().json("POST", f"/v1/vms/{name}/sysrq", params=params,
                      json={"keys": keys, "method": method})  # fmt: skip
    target = target_name(name, instance_id)
    output.err.print(f"sent SysRq {r['keys']!r} to {target} ({r['method']})")


@click.command()
@click.argument("name")
@resource_group_option
@instance_id_option
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@handle_errors
def nmi(name: str, resource_group: str | None, instance_id: int | None, yes: bool) -> None:
    """Send a Non-Maskable Interrupt (usually crashes the guest OS, for a dump)."""
    target = target_name(name, instance_id)
    if not yes:
        click.confirm(
            "A Non-Maskable Interrupt (NMI) is used in debugging scenarios and is designed to "
            f"crash your target Virtual Machine. Send an NMI to {target}?", abort=True,
        )  # fmt: skip
    client().json("POST", f"/v1/vms/{name}/nmi", params=vm_params(resource_group, instance_id))
    output.err.print(f"NMI sent to {target}")
