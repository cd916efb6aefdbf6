"""Run the lab daemon: one per data dir (a lock file enforces it), HTTP over a unix socket."""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterator
from contextlib import contextmanager

import uvicorn

from lab.api.daemon.app import OnReady, create_app
from lab.domain.errors import Conflict
from lab.hypervisor.libvirt_driver import LibvirtHypervisor
from lab.services.lab import Lab
from lab.settings import Settings


@contextmanager
def daemon_lock(settings: Settings) -> Iterator[None]:
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    path = settings.data_dir / "daemon.lock"
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            pid = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
            raise Conflict(
                f"a lab daemon already runs for {settings.data_dir} (pid {pid}); "
                "`lab status` talks to it"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        yield
    finally:
        os.close(fd)


def build_lab(settings: Settings) -> Lab:
    lab = Lab(settings, LibvirtHypervisor(settings.libvirt_uri))
    lab.images.build("tiny")  # a no-op in milliseconds when the cached build matches
    lab.choose_accel()
    return lab


def serve(settings: Settings, lab: Lab, on_ready: OnReady | None = None) -> None:
    """Serve until SIGINT/SIGTERM. VMs keep running after the daemon exits."""
    sock = settings.socket_path
    sock.unlink(missing_ok=True)
    config = uvicorn.Config(
        create_app(lab, on_ready),
        uds=str(sock),
        log_level="warning",
        lifespan="on",
        ws="websockets-sansio",
        # Console bytes are small and already cheap; per-message deflate costs ~250 KiB of
        # compressor state per viewer (measured by bench/console.py), so it is off.
        ws_per_message_deflate=False,
        # Longer than clients keep idle connections (httpx: 5 s), so a client never reuses a
        # connection at the moment the server closes it ("Server disconnected without sending
        # a response", seen under load with uvicorn's default of 5 s on both sides).
        timeout_keep_alive=30,
    )
    server = uvicorn.Server(config)
    try:
        server.run()
    finally:
        sock.unlink(missing_ok=True)
