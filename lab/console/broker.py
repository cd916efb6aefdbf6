"""One console broker per VM: the only client of the VM's serial chardev.

Output: every subscriber is fed from the serial log (see `follower.py`) through its own
bounded queue; a subscriber whose queue overflows is dropped with a notice, so a stalled viewer
never slows the guest or the other viewers. A new subscriber first gets up to `replay_bytes` of
history, then the live stream, with no gap or overlap between the two (both happen on the
event loop, between two follower reads).

Input: one interactive session at a time. A second interactive connect takes the session over:
the first is closed with Azure's notice and the guest shell stays logged in, because the
chardev connection itself never changes hands.
"""

from __future__ import annotations

import asyncio
import collections
import itertools
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Protocol

from lab.console.follower import LogFollower
from lab.console.log_keeper import LogKeeper
from lab.domain.errors import Conflict, HypervisorError, HypervisorUnavailable, StateError
from lab.domain.guest_health import HangWatch
from lab.hypervisor.base import ConsoleStream
from lab.storage.serial_log import RotatingLog

log = logging.getLogger(__name__)

TAKEOVER_NOTICE = "another user connected to this console"
SLOW_NOTICE = "this viewer fell too far behind the console output and was disconnected"
#: Bytes a subscriber may have queued before it counts as stalled (each chunk's data plus its
#: ENTRY_COST).
DEFAULT_QUEUE_LIMIT = 4 * 1024 * 1024
#: What a queued chunk counts against the limit beyond its data: its queue entry and its share
#: of the chunk's objects. A queue of many tiny chunks is then bounded in memory too.
ENTRY_COST = 64
#: How often the broker checks that virtlogd still writes the log.
_CHECK_S = 1.0


class SessionMode(StrEnum):
    INTERACTIVE = "interactive"
    VIEW = "view"


@dataclass(frozen=True)
class Chunk:
    offset: int
    data: bytes

    @property
    def cost(self) -> int:
        """What the chunk counts against a subscriber's queue limit."""
        return len(self.data) + ENTRY_COST


@dataclass(frozen=True)
class Closed:
    """The last item a subscriber receives: why its session ended."""

    reason: str


@dataclass(eq=False)
class Subscriber:
    id: int
    mode: SessionMode
    user: str
    queue: asyncio.Queue[Chunk | Closed] = field(default_factory=asyncio.Queue)
    #: What the queued chunks count against the limit (see `Chunk.cost`).
    queued_bytes: int = 0
    closed: bool = False

    async def next(self) -> Chunk | Closed:
        item = await self.queue.get()
        if isinstance(item, Chunk):
            self.queued_bytes -= item.cost
        return item


OpenConsole = Callable[[Callable[[bytes], None], Callable[[], None]], ConsoleStream]


class RemoteLog(Protocol):
    """A guest on a remote host: its log is a copy the lab keeps (`log_mirror.py`), told about
    the console stream."""

    def data(self, data: bytes) -> None:
        """The stream's bytes, on its drain thread (the copy may take them at once)."""

    def output(self) -> None:
        """The stream showed output (on the event loop): compare the copy with the host's."""

    def reset(self) -> None:
        """The stream ended, or another is opening."""


