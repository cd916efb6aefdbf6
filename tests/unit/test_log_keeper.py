"""The broker takes a VM's serial log over when virtlogd stops writing it (a full disk), and
keeps viewers fed while the log cannot be written at all."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from lab.console import log_keeper
from lab.console.broker import Chunk, SessionMode
from tests.unit.test_broker import Rig, append, read_bytes, run


@pytest.fixture(autouse=True)
def quick_stall(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(log_keeper, "STALL_S", 0.3)
    monkeypatch.setattr("lab.console.broker._CHECK_S", 0.1)


@pytest.fixture
def log(tmp_path: Path) -> Path:
    path = tmp_path / "vm1.serialconsole.log"
    path.write_bytes(b"")
    return path


def guest_prints(rig: Rig, data: bytes, *, virtlogd: bool) -> None:
    """The guest prints: the pty stream carries it; virtlogd logs it unless it gave up."""
    if virtlogd:
        append(rig.log, data)
    rig.streams[-1].on_data(data)


def test_an_orphaned_log_is_written_by_the_lab_with_nothing_missing(log: Path) -> None:
    async def scenario() -> None:
        async with Rig(log) as rig:
            rig.broker.attach_chardev()
            viewer = rig.broker.subscribe(SessionMode.VIEW, "v", replay=0)
            guest_prints(rig, b"logged by virtlogd\r\n", virtlogd=True)
            await read_bytes(viewer, 20)
            await asyncio.sleep(0.5)  # a quiet guest is not a stalled log
            assert not rig.broker.log_keeper.orphaned
            guest_prints(rig, b"virtlogd gave up here\r\n", virtlogd=False)
            chunks = await read_bytes(viewer, 23)
            assert rig.broker.log_keeper.orphaned
            assert chunks[0].offset == 20
            guest_prints(rig, b"and after\r\n", virtlogd=False)
            await read_bytes(viewer, 11)
            assert log.read_bytes() == (
                b"logged by virtlogd\r\nvirtlogd gave up here\r\nand after\r\n"
            )
            assert rig.broker.log_keeper.lost == 0
            # A new QEMU process (the VM restarted): virtlogd writes again, the lab stops.
            rig.broker.attach_chardev()
            assert not rig.broker.log_keeper.orphaned

    run(scenario)


def test_output_that_cannot_be_logged_still_reaches_viewers(log: Path) -> None:
    async def scenario() -> None:
        async with Rig(log) as rig:
            rig.broker.attach_chardev()
            viewer = rig.broker.subscribe(SessionMode.VIEW, "v", replay=0)
            # Every write fails (tests run as root, so a full disk stands in as a path that
            # cannot be created).
            rig.broker.log_keeper.log_path = log.parent / "no-such-dir" / log.name
            guest_prints(rig, b"while the disk is full\r\n", virtlogd=False)
            item = await asyncio.wait_for(viewer.next(), 5)
            assert item == Chunk(0, b"while the disk is full\r\n")
            assert rig.broker.log_keeper.lost == 24
            assert log.read_bytes() == b""

    run(scenario)


def test_a_partial_write_keeps_the_order(log: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The disk has room for the first bytes only: they come from the log, then the rest."""
    real_write = log_keeper.os.write

    def short_write(fd: int, data: bytes) -> int:
        return real_write(fd, data[:5])

    async def scenario() -> None:
        async with Rig(log) as rig:
            rig.broker.attach_chardev()
            viewer = rig.broker.subscribe(SessionMode.VIEW, "v", replay=0)
            guest_prints(rig, b"x", virtlogd=False)
            await asyncio.sleep(0.6)
            assert rig.broker.log_keeper.orphaned
            await read_bytes(viewer, 1)
            monkeypatch.setattr(log_keeper.os, "write", short_write)
            guest_prints(rig, b"0123456789", virtlogd=False)
            chunks = await read_bytes(viewer, 10)
            assert b"".join(c.data for c in chunks) == b"0123456789"
            assert log.read_bytes() == b"x01234"

    run(scenario)
