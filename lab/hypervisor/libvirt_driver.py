"""`LibvirtHypervisor`: lab VMs as persistent libvirt domains.

Every libvirt error is wrapped in a `HypervisorError` that names the domain and the operation;
a lost connection to libvirtd becomes `HypervisorUnavailable` (503) and the next call
reconnects.
"""

from __future__ import annotations

import json
import logging
import threading
import time
import weakref
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from typing import Any

import libvirt
import libvirt_qemu

from lab.domain.errors import (
    HostUnreachable,
    HypervisorError,
    HypervisorUnavailable,
    NotFound,
    VmAgentNotReady,
)
from lab.domain.hosts import LOCAL, HostSize
from lab.domain.vm import DOMAIN_PREFIX, METADATA_NS, VmIdentity, VmModel
from lab.hypervisor.base import PAUSED_ON_IO_ERROR, DomainInfo, DomainState, LifecycleCallback
from lab.hypervisor.drained import DrainedConsole
from lab.hypervisor.event_loop import ensure_event_loop
from lab.hypervisor.metadata import parse_metadata
from lab.hypervisor.pty_console import PtyConsole, serial_pty_path

log = logging.getLogger(__name__)

CRASHED = "crashed: the QEMU process ended unexpectedly (killed, or it failed)"

_STATE = {
    libvirt.VIR_DOMAIN_RUNNING: DomainState.RUNNING,
    libvirt.VIR_DOMAIN_BLOCKED: DomainState.RUNNING,
    libvirt.VIR_DOMAIN_PAUSED: DomainState.PAUSED,
    libvirt.VIR_DOMAIN_SHUTDOWN: DomainState.RUNNING,
    libvirt.VIR_DOMAIN_SHUTOFF: DomainState.SHUTOFF,
    libvirt.VIR_DOMAIN_CRASHED: DomainState.CRASHED,
}

_SHUTOFF_REASON = {
    libvirt.VIR_DOMAIN_SHUTOFF_UNKNOWN: "unknown",
    libvirt.VIR_DOMAIN_SHUTOFF_SHUTDOWN: "shut down by the guest",
    libvirt.VIR_DOMAIN_SHUTOFF_DESTROYED: "powered off",
    # What libvirt says when the QEMU process ends without being asked (killed, or it died).
    libvirt.VIR_DOMAIN_SHUTOFF_CRASHED: CRASHED,
    libvirt.VIR_DOMAIN_SHUTOFF_MIGRATED: "migrated",
    libvirt.VIR_DOMAIN_SHUTOFF_SAVED: "saved",
    libvirt.VIR_DOMAIN_SHUTOFF_FAILED: "QEMU failed or was killed",
    libvirt.VIR_DOMAIN_SHUTOFF_FROM_SNAPSHOT: "from snapshot",
}

_LIFECYCLE_STATE = {
    libvirt.VIR_DOMAIN_EVENT_STARTED: DomainState.RUNNING,
    libvirt.VIR_DOMAIN_EVENT_RESUMED: DomainState.RUNNING,
    libvirt.VIR_DOMAIN_EVENT_SUSPENDED: DomainState.PAUSED,
    libvirt.VIR_DOMAIN_EVENT_STOPPED: DomainState.SHUTOFF,
    libvirt.VIR_DOMAIN_EVENT_CRASHED: DomainState.CRASHED,
}

_STOPPED_REASON = {
    libvirt.VIR_DOMAIN_EVENT_STOPPED_SHUTDOWN: "shut down by the guest",
    libvirt.VIR_DOMAIN_EVENT_STOPPED_DESTROYED: "powered off",
    libvirt.VIR_DOMAIN_EVENT_STOPPED_CRASHED: CRASHED,
    libvirt.VIR_DOMAIN_EVENT_STOPPED_FAILED: "QEMU failed or was killed",
}

_SERIAL_CHARDEV = "charserial0"


