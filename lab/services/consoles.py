"""The consoles of all VMs: one broker per VM (keyed by libvirt domain name) on the daemon's
event loop; sessions with Azure's rules and an audit trail; SysRq and NMI as operations."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from enum import StrEnum
from pathlib import Path

from lab.console.broker import ConsoleBroker, RemoteLog, SessionMode, Subscriber
from lab.domain.errors import OperationNotSupported, StateError
from lab.domain.guest_health import HangWarning
from lab.domain.power import PowerState
from lab.domain.sysrq import KEY_LEFTALT, KEY_SYSRQ, KEYCODES, parse_sysrq_keys
from lab.domain.vm import VmView
from lab.hypervisor.base import ConsoleStream
from lab.services.audit import AuditLog
from lab.services.context import LabContext

#: Pause between the keys of a SysRq sequence, so each action starts before the next key.
SYSRQ_GAP_S = 0.3


class SysRqMethod(StrEnum):
    #: QMP send-key alt+sysrq+key on the virtual keyboard.
    SENDKEY = "sendkey"
    #: A serial BREAK on the console, then the key: what a real serial console does.
    BREAK = "break"


class ConsoleService:
    def __init__(self, ctx: LabContext) -> None:
        self.ctx = ctx
        self.audit = AuditLog(ctx.settings.data_dir / "audit.log")
        self._brokers: dict[str, ConsoleBroker] = {}
        #: For a domain on a remote host, its log copy's side of the console stream
        #: (`log_mirror.py`); None for a local domain. Set by `Lab`.
        self.remote_log: Callable[[str], RemoteLog | None] = lambda _domain: None

    # -- brokers ------------------------------------------------------------------------------
    def broker(self, domain: str, log_path: Path) -> ConsoleBroker:
        broker = self._brokers.get(domain)
        if broker is None or broker.log_path != log_path:
            if broker is not None:
                broker.close("the VM's console moved")
            hv = self.ctx.hypervisor

            def open_console(on_data, on_close) -> ConsoleStream:  # type: ignore[no-untyped-def]
                return hv.open_console(domain, on_data, on_close)

            broker = ConsoleBroker(
                domain,
                log_path,
                open_console,
                replay_bytes=self.ctx.settings.replay_bytes,
                queue_limit=self.ctx.settings.console_queue_limit,
                remote_log=self.remote_log(domain),
            )
            self._brokers[domain] = broker
        return broker

    def broker_for(self, view: VmView) -> ConsoleBroker:
        return self.broker(
            view.identity.domain_name, self.ctx.serial_log_path(view.identity, view.model)
        )

    def existing(self, domain: str) -> ConsoleBroker | None:
        return self._brokers.get(domain)

    def hang_warning(self, domain: str) -> HangWarning | None:
        """The latest sign on the VM's console that its guest is hung, if it has not shown a
        sign of life since."""
        broker = self._brokers.get(domain)
        return broker.hang_watch.warning if broker is not None else None

    def forget_hang(self, domain: str) -> None:
        """The guest was reset: it boots again, whatever its last boot printed."""
        broker = self._brokers.get(domain)
        if broker is not None:
            broker.hang_watch.clear()

    async def attach(self, domain: str, log_path: Path) -> ConsoleBroker:
        """Open the chardev (with the domain started; the libvirt call in a thread)."""
        broker = self.broker(domain, log_path)
        await broker.attach_chardev_off_loop()
        return broker

    def remove(self, domain: str, reason: str) -> None:
        broker = self._brokers.pop(domain, None)
        if broker is not None:
            broker.close(reason)

    def close_all(self) -> None:
        for domain in list(self._brokers):
            self.remove(domain, "the lab daemon is shutting down")

    # -- sessions -----------------------------------------------------------------------------
    def open_session(
        self, view: VmView, mode: SessionMode, user: str, replay: int | None
    ) -> tuple[ConsoleBroker, Subscriber]:
        _require_running(view, "console")
        broker = self.broker_for(view)
        name = view.identity.name
        displaced = broker.interactive if mode is SessionMode.INTERACTIVE else None
        sub = broker.subscribe(mode, user, replay)
        self.audit.record("connect", vm=name, user=user, mode=mode.value, session=sub.id)
        if displaced is not None:
            self.audit.record(
                "takeover", vm=name, user=user, session=sub.id,
                displaced_user=displaced.user, displaced_session=displaced.id,
            )  # fmt: skip
        return broker, sub

    def close_session(
        self, view: VmView, broker: ConsoleBroker, sub: Subscriber, reason: str
    ) -> None:
        broker.unsubscribe(sub)
        self.audit.record(
            "disconnect", vm=view.identity.name, user=sub.user, session=sub.id, reason=reason
        )

    # -- admin commands -----------------------------------------------------------------------
    async def sysrq(
        self, view: VmView, keys: str, *, method: SysRqMethod = SysRqMethod.SENDKEY,
        user: str = "local",
    ) -> str:  # fmt: skip
        """Send a SysRq key or sequence; returns the keys sent."""
        _require_running(view, "sysrq")
        if view.model.os_type.lower() == "windows":
            raise OperationNotSupported(
                f"You can only send a SysRq to a Linux VM ('{view.identity.name}' is Windows).",
                target=view.identity.name,
            )
        seq = parse_sysrq_keys(keys)
        domain = view.identity.domain_name
        hv = self.ctx.hypervisor
        broker = self.broker_for(view)
        for i, key in enumerate(seq):
            if i:
                await asyncio.sleep(SYSRQ_GAP_S)
            if method is SysRqMethod.SENDKEY:
                codes = [KEY_LEFTALT, KEY_SYSRQ, KEYCODES[key]]
                await asyncio.to_thread(hv.send_keys, domain, codes)
            else:
                await asyncio.to_thread(hv.send_break, domain)
                broker.write_admin(key.encode())
        self.audit.record("sysrq", vm=view.identity.name, user=user, keys=seq, method=method.value)
        return seq

    async def nmi(self, view: VmView, *, user: str = "local") -> None:
        _require_running(view, "nmi")
        await asyncio.to_thread(self.ctx.hypervisor.inject_nmi, view.identity.domain_name)
        self.audit.record("nmi", vm=view.identity.name, user=user)


def _require_running(view: VmView, operation: str) -> None:
    if view.power_state is not PowerState.RUNNING:
        raise StateError(operation, view.power_state.value, ("running",),
                         target=view.identity.name)  # fmt: skip
