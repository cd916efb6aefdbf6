"""`lab host ...`: the libvirt hosts the lab places guests on (the local one is implicit)."""

from __future__ import annotations

import sys
from typing import Any

import click

from lab.cli import output
from lab.cli.common import client, handle_errors


@click.group()
def host() -> None:
    """The hosts the lab runs guests on: add a libvirt host, list, drain, remove."""


def _show(h: dict[str, Any], as_json: bool) -> None:
    if as_json:
        output.print_json(h)
    else:
        output.out.print(output.host_table([h]))


@host.command("add")
@click.argument("name")
@click.argument("uri")
@click.option("--max-vcpus", type=click.IntRange(min=1), help="vCPUs the lab may give guests "
              "there (default: 16 per core).")  # fmt: skip
@click.option("--max-memory-mib", type=click.IntRange(min=1), help="Memory (MiB) the lab may "
              "give guests there (default: all but 1 GiB).")  # fmt: skip
@click.option("--data-dir", help="Where the lab keeps its files on that host (default "
              "/var/lib/serial-console-lab).")  # fmt: skip
@click.option("--json", "as_json", is_flag=True)
@handle_errors
def add(name: str, uri: str, max_vcpus: int | None, max_memory_mib: int | None,
        data_dir: str | None, as_json: bool) -> None:  # fmt: skip
    """Add the libvirt host at URI (qemu+ssh://user@machine/system, qemu+tls://...)."""
    body: dict[str, Any] = {"name": name, "uri": uri}
    for key, value in (("maxVcpus", max_vcpus), ("maxMemoryMiB", max_memory_mib),
                       ("dataDir", data_dir)):  # fmt: skip
        if value is not None:
            body[key] = value
    h = client().json("POST", "/v1/hosts", json=body)
    for warning in h.pop("warnings", []):
        output.err.print(f"[yellow]warning[/]: {warning}", soft_wrap=True)
    _show(h, as_json)


@host.command("ls")
@click.option("--json", "as_json", is_flag=True)
@handle_errors
def ls(as_json: bool) -> None:
    """The hosts: state, capacity, what is used and how many VMs each holds."""
    hosts = client().json("GET", "/v1/hosts")
    if as_json:
        output.print_json(hosts)
    else:
        output.out.print(output.host_table(hosts))


def _simple(verb: str, help_text: str) -> None:
    @host.command(verb, help=help_text)
    @click.argument("name")
    @click.option("--json", "as_json", is_flag=True)
    @handle_errors
    def run(name: str, as_json: bool) -> None:
        _show(client().json("POST", f"/v1/hosts/{name}/{verb}"), as_json)


_simple("drain", "Place no new guests on NAME (its VMs stay; redeploy moves one away).")
_simple("undrain", "Place guests on NAME again.")


@host.command("rm")
@click.argument("name")
@click.option("--force", is_flag=True, help="Delete the VMs placed there first.")
@click.option("--yes", is_flag=True, help="Do not ask before --force deletes VMs (scripts).")
@handle_errors
def rm(name: str, force: bool, yes: bool) -> None:
    """Forget the host NAME (refused while VMs are placed there, unless --force)."""
    c = client()
    if force and not yes:
        vms = [v["name"] for v in c.json("GET", "/v1/vms", params={"includeInstances": "true"})
               if v.get("host") == name]  # fmt: skip
        if vms:
            if not sys.stdin.isatty():
                raise click.UsageError(f"--force would delete {len(vms)} VM(s) on {name}; "
                                       "confirm with --yes when not at a terminal")  # fmt: skip
            click.confirm(f"Delete {', '.join(vms)} (on host {name}) and remove the host?",
                          abort=True)  # fmt: skip
    result = c.json("DELETE", f"/v1/hosts/{name}", params={"force": str(force).lower()})
    for vm in result["deleted"]:
        output.err.print(f"deleted {vm}")
    output.err.print(f"removed host {result['name']}")
