"""The console brokers of all VMs, keyed by libvirt domain name, on the daemon's event loop."""

from __future__ import annotations

from pathlib import Path

from lab.console.broker import ConsoleBroker
from lab.hypervisor.base import ConsoleStream
from lab.services.context import LabContext


class ConsoleService:
    def __init__(self, ctx: LabContext) -> None:
        self.ctx = ctx
        self._brokers: dict[str, ConsoleBroker] = {}

    def broker(self, domain: str, log_path: Path) -> ConsoleBroker:
        broker = self._brokers.get(domain)
        if broker is None or broker.log_path != log_path:
            if broker is not None:
                broker.close("the VM's console moved")
            hv = self.ctx.hypervisor

            def open_console(on_data, on_close) -> ConsoleStream:  # type: ignore[no-untyped-def]
                return hv.open_console(domain, on_data, on_close)

            broker = ConsoleBroker(
                domain, log_path, open_console, replay_bytes=self.ctx.settings.replay_bytes
            )
            self._brokers[domain] = broker
        return broker

    def existing(self, domain: str) -> ConsoleBroker | None:
        return self._brokers.get(domain)

    def attach(self, domain: str, log_path: Path) -> ConsoleBroker:
        """Open the chardev (call on the event loop, with the domain started)."""
        broker = self.broker(domain, log_path)
        broker.attach_chardev()
        return broker

    def remove(self, domain: str, reason: str) -> None:
        broker = self._brokers.pop(domain, None)
        if broker is not None:
            broker.close(reason)

    def close_all(self) -> None:
        for domain in list(self._brokers):
            self.remove(domain, "the lab daemon is shutting down")
