"""Boot slots: no more guests boot at once than the host has cores.

One rule, for every path that boots a guest (create, start, restart, reset, power-cycle,
redeploy, reimage, a scale-set instance, a scenario): the VM takes a slot before its guest
powers on or resets, and keeps it until its boot is over -- its console shows a login prompt,
the image's "boot finished" line, a stop a broken boot makes (emergency mode, a panic, GRUB's
prompt) or a hang sign (`lab.domain.guest_health.boot_over`) -- or `BOOT_SLOT_TIMEOUT_S` has
passed, or it is stopped.

Why until the boot is over, not until the domain starts: under TCG a booting guest keeps a
core busy for its whole boot (4-20 s alone). Twenty guests started at once on two cores each
get a tenth of a core; their boots stretch tenfold, and a kernel starved of CPU for over 20 s
prints soft lockups or gives up on its timer. Bounded, each boot runs at full speed and the
fleet is up no later. A VM that boots again while it holds a slot (a reset during its boot)
keeps that one slot.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import os
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

from lab.domain.errors import LabError
from lab.domain.guest_health import boot_over
from lab.storage.serial_log import RotatingLog

#: A boot that shows none of its end signs gives its slot up after this long.
BOOT_SLOT_TIMEOUT_S = 120.0
#: How often a holder's console log is read for the end of its boot.
_POLL_S = 0.25
#: How much of the boot's output is kept between reads: the end signs are short lines.
_CARRY = 512


@dataclass
class _Hold:
    log: Path
    start: int
    ended: asyncio.Event = field(default_factory=asyncio.Event)
    since: float = field(default_factory=time.monotonic)
    watcher: asyncio.Task[None] | None = None


class BootSlots:
    """At most `size` guests booting; see the module's docstring for the rule and why."""

    def __init__(self, size: int | None = None, timeout: float = BOOT_SLOT_TIMEOUT_S) -> None:
        self.size = size or max(1, os.cpu_count() or 1)
        self.timeout = timeout
        self._free = asyncio.Semaphore(self.size)
        self._held: dict[str, _Hold] = {}
        #: How long the last boots held their slot (seconds): what a queue's estimate uses.
        self.recent: collections.deque[float] = collections.deque(maxlen=20)

    @property
    def booting(self) -> list[str]:
        """The domains holding a slot."""
        return sorted(self._held)

    async def boot(self, domain: str, log: Path, power_on: Callable[[], Awaitable[None]]) -> None:
        """Take a slot for `domain` (or keep the one it holds), run `power_on` (which starts or
        resets the guest), and hold the slot until the boot is over. Returns once powered on."""
        previous = self._held.pop(domain, None)
        if previous is None:
            await self._free.acquire()
        else:
            self._end(previous)
        start = (await asyncio.to_thread(RotatingLog(log).tail))[0]
        hold = self._held[domain] = _Hold(log, start)
        try:
            await power_on()
        except BaseException:
            self.release(domain)
            raise
        hold.watcher = asyncio.create_task(self._watch(domain, hold))

    def release(self, domain: str) -> None:
        """The VM stopped (or its boot is over): its slot goes to the next boot."""
        hold = self._held.pop(domain, None)
        if hold is not None:
            self._end(hold)
            self._free.release()

    async def booted(self, domain: str) -> None:
        """Wait until `domain` holds no slot (its boot, or the one after a reset, is over)."""
        while (hold := self._held.get(domain)) is not None:
            await hold.ended.wait()

    def _end(self, hold: _Hold) -> None:
        if not hold.ended.is_set():
            self.recent.append(time.monotonic() - hold.since)
        hold.ended.set()
        if hold.watcher is not None and hold.watcher is not asyncio.current_task():
            hold.watcher.cancel()

    async def _watch(self, domain: str, hold: _Hold) -> None:
        log = RotatingLog(hold.log)
        deadline = time.monotonic() + self.timeout
        offset, seen = hold.start, b""
        while time.monotonic() < deadline:
            # Not written yet, rotating, or started anew (offset past its end): next time.
            with contextlib.suppress(OSError, LabError):
                blob = await asyncio.to_thread(log.read, offset, None)
                offset, seen = blob.next, seen[-_CARRY:] + blob.data
                if boot_over(seen):
                    break
            await asyncio.sleep(_POLL_S)
        if self._held.get(domain) is hold:
            self.release(domain)
