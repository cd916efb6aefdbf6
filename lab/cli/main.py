"""The `lab` command. Every command but `serve` and `image` talks to the lab daemon."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import click

from lab.api.security.tls import ensure_certificates
from lab.api.security.tokens import ROLES, issue, signing_key
from lab.cli import classroom, diagnostics, host, identity, images, output, scenario, vm, vmss
from lab.cli.common import client, ensure_daemon, handle_errors
from lab.client.http import LabClient
from lab.domain.errors import InvalidInput, LabFileUnreadable
from lab.domain.rbac import RoleDefinition, custom_role, parse_role_definition
from lab.settings import get_settings


@click.group()
@click.version_option(package_name="serial-console-lab")
def cli() -> None:
    """Serial Console Lab: real QEMU VMs with an Azure-style serial console, on this machine."""


# -- lab lifecycle --------------------------------------------------------------------------
def _read_lab_file(path: str) -> dict[str, str]:
    try:
        return {"source": path, "text": Path(path).read_text()}
    except OSError as exc:
        raise LabFileUnreadable(f"cannot read lab file {path}: {exc.strerror}") from exc


def _print_results(results: list[dict[str, Any]], as_json: bool) -> None:
    if as_json:
        output.print_json(results)
        return
    actions = {r["vm"]["vmId"]: r["action"] for r in results}
    output.out.print(output.vm_table([r["vm"] for r in results], actions))


@cli.command()
@click.argument("lab_file", type=click.Path(dir_okay=False))
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@handle_errors
def up(lab_file: str, as_json: bool) -> None:
    """Create what is missing and start what is stopped (idempotent)."""
    body = _read_lab_file(lab_file)
    c = ensure_daemon(get_settings())
    _print_results(c.json("POST", "/v1/up", json=body), as_json)


@cli.command()
@click.argument("lab_file", type=click.Path(dir_okay=False))
@click.option("--json", "as_json", is_flag=True)
@handle_errors
def down(lab_file: str, as_json: bool) -> None:
    """Delete the lab's VMs and their disks (boot logs are kept)."""
    body = _read_lab_file(lab_file)
    _print_results(client().json("POST", "/v1/down", json=body), as_json)


@cli.command()
@click.option("--lab", "lab_file", type=click.Path(dir_okay=False), help="Bring this lab up.")
@handle_errors
def serve(lab_file: str | None) -> None:
    """Run the lab daemon in the foreground (Ctrl+C stops it; VMs keep running)."""
    from lab.cli.serve import run_foreground

    run_foreground(get_settings(), lab_file)


@cli.command()
@handle_errors
def shutdown() -> None:
    """Stop the lab daemon. VMs keep running; the next daemon adopts them."""
    import signal

    status = LabClient(get_settings()).json("GET", "/v1/status")
    os.kill(int(status["pid"]), signal.SIGTERM)
    output.err.print(f"stopped the lab daemon (pid {status['pid']})")


@cli.command("ls")
@click.option("--json", "as_json", is_flag=True)
@handle_errors
def ls(as_json: bool) -> None:
    """List the lab's VMs, then its scale-set instances."""
    vms = client().json("GET", "/v1/vms", params={"includeInstances": "true"})
    if as_json:
        output.print_json(vms)
    else:
        output.print_machines(vms)


@cli.command()
@click.option("--json", "as_json", is_flag=True)
@handle_errors
def status(as_json: bool) -> None:
    """The daemon, its accelerator, and the VMs (with scale-set instances)."""
    c = client()
    info = c.json("GET", "/v1/status")
    info["vms"] = c.json("GET", "/v1/vms", params={"includeInstances": "true"})
    if as_json:
        output.print_json(info)
        return
    output.out.print(
        f"lab daemon pid {info['pid']}, data dir {info['dataDir']}, libvirt {info['libvirtUri']}\n"
        f"accelerator: {info['accel']} ({info['accelReason']})"
    )
    output.print_machines(info["vms"])


@cli.command()
@click.option("--user", default="labuser", show_default=True, help="Who the token is for.")
@click.option(
    "--role",
    "roles",
    multiple=True,
    type=click.Choice(list(ROLES)),
    help="A built-in role (default Contributor); repeat for several assignments.",
)
@click.option("--action", "actions", multiple=True,
              help="An action of a custom role, e.g. Microsoft.SerialConsole/serialPorts/"
              "connect/action; repeat for several.")  # fmt: skip
@click.option("--not-action", "not_actions", multiple=True,
              help="An action the custom role of --action excludes.")  # fmt: skip
@click.option("--role-name", default="Custom", show_default=True,
              help="The name of the custom role of --action.")  # fmt: skip