class LibvirtConsole(DrainedConsole):
    """A libvirt console stream on the VM's serial port, nonblocking: a remote host's guest.

    Input is sent at once (the rest when libvirt's event loop says the stream is writable).
    Output is drained by a thread of its own (`DrainedConsole`), not from a per-message callback:
    libvirt's client reads the stream's messages off its socket in C without the GIL and
    queues them, so libvirtd keeps reading the pty however busy the daemon's Python threads
    are. With a readable callback, every message waited for the GIL; under a console flood
    with many viewers that thread fell behind, libvirtd stopped reading the pty, and QEMU,
    finding the pty full, logged the byte it then sent again (its chardev logs a write that
    fails with EAGAIN, and the serial device retries it): bytes the guest wrote once appeared
    twice in the serial log.
    """

    #: A remote host's console for a while after a keystroke: its output goes to the copy of
    #: the guest's log that viewers follow (`log_mirror.py`), so the echo waits for this
    #: drain. Idle, it drains every DRAIN_S like any: a thread waking every millisecond costs
    #: several percent of a core, which a console being typed into may take, 300 idle ones not.
    FAST_DRAIN_S = 0.001
    #: How long after a keystroke the console drains fast.
    FAST_AFTER_INPUT_S = 2.0

    def __init__(
        self, stream: Any, on_data: Callable[[bytes], None], on_close: Callable[[], None]
    ) -> None:
        super().__init__(on_data, on_close)
        self._stream = stream
        #: Until when the console drains every FAST_DRAIN_S (set by each write).
        self._fast_until = 0.0
        self._pending = bytearray()
        self._events = 0
        stream.eventAddCallback(_HANGUP, self._on_event, None)
        self._start_draining("console-drain")

    def write(self, data: bytes) -> None:
        self._fast_until = time.monotonic() + self.FAST_AFTER_INPUT_S
        with self._lock:
            if self._closed:
                raise HypervisorError("the console stream is closed")
            self._pending.extend(data)
            try:
                self._flush_locked()
            except libvirt.libvirtError as exc:
                failed = exc
            else:
                return
        # The connection died under the stream (libvirtd went away): end it, so the broker
        # opens a new one, and say so rather than losing the keys silently.
        self._finish()
        raise HypervisorUnavailable(
            f"the console stream broke while writing: {failed.get_error_message()}"
        ) from failed

    def _release(self) -> None:
        with suppress(libvirt.libvirtError):
            self._stream.eventRemoveCallback()
            self._stream.abort()

    def _flush_locked(self) -> None:
        while self._pending:
            sent = self._stream.send(bytes(self._pending[:65536]))
            if sent == -2:  # would block: ask to be told when writable
                self._want(libvirt.VIR_STREAM_EVENT_WRITABLE)
                return
            if sent < 0:
                raise HypervisorError("writing to the console stream failed")
            del self._pending[:sent]
        self._want(0)

    def _want(self, events: int) -> None:
        if events != self._events:
            self._events = events
            self._stream.eventUpdateCallback(events | _HANGUP)

    def _on_event(self, stream: Any, events: int, _opaque: object) -> None:
        if events & libvirt.VIR_STREAM_EVENT_WRITABLE:
            with self._lock:
                if not self._closed:
                    with suppress(libvirt.libvirtError, HypervisorError):
                        self._flush_locked()
        if events & _HANGUP:
            self._finish()

    def _read(self) -> bytes | None:
        try:
            data = self._stream.recv(262144)
        except libvirt.libvirtError:
            return b""
        return None if data == -2 else data  # -2: nothing queued yet

    def _interval(self) -> float:
        if time.monotonic() < self._fast_until:
            return self.FAST_DRAIN_S
        return self.DRAIN_S

    def hang_up(self) -> None:
        """The connection the stream belongs to is gone (libvirtd went away)."""
        self._finish()


_HANGUP = libvirt.VIR_STREAM_EVENT_ERROR | libvirt.VIR_STREAM_EVENT_HANGUP


