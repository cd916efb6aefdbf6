"""`ConsoleKeeper`: every running VM's broker is attached again after libvirtd went away."""

from __future__ import annotations

import asyncio
import logging
import shutil

import pytest

from lab.console.broker import Chunk, SessionMode
from lab.domain.errors import Conflict, HypervisorUnavailable, StateError
from lab.domain.power import PowerOperation, PowerState
from lab.hypervisor.base import PAUSED_ON_IO_ERROR, DomainState
from lab.hypervisor.fake import FakeHypervisor
from lab.services import console_keeper
from lab.services.lab import Lab
from tests.unit.fakelab import new_vm, run


def test_libvirtd_restart_reattaches_running_vms_only(
    lab: Lab, hv: FakeHypervisor, caplog: pytest.LogCaptureFixture
) -> None:
    async def scenario() -> None:
        vm1 = await lab.vms.create(new_vm("vm1"))
        await lab.vms.create(new_vm("vm2"), start=False)
        domain = vm1.identity.domain_name
        broker = lab.consoles.existing(domain)
        assert broker is not None and broker.attached
        viewer = broker.subscribe(SessionMode.VIEW, "v", replay=0)

        hv.libvirtd_down()
        await asyncio.sleep(0.01)  # the hang-up reaches the broker through the event loop
        assert not broker.attached
        with caplog.at_level(logging.WARNING):
            assert await lab.console_keeper.check_once() == []
            assert await lab.console_keeper.check_once() == []
        unreachable = [r for r in caplog.records if "unreachable" in r.getMessage()]
        assert len(unreachable) == 1  # said once, not every second

        hv.libvirtd_up()
        assert await lab.console_keeper.check_once() == [domain]
        assert broker.attached and lab.consoles.existing(domain) is broker
        assert await lab.console_keeper.check_once() == []  # nothing left to do
        # The viewer that stayed connected through the outage sees the guest again.
        start = broker.offset
        hv.guest_output(domain, b"after libvirtd\r\n")
        assert await asyncio.wait_for(viewer.next(), 5) == Chunk(start, b"after libvirtd\r\n")
        # Keys reach the guest through the new stream.
        broker.write_admin(b"x")
        assert hv.console_input(domain).endswith(b"x")

    run(lab, scenario)


def test_a_vm_in_a_power_operation_is_left_to_it(lab: Lab, hv: FakeHypervisor) -> None:
    async def scenario() -> None:
        view = await lab.vms.create(new_vm("vm1"))
        domain = view.identity.domain_name
        hv.libvirtd_down()
        hv.libvirtd_up()
        async with lab.vms._operation(view, PowerOperation.RESET):
            assert await lab.console_keeper.check_once() == []
            with pytest.raises(Conflict):
                await lab.vms.reset(view)
        assert await lab.console_keeper.check_once() == [domain]

    run(lab, scenario)


def test_keys_typed_before_the_keeper_comes_round_reattach_at_once(
    lab: Lab, hv: FakeHypervisor
) -> None:
    async def scenario() -> None:
        view = await lab.vms.create(new_vm("vm1"))
        domain = view.identity.domain_name
        broker = lab.consoles.existing(domain)
        assert broker is not None
        user = broker.subscribe(SessionMode.INTERACTIVE, "u", replay=0)
        hv.libvirtd_down()
        await asyncio.sleep(0.01)
        with pytest.raises(HypervisorUnavailable):
            broker.write(user, b"lost?")  # said, not swallowed: 503 to the typist
        hv.libvirtd_up()
        broker.write(user, b"typed")
        assert broker.attached and hv.console_input(domain).endswith(b"typed")
        await lab.vms.power_off(view, skip_shutdown=True)
        await asyncio.sleep(0.01)
        with pytest.raises(StateError):
            broker.write_admin(b"x")

    run(lab, scenario)


def test_a_vm_paused_on_a_full_disk_resumes_when_there_is_space(
    lab: Lab, hv: FakeHypervisor, monkeypatch: pytest.MonkeyPatch
) -> None:
    free = {"bytes": 0}

    def usage(_path: object) -> shutil._ntuple_diskusage:
        return shutil._ntuple_diskusage(1 << 30, (1 << 30) - free["bytes"], free["bytes"])

    monkeypatch.setattr(console_keeper.shutil, "disk_usage", usage)

    async def scenario() -> None:
        view = await lab.vms.create(new_vm("vm1"))
        domain = view.identity.domain_name
        hv.pause_on_io_error(domain)
        paused = lab.lookup.vm("vm1")
        assert paused.power_state is PowerState.RUNNING
        assert paused.stop_reason == PAUSED_ON_IO_ERROR
        await lab.console_keeper.check_once()
        assert lab.lookup.vm("vm1").stop_reason == PAUSED_ON_IO_ERROR  # still no room
        free["bytes"] = console_keeper.RESUME_FREE_BYTES
        await lab.console_keeper.check_once()
        resumed = lab.lookup.vm("vm1")
        assert hv.domain(domain).state is DomainState.RUNNING
        assert (resumed.power_state, resumed.stop_reason) == (PowerState.RUNNING, None)

    run(lab, scenario)
