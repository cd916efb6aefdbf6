"""The console broker on a real log file: fan-out, slow viewers, replay, takeover, rotation.

The log file plays virtlogd's part: the tests append to it as the guest's output would be.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import pytest

from lab.console.broker import (
    ENTRY_COST,
    SLOW_NOTICE,
    TAKEOVER_NOTICE,
    Chunk,
    Closed,
    ConsoleBroker,
    SessionMode,
    Subscriber,
)
from lab.console.follower import LogFollower
from lab.domain.errors import Conflict, HypervisorError, StateError
from lab.storage.serial_log import RotatingLog
from tests.unit.test_serial_log import rotate

TIMEOUT = 5.0


class FakeStream:
    """A serial chardev: input is recorded and echoed into the log, as a guest's tty would."""

    def __init__(
        self, log: Path, on_data: Callable[[bytes], None], on_close: Callable[[], None]
    ) -> None:
        self.log = log
        self.on_data = on_data
        self.on_close = on_close
        self.written = bytearray()
        self.closed = False

    def write(self, data: bytes) -> None:
        assert not self.closed, "write on a closed stream"
        self.written.extend(data)
        append(self.log, data)
        self.on_data(data)

    def close(self) -> None:
        self.closed = True


def append(path: Path, data: bytes) -> None:
    with path.open("ab") as f:
        f.write(data)


def run(test: Callable[[], Coroutine[Any, Any, None]]) -> None:
    asyncio.run(asyncio.wait_for(test(), 20))


async def next_item(sub: Subscriber) -> Chunk | Closed:
    return await asyncio.wait_for(sub.next(), TIMEOUT)


async def read_bytes(sub: Subscriber, n: int) -> list[Chunk]:
    """Chunks until `n` bytes have arrived (failing on a Closed)."""
    chunks: list[Chunk] = []
    while sum(len(c.data) for c in chunks) < n:
        item = await next_item(sub)
        assert isinstance(item, Chunk), f"closed early: {item}"
        chunks.append(item)
    assert sum(len(c.data) for c in chunks) == n, "more bytes than written"
    return chunks


def contiguous(chunks: list[Chunk], start: int) -> bytes:
    """The chunks' bytes, checking that each starts where the previous ended."""
    offset = start
    for c in chunks:
        assert c.offset == offset, f"gap or overlap at {offset}: chunk starts at {c.offset}"
        offset += len(c.data)
    return b"".join(c.data for c in chunks)


def drained(sub: Subscriber) -> list[Chunk | Closed]:
    items = []
    while not sub.queue.empty():
        items.append(sub.queue.get_nowait())
    return items


class Rig:
    """A broker on `log`, with the streams it opened."""

    def __init__(self, log: Path, **kwargs: Any) -> None:
        self.log = log
        self.streams: list[FakeStream] = []
        #: Whether the VM runs: its chardev opens only then.
        self.running = True
        self.broker = ConsoleBroker("vm1", log, self._open, **kwargs)

    def _open(self, on_data: Callable[[bytes], None], on_close: Callable[[], None]) -> FakeStream:
        if not self.running:
            raise HypervisorError("opening the serial console on domain 'vm1' failed: not running")
        stream = FakeStream(self.log, on_data, on_close)
        self.streams.append(stream)
        return stream

    async def __aenter__(self) -> Rig:
        return self

    async def __aexit__(self, *_exc: object) -> None:
        self.broker.close()


@pytest.fixture
def log(tmp_path: Path) -> Path:
    path = tmp_path / "vm1.serialconsole.log"
    path.write_bytes(b"")
    return path


def test_two_viewers_receive_identical_bytes(log: Path) -> None:
    async def scenario() -> None:
        async with Rig(log) as rig:
            a = rig.broker.subscribe(SessionMode.VIEW, "alice")
            b = rig.broker.subscribe(SessionMode.VIEW, "bob")
            payload = b""
            for i in range(20):
                piece = f"line {i} \x1b[1mbold\x1b[0m\r\n".encode() + bytes([i, 0, 255])
                append(log, piece)
                payload += piece
                if i % 5 == 0:
                    await asyncio.sleep(0)  # let some pieces arrive together, some apart
            got_a = contiguous(await read_bytes(a, len(payload)), 0)
            got_b = contiguous(await read_bytes(b, len(payload)), 0)
            assert got_a == got_b == payload

    run(scenario)


