"""Microsoft.SerialConsole, the service side: the subscription switch, serial ports, and the
short-lived, single-use connection sessions behind `connect`'s connection string.

The switch and the ports persist in the lab's state file; sessions live in memory (a restarted
daemon forgets them and clients connect again, as with the cloud service).
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass

from lab.domain.errors import NotFound, SessionGone
from lab.domain.serial_console import PORTS, PortState, SerialPort, check_connect, check_port_name
from lab.domain.vm import VmView
from lab.services.storage_accounts import StorageAccountService
from lab.storage.state import StateFile

#: How long a connection string may wait to be opened.
CONNECT_TTL_S = 60.0
_DISABLED = "serialConsoleDisabled"
_PORTS = "serialPorts"


@dataclass
class GatewaySession:
    id: str
    #: The resource id of the VM (or scale-set instance) the session is for.
    resource_id: str
    port: str
    #: Who asked for it: only a token of the same user may open it.
    object_id: str
    expires_at: float
    opened: bool = False
    closed: bool = False


class SerialConsoleService:
    def __init__(
        self, state: StateFile, storage: StorageAccountService,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:  # fmt: skip
        self.state = state
        state.section(_DISABLED, list[str], "the serial console's switch")
        state.section(_PORTS, dict[str, dict[str, str]], "the serial ports' settings")
        self.storage = storage
        self.clock = clock
        self._sessions: dict[str, GatewaySession] = {}

    # -- the subscription switch ----------------------------------------------------------------
    def disabled(self, subscription: str) -> bool:
        return subscription.lower() in self.state.read().get(_DISABLED, [])

    def set_disabled(self, subscription: str, disabled: bool) -> None:
        subs = set(self.state.read().get(_DISABLED, []))
        (subs.add if disabled else subs.discard)(subscription.lower())
        self.state.update(_DISABLED, sorted(subs))

    # -- serial ports -----------------------------------------------------------------------------
    # Port 0 (COM1) exists on every VM unless deleted; PUT sets its state or brings it back.
    def ports(self, parent_id: str) -> list[SerialPort]:
        stored = self.state.read().get(_PORTS, {}).get(parent_id.lower(), {})
        result = []
        for name in PORTS:
            state = stored.get(name, PortState.ENABLED.value)
            if state != "deleted":
                result.append(SerialPort(parent_id=parent_id, name=name, state=PortState(state)))
        return result

    def port(self, parent_id: str, name: str) -> SerialPort:
        for p in self.ports(parent_id):
            if p.name == name:
                return p
        raise NotFound(
            f"The Resource 'Microsoft.SerialConsole/serialPorts/{name}' under '{parent_id}' "
            "was not found.", target=name,
        )  # fmt: skip

    def put_port(self, parent_id: str, name: str, state: PortState) -> SerialPort:
        """Create a port or set its state."""
        check_port_name(name)
        self._store_port(parent_id, name, state.value)
        return SerialPort(parent_id=parent_id, name=name, state=state)

    def delete_port(self, parent_id: str, name: str) -> bool:
        """Delete a port; returns whether it existed."""
        existed = name in {p.name for p in self.ports(parent_id)}
        if existed:
            self._store_port(parent_id, name, "deleted")
        return existed

    def _store_port(self, parent_id: str, name: str, value: str) -> None:
        ports = self.state.read().get(_PORTS, {})
        ports.setdefault(parent_id.lower(), {})[name] = value
        self.state.update(_PORTS, ports)

    # -- connection sessions --------------------------------------------------------------------
    def connect(self, view: VmView, port: str, object_id: str) -> GatewaySession:
        """Check the documented prerequisites, then issue a session for the connection string."""
        rid = view.identity.resource_id
        check_connect(
            view,
            console_disabled=self.disabled(view.identity.subscription_id),
            account=self.storage.for_vm(view),
            port=self.port(rid, port),
        )
        self._expire()
        session = GatewaySession(
            # Hex: the CLI extension turns the connection string into its admin URL with
            # `url.replace("ws", "http")`, so an id must never contain "ws" (base64url ids did,
            # about 0.6% of them, and their admin commands 404ed).
            id=secrets.token_hex(16), resource_id=rid, port=port, object_id=object_id,
            expires_at=self.clock() + CONNECT_TTL_S,
        )  # fmt: skip
        self._sessions[session.id] = session
        return session

    def open(self, session_id: str, object_id: str) -> GatewaySession:
        """Claim a session for its websocket: once, before it expires, by the same user."""
        self._expire()
        session = self._sessions.get(session_id)
        if session is None or session.opened or session.object_id != object_id:
            raise SessionGone(
                "The serial console session was not found, has expired or was already used; "
                "request a new connection string (POST .../serialPorts/0/connect).",
                target=session_id,
            )
        session.opened = True
        return session

    def live(self, session_id: str, object_id: str) -> GatewaySession:
        """The session an admin command names: open (or still openable), and the caller's."""
        self._expire()
        session = self._sessions.get(session_id)
        if session is None or session.closed or session.object_id != object_id:
            raise SessionGone(
                "The serial console session was not found or has ended; connect again.",
                target=session_id,
            )
        return session

    def close(self, session: GatewaySession) -> None:
        session.closed = True
        self._sessions.pop(session.id, None)

    def _expire(self) -> None:
        now = self.clock()
        for sid, s in list(self._sessions.items()):
            if not s.opened and s.expires_at <= now:
                del self._sessions[sid]
