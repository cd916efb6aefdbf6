"""The client of the daemon API (HTTP over the data dir's unix socket), used by the CLI,
`lab.client.connect`, the pytest plugin and scripts.

Errors come back as Azure-shaped JSON and are raised again as `LabError`s with the same code,
status and message, so the CLI prints what the daemon said.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any
from urllib.parse import urlencode

import httpx
from websockets.sync.client import ClientConnection, unix_connect

from lab.domain.errors import DaemonUnavailable, LabError, RemoteError
from lab.settings import Settings


class LabClient:
    def __init__(self, settings: Settings, timeout: float = 600.0) -> None:
        self.settings = settings
        self._http = httpx.Client(
            transport=httpx.HTTPTransport(uds=str(settings.socket_path)),
            base_url="http://lab",
            timeout=timeout,
        )

    def close(self) -> None:
        self._http.close()

    def request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            response = self._http.request(method, path, **kwargs)
        except (httpx.ConnectError, FileNotFoundError, ConnectionRefusedError) as exc:
            raise DaemonUnavailable(
                f"no lab daemon answers on {self.settings.socket_path}; "
                "start one with `lab up FILE` or `lab serve`"
            ) from exc
        if response.status_code >= 400:
            try:
                err = response.json()["error"]
                exit_code = err.get("exitCode")
                raise RemoteError(
                    response.status_code, err["code"], err["message"], err.get("target"),
                    exit_code if isinstance(exit_code, int) else None,
                )
            except (ValueError, KeyError, TypeError):
                raise RemoteError(response.status_code, "Error", response.text, None) from None
        return response

    def json(self, method: str, path: str, **kwargs: Any) -> Any:
        return self.request(method, path, **kwargs).json()

    def alive(self) -> bool:
        try:
            self.request("GET", "/v1/status")
        except LabError:
            return False
        return True

    def open_console(
        self, vm: str, *, resource_group: str | None = None, mode: str = "interactive",
        replay: int | None = None, user: str = "local", instance_id: str | None = None,
    ) -> ClientConnection:  # fmt: skip
        """A websocket on the VM's console (with `instance_id`: on that instance of the scale
        set `vm`); the caller closes it."""
        query: dict[str, str] = {"mode": mode, "user": user}
        if resource_group:
            query["resourceGroup"] = resource_group
        if instance_id is not None:
            query["instanceId"] = instance_id
        if replay is not None:
            query["replay"] = str(replay)
        uri = f"ws://lab/v1/vms/{vm}/console?{urlencode(query)}"
        try:
            return unix_connect(str(self.settings.socket_path), uri, max_size=None)
        except (FileNotFoundError, ConnectionRefusedError) as exc:
            raise DaemonUnavailable(
                f"no lab daemon answers on {self.settings.socket_path}"
            ) from exc

    @contextmanager
    def console(
        self, vm: str, *, resource_group: str | None = None, mode: str = "interactive",
        replay: int | None = None, user: str = "local", instance_id: str | None = None,
    ) -> Iterator[ClientConnection]:  # fmt: skip
        conn = self.open_console(vm, resource_group=resource_group, mode=mode, replay=replay,
                                 user=user, instance_id=instance_id)  # fmt: skip
        try:
            yield conn
        finally:
            conn.close()
