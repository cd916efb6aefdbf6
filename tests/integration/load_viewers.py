"""Read-only console viewers in a process of their own, for the load tests (and bench/load.py).

    python tests/integration/load_viewers.py SOCKET VM COUNT [STALLED]

Opens COUNT viewers (mode=view, replay=0) on VM's console websocket of the daemon at SOCKET,
prints `READY` when all are connected, and reads them continuously (asyncio: one slow viewer
does not stall the others, and the test process that started this one cannot stall any),
except the first STALLED (default 0), which read nothing until the TARGET line: clients whose
network stalled, which the daemon must drop before they cost it more than a queue. On a
line `TARGET BYTES [TIMEOUT]` on stdin it waits until every viewer has received BYTES bytes or
was closed (at most TIMEOUT s, default 120), prints one JSON line with each viewer's figures and
exits. A viewer's figures: bytes received, SHA-256 of all of them and of the last
`TAIL_BYTES`, the reason the daemon gave if it closed the session, and whether the connection
ended.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import sys
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

from websockets.asyncio.client import ClientConnection, unix_connect
from websockets.exceptions import ConnectionClosed

#: The viewers keep their last bytes, so a window whose start virtlogd has rotated away can
#: still be compared with the boot log's retained end.
TAIL_BYTES = 1024 * 1024


@dataclass(eq=False)
class Viewer:
    name: str
    conn: ClientConnection
    digest: Any = field(default_factory=hashlib.sha256)
    received: int = 0
    tail: deque[bytes] = field(default_factory=deque)
    tail_len: int = 0
    closed_reason: str | None = None
    ended: bool = False
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    async def run(self) -> None:
        try:
            async for message in self.conn:
                if isinstance(message, str):
                    control = json.loads(message)
                    if control.get("type") in ("closed", "error"):
                        self.closed_reason = control.get("reason") or control.get("message")
                    continue
                self.digest.update(message)
                self.received += len(message)
                self.tail.append(message)
                self.tail_len += len(message)
                while self.tail_len - len(self.tail[0]) >= TAIL_BYTES:
                    self.tail_len -= len(self.tail.popleft())
                self.changed.set()
        except ConnectionClosed:
            pass
        finally:
            self.ended = True
            self.changed.set()

    def tail_digest(self) -> tuple[int, str]:
        data = b"".join(self.tail)[-TAIL_BYTES:]
        return len(data), hashlib.sha256(data).hexdigest()

    async def wait_for(self, target: int) -> None:
        while self.received < target and not self.ended:
            self.changed.clear()
            await self.changed.wait()

    def figures(self) -> dict[str, Any]:
        tail_len, tail_sha = self.tail_digest()
        return {
            "name": self.name, "received": self.received, "sha256": self.digest.hexdigest(),
            "tail_len": tail_len, "tail_sha256": tail_sha, "closed": self.closed_reason,
            "ended": self.ended,
        }  # fmt: skip


async def open_viewer(sock: str, vm: str, i: int) -> Viewer:
    query = urlencode({"mode": "view", "user": f"load-viewer{i}", "replay": "0"})
    conn = await unix_connect(sock, f"ws://lab/v1/vms/{vm}/console?{query}", max_size=None,
                              open_timeout=60, ping_interval=None)  # fmt: skip
    return Viewer(f"viewer{i}", conn)


async def main(sock: str, vm: str, count: int, stalled: int) -> None:
    viewers: list[Viewer] = []
    for batch in range(0, count, 10):
        viewers += await asyncio.gather(
            *(open_viewer(sock, vm, i) for i in range(batch, min(count, batch + 10)))
        )
    tasks = [asyncio.create_task(v.run()) for v in viewers[stalled:]]
    print("READY", flush=True)
    loop = asyncio.get_running_loop()
    line = await loop.run_in_executor(None, sys.stdin.readline)
    words = line.split()
    if not words or words[0] != "TARGET":
        raise SystemExit(f"load_viewers: expected TARGET, got {line!r}")
    target = int(words[1])
    timeout = float(words[2]) if len(words) > 2 else 120.0
    tasks += [asyncio.create_task(v.run()) for v in viewers[:stalled]]
    t0 = time.monotonic()
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(asyncio.gather(*(v.wait_for(target) for v in viewers)), timeout)
    waited = time.monotonic() - t0
    result = {"waited_s": waited, "viewers": [v.figures() for v in viewers]}
    await asyncio.gather(*(v.conn.close() for v in viewers), return_exceptions=True)
    for t in tasks:
        t.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2], int(sys.argv[3]),
                     int(sys.argv[4]) if len(sys.argv) > 4 else 0))  # fmt: skip
