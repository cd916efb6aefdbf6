"""Notice when virtlogd stops writing a VM's serial log, and write it in its place.

virtlogd writes the serial log, and the broker feeds viewers from that log. When a write fails
(the data dir's disk is full) virtlogd gives that log up for the rest of the QEMU process's life:
nothing more reaches the file even once space is back, so every viewer would go blank and the
boot log would stop. The broker also reads the chardev itself (the pty stream), which carries
the same bytes. `LogKeeper` counts both from the moment the chardev is opened: when the stream
has delivered bytes that the log has not shown for `STALL_S` while the log has not grown, the
log is orphaned, and from then on the keeper appends the stream's bytes to the log file itself
(the follower publishes them as before, at the same offsets). Bytes it cannot write (the disk
is still full) go straight to the viewers, so the console keeps working; they are missing from
the log, and counted.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from pathlib import Path

log = logging.getLogger(__name__)

#: How long the log may lag the stream, without growing, before it counts as orphaned.
STALL_S = 2.0
#: Stream bytes kept to write when the log turns out to be orphaned (what it missed so far).
RING_BYTES = 1024 * 1024


class LogKeeper:
    def __init__(
        self, vm: str, log_path: Path, publish_unlogged: Callable[[bytes], None]
    ) -> None:
        self.vm = vm
        self.log_path = log_path
        #: Viewers get these bytes directly: they could not be written to the log.
        self._publish_unlogged = publish_unlogged
        self.orphaned = False
        #: Bytes that could not be written to the log while it was orphaned.
        self.lost = 0
        self._stream_bytes = 0
        self._log_bytes = 0
        self._ring = bytearray()
        self._lag_since: float | None = None
        self._log_grew = time.monotonic()

    def reset(self) -> None:
        """A new chardev stream (a new QEMU process, or libvirtd came back): virtlogd is
        presumed to write again until the counts say otherwise."""
        self.orphaned = False
        self._stream_bytes = self._log_bytes = 0
        self._ring.clear()
        self._lag_since = None
        self._log_grew = time.monotonic()

    def on_stream(self, data: bytes) -> None:
        """Bytes from the chardev stream (on the event loop)."""
        if self.orphaned:
            self._write(data)
            return
        self._stream_bytes += len(data)
        self._ring += data
        if len(self._ring) > RING_BYTES:
            del self._ring[: len(self._ring) - RING_BYTES]
        if self._lag_since is None and self._stream_bytes > self._log_bytes:
            self._lag_since = time.monotonic()

    def on_log(self, nbytes: int) -> None:
        """The follower read `nbytes` more of the log."""
        self._log_bytes += nbytes
        self._log_grew = time.monotonic()
        if self._log_bytes >= self._stream_bytes:
            self._lag_since = None

    def check(self) -> None:
        """Called every second or so: take the log over if virtlogd has stopped writing it."""
        if self.orphaned or self._lag_since is None:
            return
        now = time.monotonic()
        if now - self._lag_since < STALL_S or now - self._log_grew < STALL_S:
            return
        missing = min(self._stream_bytes - self._log_bytes, len(self._ring))
        log.warning(
            "the serial log of %s stopped growing (virtlogd could not write it: is the disk "
            "full?); the lab writes it from now on, starting with %d bytes it missed",
            self.vm, missing,
        )  # fmt: skip
        self.orphaned = True
        pending = bytes(self._ring[len(self._ring) - missing :]) if missing > 0 else b""
        self._ring.clear()
        if pending:
            self._write(pending)

    def _write(self, data: bytes) -> None:
        try:
            flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC
            fd = os.open(self.log_path, flags, 0o600)
            try:
                written = os.write(fd, data)
            finally:
                os.close(fd)
        except OSError:
            written = 0
        if written < len(data):
            if not self.lost:
                log.warning("cannot write the serial log of %s (disk full?); its console "
                            "output goes to viewers only until there is space", self.vm)
            self.lost += len(data) - written
            self._publish_unlogged(data[written:])
