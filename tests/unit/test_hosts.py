"""Hosts (issue 18): placement (pure), the router over several hypervisors, the host service."""

from __future__ import annotations

import pytest

from lab.domain.errors import AllocationFailed, Conflict, InvalidInput, NotFound
from lab.domain.hosts import (
    LOCAL,
    Host,
    HostLoad,
    HostSize,
    check_uri,
    fault_domain_count,
    place,
    place_in_fault_domain,
    place_many,
)
from lab.domain.vm import VmIdentity, VmModel
from lab.hypervisor.base import DomainState
from lab.hypervisor.domain_xml import DomainSpec, build_domain_xml
from lab.hypervisor.fake import FakeHypervisor
from lab.hypervisor.hosts import HostRouter
from lab.services.hosts import FaultDomain, HostService
from lab.storage.state import StateFile

SIZE = HostSize(cores=2, memory_mib=9216)


def load(name: str, vcpus: int = 0, memory: int = 0, *, size: HostSize | None = SIZE,
         drained: bool = False, **limits: int) -> HostLoad:  # fmt: skip
    host = Host(name, f"qemu+tcp://{name}/system", drained=drained, **limits)  # type: ignore[arg-type]
    return HostLoad(host, size, used_vcpus=vcpus, used_memory_mib=memory)


# -- placement (pure) ---------------------------------------------------------------------------
def test_the_most_free_host_is_chosen_by_vcpus_then_memory() -> None:
    loads = [load(LOCAL, 4, 1024), load("h1", 1, 256), load("h2", 1, 4096)]
    assert place(loads, 1, 256) == "h1"


def test_limits_default_to_the_hosts_size_with_vcpus_overcommitted() -> None:
    x = load("h1")
    assert (x.max_vcpus, x.max_memory_mib) == (32, 8192)
    assert load("h1", max_vcpus=3, max_memory_mib=512).max_memory_mib == 512


def test_a_pin_wins_and_is_refused_when_it_does_not_fit() -> None:
    loads = [load(LOCAL), load("h1", max_memory_mib=512)]
    assert place(loads, 1, 256, pin="h1") == "h1"
    with pytest.raises(AllocationFailed, match=r"h1: 0 of 512 MiB free"):
        place([load(LOCAL), load("h1", 0, 512, max_memory_mib=512)], 1, 256, pin="h1")
    with pytest.raises(InvalidInput, match=r"pinned to host 'h9'.*hosts: local, h1"):
        place(loads, 1, 256, pin="h9")


def test_nothing_fits_names_every_host_and_why() -> None:
    loads = [load(LOCAL, drained=True), load("h1", size=None), load("h2", 32, 0)]
    with pytest.raises(AllocationFailed) as err:
        place(loads, 1, 256, what="VM 'web'")
    message = err.value.message
    assert "VM 'web' (1 vCPUs, 256 MiB)" in message
    assert "local: drained" in message and "h1: unreachable" in message
    assert "h2: 0 of 32 vCPUs free" in message
    assert err.value.code == "AllocationFailed" and err.value.status == 409


def test_a_redeploy_avoids_its_host_when_another_fits() -> None:
    loads = [load(LOCAL), load("h1", 8, 0)]
    assert place(loads, 1, 256, avoid=LOCAL) == "h1"
    assert place([load(LOCAL)], 1, 256, avoid=LOCAL) == LOCAL  # the only one


def test_place_many_is_all_or_nothing_and_spreads() -> None:
    loads = [load(LOCAL, max_vcpus=2), load("h1", max_vcpus=2)]
    assert sorted(place_many(loads, [(1, 256)] * 4)) == ["h1", "h1", LOCAL, LOCAL]
    with pytest.raises(AllocationFailed, match=r"guest 5"):
        place_many(loads, [(1, 256)] * 5)


def test_fault_domains_take_a_host_each_while_there_are_hosts() -> None:
    loads = [load(LOCAL), load("h1"), load("h2")]
    assert fault_domain_count(None, loads) == 3
    assert fault_domain_count(None, [*loads, load("h3", drained=True)]) == 3
    with pytest.raises(InvalidInput, match="platformFaultDomainCount must be 1 to 5"):
        fault_domain_count(6, loads)
    siblings = {LOCAL: 0, "h1": 1}
    # Fault domain 2 takes the host no other fault domain uses, though it is not the most free.
    crowded = [load(LOCAL), load("h1"), load("h2", 16, 4096)]
    assert place_in_fault_domain(crowded, 1, 256, 2, 3, siblings, what="x") == "h2"
    # Fault domain 0 again: back to its host.
    assert place_in_fault_domain(crowded, 1, 256, 0, 3, siblings, what="x") == LOCAL


def test_uris_must_name_a_qemu_system_daemon() -> None:
    assert check_uri("qemu+ssh://lab@box/system")
    # libvirt's parameters, as the README shows them for a key of the user's choosing
    assert check_uri("qemu+ssh://lab@box/system?keyfile=/root/.ssh/lab&no_verify=1")
    for bad in ("qemu+ssh://box/session", "xen://box/system", "box", "qemu+ftp://b/system",
                "qemu+ssh://box/session?x=/system"):
        with pytest.raises(InvalidInput, match="invalid host URI"):
            check_uri(bad)


