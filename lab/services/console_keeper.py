"""Keep a console broker attached to every running VM, whatever happened to the chardev.

A broker's chardev stream ends when libvirtd goes away (restarted, upgraded, killed) while the
guest keeps running, and nothing else would open it again: the guest's output still reaches the
boot log (virtlogd writes it), but viewers would see nothing and keys would go nowhere. So the
daemon looks every `interval` seconds (one libvirt RPC lists every domain's state) and attaches
the broker of each running VM that has none; while libvirt is unreachable it says so once, and
once again when libvirt is back.
"""

from __future__ import annotations

import asyncio
import logging

from lab.domain.errors import HypervisorUnavailable, LabError
from lab.domain.power import PowerState
from lab.services.consoles import ConsoleService
from lab.services.vms import VmService

log = logging.getLogger(__name__)

#: How often the keeper looks; a viewer waits at most about this long after libvirtd is back.
INTERVAL_S = 1.0


class ConsoleKeeper:
    def __init__(self, vms: VmService, consoles: ConsoleService, interval: float = INTERVAL_S):
        self.vms = vms
        self.consoles = consoles
        self.interval = interval
        self._unavailable = False
        #: Domains whose last attach failed, with the error (logged once per new error).
        self._failed: dict[str, str] = {}

    async def run(self) -> None:
        while True:
            await self.check_once()
            await asyncio.sleep(self.interval)

    async def check_once(self) -> list[str]:
        """Attach the broker of every running VM that lacks one; returns those attached."""
        try:
            views = await asyncio.to_thread(self.vms.machines)
        except HypervisorUnavailable as exc:
            if not self._unavailable:
                log.warning("libvirt is unreachable; consoles reattach when it is back: %s", exc)
            self._unavailable = True
            return []
        if self._unavailable:
            log.warning("libvirt is reachable again; reattaching consoles")
            self._unavailable = False
        attached = []
        for view in views:
            domain = view.identity.domain_name
            broker = self.consoles.existing(domain)
            # A VM in a power operation is the operation's business (it attaches when it
            # starts the domain); checked here, on the loop, right before attaching.
            if view.power_state is not PowerState.RUNNING or self.vms.in_operation(domain):
                continue
            if broker is not None and broker.attached:
                continue
            try:
                log_path = self.vms.ctx.serial_log_path(view.identity, view.model)
                self.consoles.attach(domain, log_path)
            except LabError as exc:
                if self._failed.get(domain) != str(exc):
                    log.warning("cannot attach the console of %s: %s", domain, exc)
                self._failed[domain] = str(exc)
                continue
            self._failed.pop(domain, None)
            attached.append(domain)
        return attached
