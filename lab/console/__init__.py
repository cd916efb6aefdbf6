"""The console: per-VM brokers in the lab daemon, and the Python API for scripts and CI.

from lab.console import connect

with connect("vm1") as console:          # pexpect-compatible
    console.login("azureuser", "Passw0rd!")
    output, status = console.run("uname -r")
"""

from __future__ import annotations

from typing import Any

from lab.console.session import ConsoleClosed, ConsoleSession

__all__ = ["ConsoleClosed", "ConsoleSession", "connect"]


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
    # The daemon client lives in lab.api (HTTP); imported here so that the brokers in this
    # package, which run inside the daemon, never depend on it.
    from lab.api.client import LabClient
    from lab.settings import get_settings

    client = LabClient(settings or get_settings())
    instance = None if instance_id is None else str(instance_id)
    conn = client.open_console(vm, resource_group=resource_group, mode=mode, replay=replay,
                               user=user, instance_id=instance)  # fmt: skip
    name = vm if instance is None else f"{vm}_{instance}"
    return ConsoleSession(conn, vm=name, mode=mode, **spawn_options)
