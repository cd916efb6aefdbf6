"""Keep every running VM's console working, whatever happened to its chardev or its disk.

A broker's chardev stream ends when libvirtd goes away (restarted, upgraded, killed) while the
guest keeps running, and nothing else would open it again: the guest's output still reaches the
boot log (virtlogd writes it), but viewers would see nothing and keys would go nowhere. So the
daemon looks every `interval` seconds (one libvirt RPC lists every domain's state) and attaches
the broker of each running VM that has none; while libvirt is unreachable it says so once, and
once again when libvirt is back.

It also resumes the VMs QEMU paused because a write to their disk failed (the data dir's disk
was full) once the disk has `RESUME_FREE_BYTES` free again: the guest's write is then retried
and it goes on as if nothing happened.
"""

from __future__ import annotations

import asyncio
import logging
import shutil

from lab.domain.errors import HypervisorUnavailable, LabError
from lab.domain.hosts import LOCAL
from lab.domain.power import PowerState
from lab.domain.vm import VmView
from lab.hypervisor.base import PAUSED_ON_IO_ERROR
from lab.services.consoles import ConsoleService
from lab.services.vms import VmService

log = logging.getLogger(__name__)

#: How often the keeper looks; a viewer waits at most about this long after libvirtd is back.
INTERVAL_S = 1.0
#: Free space in the disk dir before a VM paused on a failed disk write is resumed (so that it
#: is not paused again at once).
RESUME_FREE_BYTES = 16 * 1024 * 1024


class ConsoleKeeper:
    def __init__(self, vms: VmService, consoles: ConsoleService, interval: float = INTERVAL_S):
        self.vms = vms
        self.consoles = consoles
        self.interval = interval
        self._unavailable = False
        self._disk_full = False
        #: Domains whose last attach failed, with the error (logged once per new error).
        self._failed: dict[str, str] = {}

    async def run(self) -> None:
        while True:
            try:
                await self.check_once()
            except Exception:  # the keeper must outlive any one bad round
                log.exception("the console keeper's round failed; trying again")
            await asyncio.sleep(self.interval)

    async def check_once(self) -> list[str]:
        """Attach the broker of every running VM that lacks one; returns those attached."""
        try:
            views = await self.vms.machines_now()
        except HypervisorUnavailable as exc:
            if not self._unavailable:
                log.warning("libvirt is unreachable; consoles reattach when it is back: %s", exc)
            self._unavailable = True
            return []
        if self._unavailable:
            log.warning("libvirt is reachable again; reattaching consoles")
            self._unavailable = False
        await self._resume_paused_on_io_error(views)
        attached = []
        for view in views:
            domain = view.identity.domain_name
            if view.host != LOCAL and not self.vms.log_mirrors.tracked(domain):
                self.vms.follow_log(view)  # adopted: its log copy goes on from where it stopped
            broker = self.consoles.existing(domain)
            # A VM in a power operation is the operation's business (it attaches when it
            # starts the domain); checked here, on the loop, right before attaching.
            if view.power_state is not PowerState.RUNNING or self.vms.in_operation(domain):
                continue
            if broker is not None and broker.attached:
                continue
            try:
                log_path = self.vms.ctx.serial_log_path(view.identity, view.model)
                await self.consoles.attach(domain, log_path)
            except LabError as exc:
                if self._failed.get(domain) != str(exc):
                    log.warning("cannot attach the console of %s: %s", domain, exc)
                self._failed[domain] = str(exc)
                continue
            self._failed.pop(domain, None)
            attached.append(domain)
        return attached

    async def _resume_paused_on_io_error(self, views: list[VmView]) -> None:
        paused = [v for v in views if v.stop_reason == PAUSED_ON_IO_ERROR
                  and not self.vms.in_operation(v.identity.domain_name)]  # fmt: skip
        if not paused:
            return
        disk_dir = self.vms.ctx.settings.disk_dir
        free = shutil.disk_usage(disk_dir).free
        if free < RESUME_FREE_BYTES:
            if not self._disk_full:
                log.warning("%s paused: a disk write failed and %s has %d bytes free; they "
                            "resume when it has %d", ", ".join(v.identity.name for v in paused),
                            disk_dir, free, RESUME_FREE_BYTES)  # fmt: skip
            self._disk_full = True
            return
        self._disk_full = False
        for view in paused:
            try:
                await asyncio.to_thread(self.vms.ctx.hypervisor.resume, view.identity.domain_name)
            except LabError as exc:
                log.warning("cannot resume %s: %s", view.identity.name, exc)
                continue
            log.warning("resumed %s (paused on a failed disk write; %d bytes free now)",
                        view.identity.name, free)  # fmt: skip
