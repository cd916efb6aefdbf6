"""A real `Lab` over `FakeHypervisor`, served over TLS by the daemon's own uvicorn config for the
Azure-compatible API (`lab.api.daemon.server._azure_config`: the same TLS context, websocket
limits and app as `lab serve`), on a free port, from a thread. The security tests use it as a
client on the network would: raw TLS sockets, HTTPS, websockets."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

import uvicorn

from lab.api.daemon.server import _azure_config
from lab.api.security.tokens import issue, signing_key
from lab.domain.rbac import RoleDefinition
from lab.services.lab import Lab
from lab.services.vms import NewVm

T = TypeVar("T")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class LiveLab:
    def __init__(self, lab: Lab) -> None:
        self.lab = lab
        self.port = lab.settings.api_port
        self.loop = asyncio.new_event_loop()
        self._server: uvicorn.Server | None = None
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)

    @property
    def base(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    @property
    def ca(self) -> str:
        return str(self.lab.settings.tls_dir / "ca.pem")

    def token(self, *roles: tuple[str | RoleDefinition, str], user: str = "alice",
              expires_in: float = 3600) -> str:  # fmt: skip
        key = signing_key(self.lab.settings.tls_dir / "token-signing.key")
        return issue(key, user=user, roles=list(roles), expires_in=expires_in)

    def call(self, work: Callable[[], Coroutine[Any, Any, T]], timeout: float = 30) -> T:
        """Run `work()` on the server's event loop (where the lab lives) and return its result."""
        return asyncio.run_coroutine_threadsafe(work(), self.loop).result(timeout)

    def start(self, *vms: NewVm) -> LiveLab:
        self._thread.start()

        async def create() -> None:
            for vm in vms:
                await self.lab.vms.create(vm)

        self.call(create)
        config = _azure_config(self.lab.settings, self.lab)
        self._server = uvicorn.Server(config)
        self._serving = asyncio.run_coroutine_threadsafe(self._server.serve(), self.loop)
        for _ in range(500):
            if self._server.started:
                return self
            if self._serving.done():
                self._serving.result()  # raises why it could not serve
            threading.Event().wait(0.01)
        raise RuntimeError("the Azure API server did not start in 5 s")

    def stop(self) -> None:
        if self._server is not None:
            self._server.should_exit = True
            with contextlib.suppress(Exception):
                self._serving.result(15)

            async def close_brokers() -> None:
                self.lab.consoles.close_all()

            self.call(close_brokers)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)

    # -- what the abuse tests count -------------------------------------------------------------
    def gateway_sessions(self) -> int:
        """Connection-string sessions the serial-console service holds (issued or open)."""

        async def count() -> int:
            return len(self.lab.serial_console._sessions)  # no public count; read-only here

        return self.call(count)

    def subscribers(self) -> int:
        """Console sessions on every broker (viewers and the interactive one)."""

        async def count() -> int:
            brokers = self.lab.consoles._brokers.values()  # idem
            return sum(len(b.subscribers()) for b in brokers)

        return self.call(count)
