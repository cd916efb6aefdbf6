"""A scenario's checks, run inside the daemon for every front end (`lab scenario check`, the web
portal's "Check my fix"): one place that runs them and records the results in the attempt.

They run (`lab.client.checks.run_checks`) over an in-process session on the VM's console
broker, so they type into the guest as a console user does. `run_checks` is blocking pexpect
code, so it runs on a worker thread; the transport below carries its bytes to and from the
broker, which lives on the event loop.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
from collections.abc import Iterator
from typing import Any

from lab.client.checks import run_checks
from lab.client.session import ConsoleSession
from lab.console.broker import Chunk, ConsoleBroker, SessionMode, Subscriber
from lab.domain.errors import Conflict
from lab.domain.scenario import CheckResult
from lab.services.consoles import ConsoleService
from lab.services.scenarios import GROUP, ScenarioService

#: Who the audit log and a displaced console user see connecting.
CHECK_USER = "scenario-check"


class BrokerTransport:
    """A `ConsoleTransport` over a broker subscription, used from a thread other than the
    event loop's: writes hop onto the loop, reads wait on the subscriber's queue there."""

    #: How often a blocked read looks whether the transport was closed meanwhile.
    POLL_S = 0.5

    def __init__(
        self, loop: asyncio.AbstractEventLoop, broker: ConsoleBroker, sub: Subscriber
    ) -> None:
        self.loop = loop
        self.broker = broker
        self.sub = sub
        self.closed = False

    def send(self, data: bytes) -> None:
        async def write() -> None:
            self.broker.write(self.sub, data)

        # Wait for the write: a refused one (the session was taken over) raises here.
        asyncio.run_coroutine_threadsafe(write(), self.loop).result(timeout=30)

    def __iter__(self) -> Iterator[bytes | str]:
        while not self.closed:
            future = asyncio.run_coroutine_threadsafe(self.sub.next(), self.loop)
            item = None
            while not self.closed:
                try:
                    item = future.result(timeout=self.POLL_S)
                    break
                except concurrent.futures.TimeoutError:
                    continue
            if item is None:
                future.cancel()
                return
            if isinstance(item, Chunk):
                yield item.data
                continue
            # The session's own control message shape: ConsoleSession reads `reason` from it.
            yield json.dumps({"type": "closed", "reason": item.reason})
            return

    def close(self) -> None:
        self.closed = True


class ScenarioChecker:
    """Runs a started scenario's checks in its guest and records the results in the attempt."""

    def __init__(self, scenarios: ScenarioService, consoles: ConsoleService) -> None:
        self.scenarios = scenarios
        self.consoles = consoles
        # One check at a time per scenario VM: two would type into the same console.
        self._running: set[tuple[str, str]] = set()

    async def check(self, name: str, boot_timeout: float | None = None, group: str = GROUP,
                    ) -> tuple[list[CheckResult], dict[str, Any]]:  # fmt: skip
        """(every check's result, the attempt with the results recorded). `boot_timeout`: how
        long to wait for a login prompt (default: the scenario's)."""
        scenario = self.scenarios.get(name)
        view = await self.scenarios.vm_now(name, group)
        if view is None:
            raise Conflict(f"Scenario '{name}' is not started, so there is nothing to check.",
                           target=name)  # fmt: skip
        key = (group.lower(), name)
        if key in self._running:
            raise Conflict(f"The checks of scenario '{name}' are already running; wait for "
                           "their results.", target=name)  # fmt: skip
        self._running.add(key)
        try:
            # Interactive, as the CLI's check is: a trainee's console session is taken over
            # (and told so), and the guest's shell state is shared, as in Azure.
            broker, sub = self.consoles.open_session(view, SessionMode.INTERACTIVE,
                                                     CHECK_USER, 0)  # fmt: skip
            transport = BrokerTransport(asyncio.get_running_loop(), broker, sub)
            session = ConsoleSession(transport, vm=name, timeout=60)
            wait = scenario.boot_timeout_seconds if boot_timeout is None else boot_timeout
            try:
                results = await asyncio.to_thread(run_checks, session, scenario,
                                                  boot_timeout=wait)  # fmt: skip
            finally:
                session.close()
                self.consoles.close_session(view, broker, sub, "the checks finished")
        finally:
            self._running.discard(key)
        return results, self.scenarios.record_checks(name, results, group)