class ConsoleBroker:
    def __init__(
        self,
        vm: str,
        log_path: Path,
        open_console: OpenConsole,
        *,
        replay_bytes: int = 64 * 1024,
        queue_limit: int = DEFAULT_QUEUE_LIMIT,
        remote_log: RemoteLog | None = None,
    ) -> None:
        self.vm = vm
        #: For a guest on a remote host: its log is a copy the lab keeps (`log_mirror.py`),
        #: fed from the stream and checked against the host's file. Such a log is never taken
        #: over by the log keeper (the host's virtlogd writes the original).
        self._remote_log = remote_log
        #: Attaches in flight off the loop, and the keys typed meanwhile (sent once attached).
        self._attaching = 0
        self._queued_input = bytearray()
        self.log_path = log_path
        self._open_console = open_console
        self.replay_bytes = replay_bytes
        self.queue_limit = queue_limit
        self._subscribers: dict[int, Subscriber] = {}
        self._ids = itertools.count(1)
        self._interactive: Subscriber | None = None
        self._stream: ConsoleStream | None = None
        #: Counts detaches: an attach whose stream opens after one is stale.
        self._generation = 0
        self._follower: LogFollower | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        #: Takes the log over if virtlogd stops writing it (see `log_keeper.py`).
        self.log_keeper = LogKeeper(vm, log_path, self._publish_unlogged)
        self._tick: asyncio.TimerHandle | None = None
        #: Chardev output not yet seen on the event loop (appended by the stream's drain
        #: thread), and whether a look is queued (see `_wake`).
        self._inbox: collections.deque[bytes] = collections.deque()
        self._wake_pending = False
        #: Whether the guest's kernel says it is hung (every byte of output passes here).
        self.hang_watch = HangWatch()

    # -- lifecycle ----------------------------------------------------------------------------
    def start_following(self) -> None:
        """Follow the log from its current end (history is served from the file on demand)."""
        if self._follower is not None:
            return
        self._loop = asyncio.get_running_loop()
        end, base = RotatingLog(self.log_path).tail()
        self._follower = LogFollower(self.log_path, end, self._publish, base=base)
        self._follower.start()

    def attach_chardev(self) -> None:
        """Open the VM's serial chardev now, on the event loop (see `attach_chardev_off_loop`)."""
        on_close = self._before_attach()
        self._attached(self._open_console(self._wake, on_close))

    async def attach_chardev_off_loop(self) -> None:
        """Open the VM's serial chardev (after the domain started, before its CPUs run), the
        libvirt call in a thread: while libvirtd starts other domains it answers in 0.2-1.2 s,
        and on the event loop that wait froze every console and request."""
        on_close = self._before_attach()
        generation = self._generation
        self._attaching += 1
        try:
            stream = await asyncio.to_thread(self._open_console, self._wake, on_close)
        except BaseException:
            self._queued_input.clear()
            raise
        finally:
            self._attaching -= 1
        if generation != self._generation:  # detached (or attached anew) meanwhile
            stream.close()
            self._queued_input.clear()
            return
        self._attached(stream)

    def _before_attach(self) -> Callable[[], None]:
        self.start_following()
        self.detach_chardev()
        loop = self._loop
        assert loop is not None

        def on_close() -> None:
            loop.call_soon_threadsafe(self._chardev_closed)

        # Viewers are fed from the log, which carries the same bytes in order; the stream's
        # own bytes only tell whether the log keeps up (see `log_keeper.py`).
        assert self._follower is not None
        self._follower.poll()
        self._inbox.clear()  # what the previous stream delivered was counted against it
        self.log_keeper.reset()
        if self._remote_log is not None:
            self._remote_log.reset()
        self.hang_watch.clear()  # a new QEMU process: a new boot
        return on_close

    def _attached(self, stream: ConsoleStream) -> None:
        assert self._loop is not None
        self._stream = stream
        if self._queued_input:
            keys, self._queued_input = bytes(self._queued_input), bytearray()
            stream.write(keys)
        self._tick = self._loop.call_later(_CHECK_S, self._check_log)

    def detach_chardev(self) -> None:
        self._generation += 1  # an attach still opening its stream must not install it
        if self._stream is not None:
            self._stream.close()
            self._stream = None
        self._stop_tick()

    def _stop_tick(self) -> None:
        if self._tick is not None:
            self._tick.cancel()
            self._tick = None

    def _chardev_closed(self) -> None:
        self._stream = None
        if self._remote_log is not None:
            self._remote_log.reset()
        self._stop_tick()
        if self._follower:
            self._follower.poll()

    def _wake(self, data: bytes) -> None:
        # The pty stream saw output (called on the stream's drain thread): the log will have it
        # in a moment; look now rather than waiting for inotify. At most one look is queued at
        # a time, so a burst of output costs the event loop one look, not one per chunk.
        if self._remote_log is not None:
            self._remote_log.data(data)
        self._inbox.append(data)
        if self._loop and not self._wake_pending:
            self._wake_pending = True
            self._loop.call_soon_threadsafe(self._woken)

    def _woken(self) -> None:
        self._wake_pending = False
        if self._remote_log is not None:
            self._inbox.clear()
            self._remote_log.output()
        while self._inbox:
            # The keeper counts the stream against the log (or writes the log itself).
            self.log_keeper.on_stream(self._inbox.popleft())
        if self._follower:
            self._follower.nudge()

    def _check_log(self) -> None:
        self.log_keeper.check()
        if self._stream is not None and self._loop is not None:
            self._tick = self._loop.call_later(_CHECK_S, self._check_log)

    def close(self, reason: str = "the console was closed") -> None:
        self.detach_chardev()
        if self._follower:
            self._follower.stop()
            self._follower = None
        for sub in list(self._subscribers.values()):
            self._drop(sub, reason)

    @property
    def attached(self) -> bool:
        return self._stream is not None

    @property
    def offset(self) -> int:
        return self._follower.offset if self._follower else 0

    # -- subscribers --------------------------------------------------------------------------
    def subscribe(self, mode: SessionMode, user: str, replay: int | None = None) -> Subscriber:
        self.start_following()
        assert self._follower is not None
        self._follower.poll()  # everything already written counts as history, not as live
        sub = Subscriber(next(self._ids), mode, user)
        history = self._history(self.replay_bytes if replay is None else replay)
        if history.data:
            self._enqueue(sub, history)
        if mode is SessionMode.INTERACTIVE:
            if self._interactive is not None:
                self._drop(self._interactive, TAKEOVER_NOTICE)
            self._interactive = sub
        self._subscribers[sub.id] = sub
        return sub

    def unsubscribe(self, sub: Subscriber) -> None:
        self._subscribers.pop(sub.id, None)
        if self._interactive is sub:
            self._interactive = None
        sub.closed = True

    @property
    def interactive(self) -> Subscriber | None:
        return self._interactive

    def subscribers(self) -> list[Subscriber]:
        return list(self._subscribers.values())

    def write(self, sub: Subscriber, data: bytes) -> None:
        if sub.mode is not SessionMode.INTERACTIVE or self._interactive is not sub:
            raise Conflict(f"this console session of VM '{self.vm}' is read-only")
        self.write_admin(data)

    def write_admin(self, data: bytes) -> None:
        """Bytes to the chardev: a session's keys (through `write`), or an admin command's
        (the key after a serial BREAK)."""
        if self._stream is None and self._attaching:
            # The keeper is opening the chardev right now: a second open (FORCE) would take
            # the console from the first, and the keys written to one of them would be lost
            # (seen after a host's libvirtd restart, test_hosts.py). The keys wait for it.
            self._queued_input += data
            return
        if self._stream is None:
            # The VM may run with its chardev detached (libvirtd was restarted a moment ago
            # and the keeper has not been round yet): open it now rather than lose the keys.
            try:
                self.attach_chardev()
            except HypervisorError as exc:
                if isinstance(exc, HypervisorUnavailable):
                    raise
                raise StateError("console input", "not running", ("running",),
                                 target=self.vm) from exc  # fmt: skip
        assert self._stream is not None
        self._stream.write(data)

    def _history(self, nbytes: int) -> Chunk:
        # Global offsets across virtlogd's rotations, up to what the follower has published:
        # history ends exactly where the live stream begins.
        end = self.offset
        blob = RotatingLog(self.log_path).read(max(0, end - max(0, nbytes)), None)
        return Chunk(blob.start, blob.data[: max(0, end - blob.start)])

    def _publish(self, offset: int, data: bytes) -> None:
        self.log_keeper.on_log(len(data))
        self._watch(data)
        self._fan_out(Chunk(offset, data))

    def _watch(self, data: bytes) -> None:
        was_hung = self.hang_watch.warning is not None
        self.hang_watch.feed(data, time.time())
        warning = self.hang_watch.warning
        if warning is not None and not was_hung:
            log.warning("VM %s: %s", self.vm, warning.message)

    def _publish_unlogged(self, data: bytes) -> None:
        # Output the log could not take (disk full): live only, at the log's current end. What
        # a partial write did put in the log goes out first, so the order holds.
        if self._follower:
            self._follower.poll()
        self._watch(data)
        self._fan_out(Chunk(self.offset, data))

    def _fan_out(self, chunk: Chunk) -> None:
        for sub in list(self._subscribers.values()):
            if sub.queued_bytes + chunk.cost > self.queue_limit:
                self._drop(sub, SLOW_NOTICE)
            else:
                self._enqueue(sub, chunk)

    def _enqueue(self, sub: Subscriber, chunk: Chunk) -> None:
        sub.queued_bytes += chunk.cost
        sub.queue.put_nowait(chunk)

    def _drop(self, sub: Subscriber, reason: str) -> None:
        self.unsubscribe(sub)
        sub.queue.put_nowait(Closed(reason))
