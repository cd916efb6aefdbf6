"""Capacity admission for scenario starts: a start waits in a queue, in order, while the lab
is full, and is refused at once when it could never fit.

Full means either of:
- as many guests booting as the ceiling allows (`admission_booting`, default the boot slots:
  one per core): a boot under TCG keeps a core busy, so more at once only stretch every boot;
- the memory the hosts' guests hold, plus this VM's, over the ceiling
  (`admission_memory_percent` of what the reachable hosts offer guests).

Refused (`AllocationFailed`, 409) when the VM alone is over the memory ceiling, or the queue
holds `admission_queue_max` starts already. While queued, a start has a position and an
estimate (the queue ahead, times the recent boots' mean length, over the boot ceiling), which
the trainee's portal shows instead of a spinner.

Boot slots (`boot_slots.py`) bound every boot in the lab; admission is the visible queue in
front of the starts people wait on, and the memory check the slots do not make.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import statistics
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

from lab.domain.errors import AllocationFailed
from lab.services.boot_slots import BootSlots

log = logging.getLogger(__name__)

#: How often a waiting queue looks at the capacity again (boots end without telling us).
POLL_S = 0.25
#: A boot's length before any was measured (the tiny image takes ~5 s, Debian ~20 s).
DEFAULT_BOOT_S = 20.0


@dataclass(frozen=True)
class Capacity:
    """What the hosts' guests hold now, and what they can hold, in MiB."""

    used_memory_mib: int
    max_memory_mib: int


@dataclass
class Ticket:
    key: str
    memory_mib: int
    number: int
    #: The domain its boot slot will be held under: once the body powers the VM on, the slot
    #: counts it, and the ticket must not count it a second time.
    domain: str
    queued_at: float = field(default_factory=time.monotonic)
    admitted: asyncio.Event = field(default_factory=asyncio.Event)
    admitted_at: float | None = None


class Admission:
    def __init__(self, slots: BootSlots, capacity: Callable[[], Capacity], *,
                 max_booting: int = 0, memory_percent: float = 90.0,
                 queue_max: int = 100) -> None:  # fmt: skip
        self.slots = slots
        self.capacity = capacity
        self.max_booting = max_booting or slots.size
        self.memory_percent = memory_percent
        self.queue_max = queue_max
        self._waiting: list[Ticket] = []
        self._admitted: dict[int, Ticket] = {}
        self._numbers = itertools.count(1)
        self._pump_task: asyncio.Task[None] | None = None
        #: The most starts seen booting at once (booting guests plus admitted starts): what
        #: the test of "nothing overloads" reads.
        self.peak_booting = 0
        #: What the head of the queue waits for: "a boot slot" or "memory" (another VM to stop;
        #: no estimate then).
        self.waiting_for = "a boot slot"

    # -- what is waiting ----------------------------------------------------------------------
    def position(self, key: str) -> tuple[int, float | None] | None:
        """(1-based place in the queue, estimated seconds until it starts, or None while the
        queue waits for memory), or None when `key` is not queued."""
        for place, ticket in enumerate(self._waiting, 1):
            if ticket.key == key:
                return place, self._estimate(place)
        return None

    def status(self) -> dict[str, object]:
        return {
            "maxBooting": self.max_booting, "booting": self._booting(),
            "peakBooting": self.peak_booting, "memoryPercent": self.memory_percent,
            "queueMax": self.queue_max, "waitingFor": self.waiting_for if self._waiting else None,
            "queue": [{"key": t.key, "position": n, "estimateSeconds": self._estimate(n)}
                      for n, t in enumerate(self._waiting, 1)],
        }  # fmt: skip

    def _estimate(self, place: int) -> float | None:
        if self.waiting_for == "memory":
            return None  # until another VM stops: nobody knows when
        recent = list(self.slots.recent)
        boot = statistics.mean(recent) if recent else DEFAULT_BOOT_S
        return round(boot * place / self.max_booting, 1)

    def _booting(self) -> int:
        return len(set(self.slots.booting) | {t.domain for t in self._admitted.values()})

    def _not_booted_yet(self) -> list[Ticket]:
        """Admitted starts whose VM holds no boot slot yet (nor, so, memory on a host)."""
        booting = set(self.slots.booting)
        return [t for t in self._admitted.values() if t.domain not in booting]

    # -- entering ---------------------------------------------------------------------------
    @contextlib.asynccontextmanager
    async def admit(self, key: str, memory_mib: int,
                    domain: str | None = None) -> AsyncIterator[Ticket]:  # fmt: skip
        """Wait for room, in order; hold it for the body (which creates and powers on the VM
        `domain`, after which its boot slot counts it)."""
        cap = await asyncio.to_thread(self.capacity)
        ceiling = self._ceiling(cap)
        if memory_mib > ceiling:
            raise AllocationFailed(
                f"'{key}' needs {memory_mib} MiB, over the lab's memory ceiling of {ceiling} MiB "
                f"({self.memory_percent:g}% of {cap.max_memory_mib} MiB the hosts offer): it can "
                "never start here. Add a host (`lab host add`) or raise "
                "LAB_ADMISSION_MEMORY_PERCENT.", target=key)  # fmt: skip
        if len(self._waiting) >= self.queue_max:
            raise AllocationFailed(
                f"'{key}' cannot queue: {len(self._waiting)} starts wait already, the most the "
                f"lab queues (LAB_ADMISSION_QUEUE_MAX={self.queue_max}). Try again when some "
                "have started.", target=key)  # fmt: skip
        ticket = Ticket(key, memory_mib, next(self._numbers), domain or key)
        self._waiting.append(ticket)
        self._kick()
        try:
            await ticket.admitted.wait()
            yield ticket
        finally:
            with contextlib.suppress(ValueError):
                self._waiting.remove(ticket)
            self._admitted.pop(ticket.number, None)
            self._kick()

    def _ceiling(self, cap: Capacity) -> int:
        return int(cap.max_memory_mib * self.memory_percent / 100)

    def _kick(self) -> None:
        if self._waiting and (self._pump_task is None or self._pump_task.done()):
            self._pump_task = asyncio.get_running_loop().create_task(self._pump())

    async def _pump(self) -> None:
        """Admit the head of the queue while there is room; look again every POLL_S."""
        while self._waiting:
            head = self._waiting[0]
            slot = self._booting() < self.max_booting
            memory = slot and await self._memory_fits(head)
            # "memory" only when memory is what holds the head back: an admission (slot and
            # memory both free) must not leave the next head's estimate blank meanwhile.
            self.waiting_for = "memory" if slot and not memory else "a boot slot"
            if memory:
                self._waiting.pop(0)
                head.admitted_at = time.monotonic()
                self._admitted[head.number] = head
                self.peak_booting = max(self.peak_booting, self._booting())
                log.info("admitted %s after %.1f s in the queue", head.key,
                         head.admitted_at - head.queued_at)  # fmt: skip
                head.admitted.set()
                continue
            await asyncio.sleep(POLL_S)

    async def _memory_fits(self, head: Ticket) -> bool:
        try:
            cap = await asyncio.to_thread(self.capacity)
        except Exception:  # a host that does not answer: no memory check this round
            log.exception("admission: reading the hosts' capacity failed")
            return True
        held = sum(t.memory_mib for t in self._not_booted_yet())
        return cap.used_memory_mib + held + head.memory_mib <= self._ceiling(cap)
