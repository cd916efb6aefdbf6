"""A console session over a websocket, for both APIs that serve one: the daemon's and the
Azure serial-console gateway's. They differ only in framing, which a `Framing` supplies.

Console bytes come in as binary or text frames (both are typed, as the Azure gateway does);
output, the end of the session (takeover, stalled viewer, idle timeout, VM stopped) and refused
input go out as the framing says.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from fastapi import WebSocket, WebSocketDisconnect

from lab.api.errors import websocket_close
from lab.console.broker import Chunk, ConsoleBroker, SessionMode, Subscriber
from lab.domain.errors import LabError
from lab.domain.vm import VmView
from lab.services.consoles import ConsoleService

IDLE_NOTICE = "the console session was closed after {minutes:g} minutes without input"


@dataclass(frozen=True)
class Framing:
    send_output: Callable[[WebSocket, bytes], Awaitable[None]]
    #: Say why the session ends (the socket is closed after it).
    send_closed: Callable[[WebSocket, str], Awaitable[None]]
    send_refused: Callable[[WebSocket, LabError], Awaitable[None]]


async def _json_closed(ws: WebSocket, reason: str) -> None:
    await ws.send_text(json.dumps({"type": "closed", "reason": reason}))


async def _json_refused(ws: WebSocket, exc: LabError) -> None:
    await ws.send_text(json.dumps({"type": "error", **exc.to_dict()}))


#: The daemon API's framing: binary frames of console bytes, JSON text frames for control.
LAB_FRAMING = Framing(WebSocket.send_bytes, _json_closed, _json_refused)


async def refuse(ws: WebSocket, exc: LabError, framing: Framing = LAB_FRAMING) -> None:
    """Refuse a session on an accepted websocket: say why in the framing's words, then close
    it as `websocket_close` maps the error. The client may have gone already: nothing to say."""
    with contextlib.suppress(RuntimeError, WebSocketDisconnect):
        await framing.send_refused(ws, exc)
        await ws.close(*websocket_close(exc))


async def serve_console(
    ws: WebSocket, consoles: ConsoleService, view: VmView, broker: ConsoleBroker,
    sub: Subscriber, idle_timeout_s: float, framing: Framing = LAB_FRAMING,
    not_input: bytes | None = None,
) -> None:  # fmt: skip
    """Serve a session `consoles.open_session` opened on an accepted websocket, until it ends;
    then close it. A frame equal to `not_input` (the bearer token, which some clients send
    again after passing it in the URL) is dropped, never typed into the guest."""
    mode = sub.mode
    reason = "the client disconnected"
    last_input = time.monotonic()
    sender = asyncio.create_task(_pump_output(ws, sub, framing))
    receive: asyncio.Future[Any] | None = None
    try:
        while not sender.done():
            if receive is None:
                receive = asyncio.ensure_future(ws.receive())
            idle_left = idle_timeout_s - (time.monotonic() - last_input)
            if mode is SessionMode.INTERACTIVE and idle_left <= 0:
                reason = IDLE_NOTICE.format(minutes=idle_timeout_s / 60)
                await _close(ws, reason, framing)
                break
            timeout = idle_left if mode is SessionMode.INTERACTIVE else None
            waiting: set[asyncio.Future[Any]] = {receive, sender}
            done, _ = await asyncio.wait(
                waiting, timeout=timeout, return_when=asyncio.FIRST_COMPLETED
            )
            if receive not in done:
                continue
            message, receive = receive.result(), None
            if message["type"] == "websocket.disconnect":
                break
            data = message.get("bytes")
            text = message.get("text")
            if data is None and isinstance(text, str):
                data = text.encode()
            if not_input is not None and isinstance(data, bytes) and data.strip() == not_input:
                continue
            if isinstance(data, bytes) and data:
                last_input = time.monotonic()
                try:
                    broker.write(sub, data)
                except LabError as exc:
                    await framing.send_refused(ws, exc)
        if sender.done() and not sender.cancelled() and sender.exception() is None:
            reason = sender.result()
    except WebSocketDisconnect:
        pass
    finally:
        if receive is not None:
            receive.cancel()
        sender.cancel()
        consoles.close_session(view, broker, sub, reason)


async def _pump_output(ws: WebSocket, sub: Subscriber, framing: Framing) -> str:
    """Forward the subscriber's queue; return why the broker ended the session."""
    while True:
        item = await sub.next()
        if isinstance(item, Chunk):
            await framing.send_output(ws, item.data)
            continue
        await _close(ws, item.reason, framing)
        return item.reason


async def _close(ws: WebSocket, reason: str, framing: Framing) -> None:
    await framing.send_closed(ws, reason)
    await ws.close(code=1000, reason=reason[:120])
