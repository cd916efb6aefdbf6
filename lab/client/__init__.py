"""The lab's client side, for scripts, CI, the `lab` CLI and the pytest plugin: the daemon's
HTTP client (`LabClient`), the pexpect-compatible console session and its helpers (GRUB's menu,
the maintenance prompt, a scenario's checks).

from lab.client import connect

with connect("vm1") as console:          # pexpect-compatible
    console.login("azureuser", "Passw0rd!")
    output, status = console.run("uname -r")

`ConsoleSession` reads from any `ConsoleTransport`: `connect` gives it the daemon's console
websocket; the daemon itself runs a scenario's checks (`lab.client.checks`) over an in-process
transport on the console broker. Nothing here imports the daemon's packages (lab.api,
lab.services, lab.console, lab.hypervisor, lab.storage).
"""

from __future__ import annotations

from typing import Any

from lab.client.http import LabClient
from lab.client.session import CommandFailed, ConsoleClosed, ConsoleSession, ConsoleTransport
from lab.domain.errors import RemoteError
from lab.settings import get_settings

__all__ = [
    "CommandFailed",
    "ConsoleClosed",
    "ConsoleSession",
    "ConsoleTransport",
    "LabClient",
    "RemoteError",
    "connect",
]


def connect(
    vm: str,
    mode: str = "interactive",
    *,
    resource_group: str | None = None,
    instance_id: int | str | None = None,
    replay: int = 0,
    user: str = "script",
    settings: Any = None,
    **spawn_options: Any,
) -> ConsoleSession:
    """Open a console session on `vm` through the lab daemon of this data dir (with
    `instance_id`, `vm` names a scale set and the session is on that instance).

    `mode` is "interactive" (takes the keyboard over from any other interactive session) or
    "view" (read-only). `replay` bytes of history come first; scripts usually want none, so a
    stale `login:` in the history is not mistaken for a fresh one. `spawn_options` go to
    `ConsoleSession` (timeout, logfile, encoding, char_delay).
    """
    client = LabClient(settings or get_settings())
    instance = None if instance_id is None else str(instance_id)
    conn = client.open_console(vm, resource_group=resource_group, mode=mode, replay=replay,
                               user=user, instance_id=instance)  # fmt: skip
    name = vm if instance is None else f"{vm}_{instance}"
    return ConsoleSession(conn, vm=name, mode=mode, **spawn_options)
