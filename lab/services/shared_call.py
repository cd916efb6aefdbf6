"""One blocking call, run in a thread, shared by the coroutines that ask for it meanwhile.

The Azure API's read routes are async (a thread-pool hop per request cost a third of the
server's throughput) and each needs every domain's state: one libvirt RPC, sub-millisecond
while libvirtd is idle, but 0.2-2.6 s while it starts other domains. Made on the event loop,
that wait froze every request and console of the daemon. In a thread per request, the hops
would cost the throughput again; shared, a call serves every request that arrived before it
started (bench/api.py, 50 clients: 1,283-1,357 -> 1,462-1,598 requests/s; libvirtd spends
0.02 ms per request instead of 0.11).

Each caller gets the result of a call that *started after it asked*: a caller never sees the
state from before its own request (a GET after a power operation's answer shows its outcome).
Up to `parallel` calls run at once; callers arriving while that many run wait for one to end
and share the next. A slow call is usually waiting for a domain that libvirtd is starting, so a
second call started meanwhile ends about when the first does: with one call at a time, a
request arriving just after a slow call began waited for two in a row (the Azure API's VM list
during 20 boots: max 2.4-2.6 s with one at a time, 0.25-1.2 s with two).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Generic, TypeVar

T = TypeVar("T")


class SharedCall(Generic[T]):
    def __init__(self, fn: Callable[[], T], parallel: int = 2) -> None:
        self._fn = fn
        self._parallel = parallel
        #: The callers' share of the next call, not started yet (None: nobody waits for one).
        self._next: asyncio.Future[T] | None = None
        self._running = 0
        #: Calls made (for tests and figures).
        self.calls = 0

    async def __call__(self) -> T:
        if self._next is None:
            self._next = asyncio.get_running_loop().create_future()
            # Retrieved here too, so a failure whose callers all went away is not reported
            # as "never retrieved".
            self._next.add_done_callback(lambda f: f.cancelled() or f.exception())
        share = self._next
        if self._running < self._parallel:
            self._start()
        # Shielded: a caller that goes away (a client disconnects) must not cancel the others.
        return await asyncio.shield(share)

    def _start(self) -> None:
        share, self._next = self._next, None
        assert share is not None
        self._running += 1
        self.calls += 1
        task = asyncio.ensure_future(asyncio.to_thread(self._fn))
        task.add_done_callback(lambda t: self._finished(t, share))

    def _finished(self, task: asyncio.Future[T], share: asyncio.Future[T]) -> None:
        self._running -= 1
        if task.cancelled():
            share.cancel()
        elif (exc := task.exception()) is not None:
            share.set_exception(exc)
        else:
            share.set_result(task.result())
        if self._next is not None:
            self._start()
