"""PtyConsole on a real pty: this test holds the master side, as QEMU does."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator

import pytest

from lab.domain.errors import HypervisorError
from lab.hypervisor.pty_console import PtyConsole, serial_pty_path


class Received:
    def __init__(self) -> None:
        self.chunks: list[bytes] = []
        self.closed = 0
        self.lock = threading.Lock()

    def data(self, data: bytes) -> None:
        with self.lock:
            self.chunks.append(data)

    def close(self) -> None:
        self.closed += 1

    def joined(self) -> bytes:
        with self.lock:
            return b"".join(self.chunks)

    def wait_for(self, nbytes: int, timeout: float = 5.0) -> bytes:
        deadline = time.monotonic() + timeout
        while len(self.joined()) < nbytes and time.monotonic() < deadline:
            time.sleep(0.01)
        return self.joined()


@pytest.fixture
def pty() -> Iterator[tuple[int, str]]:
    master, slave = os.openpty()
    path = os.ttyname(slave)
    os.close(slave)  # the console opens it by name, as it would QEMU's
    try:
        yield master, path
    finally:
        os.close(master)


def test_the_serial_pty_is_read_from_the_live_domain_xml() -> None:
    live = """<domain><devices>
      <serial type='pty'><source path='/dev/pts/7'/><log file='/x.log'/></serial>
      <console type='pty' tty='/dev/pts/7'><source path='/dev/pts/7'/></console>
    </devices></domain>"""
    assert serial_pty_path(live) == "/dev/pts/7"
    inactive = "<domain><devices><serial type='pty'><target port='0'/></serial></devices></domain>"
    assert serial_pty_path(inactive) is None


def test_output_arrives_whole_in_order_and_in_few_large_reads(pty: tuple[int, str]) -> None:
    master, path = pty
    got = Received()
    console = PtyConsole(path, got.data, got.close)
    try:
        # As a guest floods its UART: many tiny writes. The drain takes them by the batch.
        lines = [b"line %05d\n" % i for i in range(300)]
        for line in lines:
            os.write(master, line)
            time.sleep(0.001)
        expected = b"".join(lines)
        # The pty turns \n into \r\n unless the console set it raw; raw, it arrives as sent.
        assert got.wait_for(len(expected)) == expected
        # About one read per DRAIN_S, not one per write (300 writes over ~0.4 s).
        assert len(got.chunks) < 50, len(got.chunks)
    finally:
        console.close()
    assert got.closed == 0  # closed by the lab: not a hang-up


def test_keys_reach_the_master_unchanged(pty: tuple[int, str]) -> None:
    master, path = pty
    got = Received()
    console = PtyConsole(path, got.data, got.close)
    try:
        console.write(b"root\r\x03\x1b[A")
        time.sleep(0.1)
        assert os.read(master, 100) == b"root\r\x03\x1b[A"  # no echo, no CR/LF mapping
    finally:
        console.close()
    with pytest.raises(HypervisorError, match="closed"):
        console.write(b"x")


def test_the_end_of_qemu_ends_the_console_once() -> None:
    master, slave = os.openpty()
    path = os.ttyname(slave)
    os.close(slave)
    got = Received()
    console = PtyConsole(path, got.data, got.close)
    os.write(master, b"last words\n")
    time.sleep(0.2)
    os.close(master)  # QEMU exits
    deadline = time.monotonic() + 5
    while not got.closed and time.monotonic() < deadline:
        time.sleep(0.01)
    assert got.closed == 1
    assert got.joined() == b"last words\n"
    console.close()
    assert got.closed == 1


def test_a_pty_that_is_gone_is_a_clear_error() -> None:
    with pytest.raises(HypervisorError, match="/dev/pts/987654"):
        PtyConsole("/dev/pts/987654", lambda _d: None, lambda: None)


def test_a_paste_the_guest_cannot_take_yet_does_not_block_the_writer(pty: tuple[int, str]) -> None:
    master, path = pty
    got = Received()
    console = PtyConsole(path, got.data, got.close)
    paste = b"".join(b"pasted line %06d\r" % i for i in range(100000))  # 1.9 MB
    try:
        writer = threading.Thread(target=console.write, args=(paste,), daemon=True)
        writer.start()
        writer.join(0.5)  # nobody reads the master yet: far more than the pty holds
        returned_at_once = not writer.is_alive()
        received = bytearray()
        deadline = time.monotonic() + 20
        while len(received) < len(paste) and time.monotonic() < deadline:
            received += os.read(master, 65536)  # QEMU taking the keys as its UART can
        assert returned_at_once, "write() waited for the guest to take the paste"
        assert bytes(received) == paste
    finally:
        console.close()
