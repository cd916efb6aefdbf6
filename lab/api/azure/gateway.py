"""The serial-console gateway: the websocket behind `connect`'s connection string, and the
admin commands posted next to it. It speaks what the Azure CLI's serial-console extension does:

1. the server sends a first frame (a prompt the client does not print);
2. the client answers with its bearer token as a text frame (older extensions put it in the
   URL as `?authorization=`, and may send the frame too: it is dropped, not typed);
3. console bytes flow both ways: keystrokes from the client (text or binary frames), output to
   the client as text frames when it is UTF-8 and binary frames when it is not.

Admin commands: `POST .../sessions/{id}/adminCommand/{nmi|reset|sysrq}` with the bearer token
and `{"command", "requestId", "commandParameters": {"SysRqCommand": "b"}}`; 200 on success.
Sessions go through the console broker: takeover, idle timeout and audit apply as everywhere.

Abuse: a handshake from another web page's `Origin` is refused (403); a frame over
`MAX_FRAME_BYTES` closes the connection (1009); a binary frame, garbage or a wrong token where
the token belongs is refused; a connection string opens once; a claimed session is released
whatever ends the connection.
"""

from __future__ import annotations

import asyncio
import codecs
import contextlib
from typing import Any

from fastapi import APIRouter, Request, WebSocket, WebSocketDisconnect
from pydantic import BaseModel, ConfigDict, Field

from lab.api.azure.common import Caller, lab_of, require_action
from lab.api.azure.errors import AuthenticationFailed
from lab.api.azure.serialconsole import CONNECT_ACTION, GATEWAY_PREFIX
from lab.api.console_ws import Framing, refuse, serve_console
from lab.api.errors import deny, websocket_close
from lab.api.security.origin import require_same_origin
from lab.api.security.tokens import Principal, verify
from lab.console.broker import SessionMode
from lab.domain.errors import InvalidInput, LabError, NotFound
from lab.domain.power import OPERATIONS
from lab.domain.vm import VmView
from lab.services.lab import Lab

router = APIRouter()
#: The first frame: the gateway's prompt for the token (the CLI does not print it).
FIRST_FRAME = "serial-console-lab: send the bearer token as a text frame"
TOKEN_TIMEOUT_S = 15.0
#: The largest websocket frame the gateway reads: a token is a few KiB, keystrokes are bytes,
#: and the portal refuses pastes over 2,048 characters (uvicorn's default is 16 MiB).
MAX_FRAME_BYTES = 64 * 1024


async def _vm_of(lab: Lab, resource_id: str) -> VmView:
    try:
        return await lab.lookup.by_resource_id_now(resource_id)
    except NotFound:
        raise NotFound(f"The VM of this session ({resource_id}) no longer exists.",
                       target=resource_id) from None  # fmt: skip


class _Utf8Output:
    """Text frames for UTF-8 output (a character split across chunks waits for its end);
    binary frames for anything else, so no byte is lost or altered."""

    def __init__(self) -> None:
        self.decoder = codecs.getincrementaldecoder("utf-8")()

    async def send(self, ws: WebSocket, data: bytes) -> None:
        try:
            text = self.decoder.decode(data)
        except UnicodeDecodeError:
            pending = self.decoder.getstate()[0]
            self.decoder.reset()
            await ws.send_bytes(pending + data)
            return
        if text:
            await ws.send_text(text)


def utf8_framing() -> Framing:
    output = _Utf8Output()

    async def closed(ws: WebSocket, reason: str) -> None:
        await ws.send_text(f"\r\n[serial console: {reason}]\r\n")

    async def refused(ws: WebSocket, exc: LabError) -> None:
        await ws.send_text(f"\r\n[serial console: {exc.message}]\r\n")

    return Framing(output.send, closed, refused)


async def _refuse(ws: WebSocket, exc: LabError) -> None:
    await refuse(ws, exc, utf8_framing())


