"""Hosts as data, and where a VM goes: pure placement over the hosts' limits and loads.

A host is a libvirt URI the lab runs guests on. The local one (the daemon's own libvirtd) is
always there and is named `local`; others are added by the user (`lab host add`, or the lab
file's `hosts:`). Each host has limits: vCPUs and memory the lab may give its guests. A limit
not given is the host's own size, with vCPUs overcommitted as OpenStack does by default
(`VCPU_OVERCOMMIT` per core): under TCG a tiny guest idles at a few percent of a core once
booted, and boots are bounded separately (`BootSlots`), so cores are not what runs out.

Placement (`place`) picks the reachable, undrained host with the most free capacity that fits
the VM; a pin names the host. A scale set spreads its instances over fault domains
(`fault_domain_hosts`): one host per fault domain when there are enough hosts.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace

from lab.domain.errors import AllocationFailed, InvalidInput
from lab.domain.resource_ids import same

#: The daemon's own libvirtd: always a host, never removed.
LOCAL = "local"
#: vCPUs the lab may give guests per host core when the host's limit is not set.
VCPU_OVERCOMMIT = 16
#: Memory kept for the host itself when its limit is not set (MiB).
HOST_MEMORY_RESERVE_MIB = 1024
#: Transports whose URI the lab accepts, and whether each authenticates and encrypts.
SECURE_TRANSPORTS = ("ssh", "tls", "libssh", "libssh2")
INSECURE_TRANSPORTS = ("tcp",)
MAX_FAULT_DOMAINS = 5


@dataclass(frozen=True)
class Host:
    name: str
    uri: str
    #: Limits the user set (None: the host's own size, see `limits`).
    max_vcpus: int | None = None
    max_memory_mib: int | None = None
    #: Where the host keeps the lab's files (images, disks, serial logs); on the host.
    data_dir: str = ""
    drained: bool = False

    @property
    def is_local(self) -> bool:
        return self.name == LOCAL

    @property
    def transport(self) -> str:
        """The URI's transport (`qemu+ssh://` → "ssh"); "" for a local URI."""
        scheme = self.uri.split(":", 1)[0]
        return scheme.split("+", 1)[1] if "+" in scheme else ""


@dataclass(frozen=True)
class HostSize:
    """What a host has, as its libvirt says (`virNodeGetInfo`)."""

    cores: int
    memory_mib: int


@dataclass(frozen=True)
class HostLoad:
    """A host with its size and what its guests hold (allocated VMs: running or stopped; a
    deallocated VM holds nothing, as in Azure)."""

    host: Host
    size: HostSize | None  # None: unreachable now
    used_vcpus: int = 0
    used_memory_mib: int = 0
    vms: int = 0
    #: Why the host cannot take guests now ("" when it can).
    problem: str = ""

    @property
    def reachable(self) -> bool:
        return self.size is not None

    @property
    def max_vcpus(self) -> int:
        if self.host.max_vcpus is not None:
            return self.host.max_vcpus
        return self.size.cores * VCPU_OVERCOMMIT if self.size else 0

    @property
    def max_memory_mib(self) -> int:
        if self.host.max_memory_mib is not None:
            return self.host.max_memory_mib
        return max(0, self.size.memory_mib - HOST_MEMORY_RESERVE_MIB) if self.size else 0

    @property
    def free_vcpus(self) -> int:
        return self.max_vcpus - self.used_vcpus

    @property
    def free_memory_mib(self) -> int:
        return self.max_memory_mib - self.used_memory_mib

    def fits(self, vcpus: int, memory_mib: int) -> bool:
        return self.free_vcpus >= vcpus and self.free_memory_mib >= memory_mib

    def with_guest(self, vcpus: int, memory_mib: int) -> HostLoad:
        return replace(
            self,
            used_vcpus=self.used_vcpus + vcpus,
            used_memory_mib=self.used_memory_mib + memory_mib,
            vms=self.vms + 1,
        )

    def why_not(self, vcpus: int, memory_mib: int) -> str | None:
        """Why a guest of this size cannot go here, or None if it can."""
        if not self.reachable:
            return f"unreachable ({self.problem or 'no connection'})"
        if self.host.drained:
            return "drained"
        if self.free_vcpus < vcpus:
            return f"{self.free_vcpus} of {self.max_vcpus} vCPUs free"
        if self.free_memory_mib < memory_mib:
            return f"{self.free_memory_mib} of {self.max_memory_mib} MiB free"
        return None


def check_host_name(name: str) -> str:
    if not name or len(name) > 40 or not all(c.isalnum() or c in "-_" for c in name):
        raise InvalidInput(
            f"invalid host name {name!r}: use 1 to 40 letters, digits, '-' and '_'", target="name"
        )
    return name


