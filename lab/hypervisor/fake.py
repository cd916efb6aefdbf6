"""`FakeHypervisor`: the `Hypervisor` protocol in memory, for unit tests and demos without libvirt.

It behaves like `LibvirtHypervisor` where the services can tell the difference:

- `define()` takes the domain XML the lab builds and reads back what libvirt would keep: the
  name, the UUID, the `<lab:vm>` metadata and the serial `<log file=...>` path. Redefining a
  running domain changes its persistent config only; the live one is replaced at the next start.
- States move as libvirt's do: `start(paused=True)` gives PAUSED, `resume` RUNNING, `shutdown`
  SHUTOFF "shut down by the guest" (at once, unless the guest is set to ignore the ACPI power
  button), `destroy` SHUTOFF "powered off"; `reset` and `reboot` keep RUNNING. Lifecycle
  callbacks are called as libvirt's events would be.
- Errors are the driver's: `NotFound` for an unknown domain, `HypervisorError` for an operation
  the domain's state does not allow (start when active, resume when not paused, shutdown,
  reset or console on a domain that is not running, ...). The fake is strict on purpose: real
  libvirt accepts a `resume` of a running domain as a no-op, the fake refuses it.
- The serial log file plays virtlogd's part: the guest's "output" is appended to it. A boot
  banner is written when the CPUs first run (after `start` or `resume` of a freshly started
  domain) and on `reset`/`reboot`; bytes written to the console are echoed into it, as a
  guest's tty would echo them, so a broker following the log sees them.
"""

from __future__ import annotations

import base64
import threading
import xml.etree.ElementTree as ET
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lab.domain.errors import (
    HypervisorError,
    HypervisorUnavailable,
    LabError,
    NotFound,
    VmAgentNotReady,
)
from lab.domain.hosts import HostSize
from lab.domain.vm import DOMAIN_PREFIX, METADATA_NS
from lab.hypervisor.base import PAUSED_ON_IO_ERROR, DomainInfo, DomainState, LifecycleCallback
from lab.hypervisor.metadata import parse_metadata

#: What a fake guest prints when its CPUs start running; `{name}` is the VM name.
BOOT_BANNER = "[    0.000000] Linux version fake\r\n{name} login: "
#: What a fake guest prints when it sees the ACPI power button and powers off.
POWER_DOWN = b"\r\nACPI: power button pressed\r\nreboot: Power down\r\n"
#: What a fake guest prints before a graceful reboot.
RESTART = b"\r\nACPI: power button pressed\r\nreboot: Restarting system\r\n"

#: A 2x2 binary PPM (P6): red, green / blue, white.
SCREENSHOT_PPM = b"P6\n2 2\n255\n" + bytes(
    [255, 0, 0, 0, 255, 0, 0, 0, 255, 255, 255, 255]
)  # fmt: skip


@dataclass(frozen=True)
class _Config:
    """What libvirt keeps of a domain definition."""

    xml: str
    uuid: str
    metadata: str | None
    serial_log: Path | None


@dataclass
class FakeGuestAgent:
    """A guest agent that answers `guest-ping`, `guest-exec` and `guest-exec-status` (running
    nothing: `run` says what a command prints), and keeps the passwords it is given."""

    run: Callable[[list[str]], tuple[int, bytes, bytes]] = lambda argv: (0, b"", b"")
    execs: list[list[str]] = field(default_factory=list)
    passwords: dict[str, str] = field(default_factory=dict)
    _results: dict[int, tuple[int, bytes, bytes]] = field(default_factory=dict)

    def command(self, command: dict[str, Any]) -> Any:
        args = command.get("arguments", {})
        match command["execute"]:
            case "guest-ping":
                return {}
            case "guest-exec":
                argv = [args["path"], *args.get("arg", [])]
                self.execs.append(argv)
                pid = len(self.execs)
                self._results[pid] = self.run(argv)
                return {"pid": pid}
            case "guest-exec-status":
                code, out, err = self._results.pop(args["pid"])
                return {"exited": True, "exitcode": code,
                        "out-data": base64.b64encode(out).decode(),
                        "err-data": base64.b64encode(err).decode()}  # fmt: skip
        raise HypervisorError(f"the fake guest agent has no command {command['execute']}")