# -- the router -----------------------------------------------------------------------------------
def _xml(name: str, lab_id: str = "abcd1234") -> str:
    identity = VmIdentity(lab_id, "sub", "rg", name, f"{name}-0000-0000")
    model = VmModel(image="tiny", vcpus=1, memory_mib=256, admin_username="u")
    spec = DomainSpec(identity, model, identity.vm_id, "qemu", "/k", "/i", "", None, "/log",
                      (0, 0))  # fmt: skip
    return build_domain_xml(spec)


def test_the_router_sends_each_call_to_the_host_of_the_domain() -> None:
    local, h1 = FakeHypervisor(), FakeHypervisor()
    router = HostRouter(local)
    router.add_host("h1", h1)
    router.define(_xml("a"), host="h1")
    router.define(_xml("b"))
    names = {i.name.split("+")[-1]: i.host for i in router.list_domains("abcd1234")}
    assert names == {"a": "h1", "b": LOCAL}
    a = next(i.name for i in router.list_domains("abcd1234") if i.name.endswith("+a"))
    router.start(a, paused=False)
    assert h1.domain(a).state is DomainState.RUNNING
    with pytest.raises(NotFound):
        local.domain(a)
    with pytest.raises(Exception, match="is on host 'h1'"):
        router.define(_xml("a"), host=LOCAL)


def test_an_unreachable_host_keeps_its_domains_listed_with_why() -> None:
    local, h1 = FakeHypervisor(), FakeHypervisor()
    router = HostRouter(local)
    router.add_host("h1", h1)
    router.define(_xml("a"), host="h1")
    router.list_domains("abcd1234")
    h1.libvirtd_down()
    [info] = router.list_domains("abcd1234")
    assert info.host == "h1" and "Connection refused" in info.unreachable
    assert router.problems["h1"]
    h1.libvirtd_up()
    [info] = router.list_domains("abcd1234")
    assert info.unreachable == "" and router.problems["h1"] == ""


def test_the_same_domain_on_two_hosts_is_reported_and_one_is_used() -> None:
    local, h1 = FakeHypervisor(), FakeHypervisor()
    router = HostRouter(local)
    router.add_host("h1", h1)
    local.define(_xml("a"))
    h1.define(_xml("a"))
    [info] = router.list_domains("abcd1234")
    assert info.host == LOCAL
    assert list(router.duplicates.values()) == [[LOCAL, "h1"]]


# -- the host service ---------------------------------------------------------------------------
class SizedFake(FakeHypervisor):
    host = "h1"
    uri = "qemu+tcp://h1/system"

    def size(self) -> HostSize:
        return SIZE


def _service(
    tmp_path: object, *hosts: str, max_vcpus: int | None = None
) -> tuple[HostService, HostRouter]:
    from pathlib import Path

    local = SizedFake()
    router = HostRouter(local)
    state = StateFile(Path(str(tmp_path)) / "state.json")
    service = HostService(router, state, "abcd1234")
    stored = [
        {"name": h, "uri": f"qemu+tcp://{h}/system", "max_vcpus": max_vcpus,
         "max_memory_mib": None, "data_dir": "/d", "drained": False}
        for h in hosts
    ]  # fmt: skip
    state.update("hosts", stored)
    for h in hosts:
        router.add_host(h, SizedFake())
    return service, router


def test_guests_placed_at_once_spread_by_their_reservations(tmp_path: object) -> None:
    service, _ = _service(tmp_path, "h1", "h2")
    model = VmModel(image="tiny", vcpus=1, memory_mib=256, admin_username="u")
    chosen = [service.place(model, what=f"vm{i}", domain=f"d{i}") for i in range(3)]
    assert sorted(chosen) == ["h1", "h2", LOCAL]
    for i in range(3):
        service.settled(f"d{i}")
    assert {x.host.name: x.vms for x in service.loads()} == {LOCAL: 0, "h1": 0, "h2": 0}


def test_a_scale_sets_fault_domains_each_get_a_host(tmp_path: object) -> None:
    # h1 and h2 are small (2 vCPUs), h2 half full: by free capacity alone, the third instance
    # would go back to the local host; its fault domain sends it to h2.
    service, router = _service(tmp_path, "h1", "h2", max_vcpus=2)
    router.define(_xml("other"), host="h2")
    model = VmModel(image="tiny", vcpus=1, memory_mib=256, admin_username="u")
    chosen = [service.place(model, what=f"i{i}", domain=f"i{i}",
                            fault_domain=FaultDomain(i % 3, 3, ("rg", "web")))
              for i in range(4)]  # fmt: skip
    assert chosen == [LOCAL, "h1", "h2", LOCAL]  # the fourth: fault domain 0 again


def test_drain_and_remove(tmp_path: object) -> None:
    service, router = _service(tmp_path, "h1")
    service.set_drained(LOCAL, True)
    model = VmModel(image="tiny", vcpus=1, memory_mib=256, admin_username="u")
    assert service.place(model, what="vm") == "h1"
    with pytest.raises(Conflict, match="holds 2 VM"):
        service.remove("h1", vms_left=2)
    with pytest.raises(InvalidInput, match="local host cannot be removed"):
        service.remove(LOCAL, vms_left=0)
    service.remove("h1", vms_left=0)
    assert [h.name for h in service.hosts()] == [LOCAL] and router.host_names() == [LOCAL]
    with pytest.raises(AllocationFailed, match="local: drained"):
        service.place(model, what="vm")
