"""The lab's hosts: added, checked, watched, drained and removed; their loads; placement.

Hosts are kept in `<data dir>/state/resources.json` (`hosts`); the local host is implicit
(only its `drained` flag is kept). Each remote host is a driver in the `HostRouter`, which
sends every domain call to the host that holds the domain. Which host a VM is on is not kept
twice: it is where libvirt has its domain (`VmView.host`).
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable
from dataclasses import asdict, dataclass

from lab.domain.errors import Conflict, HypervisorUnavailable, InvalidInput, NotFound
from lab.domain.hosts import (
    INSECURE_TRANSPORTS,
    LOCAL,
    Host,
    HostLoad,
    HostSize,
    check_host_name,
    check_uri,
    place,
    place_in_fault_domain,
)
from lab.domain.resource_ids import same
from lab.domain.vm import VmModel
from lab.hypervisor.base import DomainInfo
from lab.hypervisor.host_files import HostFiles
from lab.hypervisor.hosts import HostDriver, HostRouter
from lab.storage.state import StateFile

log = logging.getLogger(__name__)

_KEY = "hosts"
#: Where a host keeps the lab's files when `--data-dir` is not given (on that host).
DEFAULT_HOST_DATA_DIR = "/var/lib/serial-console-lab"

#: Makes the driver and file access of a remote host: (name, URI, data dir) → both.
ConnectHost = Callable[[str, str, str], tuple[HostDriver, HostFiles]]


@dataclass(frozen=True)
class FaultDomain:
    """A scale-set instance's fault domain (`index` of `count`), and its set (group, name)."""

    index: int
    count: int
    scale_set: tuple[str, str]


@dataclass(frozen=True)
class _Pending:
    host: str
    vcpus: int
    memory_mib: int
    fault_domain: FaultDomain | None