@dataclass
class _Domain:
    name: str
    config: _Config
    #: The config the running QEMU was started with; None while the domain is inactive.
    live: _Config | None = None
    state: DomainState = DomainState.SHUTOFF
    reason: str = ""
    #: The boot banner is due when the CPUs next run (started paused).
    banner_due: bool = False
    #: Console input written while the CPUs were paused, echoed when they run.
    pending_echo: bytearray = field(default_factory=bytearray)
    console: FakeConsole | None = None
    #: Every byte written to this domain's console, across streams.
    console_input: bytearray = field(default_factory=bytearray)
    keys: list[list[int]] = field(default_factory=list)
    breaks: int = 0
    nmis: int = 0
    #: Its guest agent, when one runs (none by default, as in the tiny image).
    agent: FakeGuestAgent | None = None

    @property
    def active(self) -> bool:
        return self.live is not None


class FakeConsole:
    """A domain's serial console stream: input is recorded and echoed into the serial log."""

    def __init__(
        self,
        hv: FakeHypervisor,
        domain: str,
        on_data: Callable[[bytes], None],
        on_close: Callable[[], None],
    ) -> None:
        self._hv = hv
        self.domain = domain
        self.on_data = on_data
        self.on_close = on_close
        #: The bytes written through this stream.
        self.written = bytearray()
        self.closed = False

    def write(self, data: bytes) -> None:
        self._hv._console_write(self, data)

    def close(self) -> None:
        # An explicit close does not call on_close, as with `LibvirtConsole`.
        self.closed = True


