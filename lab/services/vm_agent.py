"""Azure's VM agent functions for a running guest, through QEMU's guest agent (qemu-guest-agent
on the virtio-serial channel `org.qemu.guest_agent.0`, which the debian image runs and the tiny
image does not): the VM access extension's password reset, and Run Command.

An agent that does not answer is waited for, up to `AGENT_WAIT_S` (a VM that has just booted
starts its agent a few seconds after its login prompt), then the request fails as Azure's does
when a VM's agent has not reported (`VMAgentStatusCommunicationError`): the training case of
"the agent is down, so use the serial console".

The extensions a VM has are kept in the lab's state file (section `extensions`, by the VM's
vmId, so a new VM of the same name starts without any), never with their protected settings: a
password goes from the request to libvirt's `setUserPassword` and nowhere else.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import time
from dataclasses import dataclass, replace
from typing import Any

from lab.domain.errors import Conflict, LabError, NotFound, VmAgentNotReady
from lab.domain.power import PowerState
from lab.domain.resource_ids import same
from lab.domain.vm import VmView
from lab.domain.vm_agent import (
    Extension,
    PasswordReset,
    ShellScript,
    failed,
    succeeded,
)
from lab.services.context import LabContext
from lab.storage.state import StateFile

log = logging.getLogger(__name__)

#: How long a request waits for a guest agent that does not answer yet.
AGENT_WAIT_S = 30.0
#: How long one agent command may take to answer (a guest-exec start, a status read).
COMMAND_TIMEOUT_S = 10
#: How long a Run Command script may run (Azure's limit is 90 minutes; a lab's are short).
SCRIPT_TIMEOUT_S = 600.0
_POLL_S = 0.2
#: Creates the user if it is new, in the admin group (`sudo` on Debian), as the VM access
#: extension does; the name arrives as $1, never inside the script's text.
_ENSURE_USER = ('id -u -- "$1" >/dev/null 2>&1 || '
                'useradd --create-home --shell /bin/bash --groups sudo -- "$1"')  # fmt: skip


@dataclass(frozen=True)
class ExecResult:
    exit_code: int
    stdout: str
    stderr: str


class VmAgentService:
    def __init__(self, ctx: LabContext, state: StateFile, *,
                 wait_s: float = AGENT_WAIT_S) -> None:  # fmt: skip
        self.ctx = ctx
        self.state = state
        self.wait_s = wait_s
        state.section("extensions", dict[str, list[dict[str, Any]]], "the VMs' extensions")

    # -- the agent ----------------------------------------------------------------------------
    async def ready(self, view: VmView) -> None:
        """Return once the guest agent answers; `VmAgentNotReady` after `wait_s`."""
        if view.power_state is not PowerState.RUNNING:
            raise Conflict(f"VM '{view.identity.name}' is {view.power_state.value}: its agent "
                           "runs only while it runs. Start it first.",
                           target=view.identity.name)  # fmt: skip
        deadline = time.monotonic() + self.wait_s
        while True:
            try:
                await self._command(view, {"execute": "guest-ping"})
                return
            except VmAgentNotReady as exc:
                if time.monotonic() >= deadline:
                    raise VmAgentNotReady(
                        f"VM '{view.identity.name}' has not reported status for VM agent or "
                        "extensions: its guest agent did not answer in "
                        f"{self.wait_s:g} s ({exc.message}). The tiny image has no agent; "
                        "on the debian image, qemu-guest-agent may be stopped. The serial "
                        "console still works.", target=view.identity.name) from exc  # fmt: skip
            await asyncio.sleep(_POLL_S * 5)

    async def run_shell(self, view: VmView, script: ShellScript, *,
                        timeout: float = SCRIPT_TIMEOUT_S) -> ExecResult:  # fmt: skip
        await self.ready(view)
        return await self._exec(view, ["/bin/sh", "-c", script.script], script.env, timeout)

    async def reset_password(self, view: VmView, reset: PasswordReset) -> None:
        await self.ready(view)
        made = await self._exec(view, ["/bin/sh", "-c", _ENSURE_USER, "sh", reset.username],
                                {}, 60)  # fmt: skip
        if made.exit_code != 0:
            raise LabError(f"Creating the user '{reset.username}' in the guest failed (exit "
                           f"status {made.exit_code}): {made.stderr.strip()[-300:]}")  # fmt: skip
        domain = view.identity.domain_name
        await asyncio.to_thread(self.ctx.hypervisor.set_user_password, domain, reset.username,
                                reset.password)  # fmt: skip
        log.info("vm %s: password of %s reset through the guest agent", view.identity.name,
                 reset.username)  # fmt: skip

    async def _exec(self, view: VmView, argv: list[str], env: dict[str, str],
                    timeout: float) -> ExecResult:  # fmt: skip
        args: dict[str, Any] = {"path": argv[0], "arg": argv[1:], "capture-output": True}
        if env:
            args["env"] = [f"{k}={v}" for k, v in env.items()]
        started = await self._command(view, {"execute": "guest-exec", "arguments": args})
        pid = started["pid"]
        deadline = time.monotonic() + timeout
        while True:
            status = await self._command(view, {"execute": "guest-exec-status",
                                                "arguments": {"pid": pid}})  # fmt: skip
            if status.get("exited"):
                return ExecResult(
                    int(status.get("exitcode", -1)), _text(status.get("out-data")),
                    _text(status.get("err-data")))  # fmt: skip
            if time.monotonic() >= deadline:
                raise LabError(f"The script on '{view.identity.name}' did not end in "
                               f"{timeout:g} s.", target=view.identity.name)  # fmt: skip
            await asyncio.sleep(_POLL_S)

    async def _command(self, view: VmView, command: dict[str, Any]) -> Any:
        domain = view.identity.domain_name
        return await asyncio.to_thread(self.ctx.hypervisor.agent_command, domain, command,
                                       COMMAND_TIMEOUT_S)  # fmt: skip

    # -- extensions ---------------------------------------------------------------------------
    def extensions(self, view: VmView) -> list[Extension]:
        rows = self.state.read().get("extensions", {}).get(view.identity.vm_id, [])
        return [Extension.from_dict(r) for r in rows]

    def has(self, view: VmView, name: str) -> bool:
        return any(same(e.name, name) for e in self.extensions(view))

    def extension(self, view: VmView, name: str) -> Extension:
        for ext in self.extensions(view):
            if same(ext.name, name):
                return ext
        raise NotFound(f"The extension '{name}' of VM '{view.identity.name}' was not found.",
                       target=name)  # fmt: skip

    def save(self, view: VmView, ext: Extension) -> None:
        kept = [e for e in self.extensions(view) if not same(e.name, ext.name)]
        self._write(view, [*kept, ext])

    def remove(self, view: VmView, name: str) -> None:
        self.extension(view, name)
        kept = [e for e in self.extensions(view) if not same(e.name, name)]
        self._write(view, kept)

    def _write(self, view: VmView, exts: list[Extension]) -> None:
        every = dict(self.state.read().get("extensions", {}))
        every[view.identity.vm_id] = [e.to_dict() for e in exts]
        if not exts:
            del every[view.identity.vm_id]
        self.state.update("extensions", every)

    async def apply_vmaccess(self, view: VmView, ext: Extension, reset: PasswordReset) -> None:
        """The VM access extension's work: the password reset; its outcome is the extension's
        status (and the operation's error, when it failed)."""
        try:
            await self.reset_password(view, reset)
        except LabError as exc:
            status = failed(f"Enable failed: {exc.message}")
            self.save(view, replace(ext, provisioning_state="Failed", status=status))
            raise
        status = succeeded("Enable succeeded.")
        self.save(view, replace(ext, provisioning_state="Succeeded", status=status))


def _text(data: str | None) -> str:
    return base64.b64decode(data).decode(errors="replace") if data else ""
