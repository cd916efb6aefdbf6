"""Follow a growing file (the serial log virtlogd writes) with inotify, from a byte offset.

The broker feeds every subscriber from the log file, not from the live pty stream: the log
holds every byte from power-on in order, its offsets are the boot-diagnostics offsets, and a
broker started after a crash resumes at any offset with no gap and no duplicate. inotify wakes
the follower as soon as virtlogd writes; a slow timer covers file systems without inotify and
a log file that appears late.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import ctypes.util
import os
from collections.abc import Callable
from pathlib import Path

_IN_MODIFY = 0x002
_IN_ATTRIB = 0x004
_IN_CREATE = 0x100
_POLL_S = 0.5
_CHUNK = 256 * 1024

_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)


class LogFollower:
    """Calls `on_bytes(offset, data)` on the event loop for every byte appended to `path`."""

    def __init__(
        self, path: Path, start: int, on_bytes: Callable[[int, bytes], None], base: int = 0
    ) -> None:
        """Follow `path` from global offset `start`; `base` is the global offset of the current
        file's first byte (non-zero once virtlogd has rotated the log, see `serial_log.py`)."""
        self.path = path
        self.offset = start
        self._on_bytes = on_bytes
        #: Global offset of the current file's first byte (grows when virtlogd rotates).
        self._base = base
        self._fd: int | None = None
        self._ino: int | None = None
        self._inotify = -1
        self._loop: asyncio.AbstractEventLoop | None = None
        self._timer: asyncio.TimerHandle | None = None

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._inotify = _libc.inotify_init1(os.O_NONBLOCK | os.O_CLOEXEC)
        if self._inotify >= 0:
            # Watch the directory: it sees writes to the file and a file created or renamed.
            _libc.inotify_add_watch(
                self._inotify, str(self.path.parent).encode(), _IN_MODIFY | _IN_CREATE | _IN_ATTRIB
            )
            self._loop.add_reader(self._inotify, self._on_inotify)
        self._schedule()
        self.poll()

    def stop(self) -> None:
        if self._timer:
            self._timer.cancel()
        if self._inotify >= 0 and self._loop:
            self._loop.remove_reader(self._inotify)
            os.close(self._inotify)
            self._inotify = -1
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def _schedule(self) -> None:
        assert self._loop is not None
        self._timer = self._loop.call_later(_POLL_S, self._on_timer)

    def _on_timer(self) -> None:
        self.poll()
        self._schedule()

    def _on_inotify(self) -> None:
        with contextlib.suppress(BlockingIOError):
            os.read(self._inotify, 65536)  # contents don't matter: any event means "look"
        self.poll()

    def poll(self) -> None:
        """Read whatever was appended since the last call and hand it on."""
        if self._fd is None and not self._open():
            return
        assert self._fd is not None
        self._drain()
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            return
        if st.st_ino != self._ino:  # rotated: finish the old file, continue in the new one
            self._drain()
            os.close(self._fd)
            self._fd = None
            if self._open(at_start=True):
                self._drain()

    def _drain(self) -> None:
        assert self._fd is not None
        while True:
            data = os.pread(self._fd, _CHUNK, self.offset - self._base)
            if not data:
                return
            offset = self.offset
            self.offset += len(data)
            self._on_bytes(offset, data)

    def _open(self, at_start: bool = False) -> bool:
        try:
            self._fd = os.open(self.path, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            return False
        self._ino = os.fstat(self._fd).st_ino
        if at_start:
            self._base = self.offset
        return True
