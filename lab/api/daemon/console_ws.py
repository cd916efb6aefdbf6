"""The console websocket of the daemon API.

Binary frames carry console bytes both ways. The server also sends text frames with JSON
control messages: `{"type": "closed", "reason": ...}` as the last frame when the broker ends
the session (takeover, stalled viewer, VM deleted).
"""

from __future__ import annotations

import asyncio
import json

from fastapi import WebSocket, WebSocketDisconnect

from lab.console.broker import Chunk, ConsoleBroker, SessionMode, Subscriber
from lab.domain.errors import LabError


async def serve_console(
    ws: WebSocket, broker: ConsoleBroker, mode: SessionMode, user: str, replay: int | None
) -> None:
    await ws.accept()
    sub = broker.subscribe(mode, user, replay)
    sender = asyncio.create_task(_pump_output(ws, sub))
    try:
        while not sender.done():
            receive = asyncio.ensure_future(ws.receive())
            done, _ = await asyncio.wait({receive, sender}, return_when=asyncio.FIRST_COMPLETED)
            if receive not in done:
                receive.cancel()
                break
            message = receive.result()
            if message["type"] == "websocket.disconnect":
                break
            data = message.get("bytes")
            if data is None and message.get("text") is not None:
                data = message["text"].encode()
            if data:
                try:
                    broker.write(sub, data)
                except LabError as exc:
                    await ws.send_text(json.dumps({"type": "error", "message": exc.message}))
    except WebSocketDisconnect:
        pass
    finally:
        broker.unsubscribe(sub)
        sender.cancel()


async def _pump_output(ws: WebSocket, sub: Subscriber) -> None:
    while True:
        item = await sub.next()
        if isinstance(item, Chunk):
            await ws.send_bytes(item.data)
            continue
        await ws.send_text(json.dumps({"type": "closed", "reason": item.reason}))
        await ws.close(code=1000, reason=item.reason[:120])
        return
