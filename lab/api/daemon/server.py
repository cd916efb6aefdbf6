"""Run the lab daemon: one per data dir (a lock file enforces it), HTTP over a unix socket."""

from __future__ import annotations

import asyncio
import fcntl
import logging
import os
import socket
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager

import uvicorn

from lab.api.azure.app import create_azure_app
from lab.api.azure.gateway import MAX_FRAME_BYTES
from lab.api.daemon.app import OnReady, create_app
from lab.api.security.tls import ensure_certificates, server_context
from lab.api.security.tokens import signing_key
from lab.domain.errors import Conflict
from lab.hypervisor.hosts import connect_libvirt_host
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
    lab = Lab(settings, LibvirtHypervisor(settings.libvirt_uri), connect_libvirt_host)
    lab.images.build("tiny")  # a no-op in milliseconds when the cached build matches
    lab.choose_accel()
    return lab


#: How long a thread may hold the GIL while another waits for it (Python's default: 5 ms).
#: The event loop, which carries every keystroke, shares the GIL with the console streams'
#: drain threads and libvirt's event-loop thread; on a busy machine each handoff waited the
#: whole interval. Measured by bench/load.py (another VM's round trip during a 50-viewer flood):
#: p95 38-64 ms at 5 ms, 31 ms at 0.5 ms, at the same daemon CPU.
GIL_SWITCH_S = 0.0005
#: Threads for the daemon's blocking calls (`asyncio.to_thread`): libvirt RPCs, file reads.
#: asyncio's default is the core count + 4 (6 here), and while libvirtd starts a fleet its RPCs
#: take seconds each, so a quick call (a VM list for the API) would queue behind slow ones. A
#: thread waiting on an RPC costs no CPU.
BLOCKING_THREADS = 32


def serve(settings: Settings, lab: Lab, on_ready: OnReady | None = None) -> None:
    """Serve until SIGINT/SIGTERM: the daemon API on the unix socket and, unless
    `LAB_API_PORT=0`, the Azure-compatible API over HTTPS. VMs keep running afterwards."""
    sys.setswitchinterval(GIL_SWITCH_S)
    _log_to_stderr()
    sock = settings.socket_path
    sock.unlink(missing_ok=True)
    servers = [uvicorn.Server(_daemon_config(settings, lab, on_ready))]
    if settings.api_port:
        servers.append(uvicorn.Server(_azure_config(settings, lab)))
    try:
        asyncio.run(_serve_all(servers))
    finally:
        sock.unlink(missing_ok=True)


def _log_to_stderr() -> None:
    """The lab's own log lines (a VM that stopped by itself, a guest that hangs, a scenario's
    disk made) on the daemon's stderr, with the time: its log file when it runs in the
    background. Other libraries keep Python's default (warnings only)."""
    logger = logging.getLogger("lab")
    if logger.handlers:
        return
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False


async def _serve_all(servers: list[uvicorn.Server]) -> None:
    asyncio.get_running_loop().set_default_executor(
        ThreadPoolExecutor(BLOCKING_THREADS, thread_name_prefix="lab-blocking")
    )
    # Each server installs its own signal handlers (the last wins): when one stops, stop all.
    tasks = [asyncio.ensure_future(s.serve()) for s in servers]
    await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    for s in servers:
        s.should_exit = True
    await asyncio.gather(*tasks, return_exceptions=True)


def _check_port_free(host: str, port: int) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            raise Conflict(
                f"the Azure-compatible API cannot listen on {host}:{port} ({exc.strerror}); "
                "is another lab serving there? Set LAB_API_PORT to another port (0: no API)."
            ) from exc


def _azure_config(settings: Settings, lab: Lab) -> uvicorn.Config:
    _check_port_free(settings.api_host, settings.api_port)
    files = ensure_certificates(settings.tls_dir)
    key = signing_key(settings.tls_dir / "token-signing.key")
    storage_secret = signing_key(settings.tls_dir / "storage-signing.key")
    config = uvicorn.Config(
        create_azure_app(lab, key, storage_secret),
        host=settings.api_host,
        port=settings.api_port,
        log_level="warning",
        lifespan="off",
        ssl_certfile=str(files.server_cert),
        ssl_keyfile=str(files.server_key),
        http="httptools",  # HTTP parsing in C rather than h11's pure Python
        ws="websockets-sansio",  # the serial-console gateway; as on the daemon socket
        ws_per_message_deflate=False,
        ws_max_size=MAX_FRAME_BYTES,
        timeout_keep_alive=30,
        # An idle TLS keep-alive connection otherwise holds shutdown for asyncio's 30 s
        # SSL-shutdown wait; a stopping daemon waits this long for requests, then goes.
        timeout_graceful_shutdown=3,
    )
    config.load()
    config.ssl = server_context(files)  # TLS 1.2 minimum, whatever OpenSSL's defaults are
    return config


def _daemon_config(settings: Settings, lab: Lab, on_ready: OnReady | None) -> uvicorn.Config:
    sock = settings.socket_path
    return uvicorn.Config(
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
        timeout_graceful_shutdown=3,
    )
