"""SharedCall: a blocking call in a thread, shared by the coroutines that ask meanwhile, each
getting a call that started after it asked."""

from __future__ import annotations

import asyncio
import functools
import threading
from collections.abc import Callable, Coroutine
from typing import Any

import pytest

from lab.services.shared_call import SharedCall


def on_a_loop(test: Callable[[], Coroutine[Any, Any, None]]) -> Callable[[], None]:
    @functools.wraps(test)
    def run() -> None:
        asyncio.run(asyncio.wait_for(test(), 10))

    return run


class Gated:
    """A blocking function whose calls each wait for their own release."""

    def __init__(self) -> None:
        self.started: list[threading.Event] = []
        self.release: list[threading.Event] = []
        self.fail_next = False

    def __call__(self) -> int:
        n = len(self.started)
        self.started.append(threading.Event())
        self.release.append(threading.Event())
        self.started[n].set()
        self.release[n].wait(5)
        if self.fail_next:
            self.fail_next = False
            raise RuntimeError(f"call {n} failed")
        return n

    async def wait_started(self, n: int) -> None:
        while len(self.started) <= n:
            await asyncio.sleep(0.001)
        await asyncio.to_thread(self.started[n].wait, 5)


@on_a_loop
async def test_callers_that_arrive_during_a_call_share_the_next_one() -> None:
    fn = Gated()
    shared = SharedCall(fn, parallel=1)
    first = asyncio.create_task(shared())
    await fn.wait_started(0)
    later = [asyncio.create_task(shared()) for _ in range(5)]
    await asyncio.sleep(0.01)
    assert len(fn.started) == 1, "nobody else starts a call while one runs"
    fn.release[0].set()
    assert await first == 0
    await fn.wait_started(1)
    fn.release[1].set()
    # Call 0 started before they asked: they must not get its (older) result.
    assert await asyncio.gather(*later) == [1] * 5
    assert shared.calls == 2


@on_a_loop
async def test_a_lone_caller_gets_a_fresh_call_each_time() -> None:
    fn = Gated()
    shared = SharedCall(fn, parallel=1)
    for n in range(3):
        task = asyncio.create_task(shared())
        await fn.wait_started(n)
        fn.release[n].set()
        assert await task == n
    assert shared.calls == 3


@on_a_loop
async def test_the_event_loop_keeps_running_while_the_call_blocks() -> None:
    fn = Gated()
    shared = SharedCall(fn, parallel=1)
    task = asyncio.create_task(shared())
    await fn.wait_started(0)
    ticks = 0
    for _ in range(10):
        await asyncio.sleep(0.001)
        ticks += 1
    assert ticks == 10 and not task.done()
    fn.release[0].set()
    assert await task == 0


@on_a_loop
async def test_a_failure_reaches_the_callers_of_that_call_only() -> None:
    fn = Gated()
    shared = SharedCall(fn, parallel=1)
    fn.fail_next = True
    first = asyncio.create_task(shared())
    await fn.wait_started(0)
    second = asyncio.create_task(shared())
    fn.release[0].set()
    with pytest.raises(RuntimeError, match="call 0 failed"):
        await first
    await fn.wait_started(1)
    fn.release[1].set()
    assert await second == 1


@on_a_loop
async def test_a_caller_that_goes_away_does_not_cancel_the_others() -> None:
    fn = Gated()
    shared = SharedCall(fn, parallel=1)
    first = asyncio.create_task(shared())
    await fn.wait_started(0)
    leaving = asyncio.create_task(shared())
    staying = asyncio.create_task(shared())
    await asyncio.sleep(0.01)
    leaving.cancel()
    fn.release[0].set()
    assert await first == 0
    await fn.wait_started(1)
    fn.release[1].set()
    assert await staying == 1
    with pytest.raises(asyncio.CancelledError):
        await leaving


@on_a_loop
async def test_a_second_call_runs_beside_a_slow_one_and_later_callers_share_the_third() -> None:
    fn = Gated()
    shared = SharedCall(fn, parallel=2)
    first = asyncio.create_task(shared())
    await fn.wait_started(0)
    second = asyncio.create_task(shared())
    await fn.wait_started(1)  # at once: it does not wait for call 0
    later = [asyncio.create_task(shared()) for _ in range(3)]
    await asyncio.sleep(0.01)
    assert len(fn.started) == 2, "two calls at most"
    fn.release[1].set()
    assert await second == 1
    await fn.wait_started(2)
    fn.release[2].set()
    assert await asyncio.gather(*later) == [2] * 3
    fn.release[0].set()
    assert await first == 0
    assert shared.calls == 3
