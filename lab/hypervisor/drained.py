"""`DrainedConsole`: what the hypervisor's console streams share, whatever carries the bytes.

Output is taken by a thread of the console's own every `_interval()`, as much as there is,
rather than by a callback per message: the source (a pty, a libvirt stream) buffers meanwhile,
each look costs one wake-up however many bytes came, and a busy event loop or GIL never holds
the source up. `on_close` is called once, when the source ends (not when the lab closes it).
"""

from __future__ import annotations

import threading
from collections.abc import Callable


class DrainedConsole:
    #: Long enough that a flood gathers into reads of KiB, short enough that the kernel's tty
    #: buffers (64 KiB and more, behind a pty or libvirtd's stream) never fill at the UART's top
    #: rate (about 400 KiB/s under TCG).
    DRAIN_S = 0.05

    def __init__(self, on_data: Callable[[bytes], None], on_close: Callable[[], None]) -> None:
        self._on_data = on_data
        self._on_close = on_close
        self._lock = threading.Lock()
        self._closed = False
        self._stop = threading.Event()

    def _start_draining(self, name: str) -> None:
        threading.Thread(target=self._drain, name=name, daemon=True).start()

    # -- what each kind of console provides (called with the lock held) ------------------------
    def _read(self) -> bytes | None:
        """What has come: None when nothing has yet, b"" when the source has ended."""
        raise NotImplementedError

    def _release(self) -> None:
        """Let the source go (once)."""
        raise NotImplementedError

    def _interval(self) -> float:
        return self.DRAIN_S

    def _tick(self) -> None:
        """Each drain interval, before reading (input that waits, for one); must not raise."""

    # -- shared ---------------------------------------------------------------------------------
    def close(self) -> None:
        self._stop.set()
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._release()

    def _drain(self) -> None:
        while not self._stop.wait(self._interval()):
            with self._lock:
                if self._closed:
                    return
                self._tick()
            while True:
                with self._lock:
                    if self._closed:
                        return
                    data = self._read()
                if data is None:
                    break
                if not data:
                    self._finish()
                    return
                self._on_data(data)

    def _finish(self) -> None:
        """The source ended: close, and say so once."""
        with self._lock:
            was_closed = self._closed
        self.close()
        if not was_closed:
            self._on_close()