@click.option("--role-file", "role_files", multiple=True, type=click.Path(dir_okay=False),
              help="A custom role definition, as `az role definition create` takes it "
              '(JSON: {"Name", "Actions", "NotActions"}); repeat for several.')  # fmt: skip
@click.option(
    "--scope",
    "scopes",
    multiple=True,
    help="The scope of the role at the same position (built-in roles first, then the custom "
    "role of --action, then each --role-file): /subscriptions/<id>, "
    "/subscriptions/<id>/resourceGroups/<rg>, or a resource id (default: everything).",
)
@click.option("--expires", "expires_minutes", type=float, default=60.0, show_default=True,
              help="Minutes until the token expires.")  # fmt: skip
@handle_errors
def token(
    user: str, roles: tuple[str, ...], actions: tuple[str, ...], not_actions: tuple[str, ...],
    role_name: str, role_files: tuple[str, ...], scopes: tuple[str, ...],
    expires_minutes: float,
) -> None:  # fmt: skip
    """Print a bearer token for the Azure-compatible API.

    Each role is assigned at the --scope given in the same position, e.g.
    `lab token --role Reader --role "Virtual Machine Contributor" --scope /subscriptions/S
    --scope /subscriptions/S/resourceGroups/rg/providers/Microsoft.Compute/virtualMachines/vm1`.
    A custom role: `lab token --action Microsoft.SerialConsole/serialPorts/connect/action
    --action Microsoft.Compute/virtualMachines/read`, or `--role-file role.json`.
    """
    if not_actions and not actions:
        raise InvalidInput("--not-action needs --action: it narrows the custom role's actions",
                           target="not-action")  # fmt: skip
    definitions: list[str | RoleDefinition] = list(roles)
    if actions:
        definitions.append(custom_role(role_name, actions, not_actions))
    definitions += [parse_role_definition(_read_text(f), f) for f in role_files]
    definitions = definitions or ["Contributor"]
    if len(scopes) > len(definitions):
        raise InvalidInput(f"{len(scopes)} --scope for {len(definitions)} roles; give one scope "
                           "per role, in the same order", target="scope")  # fmt: skip
    pairs = [(r, scopes[i] if i < len(scopes) else "/") for i, r in enumerate(definitions)]
    settings = get_settings()
    key = signing_key(settings.tls_dir / "token-signing.key")
    print(issue(key, user=user, roles=pairs, expires_in=expires_minutes * 60))


def _read_text(path: str) -> str:
    try:
        return Path(path).read_text()
    except OSError as exc:
        raise InvalidInput(f"cannot read {path}: {exc.strerror}", target=path) from None


@cli.command()
@handle_errors
def endpoints() -> None:
    """What a client of the Azure-compatible API needs: endpoint, CA bundle, how to get a token."""
    settings = get_settings()
    files = ensure_certificates(settings.tls_dir)
    base = f"https://{settings.api_host}:{settings.api_port}"
    output.out.print(
        f"ARM endpoint:   {base}\n"
        f"CA bundle:      {files.ca_cert}   (export REQUESTS_CA_BUNDLE={files.ca_cert} "
        "WEBSOCKET_CLIENT_CA_BUNDLE=$REQUESTS_CA_BUNDLE)\n"
        f"Azure CLI:      az cloud register -n Lab --endpoint-resource-manager {base}/ && "
        "az cloud set -n Lab\n"
        f"Sign-in:        {base}/adfs   (lab sp create-for-rbac --name N --role Contributor; "
        "lab user add NAME --role Reader)\n"
        "Token:          lab token --user NAME --role Contributor [--scope SCOPE]\n"
        "Subscription:   the subscriptionId of your lab file\n"
        f"Blob endpoint:  {base}/<account>/<container>/<blob>   (path-style; SAS from "
        "retrieveBootDiagnosticsData)\n"
        f"OpenAPI:        {base}/openapi.json",
        soft_wrap=True,
        highlight=False,
    )


cli.add_command(scenario.scenario)
cli.add_command(classroom.classroom)
cli.add_command(identity.user)
cli.add_command(identity.sp)
cli.add_command(identity.role)
cli.add_command(identity.auth)
cli.add_command(vm.vm)
cli.add_command(host.host)
cli.add_command(vmss.vmss)
cli.add_command(images.image)
cli.add_command(diagnostics.boot_log)
cli.add_command(diagnostics.screenshot)
cli.add_command(diagnostics.console)
cli.add_command(diagnostics.sysrq)
cli.add_command(diagnostics.nmi)


def main() -> None:
    cli(prog_name="lab")


if __name__ == "__main__":
    main()
