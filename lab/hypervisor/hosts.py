"""`HostRouter`: several libvirt hosts behind the one `Hypervisor` interface the services use.

Each host is a driver of its own (`LibvirtHypervisor` over its URI, or a fake in unit tests).
The router lists every host's domains, remembers which host holds each one, and sends every
per-domain call to that host; `define` takes the host a new domain goes to. A host that cannot
be reached keeps its last known domains in the list, marked with why (`DomainInfo.unreachable`),
so its VMs are shown, not forgotten, and are adopted as they are once it answers again.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import replace
from typing import Any, Protocol

from lab.domain.errors import HostUnreachable, HypervisorError, HypervisorUnavailable, NotFound
from lab.domain.hosts import LOCAL
from lab.hypervisor.base import ConsoleStream, DomainInfo, Hypervisor, LifecycleCallback
from lab.hypervisor.host_files import HostFiles
from lab.hypervisor.metadata import domain_name_of

log = logging.getLogger(__name__)


class HostDriver(Hypervisor, Protocol):
    """A remote host's hypervisor: it knows its name and URI, and has a libvirt connection
    (for its capabilities and its files)."""

    host: str
    uri: str

    def connection(self) -> Any: ...


class HostRouter:
    def __init__(self, local: Hypervisor) -> None:
        self._hosts: dict[str, Hypervisor] = {LOCAL: local}
        self._files: dict[str, HostFiles] = {}
        self._where: dict[str, str] = {}
        #: Per host: the domains it held when last listed (shown while it is unreachable).
        self._last: dict[str, list[DomainInfo]] = {}
        #: Per host: why it could not be listed last time ("" when it could).
        self.problems: dict[str, str] = {}
        #: Domain names found on more than one host (a lab error the user must resolve).
        self.duplicates: dict[str, list[str]] = {}
        self._lifecycle: list[LifecycleCallback] = []
        self._lock = threading.Lock()

    # -- hosts ------------------------------------------------------------------------------
    def add_host(self, name: str, driver: Hypervisor, files: HostFiles | None = None) -> None:
        with self._lock:
            self._hosts[name] = driver
            if files is not None:
                self._files[name] = files
        for callback in self._lifecycle:
            driver.on_lifecycle(callback)

    def remove_host(self, name: str) -> None:
        with self._lock:
            self._hosts.pop(name, None)
            self._files.pop(name, None)
            self._last.pop(name, None)
            self.problems.pop(name, None)
            self._where = {d: h for d, h in self._where.items() if h != name}

    def driver(self, host: str) -> Hypervisor:
        try:
            return self._hosts[host]
        except KeyError:
            raise NotFound(f"the lab has no host '{host}'", target=host) from None

    def files(self, host: str) -> HostFiles | None:
        """A remote host's file access (None for the local host: its files are local)."""
        return self._files.get(host)

    def host_names(self) -> list[str]:
        return list(self._hosts)

    def host_of(self, name: str) -> str:
        """The host that holds domain `name`."""
        host = self._where.get(name)
        if host is not None:
            return host
        for host, driver in list(self._hosts.items()):
            try:
                driver.domain(name)
            except (NotFound, HypervisorUnavailable):
                continue
            self._where[name] = host
            return host
        raise NotFound(f"libvirt domain '{name}' does not exist on any host")

    def _on(self, name: str) -> Hypervisor:
        return self._hosts[self.host_of(name)]

    # -- Hypervisor ---------------------------------------------------------------------------
    def accel(self) -> str:
        return self._hosts[LOCAL].accel()

    def accel_of(self, host: str) -> str:
        return self.driver(host).accel()

    def set_accel(self, domain_type: str) -> None:
        self._hosts[LOCAL].set_accel(domain_type)

    def list_domains(self, lab_id: str) -> list[DomainInfo]:
        found: dict[str, DomainInfo] = {}
        duplicates: dict[str, list[str]] = {}
        for host, driver in list(self._hosts.items()):
            try:
                infos = [replace(i, host=host) for i in driver.list_domains(lab_id)]
                self._last[host] = infos
                self.problems[host] = ""
            except HypervisorUnavailable as exc:
                if host == LOCAL:
                    raise
                self.problems[host] = exc.message
                why = exc.message if isinstance(exc, HostUnreachable) else (
                    f"host '{host}' cannot be reached: {exc.message}")  # fmt: skip
                infos = [replace(i, unreachable=why) for i in self._last.get(host, [])]
            for info in infos:
                if info.name in found:
                    duplicates.setdefault(info.name, [found[info.name].host]).append(host)
                    continue
                found[info.name] = info
                self._where[info.name] = host
        if duplicates and duplicates != self.duplicates:
            for name, hosts in duplicates.items():
                log.error("domain %s is defined on hosts %s: the lab uses the one on %s and "
                          "ignores the others; remove them by hand (virsh -c URI undefine)",
                          name, ", ".join(hosts), hosts[0])  # fmt: skip
        self.duplicates = duplicates
        return list(found.values())

    def domain(self, name: str) -> DomainInfo:
        host = self.host_of(name)
        return replace(self._hosts[host].domain(name), host=host)

    def define(self, xml: str, host: str | None = None) -> None:
        """Define (or redefine) a domain on `host` (None: where it is now, else the local one)."""
        name = domain_name_of(xml)
        if host is None:
            host = self._where.get(name, LOCAL)
        elif (old := self._where.get(name)) is not None and old != host:
            raise HypervisorError(f"domain '{name}' is on host '{old}'; undefine it there "
                                  f"before defining it on '{host}'")  # fmt: skip
        self.driver(host).define(xml)
        self._where[name] = host

    def undefine(self, name: str) -> None:
        self._on(name).undefine(name)
        self._where.pop(name, None)

    def set_metadata(self, name: str, element: str) -> None:
        self._on(name).set_metadata(name, element)

    def start(self, name: str, *, paused: bool) -> None:
        self._on(name).start(name, paused=paused)

    def resume(self, name: str) -> None:
        self._on(name).resume(name)

    def shutdown(self, name: str) -> None:
        self._on(name).shutdown(name)

    def destroy(self, name: str) -> None:
        self._on(name).destroy(name)

    def reset(self, name: str) -> None:
        self._on(name).reset(name)

    def reboot(self, name: str) -> None:
        self._on(name).reboot(name)

    def open_console(
        self, name: str, on_data: Callable[[bytes], None], on_close: Callable[[], None]
    ) -> ConsoleStream:
        return self._on(name).open_console(name, on_data, on_close)

    def screenshot(self, name: str) -> bytes:
        return self._on(name).screenshot(name)

    def send_keys(self, name: str, keycodes: list[int], hold_ms: int = 100) -> None:
        self._on(name).send_keys(name, keycodes, hold_ms)

    def send_break(self, name: str) -> None:
        self._on(name).send_break(name)

    def inject_nmi(self, name: str) -> None:
        self._on(name).inject_nmi(name)

    def agent_command(self, name: str, command: dict[str, Any], timeout_s: int) -> Any:
        return self._on(name).agent_command(name, command, timeout_s)

    def set_user_password(self, name: str, user: str, password: str) -> None:
        self._on(name).set_user_password(name, user, password)

    def on_lifecycle(self, callback: LifecycleCallback) -> None:
        self._lifecycle.append(callback)
        for driver in list(self._hosts.values()):
            driver.on_lifecycle(callback)


def connect_libvirt_host(name: str, uri: str, data_dir: str) -> tuple[HostDriver, HostFiles]:
    """A remote host's driver and file access over its libvirt URI (connected on first use).
    Its guests run under TCG: whether KVM works there is not probed (see the README)."""
    from lab.hypervisor.libvirt_driver import LibvirtHypervisor

    driver = LibvirtHypervisor(uri, "qemu", host=name)
    return driver, HostFiles(driver.connection, name, data_dir)
