"""The console websocket of the daemon API.

Binary frames carry console bytes both ways (a text frame from the client is typed too, as the
Azure gateway does). The server also sends text frames with JSON control messages:
`{"type": "closed", "reason": ...}` as the last frame when the session ends (takeover, stalled
viewer, idle timeout, VM stopped) and `{"type": "error", ...}` when input is refused.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

from fastapi import WebSocket, WebSocketDisconnect

from lab.console.broker import Chunk, ConsoleBroker, SessionMode, Subscriber
from lab.domain.errors import LabError
from lab.domain.vm import VmView
from lab.services.consoles import ConsoleService

IDLE_NOTICE = "the console session was closed after {minutes:g} minutes without input"


async def serve_console(
    ws: WebSocket, consoles: ConsoleService, view: VmView, broker: ConsoleBroker,
    sub: Subscriber, idle_timeout_s: float,
) -> None:  # fmt: skip
    """Serve a session `consoles.open_session` opened, until it ends; then close it."""
    mode = sub.mode
    await ws.accept()
    reason = "the client disconnected"
    last_input = time.monotonic()
    sender = asyncio.create_task(_pump_output(ws, sub))
    receive: asyncio.Future[Any] | None = None
    try:
        while not sender.done():
            if receive is None:
                receive = asyncio.ensure_future(ws.receive())
            idle_left = idle_timeout_s - (time.monotonic() - last_input)
            if mode is SessionMode.INTERACTIVE and idle_left <= 0:
                reason = IDLE_NOTICE.format(minutes=idle_timeout_s / 60)
                await _close(ws, reason)
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
            if isinstance(data, bytes) and data:
                last_input = time.monotonic()
                try:
                    broker.write(sub, data)
                except LabError as exc:
                    await ws.send_text(json.dumps({"type": "error", **exc.to_dict()}))
        if sender.done() and not sender.cancelled() and sender.exception() is None:
            reason = sender.result()
    except WebSocketDisconnect:
        pass
    finally:
        if receive is not None:
            receive.cancel()
        sender.cancel()
        consoles.close_session(view, broker, sub, reason)


async def _pump_output(ws: WebSocket, sub: Subscriber) -> str:
    """Forward the subscriber's queue; return why the broker ended the session."""
    while True:
        item = await sub.next()
        if isinstance(item, Chunk):
            await ws.send_bytes(item.data)
            continue
        await _close(ws, item.reason)
        return item.reason


async def _close(ws: WebSocket, reason: str) -> None:
    await ws.send_text(json.dumps({"type": "closed", "reason": reason}))
    await ws.close(code=1000, reason=reason[:120])
