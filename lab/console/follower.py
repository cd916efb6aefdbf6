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
import math
import os
from collections.abc import Callable
from pathlib import Path

from lab.storage.serial_log import RotatingLog

_IN_MODIFY = 0x002
_IN_ATTRIB = 0x004
_IN_CREATE = 0x100
_POLL_S = 0.5
_CHUNK = 256 * 1024
#: While the log grows fast, the next look waits until _BATCH_S after the last one: a flood is
#: read in fewer, larger chunks. Each chunk costs every subscriber a queue entry and a websocket
#: frame, and virtlogd writes a flood in pieces of a few dozen bytes, each its own inotify
#: event: read one by one, 60 s of a flood queued millions of entries for viewers that lagged.
#: "Fast" is judged by what recent looks found, each look's bytes fading with time constant
#: _RATE_TAU_S: at least _BATCH_BYTES means fast (a flood of 100 KiB/s keeps about 12 KiB),
#: while a keystroke's echo, a few bytes, is still read at once.
_BATCH_BYTES = 1024
_BATCH_S = 0.02
_RATE_TAU_S = 0.1

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
        self._deferred: asyncio.TimerHandle | None = None
        self._last_look = 0.0
        #: Bytes recent looks found, each fading with _RATE_TAU_S (see _BATCH_BYTES).
        self._recent = 0.0

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
        if self._deferred:
            self._deferred.cancel()
            self._deferred = None
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
        self.nudge()

    def nudge(self) -> None:
        """The log may have grown: look now, or, while it grows fast, a little later."""
        if self._deferred is not None or self._loop is None:
            return
        wait = 0.0
        if self._recent >= _BATCH_BYTES:
            wait = self._last_look + _BATCH_S - self._loop.time()
        if wait > 0:
            self._deferred = self._loop.call_later(wait, self._deferred_poll)
            # Deaf to inotify until then: virtlogd writes a flood a few bytes at a time, and
            # waking for each of its events only to wait again took a third of a core.
            if self._inotify >= 0:
                self._loop.remove_reader(self._inotify)
        else:
            self.poll()

    def _deferred_poll(self) -> None:
        self._deferred = None
        if self._inotify >= 0 and self._loop is not None:
            with contextlib.suppress(BlockingIOError):
                os.read(self._inotify, 65536)  # what came meanwhile: this look covers it
            self._loop.add_reader(self._inotify, self._on_inotify)
        self.poll()

    def poll(self) -> None:
        """Read whatever was appended since the last call and hand it on."""
        before = self.offset
        try:
            self._poll()
        finally:
            if self._loop is not None:
                now = self._loop.time()
                fade = math.exp(-(now - self._last_look) / _RATE_TAU_S)
                self._recent = self._recent * fade + (self.offset - before)
                self._last_look = now

    def _poll(self) -> None:
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
                # The log's offset index chains each kept file to one it remembers; with no
                # reader of the boot log between rotations, virtlogd would rotate every
                # remembered file away and the offsets would restart. Record the new one now.
                RotatingLog(self.path).segments()
                self._drain()

    def _drain(self) -> None:
        assert self._fd is not None
        while True:
            # Exactly what is there: under a flood there are many small reads, and each would
            # otherwise allocate a _CHUNK buffer only to shrink it.
            want = min(_CHUNK, os.fstat(self._fd).st_size - (self.offset - self._base))
            if want <= 0:
                return
            data = os.pread(self._fd, want, self.offset - self._base)
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