async def accept_with_token(ws: WebSocket) -> tuple[Principal, str, bool] | None:
    """The gateway's handshake, for every console websocket of the portal's origin: check the
    origin, accept, speak first, read the bearer token (the first text frame, or `?authorization=`
    from older clients) and verify it. Returns (the caller, the token, whether it came in the
    URL), or None when the connection was refused and closed."""
    try:
        require_same_origin(ws.headers.get("origin"), ws.headers.get("host"),
                            ws.url.scheme, "The serial console gateway")  # fmt: skip
    except LabError as exc:
        await deny(ws, exc)
        return None
    await ws.accept()
    await ws.send_text(FIRST_FRAME)
    # Older extensions pass the token in the URL (`?authorization=`); the current one sends it
    # as the first frame. Either order of that frame and ours works: it is read when it comes.
    in_url = ws.query_params.get("authorization")
    try:
        token = in_url if in_url else str(await asyncio.wait_for(ws.receive_text(),
                                                                 TOKEN_TIMEOUT_S))
    except (TimeoutError, WebSocketDisconnect, KeyError):
        # KeyError: a binary frame where the token's text frame belongs.
        # Closed without a word (4401): the client may have gone already.
        no_token = AuthenticationFailed("No bearer token came where the token belongs.")
        with contextlib.suppress(RuntimeError):
            await ws.close(*websocket_close(no_token))
        return None
    token = token.strip().removeprefix("Bearer ").strip()
    try:
        principal = verify(ws.app.state.verifier, f"Bearer {token}")
    except LabError as exc:
        await _refuse(ws, exc)
        return None
    return principal, token, bool(in_url)


@router.websocket(GATEWAY_PREFIX + "/{session_id}/client")
async def client(ws: WebSocket, session_id: str) -> None:
    lab = lab_of(ws)
    accepted = await accept_with_token(ws)
    if accepted is None:
        return
    principal, token, in_url = accepted
    try:
        session = lab.serial_console.open(session_id, principal.object_id)
    except LabError as exc:
        await _refuse(ws, exc)
        return
    # From here on the session is claimed: whatever happens, it is closed at the end, so a
    # refused or failed connection never leaves a session (or a broker subscriber) behind.
    try:
        try:
            require_action(principal, CONNECT_ACTION, session.resource_id)
            view = await _vm_of(lab, session.resource_id)
            broker, sub = lab.consoles.open_session(view, SessionMode.INTERACTIVE,
                                                    principal.name, None)  # fmt: skip
        except LabError as exc:
            await _refuse(ws, exc)
            return
        idle = lab.settings.idle_timeout_minutes * 60
        await serve_console(ws, lab.consoles, view, broker, sub, idle, utf8_framing(),
                            not_input=token.encode() if in_url else None)  # fmt: skip
    finally:
        lab.serial_console.close(session)


class AdminBody(BaseModel):
    model_config = ConfigDict(extra="allow", populate_by_name=True)
    command: str | None = None
    request_id: str | None = Field(default=None, alias="requestId")
    command_parameters: dict[str, Any] = Field(default_factory=dict, alias="commandParameters")


#: The console's own commands, and the power operations the catalogue gives a command.
_COMMANDS = ("nmi", "sysrq", *(o.gateway_command for o in OPERATIONS if o.gateway_command))


@router.post(GATEWAY_PREFIX + "/{session_id}/adminCommand/{command}")
async def admin_command(
    request: Request, session_id: str, command: str, body: AdminBody, principal: Caller
) -> dict[str, Any]:
    """NMI, reset (a hard power cycle in the same QEMU: the console stays connected) or SysRq
    on the session's VM."""
    lab = lab_of(request)
    if command.lower() not in _COMMANDS:
        raise NotFound(f"Unknown admin command '{command}'; one of: {', '.join(_COMMANDS)}.",
                       target=command)  # fmt: skip
    cmd = command.lower()
    if body.command is not None and body.command.lower() != cmd:
        raise InvalidInput(f"The body's command '{body.command}' does not match the URL's "
                           f"'{command}'.", target="command")  # fmt: skip
    session = lab.serial_console.live(session_id, principal.object_id)
    require_action(principal, CONNECT_ACTION, session.resource_id)
    view = await _vm_of(lab, session.resource_id)
    if cmd == "nmi":
        await lab.consoles.nmi(view, user=principal.name)
    elif cmd == "sysrq":
        keys = body.command_parameters.get("SysRqCommand")
        if not isinstance(keys, str) or not keys:
            raise InvalidInput('A SysRq command needs commandParameters {"SysRqCommand": "<key>"}'
                               ", e.g. \"b\" (reboot) or \"REISUB\".",
                               target="commandParameters.SysRqCommand")  # fmt: skip
        await lab.consoles.sysrq(view, keys, user=principal.name)
    else:
        power = next(o for o in OPERATIONS if o.gateway_command == cmd)
        await lab.vms.perform(power.op, view)
        lab.consoles.audit.record(cmd, vm=view.identity.name, user=principal.name)
    return {"requestId": body.request_id, "command": cmd, "status": "Succeeded"}