def test_a_stalled_viewer_is_dropped_and_the_others_get_every_byte(log: Path) -> None:
    async def scenario() -> None:
        # Room for 2.5 of the 40-byte pieces, each counted with its queue entry's cost.
        async with Rig(log, queue_limit=100 + 3 * ENTRY_COST) as rig:
            slow = rig.broker.subscribe(SessionMode.VIEW, "slow")
            fast = rig.broker.subscribe(SessionMode.VIEW, "fast")
            received: list[Chunk] = []
            payload = b""
            for i in range(10):
                piece = f"{i:02d}".encode() * 20  # 40 bytes
                append(log, piece)
                payload += piece
                received += await read_bytes(fast, len(piece))
            assert contiguous(received, 0) == payload
            items = drained(slow)
            assert items[-1] == Closed(SLOW_NOTICE)
            data = contiguous([c for c in items[:-1] if isinstance(c, Chunk)], 0)
            assert 0 < len(data) <= 100 and payload.startswith(data)
            assert slow.closed
            assert rig.broker.subscribers() == [fast]

    run(scenario)


def test_late_subscriber_gets_replay_then_live_with_no_gap_or_overlap(log: Path) -> None:
    async def scenario() -> None:
        async with Rig(log, replay_bytes=64) as rig:
            early = rig.broker.subscribe(SessionMode.VIEW, "early")
            history = bytes(range(65, 91)) * 10  # 260 bytes
            append(log, history)
            await read_bytes(early, len(history))
            # Bytes the follower has not read yet when the late one subscribes: they must
            # arrive exactly once, as history for the late one and live for the early one.
            append(log, b"UNREAD")
            late = rig.broker.subscribe(SessionMode.VIEW, "late")
            append(log, b"live-1\r\n")
            await asyncio.sleep(0)
            append(log, b"live-2\r\n")
            whole = log.read_bytes()
            first = await next_item(late)
            assert isinstance(first, Chunk)
            assert first.offset == len(history) + 6 - 64
            assert first.data == whole[first.offset : len(history) + 6]
            rest = await read_bytes(late, 16)
            assert contiguous([first, *rest], first.offset) == whole[-(64 + 16) :]
            early_rest = await read_bytes(early, 6 + 16)
            assert contiguous(early_rest, len(history)) == b"UNREAD" + b"live-1\r\nlive-2\r\n"

    run(scenario)


def test_replay_size_can_be_chosen_per_subscriber(log: Path) -> None:
    async def scenario() -> None:
        append(log, b"0123456789")
        async with Rig(log, replay_bytes=4) as rig:
            default = rig.broker.subscribe(SessionMode.VIEW, "a")
            none = rig.broker.subscribe(SessionMode.VIEW, "b", replay=0)
            everything = rig.broker.subscribe(SessionMode.VIEW, "c", replay=1000)
            assert drained(default) == [Chunk(6, b"6789")]
            assert drained(none) == []
            assert drained(everything) == [Chunk(0, b"0123456789")]

    run(scenario)


def test_second_interactive_session_takes_over(log: Path) -> None:
    async def scenario() -> None:
        async with Rig(log, replay_bytes=0) as rig:
            rig.broker.attach_chardev()
            first = rig.broker.subscribe(SessionMode.INTERACTIVE, "alice")
            rig.broker.write(first, b"whoami\r")
            assert contiguous(await read_bytes(first, 7), 0) == b"whoami\r"
            second = rig.broker.subscribe(SessionMode.INTERACTIVE, "bob")
            assert await next_item(first) == Closed(TAKEOVER_NOTICE)
            with pytest.raises(Conflict):
                rig.broker.write(first, b"rm -rf /\r")
            rig.broker.write(second, b"id\r")
            (stream,) = rig.streams
            assert bytes(stream.written) == b"whoami\rid\r"  # the same chardev connection
            assert contiguous(await read_bytes(second, 3), 7) == b"id\r"
            assert rig.broker.subscribers() == [second]

    run(scenario)