class FakeHypervisor:
    """In-memory libvirt stand-in; see the module docstring for what it imitates."""

    def __init__(self, *, domain_type: str = "qemu", ignore_acpi: bool = False) -> None:
        self._domain_type = domain_type
        #: Every guest ignores the ACPI power button (shutdown and reboot do nothing).
        self.ignore_acpi = ignore_acpi
        self._acpi_ignored: set[str] = set()
        self._domains: dict[str, _Domain] = {}
        self._lifecycle: list[LifecycleCallback] = []
        self._lock = threading.RLock()
        #: (operation, domain) of every call that reached a domain, in order.
        self.calls: list[tuple[str, str]] = []
        #: Errors to raise instead of doing an operation, keyed by operation name.
        self.failures: dict[str, LabError] = {}
        #: libvirtd is gone (see `libvirtd_down`).
        self.unavailable = False
        #: What `size` answers (a small host, as this machine is).
        self.host_size = HostSize(cores=2, memory_mib=8192)

    # -- test helpers -------------------------------------------------------------------------
    def set_ignore_acpi(self, name: str, ignore: bool = True) -> None:
        """Make one guest ignore (or obey again) the ACPI power button."""
        if ignore:
            self._acpi_ignored.add(name)
        else:
            self._acpi_ignored.discard(name)

    def guest_output(self, name: str, data: bytes) -> None:
        """The guest prints `data` on its serial port (the domain must be running)."""
        with self._lock:
            dom = self._get(name)
            if dom.state is not DomainState.RUNNING:
                raise HypervisorError(f"domain '{name}' is not running")
            self._emit(dom, data)

    def crash(self, name: str, reason: str = "crashed") -> None:
        """QEMU goes away on its own (`on_crash=destroy`, or the process was killed)."""
        with self._lock:
            dom = self._get(name)
            self._require_active(dom, "crash")
            events = self._stop(dom, reason)
        self._fire(events)

    def libvirtd_down(self) -> None:
        """libvirtd goes away: every console stream hangs up and every call fails with
        `HypervisorUnavailable` until `libvirtd_up`; the guests keep running."""
        with self._lock:
            self.unavailable = True
            consoles = [d.console for d in self._domains.values() if d.console is not None]
            for dom in self._domains.values():
                dom.console = None
        for console in consoles:
            if not console.closed:
                console.closed = True
                console.on_close()

    def pause_on_io_error(self, name: str) -> None:
        """QEMU pauses the guest: a write to its disk failed (the data dir is full)."""
        with self._lock:
            dom = self._get(name)
            self._require_active(dom, "pausing")
            dom.state = DomainState.PAUSED
            dom.reason = PAUSED_ON_IO_ERROR

    def libvirtd_up(self) -> None:
        with self._lock:
            self.unavailable = False

    def console_input(self, name: str) -> bytes:
        """Every byte written to the domain's serial console so far."""
        with self._lock:
            return bytes(self._get(name).console_input)

    def console(self, name: str) -> FakeConsole | None:
        """The open console stream of the domain, if any."""
        with self._lock:
            return self._get(name).console

    def xml(self, name: str) -> str:
        """The domain's persistent XML, as given to `define`."""
        with self._lock:
            return self._get(name).config.xml

    def metadata(self, name: str) -> str | None:
        """The domain's `<vm>` metadata element as libvirt would return it now."""
        with self._lock:
            dom = self._get(name)
            return (dom.live or dom.config).metadata

    def sent_keys(self, name: str) -> list[list[int]]:
        with self._lock:
            return [list(k) for k in self._get(name).keys]

    def breaks_sent(self, name: str) -> int:
        with self._lock:
            return self._get(name).breaks

    def nmis_injected(self, name: str) -> int:
        with self._lock:
            return self._get(name).nmis

    # -- Hypervisor: queries ------------------------------------------------------------------
    def size(self) -> HostSize:
        self._check_available()
        return self.host_size

    def accel(self) -> str:
        return self._domain_type

    def set_accel(self, domain_type: str) -> None:
        self._domain_type = domain_type

    def on_lifecycle(self, callback: LifecycleCallback) -> None:
        self._lifecycle.append(callback)

    def list_domains(self, lab_id: str) -> list[DomainInfo]:
        prefix = f"{DOMAIN_PREFIX}{lab_id}+"
        with self._lock:
            self._check_available()
            return [self._info(d) for n, d in sorted(self._domains.items()) if n.startswith(prefix)]

    def domain(self, name: str) -> DomainInfo:
        with self._lock:
            self._check_available()
            return self._info(self._get(name))

    # -- Hypervisor: definition ---------------------------------------------------------------
    def define(self, xml: str) -> None:
        self._check_failure("define", "")
        config, name = _parse_domain(xml)
        with self._lock:
            for other in self._domains.values():
                if other.name != name and other.config.uuid == config.uuid:
                    raise HypervisorError(
                        f"defining the domain failed: domain '{other.name}' is already defined "
                        f"with uuid {config.uuid}"
                    )
            dom = self._domains.get(name)
            if dom is None:
                self._domains[name] = _Domain(name, config)
            elif dom.config.uuid != config.uuid:
                raise HypervisorError(
                    f"defining the domain failed: domain '{name}' already exists with uuid "
                    f"{dom.config.uuid}"
                )
            else:
                dom.config = config  # the running domain keeps its live config
            self.calls.append(("define", name))

    def undefine(self, name: str) -> None:
        with self._lock:
            dom = self._begin("undefine", name)
            events = self._stop(dom, "powered off") if dom.active else []
            del self._domains[name]
        self._fire(events)

    def set_metadata(self, name: str, element: str) -> None:
        with self._lock:
            dom = self._begin("set_metadata", name)
            try:
                root = ET.fromstring(element)
            except ET.ParseError as exc:
                raise HypervisorError(
                    f"updating metadata on domain '{name}' failed: {exc}"
                ) from exc
            # libvirt puts the element in the namespace itself and refuses one that has its own.
            start_tag = element[: element.find(">")]
            if root.tag.startswith("{") or ":" in root.tag or "xmlns" in start_tag:
                raise HypervisorError(
                    f"updating metadata on domain '{name}' failed: the element must not declare "
                    "a namespace or prefix"
                )
            try:
                parse_metadata(element)
            except ValueError as exc:
                raise HypervisorError(
                    f"updating metadata on domain '{name}' failed: {exc}"
                ) from exc
            dom.config = _with_metadata(dom.config, element)
            if dom.live is not None:
                dom.live = _with_metadata(dom.live, element)

    # -- Hypervisor: power --------------------------------------------------------------------
    def start(self, name: str, *, paused: bool) -> None:
        with self._lock:
            dom = self._begin("start", name)
            if dom.active:
                raise HypervisorError(
                    f"starting on domain '{name}' failed: domain is already running"
                )
            log = dom.config.serial_log
            if log is not None:
                # virtlogd opens (creates) the log when the domain starts.
                try:
                    with log.open("ab"):
                        pass
                except OSError as exc:
                    raise HypervisorError(
                        f"starting on domain '{name}' failed: cannot open the serial log: {exc}"
                    ) from exc
            dom.live = dom.config
            dom.reason = ""
            dom.pending_echo.clear()
            events = [(name, DomainState.RUNNING, "")]
            if paused:
                dom.state = DomainState.PAUSED
                dom.banner_due = True
                events.append((name, DomainState.PAUSED, ""))
            else:
                dom.state = DomainState.RUNNING
                self._banner(dom)
        self._fire(events)

    def resume(self, name: str) -> None:
        with self._lock:
            dom = self._begin("resume", name)
            self._require_active(dom, "resuming")
            if dom.state is not DomainState.PAUSED:
                raise HypervisorError(f"resuming on domain '{name}' failed: domain is not paused")
            dom.state = DomainState.RUNNING
            dom.reason = ""
            if dom.banner_due:
                dom.banner_due = False
                self._banner(dom)
            if dom.pending_echo:
                data = bytes(dom.pending_echo)
                dom.pending_echo.clear()
                self._emit(dom, data)
        self._fire([(name, DomainState.RUNNING, "")])

    def shutdown(self, name: str) -> None:
        with self._lock:
            dom = self._begin("shutdown", name)
            self._require_active(dom, "sending the ACPI power button")
            events = []
            # A paused guest cannot react to the button; one that ignores it does not.
            if dom.state is DomainState.RUNNING and not self._ignores_acpi(name):
                self._emit(dom, POWER_DOWN)
                events = self._stop(dom, "shut down by the guest")
        self._fire(events)

    def destroy(self, name: str) -> None:
        with self._lock:
            dom = self._begin("destroy", name)
            # Like the driver: destroying an inactive domain is a no-op.
            events = self._stop(dom, "powered off") if dom.active else []
        self._fire(events)

    def reset(self, name: str) -> None:
        with self._lock:
            dom = self._begin("reset", name)
            self._require_active(dom, "resetting")
            if dom.state is DomainState.RUNNING:
                self._banner(dom)
            else:
                dom.banner_due = True

    def reboot(self, name: str) -> None:
        with self._lock:
            dom = self._begin("reboot", name)
            self._require_active(dom, "rebooting")
            if dom.state is DomainState.RUNNING and not self._ignores_acpi(name):
                self._emit(dom, RESTART)
                self._banner(dom)

    # -- Hypervisor: console and devices ------------------------------------------------------
    def open_console(
        self, name: str, on_data: Callable[[bytes], None], on_close: Callable[[], None]
    ) -> FakeConsole:
        with self._lock:
            dom = self._begin("open_console", name)
            self._require_active(dom, "opening the serial console")
            old = dom.console
            stream = FakeConsole(self, name, on_data, on_close)
            dom.console = stream
        # FORCE takes the console over: the previous client's stream hangs up.
        if old is not None and not old.closed:
            old.closed = True
            old.on_close()
        return stream

    def screenshot(self, name: str) -> bytes:
        with self._lock:
            dom = self._begin("screenshot", name)
            self._require_active(dom, "taking a screenshot")
            return SCREENSHOT_PPM

    def send_keys(self, name: str, keycodes: list[int], hold_ms: int = 100) -> None:
        with self._lock:
            dom = self._begin("send_keys", name)
            self._require_active(dom, "sending keys")
            dom.keys.append(list(keycodes))

    def send_break(self, name: str) -> None:
        with self._lock:
            dom = self._begin("send_break", name)
            self._require_active(dom, "sending a serial BREAK")
            dom.breaks += 1

    def inject_nmi(self, name: str) -> None:
        with self._lock:
            dom = self._begin("inject_nmi", name)
            self._require_active(dom, "injecting an NMI")
            dom.nmis += 1

    def agent_command(self, name: str, command: dict[str, Any], timeout_s: int) -> Any:
        with self._lock:
            return self._agent_of(self._begin("agent_command", name)).command(command)

    def set_user_password(self, name: str, user: str, password: str) -> None:
        with self._lock:
            self._agent_of(self._begin("set_user_password", name)).passwords[user] = password

    def start_agent(self, name: str) -> FakeGuestAgent:
        """Run a guest agent in `name` (as the debian image does)."""
        with self._lock:
            dom = self._get(name)
            dom.agent = dom.agent or FakeGuestAgent()
            return dom.agent

    @staticmethod
    def _agent_of(dom: _Domain) -> FakeGuestAgent:
        if not dom.active or dom.agent is None:
            raise VmAgentNotReady(f"The guest agent of '{dom.name}' does not answer: QEMU "
                                  "guest agent is not connected")  # fmt: skip
        return dom.agent

    # -- internals ----------------------------------------------------------------------------
    def _get(self, name: str) -> _Domain:
        dom = self._domains.get(name)
        if dom is None:
            raise NotFound(f"libvirt domain '{name}' does not exist")
        return dom

    def _check_available(self) -> None:
        if self.unavailable:
            raise HypervisorUnavailable(
                "cannot connect to libvirt at test:///fake: Connection refused. "
                "Is libvirtd running?"
            )

    def _check_failure(self, op: str, name: str) -> None:
        self._check_available()
        error = self.failures.get(op)
        if error is not None:
            raise error

    def _begin(self, op: str, name: str) -> _Domain:
        dom = self._get(name)
        self._check_failure(op, name)
        self.calls.append((op, name))
        return dom

    @staticmethod
    def _require_active(dom: _Domain, what: str) -> None:
        if not dom.active:
            raise HypervisorError(f"{what} on domain '{dom.name}' failed: domain is not running")

    def _ignores_acpi(self, name: str) -> bool:
        return self.ignore_acpi or name in self._acpi_ignored

    def _info(self, dom: _Domain) -> DomainInfo:
        config = dom.live or dom.config
        if config.metadata is None:
            raise HypervisorError(
                f"reading the domain on domain '{dom.name}' failed: metadata not found"
            )
        identity, model, deallocated = parse_metadata(config.metadata)
        return DomainInfo(dom.name, identity, model, deallocated, dom.state, dom.reason)

    def _stop(self, dom: _Domain, reason: str) -> list[tuple[str, DomainState, str]]:
        """Make the domain inactive; return the lifecycle events to fire (outside the lock)."""
        dom.live = None
        dom.state = DomainState.SHUTOFF
        dom.reason = reason
        dom.banner_due = False
        dom.pending_echo.clear()
        console, dom.console = dom.console, None
        if console is not None and not console.closed:
            console.closed = True
            console.on_close()  # the QEMU process went away: the stream hangs up
        return [(dom.name, DomainState.SHUTOFF, reason)]

    def _banner(self, dom: _Domain) -> None:
        identity_name = dom.name
        config = dom.live or dom.config
        if config.metadata is not None:
            identity_name = parse_metadata(config.metadata)[0].name
        self._emit(dom, BOOT_BANNER.format(name=identity_name).encode())

    def _emit(self, dom: _Domain, data: bytes) -> None:
        """The guest prints `data`: virtlogd appends it to the log; the pty stream sees it."""
        config = dom.live or dom.config
        if config.serial_log is not None:
            with config.serial_log.open("ab") as f:
                f.write(data)
        if dom.console is not None and not dom.console.closed:
            dom.console.on_data(data)

    def _console_write(self, stream: FakeConsole, data: bytes) -> None:
        with self._lock:
            if stream.closed:
                raise HypervisorError("the console stream is closed")
            dom = self._get(stream.domain)
            stream.written.extend(data)
            dom.console_input.extend(data)
            if dom.state is DomainState.RUNNING:
                self._emit(dom, data)
            else:
                dom.pending_echo.extend(data)

    def _fire(self, events: list[tuple[str, DomainState, str]]) -> None:
        for name, state, reason in events:
            for callback in list(self._lifecycle):
                callback(name, state, reason)


def _with_metadata(config: _Config, element: str) -> _Config:
    return _Config(config.xml, config.uuid, element, config.serial_log)


def _parse_domain(xml: str) -> tuple[_Config, str]:
    try:
        root = ET.fromstring(xml)
    except ET.ParseError as exc:
        raise HypervisorError(f"defining the domain failed: XML error: {exc}") from exc
    if root.tag != "domain":
        raise HypervisorError(f"defining the domain failed: unexpected root <{root.tag}>")
    name = (root.findtext("name") or "").strip()
    if not name:
        raise HypervisorError("defining the domain failed: the domain has no <name>")
    uuid = (root.findtext("uuid") or "").strip()
    meta_el = root.find(f"metadata/{{{METADATA_NS}}}vm")
    metadata = ET.tostring(meta_el, encoding="unicode") if meta_el is not None else None
    if metadata is not None:
        try:
            parse_metadata(metadata)
        except ValueError as exc:
            raise HypervisorError(f"defining the domain failed: {exc}") from exc
    log_el = root.find("devices/serial/log")
    log_file = log_el.get("file") if log_el is not None else None
    serial_log = Path(log_file) if log_file else None
    return _Config(xml, uuid or name, metadata, serial_log), name
