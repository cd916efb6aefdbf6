"""libvirt's default event loop, run in a daemon thread.

Console streams deliver data, and lifecycle events arrive, only while an event loop runs; the
default implementation must be registered before the first connection is opened.
"""

from __future__ import annotations

import threading

import libvirt

_lock = threading.Lock()
_started = False


def ensure_event_loop() -> None:
    global _started
    with _lock:
        if _started:
            return
        libvirt.virEventRegisterDefaultImpl()
        # libvirt prints every error to stderr besides raising it; the lab raises each one,
        # with what it was doing, and a "not found" it expects (a file not made yet on a host)
        # is no error at all.
        libvirt.registerErrorHandler(lambda _ctx, _err: None, None)
        thread = threading.Thread(target=_run, name="libvirt-events", daemon=True)
        thread.start()
        _started = True


def _run() -> None:
    while True:
        libvirt.virEventRunDefaultImpl()