def test_a_viewer_cannot_write(log: Path) -> None:
    async def scenario() -> None:
        async with Rig(log) as rig:
            rig.broker.attach_chardev()
            viewer = rig.broker.subscribe(SessionMode.VIEW, "v")
            with pytest.raises(Conflict) as exc:
                rig.broker.write(viewer, b"x")
            assert not isinstance(exc.value, StateError)
            assert rig.streams[0].written == b""
            # A viewer does not end the interactive session, nor is it ended by one.
            user = rig.broker.subscribe(SessionMode.INTERACTIVE, "u")
            rig.broker.write(user, b"ok")
            assert rig.streams[0].written == b"ok"
            assert drained(viewer) == []
            assert set(rig.broker.subscribers()) == {viewer, user}

    run(scenario)


def test_writing_without_a_chardev_opens_it_or_is_a_state_error(log: Path) -> None:
    async def scenario() -> None:
        async with Rig(log) as rig:
            user = rig.broker.subscribe(SessionMode.INTERACTIVE, "u")
            assert not rig.broker.attached
            # The VM runs but its chardev is closed (libvirtd restarted): the keys open it.
            rig.broker.write(user, b"x")
            assert rig.broker.attached and len(rig.streams) == 1
            # The VM stops: the stream hangs up, and input is refused.
            rig.running = False
            rig.streams[0].on_close()
            await asyncio.sleep(0.01)
            assert not rig.broker.attached
            with pytest.raises(StateError) as exc:
                rig.broker.write(user, b"y")
            assert exc.value.status == 409


def slow_open(rig: Rig) -> tuple[threading.Event, threading.Event]:
    """Make the rig's chardev open wait for a release, as it does while libvirtd is busy
    starting other domains: (set when the open begins, set to let it finish)."""
    opening, release = threading.Event(), threading.Event()
    open_now = rig._open

    def opener(on_data: Callable[[bytes], None], on_close: Callable[[], None]) -> FakeStream:
        opening.set()
        release.wait(TIMEOUT)
        return open_now(on_data, on_close)

    rig.broker._open_console = opener
    return opening, release


def test_attaching_off_the_loop_installs_the_stream_and_the_loop_runs_meanwhile(
    log: Path,
) -> None:
    async def scenario() -> None:
        async with Rig(log) as rig:
            opening, release = slow_open(rig)
            attach = asyncio.create_task(rig.broker.attach_chardev_off_loop())
            await asyncio.to_thread(opening.wait, TIMEOUT)
            ticks = 0
            for _ in range(5):
                await asyncio.sleep(0.001)
                ticks += 1
            assert ticks == 5 and not attach.done() and not rig.broker.attached
            release.set()
            await attach
            assert rig.broker.attached
            user = rig.broker.subscribe(SessionMode.INTERACTIVE, "u")
            rig.broker.write(user, b"k")
            assert bytes(rig.streams[0].written) == b"k"

    run(scenario)


def test_a_stream_that_opens_after_a_detach_is_closed_not_installed(log: Path) -> None:
    async def scenario() -> None:
        async with Rig(log) as rig:
            opening, release = slow_open(rig)
            attach = asyncio.create_task(rig.broker.attach_chardev_off_loop())
            await asyncio.to_thread(opening.wait, TIMEOUT)
            rig.broker.detach_chardev()  # e.g. the VM is being deleted
            release.set()
            await attach
            (stream,) = rig.streams
            assert stream.closed and not rig.broker.attached

    run(scenario)