class LibvirtHypervisor:
    def __init__(self, uri: str, domain_type: str = "qemu", host: str = LOCAL) -> None:
        self.uri = uri
        #: The lab's name for this libvirtd (`local`, or the name given to `lab host add`).
        self.host = host
        self._domain_type = domain_type
        self._conn: Any = None
        self._lock = threading.RLock()
        self._lifecycle: list[LifecycleCallback] = []
        # Parsed <metadata> per domain name: it changes only when the lab writes it (or an
        # event says someone did), and re-reading it costs an RPC per VM on every API read.
        self._meta_lock = threading.Lock()
        self._meta: dict[str, tuple[VmIdentity, VmModel, bool]] = {}
        #: Open console streams: they die with the connection, which libvirt does not tell them.
        self._consoles: weakref.WeakSet[LibvirtConsole] = weakref.WeakSet()

    # -- connection -------------------------------------------------------------------------
    def accel(self) -> str:
        return self._domain_type

    def set_accel(self, domain_type: str) -> None:
        self._domain_type = domain_type

    def connection(self) -> Any:
        with self._lock:
            if self._conn is not None:
                try:
                    if self._conn.isAlive():
                        return self._conn
                except libvirt.libvirtError:
                    pass
                self._conn = None
            ensure_event_loop()
            try:
                conn = libvirt.open(self.uri)
            except libvirt.libvirtError as exc:
                if self.host == LOCAL:
                    raise HypervisorUnavailable(
                        f"cannot connect to libvirt at {self.uri}: {exc.get_error_message()}. "
                        "Is libvirtd running? (`make setup` starts it)"
                    ) from exc
                raise HostUnreachable(
                    f"host '{self.host}' ({self.uri}) cannot be reached: "
                    f"{exc.get_error_message()}", target=self.host,
                ) from exc  # fmt: skip
            if self.host != LOCAL:
                # A remote host that goes away is noticed within ~15 s even when idle; its
                # streams and calls then fail at once rather than hang on a dead TCP link.
                conn.setKeepAlive(5, 3)
            conn.domainEventRegisterAny(
                None, libvirt.VIR_DOMAIN_EVENT_ID_LIFECYCLE, self._lifecycle_event, None
            )
            conn.domainEventRegisterAny(
                None, libvirt.VIR_DOMAIN_EVENT_ID_METADATA_CHANGE,
                lambda _c, dom, *_a: self._forget(dom.name()), None,
            )  # fmt: skip
            conn.registerCloseCallback(self._connection_closed, None)
            self._forget_all()  # events may have been missed while disconnected
            self._conn = conn
            return conn

    def size(self) -> HostSize:
        """The host's cores and memory (`virNodeGetInfo`)."""
        with self._call("reading the host's size"):
            info = self.connection().getInfo()
        return HostSize(cores=int(info[2]), memory_mib=int(info[1]))

    def _connection_closed(self, _conn: Any, reason: int, _opaque: object) -> None:
        # On libvirt's event thread. Every stream of the connection is dead: end them, so the
        # brokers see their chardev closed and are attached again once libvirtd is back.
        log.warning("the connection to libvirt closed (reason %d); the next call reconnects",
                    reason)  # fmt: skip
        for console in list(self._consoles):
            console.hang_up()

    def _forget(self, name: str) -> None:
        with self._meta_lock:
            self._meta.pop(name, None)

    def _forget_all(self) -> None:
        with self._meta_lock:
            self._meta.clear()

    def on_lifecycle(self, callback: LifecycleCallback) -> None:
        self._lifecycle.append(callback)

    def _lifecycle_event(self, _c: Any, dom: Any, event: int, detail: int, _o: object) -> None:
        if event in (libvirt.VIR_DOMAIN_EVENT_DEFINED, libvirt.VIR_DOMAIN_EVENT_UNDEFINED):
            self._forget(dom.name())
        state = _LIFECYCLE_STATE.get(event)
        if state is None:
            return
        reason = (
            _STOPPED_REASON.get(detail, "") if event == libvirt.VIR_DOMAIN_EVENT_STOPPED else ""
        )
        for callback in self._lifecycle:
            callback(dom.name(), state, reason)

    @contextmanager
    def _call(self, what: str, name: str | None = None) -> Iterator[None]:
        try:
            yield
        except libvirt.libvirtError as exc:
            code = exc.get_error_code()
            where = f" on domain '{name}'" if name else ""
            if code == libvirt.VIR_ERR_NO_DOMAIN:
                raise NotFound(f"libvirt domain '{name}' does not exist") from exc
            on = "" if self.host == LOCAL else f" on host '{self.host}' ({self.uri})"
            if code in (libvirt.VIR_ERR_SYSTEM_ERROR, libvirt.VIR_ERR_RPC) or not self._alive():
                unavailable = HypervisorUnavailable if self.host == LOCAL else HostUnreachable
                raise unavailable(
                    f"libvirt did not answer while {what}{where}{on}: {exc.get_error_message()}"
                ) from exc
            raise HypervisorError(f"{what}{where}{on} failed: {exc.get_error_message()}") from exc

    def _alive(self) -> bool:
        try:
            return bool(self._conn is not None and self._conn.isAlive())
        except libvirt.libvirtError:
            return False

    def _dom(self, name: str) -> Any:
        with self._call("looking up the domain", name):
            return self.connection().lookupByName(name)

    # -- queries ----------------------------------------------------------------------------
    def list_domains(self, lab_id: str) -> list[DomainInfo]:
        prefix = f"{DOMAIN_PREFIX}{lab_id}+"
        # One RPC for every domain's state (and cached metadata), not three per domain.
        with self._call("listing domains"):
            stats = self.connection().getAllDomainStats(libvirt.VIR_DOMAIN_STATS_STATE)
        infos = []
        for dom, values in stats:
            try:
                if dom.name().startswith(prefix):
                    state = (values["state.state"], values["state.reason"])
                    infos.append(self._info(dom, state))
            except (NotFound, libvirt.libvirtError, KeyError):
                continue  # deleted while listing
        return infos

    def domain(self, name: str) -> DomainInfo:
        return self._info(self._dom(name))

    def _metadata(self, dom: Any, name: str) -> tuple[VmIdentity, VmModel, bool]:
        with self._meta_lock:
            cached = self._meta.get(name)
        if cached is not None:
            return cached
        with self._call("reading the domain", name):
            meta = dom.metadata(libvirt.VIR_DOMAIN_METADATA_ELEMENT, METADATA_NS)
        parsed = parse_metadata(meta)
        with self._meta_lock:
            self._meta[name] = parsed
        return parsed

    def _info(self, dom: Any, state_reason: tuple[int, int] | None = None) -> DomainInfo:
        name = dom.name()
        identity, model, deallocated = self._metadata(dom, name)
        if state_reason is None:
            with self._call("reading the domain", name):
                state_reason = dom.state()
        state, reason = state_reason
        mapped = _STATE.get(state, DomainState.OTHER)
        why = _SHUTOFF_REASON.get(reason, "") if state == libvirt.VIR_DOMAIN_SHUTOFF else ""
        if state == libvirt.VIR_DOMAIN_PAUSED and reason == libvirt.VIR_DOMAIN_PAUSED_IOERROR:
            why = PAUSED_ON_IO_ERROR
        if state == libvirt.VIR_DOMAIN_CRASHED:
            why = CRASHED
        return DomainInfo(name, identity, model, deallocated, mapped, why)

    # -- lifecycle --------------------------------------------------------------------------
    def define(self, xml: str) -> None:
        with self._call("defining the domain"):
            dom = self.connection().defineXML(xml)
        self._forget(dom.name())

    def undefine(self, name: str) -> None:
        dom = self._dom(name)
        with self._call("undefining", name):
            if dom.isActive():
                dom.destroy()
            dom.undefineFlags(libvirt.VIR_DOMAIN_UNDEFINE_NVRAM)
        self._forget(name)

    def set_metadata(self, name: str, element: str) -> None:
        dom = self._dom(name)
        flags = libvirt.VIR_DOMAIN_AFFECT_CONFIG
        with self._call("updating metadata", name):
            if dom.isActive():
                flags |= libvirt.VIR_DOMAIN_AFFECT_LIVE
            dom.setMetadata(libvirt.VIR_DOMAIN_METADATA_ELEMENT, element, "lab", METADATA_NS, flags)
        self._forget(name)

    def start(self, name: str, *, paused: bool) -> None:
        dom = self._dom(name)
        with self._call("starting", name):
            dom.createWithFlags(libvirt.VIR_DOMAIN_START_PAUSED if paused else 0)

    def resume(self, name: str) -> None:
        dom = self._dom(name)
        with self._call("resuming", name):
            dom.resume()

    def shutdown(self, name: str) -> None:
        dom = self._dom(name)
        with self._call("sending the ACPI power button", name):
            dom.shutdownFlags(libvirt.VIR_DOMAIN_SHUTDOWN_ACPI_POWER_BTN)

    def destroy(self, name: str) -> None:
        dom = self._dom(name)
        with self._call("powering off", name):
            if dom.isActive():
                dom.destroy()

    def reset(self, name: str) -> None:
        dom = self._dom(name)
        with self._call("resetting", name):
            dom.reset(0)

    def reboot(self, name: str) -> None:
        dom = self._dom(name)
        with self._call("rebooting", name):
            dom.reboot(libvirt.VIR_DOMAIN_REBOOT_ACPI_POWER_BTN)

    # -- console and devices ----------------------------------------------------------------
    def open_console(
        self, name: str, on_data: Callable[[bytes], None], on_close: Callable[[], None]
    ) -> LibvirtConsole | PtyConsole:
        dom = self._dom(name)
        if self.host == LOCAL:
            # The pty directly: libvirtd out of the data path (see `pty_console.py`).
            with self._call("reading the serial console's pty", name):
                path = serial_pty_path(dom.XMLDesc(0))
            if path is None:
                raise HypervisorError(f"domain '{name}' has no serial pty (is it running?)")
            return PtyConsole(path, on_data, on_close)
        with self._call("opening the serial console", name):
            stream = self.connection().newStream(libvirt.VIR_STREAM_NONBLOCK)
            # FORCE: take the console over from a stale client (a previous daemon, virsh).
            dom.openConsole(None, stream, libvirt.VIR_DOMAIN_CONSOLE_FORCE)
            console = LibvirtConsole(stream, on_data, on_close)
        self._consoles.add(console)
        return console

    def screenshot(self, name: str) -> bytes:
        dom = self._dom(name)
        with self._call("taking a screenshot", name):
            stream = self.connection().newStream(0)
            dom.screenshot(stream, 0, 0)
            chunks: list[bytes] = []
            stream.recvAll(lambda _s, data, acc: acc.append(data) or len(data), chunks)
            stream.finish()
        return b"".join(chunks)

    def send_keys(self, name: str, keycodes: list[int], hold_ms: int = 100) -> None:
        dom = self._dom(name)
        with self._call("sending keys", name):
            dom.sendKey(libvirt.VIR_KEYCODE_SET_LINUX, hold_ms, keycodes, len(keycodes), 0)

    def send_break(self, name: str) -> None:
        dom = self._dom(name)
        cmd = {"execute": "chardev-send-break", "arguments": {"id": _SERIAL_CHARDEV}}
        with self._call("sending a serial BREAK", name):
            libvirt_qemu.qemuMonitorCommand(dom, json.dumps(cmd), 0)

    def inject_nmi(self, name: str) -> None:
        dom = self._dom(name)
        with self._call("injecting an NMI", name):
            dom.injectNMI(0)

    def agent_command(self, name: str, command: dict[str, Any], timeout_s: int) -> Any:
        dom = self._dom(name)
        with self._call(f"the guest agent's {command['execute']}", name), self._agent(name):
            answer = libvirt_qemu.qemuAgentCommand(dom, json.dumps(command), timeout_s, 0)
        return json.loads(answer).get("return")

    def set_user_password(self, name: str, user: str, password: str) -> None:
        dom = self._dom(name)
        # The password goes to the agent in this one call; what fails is said without it.
        with self._call("setting a guest user's password", name), self._agent(name):
            dom.setUserPassword(user, password, 0)

    @contextmanager
    def _agent(self, name: str) -> Iterator[None]:
        """libvirt's "agent not connected / not responding" and "domain not running" as the
        lab's `VmAgentNotReady`: the caller's cue to wait, or to say the agent is down."""
        try:
            yield
        except libvirt.libvirtError as exc:
            if exc.get_error_code() in (libvirt.VIR_ERR_AGENT_UNRESPONSIVE,
                                        libvirt.VIR_ERR_OPERATION_INVALID):  # fmt: skip
                raise VmAgentNotReady(
                    f"The guest agent of '{name}' does not answer: {exc.get_error_message()}"
                ) from exc
            raise