def check_uri(uri: str) -> str:
    """A libvirt URI of a QEMU system daemon (`qemu+ssh://user@host/system`)."""
    scheme, sep, rest = uri.partition("://")
    driver, _, transport = scheme.partition("+")
    # The path, without libvirt's parameters (`?keyfile=...&no_verify=1`).
    path = rest.partition("?")[0]
    if not sep or driver != "qemu" or not path.rstrip("/").endswith("/system"):
        raise InvalidInput(
            f"invalid host URI {uri!r}: give a libvirt URI of a QEMU system daemon, such as "
            "qemu+ssh://user@host/system or qemu+tls://host/system",
            target="uri",
        )
    if transport and transport not in SECURE_TRANSPORTS + INSECURE_TRANSPORTS + ("unix",):
        raise InvalidInput(f"invalid host URI {uri!r}: unknown transport {transport!r}",
                           target="uri")  # fmt: skip
    return uri


def find(loads: Iterable[HostLoad], name: str) -> HostLoad | None:
    return next((load for load in loads if same(load.host.name, name)), None)


def place(
    loads: Sequence[HostLoad], vcpus: int, memory_mib: int, *, pin: str | None = None,
    avoid: str | None = None, what: str = "the VM",
) -> str:  # fmt: skip
    """The host for a guest of this size: `pin` if given (and it fits), else the one with the
    most free capacity (vCPUs, then memory), preferring any host but `avoid` (a redeploy's
    current host). Raises `AllocationFailed`, saying why each host could not take it."""
    if pin is not None:
        load = find(loads, pin)
        if load is None:
            known = ", ".join(x.host.name for x in loads)
            raise InvalidInput(f"{what} is pinned to host {pin!r}, which the lab does not "
                               f"know (hosts: {known})", target="host")  # fmt: skip
        why = load.why_not(vcpus, memory_mib)
        if why is not None:
            raise AllocationFailed(_refusal(what, vcpus, memory_mib, [f"{load.host.name}: {why}"]))
        return load.host.name
    fitting = [x for x in loads if x.why_not(vcpus, memory_mib) is None]
    preferred = [x for x in fitting if avoid is None or not same(x.host.name, avoid)]
    pool = preferred or fitting
    if not pool:
        reasons = [f"{x.host.name}: {x.why_not(vcpus, memory_mib)}" for x in loads]
        raise AllocationFailed(_refusal(what, vcpus, memory_mib, reasons))
    best = max(pool, key=lambda x: (x.free_vcpus / max(1, x.max_vcpus),
                                    x.free_memory_mib / max(1, x.max_memory_mib),
                                    x.host.is_local))  # fmt: skip
    return best.host.name


def place_many(
    loads: Sequence[HostLoad], sizes: Sequence[tuple[int, int]], *, pin: str | None = None,
    what: str = "the scale set",
) -> list[str]:  # fmt: skip
    """Hosts for several guests at once (all or none: `AllocationFailed` if any does not fit)."""
    current = list(loads)
    chosen: list[str] = []
    for i, (vcpus, memory_mib) in enumerate(sizes):
        name = place(current, vcpus, memory_mib, pin=pin, what=f"{what} (guest {i + 1})")
        chosen.append(name)
        current = [x.with_guest(vcpus, memory_mib) if x.host.name == name else x
                   for x in current]  # fmt: skip
    return chosen


def fault_domain_count(requested: int | None, loads: Sequence[HostLoad]) -> int:
    """Azure's `platformFaultDomainCount`: as asked (1..5), or by default one per usable host
    (at most 5)."""
    if requested is not None:
        if not 1 <= requested <= MAX_FAULT_DOMAINS:
            raise InvalidInput(f"platformFaultDomainCount must be 1 to {MAX_FAULT_DOMAINS}, "
                               f"not {requested}", target="platformFaultDomainCount")  # fmt: skip
        return requested
    usable = sum(1 for x in loads if x.reachable and not x.host.drained)
    return max(1, min(MAX_FAULT_DOMAINS, usable))


def place_in_fault_domain(
    loads: Sequence[HostLoad], vcpus: int, memory_mib: int, fault_domain: int,
    fault_domains: int, siblings: dict[str, int], *, what: str,
) -> str:  # fmt: skip
    """The host for a scale-set instance in `fault_domain` (0-based): a host no other fault
    domain of the set uses if there is one (`siblings`: host name → its fault domain), else the
    one the same fault domain uses, else the most free one."""
    used_by_others = {h for h, fd in siblings.items() if fd != fault_domain}
    mine = {h for h, fd in siblings.items() if fd == fault_domain}
    fitting = [x for x in loads if x.why_not(vcpus, memory_mib) is None]
    for group in ([x for x in fitting if x.host.name in mine],
                  [x for x in fitting if x.host.name not in used_by_others]):  # fmt: skip
        if group:
            return place(group, vcpus, memory_mib, what=what)
    return place(loads, vcpus, memory_mib, what=what)


def _refusal(what: str, vcpus: int, memory_mib: int, reasons: list[str]) -> str:
    return (f"Allocation failed: no host can take {what} ({vcpus} vCPUs, {memory_mib} MiB): "
            + "; ".join(reasons) + ". Free capacity (stop/deallocate or delete VMs), undrain "
            "or add a host (`lab host add`), or choose a smaller size.")  # fmt: skip