class HostService:
    def __init__(
        self, router: HostRouter, state: StateFile, lab_id: str,
        connect: ConnectHost | None = None,
    ) -> None:  # fmt: skip
        self.router = router
        self.state = state
        self.lab_id = lab_id
        self._connect = connect
        self._sizes: dict[str, HostSize] = {}
        #: Guests placed but not defined yet (domain → where, size, fault domain): counted in
        #: the loads, so guests placed at once (a scale set's) do not all pick the same host.
        self._pending: dict[str, _Pending] = {}
        self._placing = threading.Lock()
        state.section(_KEY, list[dict[str, object]], "the lab's hosts (libvirt URIs and limits)")

    def start(self) -> None:
        """Connect the router to the stored hosts (lazily: a host that is down now does not
        stop the lab; its VMs show it)."""
        for host in self.hosts():
            if not host.is_local:
                self._attach(host)

    def _attach(self, host: Host) -> None:
        if self._connect is None:
            raise InvalidInput("this lab cannot reach other hosts (no libvirt)", target="uri")
        driver, files = self._connect(host.name, host.uri, host.data_dir)
        self.router.add_host(host.name, driver, files)

    # -- the list -----------------------------------------------------------------------------
    def hosts(self) -> list[Host]:
        stored = [Host(**h) for h in self.state.read().get(_KEY, [])]
        if not any(h.is_local for h in stored):
            stored.insert(0, Host(LOCAL, "qemu:///system"))
        return stored

    def host(self, name: str) -> Host:
        for h in self.hosts():
            if same(h.name, name):
                return h
        known = ", ".join(h.name for h in self.hosts())
        raise NotFound(f"the lab has no host '{name}' (hosts: {known})", target=name)

    def _save(self, hosts: list[Host]) -> None:
        self.state.update(_KEY, [asdict(h) for h in hosts])

    def size(self, name: str, *, fresh: bool = False) -> HostSize | None:
        """The host's size (cached once read; None while it cannot be reached)."""
        if fresh or name not in self._sizes:
            try:
                self._sizes[name] = self.router.driver(name).size()
            except HypervisorUnavailable:
                return self._sizes.get(name) if not fresh else None
        return self._sizes[name]

    def loads(self, infos: list[DomainInfo] | None = None) -> list[HostLoad]:
        """Every host with its size and what its allocated VMs hold."""
        if infos is None:
            infos = self.router.list_domains(self.lab_id)
        loads = []
        # A deallocated guest holds nothing, so its reservation counts until it is allocated.
        allocated = {i.name for i in infos if not i.deallocated}
        for host in self.hosts():
            problem = self.router.problems.get(host.name, "")
            size = None if problem else self.size(host.name)
            mine = [i for i in infos if i.host == host.name and not i.deallocated]
            pending = [p for d, p in self._pending.items() if p.host == host.name
                       and d not in allocated]  # fmt: skip
            loads.append(HostLoad(
                host, size,
                used_vcpus=sum(i.model.vcpus for i in mine) + sum(p.vcpus for p in pending),
                used_memory_mib=sum(i.model.memory_mib for i in mine)
                + sum(p.memory_mib for p in pending),
                vms=sum(1 for i in infos if i.host == host.name) + len(pending),
                problem=problem or ("" if size else "no answer"),
            ))  # fmt: skip
        return loads

    def place(
        self, model: VmModel, *, what: str, avoid: str | None = None, domain: str | None = None,
        fault_domain: FaultDomain | None = None,
    ) -> str:  # fmt: skip
        """The host for a new guest of `model` (its `host` pin, else the most free; a scale
        set's instance in its fault domain). With `domain`, the guest counts as placed there
        until `settled(domain)`."""
        hosts = self.hosts()
        if len(hosts) == 1 and not hosts[0].drained and model.host in (None, LOCAL):
            return LOCAL  # one host, not drained: nothing to weigh (and no libvirt call)
        with self._placing:
            infos = self.router.list_domains(self.lab_id)
            loads = self.loads(infos)
            if model.host is not None or fault_domain is None:
                host = place(loads, model.vcpus, model.memory_mib, pin=model.host, avoid=avoid,
                             what=what)  # fmt: skip
            else:
                host = place_in_fault_domain(
                    loads, model.vcpus, model.memory_mib, fault_domain.index,
                    fault_domain.count, self._siblings(infos, fault_domain), what=what,
                )  # fmt: skip
            if domain is not None:
                self._pending[domain] = _Pending(host, model.vcpus, model.memory_mib,
                                                 fault_domain)  # fmt: skip
            return host

    def settled(self, domain: str) -> None:
        """The guest placed for `domain` is defined (or failed to be)."""
        self._pending.pop(domain, None)

    def _siblings(self, infos: list[DomainInfo], fd: FaultDomain) -> dict[str, int]:
        """Host → the fault domain the scale set's instances there are in."""
        siblings = {}
        for i in infos:
            ident = i.identity
            key = (ident.resource_group.lower(), (ident.scale_set or "").lower())
            if ident.scale_set is not None and key == fd.scale_set:
                siblings[i.host] = int(ident.instance_id or 0) % fd.count
        for p in self._pending.values():
            if p.fault_domain is not None and p.fault_domain.scale_set == fd.scale_set:
                siblings[p.host] = p.fault_domain.index
        return siblings

    # -- changes ------------------------------------------------------------------------------
    async def add(
        self, name: str, uri: str, *, max_vcpus: int | None = None,
        max_memory_mib: int | None = None, data_dir: str | None = None,
    ) -> tuple[Host, list[str]]:  # fmt: skip
        """Add a host after checking that it answers, has room and can run the lab's guests.
        Returns it and warnings for the user (an unauthenticated transport)."""
        check_host_name(name)
        check_uri(uri)
        for limit, field in ((max_vcpus, "maxVcpus"), (max_memory_mib, "maxMemoryMiB")):
            if limit is not None and limit < 1:
                raise InvalidInput(f"{field} must be at least 1, not {limit}", target=field)
        for h in self.hosts():
            if same(h.name, name):
                raise Conflict(f"the lab already has a host named '{h.name}' ({h.uri})",
                               target=name)  # fmt: skip
            if h.uri == uri:
                raise Conflict(f"host '{h.name}' already has the URI {uri}", target=uri)
        host = Host(name, uri, max_vcpus, max_memory_mib, data_dir or DEFAULT_HOST_DATA_DIR)
        if self._connect is None:
            raise InvalidInput("this lab cannot reach other hosts (no libvirt)", target="uri")
        driver, files = await asyncio.to_thread(self._connect, name, uri, host.data_dir)
        await asyncio.to_thread(self._check, host, driver, files)
        self.router.add_host(name, driver, files)
        self._save([*[h for h in self.hosts() if not h.is_local or h.drained], host])
        warnings = []
        if host.transport in INSECURE_TRANSPORTS:
            warnings.append(
                f"{uri} is qemu+tcp without authentication or encryption: anyone who can reach "
                "that port controls the host's libvirtd. Use it only for test hosts on this "
                "machine; use qemu+ssh:// (or qemu+tls://) for a real second machine."
            )
        return host, warnings

    def _check(self, host: Host, driver: HostDriver, files: HostFiles) -> None:
        where = f"host '{host.name}' ({host.uri})"
        self._sizes[host.name] = driver.size()  # raises HostUnreachable, naming the host
        caps = driver.connection().getCapabilities()
        if "<model>dac</model>" not in caps:
            raise InvalidInput(f"{where} has no DAC security driver: the lab runs its guests "
                               "with a static DAC seclabel", target="uri")  # fmt: skip
        files.names("")  # makes the data dir a pool: proves the lab can write files there
        theirs = {i.name for i in driver.list_domains(self.lab_id)}
        ours = {i.name: i.host for i in self.router.list_domains(self.lab_id)}
        both = sorted(theirs & set(ours))
        if both:
            raise Conflict(f"{where} has domains that host '{ours[both[0]]}' has too: "
                           f"{', '.join(both)}. Remove one copy (virsh -c URI undefine) "
                           "before adding the host.", target=host.name)  # fmt: skip

    def set_drained(self, name: str, drained: bool) -> Host:
        host = self.host(name)
        hosts = [Host(**{**asdict(h), "drained": drained}) if h.name == host.name else h
                 for h in self.hosts()]  # fmt: skip
        self._save(hosts)
        return self.host(name)

    def remove(self, name: str, vms_left: int) -> Host:
        """Forget a host. `vms_left`: the VMs still placed there (the caller deletes them first
        with --force); a host holding VMs is refused."""
        host = self.host(name)
        if host.is_local:
            raise InvalidInput("the local host cannot be removed (drain it instead)",
                               target=name)  # fmt: skip
        if vms_left:
            raise Conflict(f"host '{host.name}' holds {vms_left} VM(s); move or delete them, "
                           "or use `lab host rm --force` (which deletes them)",
                           target=name)  # fmt: skip
        self._save([h for h in self.hosts() if h.name != host.name])
        self.router.remove_host(host.name)
        self._sizes.pop(host.name, None)
        return host
