"""`lab serve` in the foreground: what `make run` ends with.

Brings the lab file's VMs up, prints their state and the commands to try next, and serves
until Ctrl+C. The VMs keep running after the daemon stops; the next daemon adopts them.
"""

from __future__ import annotations

import asyncio
import shutil
import sys
from pathlib import Path

from lab.api.daemon.schemas import reconcile_json, vm_json
from lab.api.daemon.server import build_lab, daemon_lock, serve
from lab.cli import output
from lab.services.lab import Lab
from lab.settings import Settings


def run_foreground(settings: Settings, lab_file: str | None) -> None:
    with daemon_lock(settings):
        lab = build_lab(settings)
        output.err.print(f"accelerator: {lab.ctx.hypervisor.accel()} ({lab.accel_reason})")

        async def on_ready(lab: Lab) -> None:
            if lab_file is None:
                return
            defn = lab.parse(Path(lab_file).read_text(), lab_file)
            # Bring the lab up in the background so the socket answers while guests boot.
            asyncio.get_running_loop().create_task(_bring_up(lab, defn, settings))

        serve(settings, lab, on_ready)
        output.err.print("lab daemon stopped; the VMs keep running (`lab up` adopts them)")


async def _bring_up(lab: Lab, defn: object, settings: Settings) -> None:
    from lab.domain.labfile import LabDefinition

    assert isinstance(defn, LabDefinition)
    try:
        results = reconcile_json(await lab.reconciler.up(defn))
    except Exception as exc:
        output.err.print(f"[red]bringing the lab up failed:[/] {exc}")
        return
    actions = {r["vm"]["vmId"]: r["action"] for r in results}
    output.out.print(output.vm_table([r["vm"] for r in results], actions))
    vms = [vm_json(v) for v in lab.vms.list()]
    first = vms[0]["name"] if vms else "VM"
    user = vms[0]["adminUsername"] if vms else "the admin user"
    env = f"LAB_DATA_DIR={settings.data_dir} " if settings.data_dir != Settings().data_dir else ""
    cmd = env + lab_command()
    output.out.print(
        "\nThe lab is running. In another terminal, try:\n"
        f"  {cmd} console {first}            # log in as {user} (password: see the lab file);"
        " Ctrl+] then q quits\n"
        f"  {cmd} boot-log {first} --follow  # every byte since power-on\n"
        f"  {cmd} vm reset {first}           # hard reset: the console stays connected\n"
        f"  {cmd} screenshot {first} -o {first}.png\n"
        f"  {cmd} ls\n"
        f"  {cmd} scenario ls             # broken-boot training scenarios\n"
        + (f"The portal: https://{settings.api_host}:{settings.api_port}/ (sign in as a user "
           f"`{cmd} user add NAME --role Contributor` makes, or with a `{cmd} token`; the CA to "
           f"trust: {settings.data_dir}/tls/ca.pem)\n"
           f"The Azure CLI: `{cmd} endpoints` says how to point az at the lab.\n"
           if settings.api_port else "")
        + "Ctrl+C stops the daemon; the VMs keep running.\n",
        soft_wrap=True,
    )


def lab_command() -> str:
    """How to type `lab` here: plain if it is on PATH, else the venv's path (`.venv/bin/lab`)."""
    mine = Path(sys.executable).with_name("lab")
    found = shutil.which("lab")
    if found and Path(found).resolve() == mine.resolve():
        return "lab"
    try:
        return str(mine.relative_to(Path.cwd()))
    except ValueError:
        return str(mine)