def test_reattaching_closes_the_previous_stream(log: Path) -> None:
    async def scenario() -> None:
        async with Rig(log) as rig:
            rig.broker.attach_chardev()
            rig.broker.attach_chardev()
            old, new = rig.streams
            assert old.closed and not new.closed
            user = rig.broker.subscribe(SessionMode.INTERACTIVE, "u")
            rig.broker.write(user, b"z")
            assert (bytes(old.written), bytes(new.written)) == (b"", b"z")
        assert new.closed  # closing the broker closes the chardev

    run(scenario)


def test_a_queue_of_tiny_chunks_is_bounded_by_their_entries_too(log: Path) -> None:
    # A flood read in pieces of a byte or two would otherwise queue a million entries (and
    # their objects) inside a limit that counts data only.
    async def scenario() -> None:
        async with Rig(log, queue_limit=10 * (1 + ENTRY_COST)) as rig:
            slow = rig.broker.subscribe(SessionMode.VIEW, "slow")
            for _ in range(20):
                append(log, b"x")
                rig.broker._follower.poll()  # type: ignore[union-attr]  # one read per byte
            items = drained(slow)
            assert items[-1] == Closed(SLOW_NOTICE)
            assert len(items) == 11  # ten one-byte chunks, then the notice

    run(scenario)


def test_a_growing_log_is_read_in_batches_and_a_lone_write_at_once(log: Path) -> None:
    async def scenario() -> None:
        reads: list[bytes] = []
        follower = LogFollower(log, 0, lambda _offset, data: reads.append(data))
        follower.start()
        try:
            append(log, b"k")  # a keystroke's echo after a quiet spell: read at once
            follower.nudge()
            assert reads == [b"k"]
            for _ in range(100):  # a flood, as virtlogd writes it: small pieces, each nudging
                append(log, b"f" * 40)
                follower.nudge()
                await asyncio.sleep(0.001)
            await asyncio.sleep(0.1)
            follower.nudge()
            assert b"".join(reads) == b"k" + b"f" * 4000
            # Once the reads had found about 1 KiB, the rest waited for batches every 20 ms.
            assert len(reads) < 50, [len(r) for r in reads]
            await asyncio.sleep(1.0)  # quiet again: the next echo is read at once
            append(log, b"e")
            follower.nudge()
            assert reads[-1] == b"e"
        finally:
            follower.stop()

    run(scenario)


def test_a_flood_wakes_the_follower_once_per_batch_not_once_per_write(
    log: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """virtlogd writes a flood a few bytes at a time, each an inotify event: while the follower
    batches, it does not listen (each wake-up cost event-loop time for nothing)."""
    wakes = 0
    on_inotify = LogFollower._on_inotify

    def counted(self: LogFollower) -> None:
        nonlocal wakes
        wakes += 1
        on_inotify(self)

    monkeypatch.setattr(LogFollower, "_on_inotify", counted)

    async def scenario() -> None:
        reads: list[bytes] = []
        follower = LogFollower(log, 0, lambda _offset, data: reads.append(data))
        follower.start()
        try:
            for _ in range(300):  # about 0.5 s of small writes, none nudging: inotify only
                append(log, b"f" * 40)
                await asyncio.sleep(0.001)
            await asyncio.sleep(0.2)
            assert b"".join(reads) == b"f" * 12000
            # One look per 20 ms batch, and a wake-up to start each: not one per write.
            assert wakes < 80, wakes
        finally:
            follower.stop()

    run(scenario)


@pytest.mark.parametrize("settle", [True, False], ids=["stepwise", "all-at-once"])
def test_follower_continues_across_log_rotation(log: Path, settle: bool) -> None:
    async def step(n: int, sub: Subscriber, chunks: list[Chunk]) -> None:
        if settle:
            chunks += await read_bytes(sub, n)

    async def scenario() -> None:
        async with Rig(log) as rig:
            sub = rig.broker.subscribe(SessionMode.VIEW, "v")
            chunks: list[Chunk] = []
            append(log, b"A" * 100)
            await step(100, sub, chunks)
            log.rename(log.with_name(log.name + ".0"))  # virtlogd rotates...
            append(log.with_name(log.name + ".0"), b"B" * 10)  # (bytes written just before)
            await step(10, sub, chunks)
            append(log, b"C" * 50)  # ...and writes on into a new file
            await step(50, sub, chunks)
            append(log, b"D" * 5)
            await step(5, sub, chunks)
            if not settle:
                chunks = await read_bytes(sub, 165)
            assert contiguous(chunks, 0) == b"A" * 100 + b"B" * 10 + b"C" * 50 + b"D" * 5
            assert rig.broker.offset == 165

    run(scenario)


def test_log_offsets_survive_rotations_while_only_the_broker_reads(log: Path) -> None:
    # virtlogd rotates every file the offset index remembers away (3 kept, 8 rotations) while
    # nobody reads the boot log: the follower records each new file, so the offsets go on.
    async def scenario() -> None:
        async with Rig(log) as rig:
            sub = rig.broker.subscribe(SessionMode.VIEW, "v")
            for i in range(8):
                append(log, bytes([65 + i]) * 100)
                await read_bytes(sub, 100)
                rotate(log)
            append(log, b"tail")
            await read_bytes(sub, 4)
            assert rig.broker.offset == 804
            kept = RotatingLog(log).read(0)
            assert (kept.start, kept.size) == (500, 804)
            assert kept.data == b"F" * 100 + b"G" * 100 + b"H" * 100 + b"tail"

    run(scenario)


def test_replay_after_rotation_is_the_tail_at_the_right_offsets(log: Path) -> None:
    async def scenario() -> None:
        async with Rig(log, replay_bytes=30) as rig:
            sub = rig.broker.subscribe(SessionMode.VIEW, "v")
            append(log, b"A" * 100)
            await read_bytes(sub, 100)
            log.rename(log.with_name(log.name + ".0"))
            append(log, b"0123456789" * 4)
            await read_bytes(sub, 40)
            late = rig.broker.subscribe(SessionMode.VIEW, "late")
            history = await next_item(late)
            # The last 30 bytes of the stream, at their stream offsets (100 + 40 - 30).
            assert history == Chunk(110, (b"0123456789" * 4)[-30:])
            append(log, b"live")
            assert contiguous(await read_bytes(late, 4), 140) == b"live"

    run(scenario)


def test_follower_waits_for_a_log_that_does_not_exist_yet(tmp_path: Path) -> None:
    async def scenario() -> None:
        log = tmp_path / "later.log"
        async with Rig(log, replay_bytes=100) as rig:
            sub = rig.broker.subscribe(SessionMode.VIEW, "v")
            assert drained(sub) == []
            append(log, b"first boot\r\n")
            assert contiguous(await read_bytes(sub, 12), 0) == b"first boot\r\n"

    run(scenario)


def test_close_ends_every_session_with_the_reason(log: Path) -> None:
    async def scenario() -> None:
        rig = Rig(log, replay_bytes=0)
        a = rig.broker.subscribe(SessionMode.VIEW, "a")
        b = rig.broker.subscribe(SessionMode.INTERACTIVE, "b")
        rig.broker.close("the VM was deleted")
        assert drained(a) == [Closed("the VM was deleted")]
        assert drained(b) == [Closed("the VM was deleted")]
        assert rig.broker.subscribers() == []
        append(log, b"after close")
        await asyncio.sleep(0.05)
        assert drained(a) == []

    run(scenario)


def test_unsubscribe_frees_the_interactive_seat(log: Path) -> None:
    async def scenario() -> None:
        async with Rig(log) as rig:
            rig.broker.attach_chardev()
            a = rig.broker.subscribe(SessionMode.INTERACTIVE, "a")
            rig.broker.unsubscribe(a)
            with pytest.raises(Conflict):
                rig.broker.write(a, b"x")
            b = rig.broker.subscribe(SessionMode.INTERACTIVE, "b")
            rig.broker.write(b, b"y")
            assert drained(a) == []  # unsubscribing is not a takeover
            assert rig.streams[0].written == b"y"

    run(scenario)
