"""`VmService` and `Reconciler` over `FakeHypervisor`, with a real `LabContext` on a temp data dir.

The image cache holds a hand-made image (a manifest, dummy kernel and initrd, a real qcow2
disk), so VM creation really writes the per-VM initrd and a qcow2 overlay; only libvirt is fake.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import time
from dataclasses import replace
from pathlib import Path

import pytest

from lab.console.broker import Chunk, SessionMode
from lab.domain.boot_diagnostics import MANAGED_ACCOUNT, blobs_for
from lab.domain.errors import Conflict, HypervisorError, InvalidInput, NotFound, StateError
from lab.domain.labfile import parse_lab_definition
from lab.domain.power import PowerState
from lab.hypervisor.base import DomainState
from lab.hypervisor.domain_xml import build_domain_xml, metadata_element
from lab.hypervisor.fake import POWER_DOWN, SCREENSHOT_PPM, FakeHypervisor
from lab.services.lab import Lab
from lab.settings import Settings
from tests.unit.fakelab import (
    BASE_INITRD,
    PASSWORD,
    PASSWORD_HASH,
    SHUTDOWN_TIMEOUT,
    SUBSCRIPTION,
    banner,
    new_vm,
    ops,
    run,
    serial_log,
)

DEMO_LAB = f"""\
subscriptionId: {SUBSCRIPTION}
location: westeurope
resourceGroups:
  - name: demo-rg
    tags: {{env: demo}}
    storageAccounts:
      - name: demodiag
    virtualMachines:
      - name: vm1
        image: tiny
        size: {{vcpus: 1, memoryMiB: 256}}
        adminUsername: azureuser
        adminPassword: "{PASSWORD}"
        bootDiagnostics:
          enabled: true
          storageUri: "https://demodiag.blob.core.windows.net/"
        tags: {{role: web}}
      - name: vm2
        image: tiny
        size: Standard_B1s
        adminUsername: azureuser
        adminPassword: "{PASSWORD}"
        bootDiagnostics: {{enabled: true}}
        kernelArgs: "lab.seq=3"
"""


# -- create -------------------------------------------------------------------------------------


def test_create_defines_starts_and_boots_with_the_console_attached(
    lab: Lab, hv: FakeHypervisor
) -> None:
    async def scenario() -> None:
        view = await lab.vms.create(new_vm())
        domain = view.identity.domain_name
        assert view.power_state is PowerState.RUNNING
        assert view.identity.domain_name == f"scl-{lab.ctx.lab_id}+rg1+vm1"
        assert hv.domain(domain).state is DomainState.RUNNING
        # Started paused, console opened, then the CPUs ran: the broker misses no byte.
        assert ops(hv, domain) == ["define", "define", "start", "open_console", "resume"]
        broker = lab.consoles.existing(domain)
        assert broker is not None and broker.attached
        sub = broker.subscribe(SessionMode.VIEW, "t", replay=4096)
        assert await asyncio.wait_for(sub.next(), 5) == Chunk(0, banner())
        # The serial log of the domain XML is the boot-diagnostics blob.
        assert serial_log(lab, view) == banner()
        blobs = blobs_for(MANAGED_ACCOUNT, "vm1", view.identity.vm_id)
        log_path = lab.ctx.settings.blob_dir / MANAGED_ACCOUNT / blobs.container / blobs.serial_log
        assert log_path.read_bytes() == banner()

    run(lab, scenario)


def test_create_writes_the_vm_initrd_and_a_disk_overlay(lab: Lab, image_cache: Path) -> None:
    async def scenario() -> None:
        view = await lab.vms.create(new_vm(), start=False)
        assert view.power_state is PowerState.STOPPED
        vm_dir = lab.ctx.vm_dir(view.identity)
        initrd = (vm_dir / "initrd.img").read_bytes()
        assert initrd.startswith(BASE_INITRD)
        assert b"etc/lab/admin" in initrd and PASSWORD_HASH.encode() in initrd
        assert PASSWORD.encode() not in initrd, "only the hash goes to the guest"
        assert (vm_dir / "initrd.img").stat().st_mode & 0o777 == 0o600
        info = json.loads(
            subprocess.run(
                ["qemu-img", "info", "--output=json", str(vm_dir / "disk.qcow2")],
                check=True, capture_output=True, text=True,
            ).stdout
        )  # fmt: skip
        image = lab.images.get("tiny")
        assert info["format"] == "qcow2"
        assert info["backing-filename"] == str(lab.images.path(image) / "disk.qcow2")
        xml = lab.ctx.hypervisor.driver("local").xml(  # type: ignore[attr-defined]
            view.identity.domain_name
        )
        assert f"<initrd>{vm_dir / 'initrd.img'}</initrd>" in xml
        # The default boot messages: the whole boot, SeaBIOS's lines included.
        assert "console=ttyS0,115200n8 panic=-1 earlyprintk=ttyS0,115200</cmdline>" in xml
        assert "<bios useserial='yes'/>" in xml

    run(lab, scenario)


def test_a_quiet_boot_is_the_kernels_quiet_and_no_firmware_lines(
    lab: Lab, hv: FakeHypervisor
) -> None:
    async def scenario() -> None:
        view = await lab.vms.create(new_vm(boot_messages="quiet"))
        xml = hv.xml(view.identity.domain_name)
        assert "panic=-1 quiet</cmdline>" in xml and "earlyprintk" not in xml
        assert "useserial" not in xml

    run(lab, scenario)


def test_create_from_an_image_without_a_disk(lab: Lab, hv: FakeHypervisor) -> None:
    async def scenario() -> None:
        view = await lab.vms.create(new_vm(image="nodisk", kernel_args="lab.x=1"))
        assert view.power_state is PowerState.RUNNING
        assert not (lab.ctx.vm_dir(view.identity) / "disk.qcow2").exists()
        xml = hv.xml(view.identity.domain_name)
        assert "<disk" not in xml
        assert "panic=-1 earlyprintk=ttyS0,115200 lab.x=1</cmdline>" in xml

    run(lab, scenario)


def test_create_with_an_unknown_image_is_not_found(lab: Lab, hv: FakeHypervisor) -> None:
    async def scenario() -> None:
        with pytest.raises(NotFound, match="image 'nope' is not built"):
            await lab.vms.create(new_vm(image="nope"))
        assert hv.calls == []

    run(lab, scenario)


# -- power --------------------------------------------------------------------------------------


def test_graceful_power_off_reaches_stopped(lab: Lab, hv: FakeHypervisor) -> None:
    async def scenario() -> None:
        view = await lab.vms.create(new_vm())
        domain = view.identity.domain_name
        stopped = await lab.vms.power_off(view)
        assert stopped.power_state is PowerState.STOPPED
        assert stopped.stop_reason == "shut down by the guest"
        assert "shutdown" in ops(hv, domain) and "destroy" not in ops(hv, domain)
        assert serial_log(lab, view).endswith(POWER_DOWN)
        # powerOff on a stopped VM is allowed and does nothing.
        again = await lab.vms.power_off(stopped)
        assert again.power_state is PowerState.STOPPED
        assert ops(hv, domain).count("shutdown") == 1

    run(lab, scenario)


def test_power_off_falls_back_to_destroy_when_the_guest_ignores_acpi(
    lab: Lab, hv: FakeHypervisor
) -> None:
    async def scenario() -> None:
        view = await lab.vms.create(new_vm())
        domain = view.identity.domain_name
        hv.set_ignore_acpi(domain)
        started = time.monotonic()
        stopped = await lab.vms.power_off(view)
        elapsed = time.monotonic() - started
        assert SHUTDOWN_TIMEOUT <= elapsed < SHUTDOWN_TIMEOUT + 2
        assert stopped.power_state is PowerState.STOPPED
        assert stopped.stop_reason == "powered off"
        assert ops(hv, domain)[-2:] == ["shutdown", "destroy"]

    run(lab, scenario)


def test_power_off_skip_shutdown_pulls_the_plug_at_once(lab: Lab, hv: FakeHypervisor) -> None:
    async def scenario() -> None:
        view = await lab.vms.create(new_vm())
        domain = view.identity.domain_name
        stopped = await lab.vms.power_off(view, skip_shutdown=True)
        assert stopped.power_state is PowerState.STOPPED
        assert stopped.stop_reason == "powered off"
        assert "shutdown" not in ops(hv, domain) and ops(hv, domain)[-1] == "destroy"

    run(lab, scenario)


def test_restart_of_a_stopped_vm_is_a_state_error(lab: Lab, hv: FakeHypervisor) -> None:
    async def scenario() -> None:
        view = await lab.vms.create(new_vm(), start=False)
        for operation in (lab.vms.restart, lab.vms.reset, lab.vms.power_cycle):
            with pytest.raises(StateError) as exc:
                await operation(view)
            assert exc.value.actual == "stopped"
            assert exc.value.allowed == ("running",)
            assert "'vm1'" in exc.value.message
        assert ops(hv, view.identity.domain_name) == ["define"]
        assert lab.lookup.vm("vm1").power_state is PowerState.STOPPED  # nothing left in flight

    run(lab, scenario)


def test_restart_and_reset_keep_running_on_the_same_console(lab: Lab, hv: FakeHypervisor) -> None:
    async def scenario() -> None:
        view = await lab.vms.create(new_vm())
        domain = view.identity.domain_name
        stream = hv.console(domain)
        restarted = await lab.vms.restart(view)
        reset = await lab.vms.reset(restarted)
        assert reset.power_state is PowerState.RUNNING
        assert hv.console(domain) is stream and stream is not None and not stream.closed
        assert serial_log(lab, view).count(banner()) == 3
        assert ops(hv, domain)[-2:] == ["reboot", "reset"]

    run(lab, scenario)


def test_power_cycle_is_a_new_qemu_process(lab: Lab, hv: FakeHypervisor) -> None:
    async def scenario() -> None:
        view = await lab.vms.create(new_vm())
        domain = view.identity.domain_name
        old = hv.console(domain)
        cycled = await lab.vms.power_cycle(view)
        assert cycled.power_state is PowerState.RUNNING
        assert old is not None and old.closed
        new = hv.console(domain)
        assert new is not None and not new.closed and new is not old
        assert ops(hv, domain)[-5:] == ["destroy", "define", "start", "open_console", "resume"]
        broker = lab.consoles.existing(domain)
        assert broker is not None and broker.attached
        assert serial_log(lab, view) == banner() * 2

    run(lab, scenario)


def test_deallocate_then_start(lab: Lab, hv: FakeHypervisor) -> None:
    async def scenario() -> None:
        view = await lab.vms.create(new_vm())
        domain = view.identity.domain_name
        deallocated = await lab.vms.deallocate(view)
        assert deallocated.power_state is PowerState.DEALLOCATED
        assert deallocated.deallocated
        assert hv.domain(domain).deallocated
        assert "<allocation>deallocated</allocation>" in (hv.metadata(domain) or "")
        assert "shutdown" in ops(hv, domain)  # a graceful stop first
        assert lab.consoles.existing(domain) is None
        assert lab.lookup.vm("vm1").power_state is PowerState.DEALLOCATED
        started = await lab.vms.start(deallocated)
        assert started.power_state is PowerState.RUNNING
        assert not started.deallocated and not hv.domain(domain).deallocated
        assert serial_log(lab, view).count(banner()) == 2

    run(lab, scenario)


def test_deallocate_a_stopped_vm_keeps_its_reason_and_identity(lab: Lab) -> None:
    async def scenario() -> None:
        view = await lab.vms.create(new_vm(), start=False)
        result = await lab.vms.deallocate(view)
        assert result.power_state is PowerState.DEALLOCATED
        assert result.identity == view.identity and result.model == view.model

    run(lab, scenario)


def test_start_of_a_running_vm_does_nothing(lab: Lab, hv: FakeHypervisor) -> None:
    async def scenario() -> None:
        view = await lab.vms.create(new_vm())
        before = list(hv.calls)
        again = await lab.vms.start(view)
        assert again.power_state is PowerState.RUNNING
        assert hv.calls == before

    run(lab, scenario)


def test_a_second_operation_while_one_runs_is_a_conflict(lab: Lab, hv: FakeHypervisor) -> None:
    async def scenario() -> None:
        view = await lab.vms.create(new_vm())
        domain = view.identity.domain_name
        hv.set_ignore_acpi(domain)  # the power-off will wait for the timeout
        power_off = asyncio.create_task(lab.vms.power_off(view))
        await asyncio.sleep(0.05)
        current = lab.lookup.vm("vm1")
        assert current.power_state is PowerState.STOPPING
        for stale_or_fresh in (current, view):  # `view` still says running
            for operation in (lab.vms.reset, lab.vms.start, lab.vms.delete):
                with pytest.raises(Conflict) as exc:
                    await operation(stale_or_fresh)
                assert type(exc.value) is Conflict
                assert exc.value.status == 409
        stopped = await power_off
        assert stopped.power_state is PowerState.STOPPED
        assert "reset" not in ops(hv, domain) and "undefine" not in ops(hv, domain)
        assert lab.lookup.vm("vm1").power_state is PowerState.STOPPED

    run(lab, scenario)


def test_a_failed_operation_leaves_nothing_in_flight(lab: Lab, hv: FakeHypervisor) -> None:
    async def scenario() -> None:
        view = await lab.vms.create(new_vm(), start=False)
        hv.failures["start"] = HypervisorError("starting failed: no memory")
        with pytest.raises(HypervisorError, match="no memory"):
            await lab.vms.start(view)
        assert lab.lookup.vm("vm1").power_state is PowerState.STOPPED
        del hv.failures["start"]
        assert (await lab.vms.start(view)).power_state is PowerState.RUNNING

    run(lab, scenario)


def test_a_crashed_vm_shows_stopped_with_the_reason(lab: Lab, hv: FakeHypervisor) -> None:
    async def scenario() -> None:
        view = await lab.vms.create(new_vm())
        hv.crash(view.identity.domain_name)
        crashed = lab.lookup.vm("vm1")
        assert crashed.power_state is PowerState.STOPPED
        assert crashed.stop_reason == "crashed"
        await asyncio.sleep(0.01)  # the hang-up reaches the broker on the loop
        broker = lab.consoles.existing(view.identity.domain_name)
        assert broker is not None and not broker.attached
        assert (await lab.vms.start(crashed)).power_state is PowerState.RUNNING

    run(lab, scenario)


def test_reimage_gives_a_fresh_overlay_and_restarts(lab: Lab, hv: FakeHypervisor) -> None:
    async def scenario() -> None:
        view = await lab.vms.create(new_vm())
        disk = lab.ctx.vm_dir(view.identity) / "disk.qcow2"
        inode = disk.stat().st_ino
        result = await lab.vms.reimage(view)
        assert result.power_state is PowerState.RUNNING
        assert disk.stat().st_ino != inode
        assert ops(hv, view.identity.domain_name)[-4:] == [
            "define", "start", "open_console", "resume"
        ]  # fmt: skip

    run(lab, scenario)


def test_delete_removes_the_vm_but_keeps_the_serial_log(lab: Lab, hv: FakeHypervisor) -> None:
    async def scenario() -> None:
        view = await lab.vms.create(new_vm())
        domain = view.identity.domain_name
        vm_dir = lab.ctx.vm_dir(view.identity)
        log_path = lab.ctx.serial_log_path(view.identity, view.model)
        assert vm_dir.is_dir()
        await lab.vms.delete(view)
        assert not vm_dir.exists()
        with pytest.raises(NotFound):
            hv.domain(domain)
        with pytest.raises(NotFound):
            lab.lookup.vm("vm1")
        assert lab.consoles.existing(domain) is None
        assert log_path.read_bytes() == banner()  # boot diagnostics outlive the VM, as in Azure
        assert lab.vms.list() == []

    run(lab, scenario)


# -- views --------------------------------------------------------------------------------------


def test_find_is_case_insensitive_and_refuses_ambiguous_names(lab: Lab) -> None:
    async def scenario() -> None:
        await lab.vms.create(new_vm("Web1", rg="RG-A"), start=False)
        await lab.vms.create(new_vm("db", rg="RG-A"), start=False)
        await lab.vms.create(new_vm("DB", rg="rg-b"), start=False)
        assert lab.lookup.vm("web1").identity.name == "Web1"
        assert lab.lookup.vm("WEB1", "rg-a").identity.resource_group == "RG-A"
        with pytest.raises(InvalidInput) as exc:
            lab.lookup.vm("Db")
        assert "RG-A" in exc.value.message and "rg-b" in exc.value.message
        assert lab.lookup.vm("db", "RG-B").identity.name == "DB"
        with pytest.raises(NotFound):
            lab.lookup.vm("web1", "rg-b")
        with pytest.raises(NotFound):
            lab.lookup.vm("nope")
        keys = [v.identity.key for v in lab.vms.list()]
        assert keys == [("rg-a", "db"), ("rg-a", "web1"), ("rg-b", "db")]

    run(lab, scenario)


def test_list_shows_only_this_labs_vms(
    lab: Lab, hv: FakeHypervisor, settings: Settings, tmp_path: Path
) -> None:
    async def scenario() -> None:
        await lab.vms.create(new_vm(), start=False)
        other = Lab(settings.model_copy(update={"data_dir": tmp_path / "other"}), hv)
        await other.vms.create(new_vm("vm2"), start=False)
        assert [v.identity.name for v in lab.vms.list()] == ["vm1"]
        assert [v.identity.name for v in other.vms.list()] == ["vm2"]

    run(lab, scenario)


def test_console_input_reaches_the_guest_and_its_echo_every_viewer(
    lab: Lab, hv: FakeHypervisor
) -> None:
    async def scenario() -> None:
        view = await lab.vms.create(new_vm())
        domain = view.identity.domain_name
        broker = lab.consoles.existing(domain)
        assert broker is not None
        user = broker.subscribe(SessionMode.INTERACTIVE, "u", replay=0)
        viewer = broker.subscribe(SessionMode.VIEW, "v", replay=0)
        broker.write(user, b"azureuser\r")
        assert hv.console_input(domain) == b"azureuser\r"
        offset = len(banner())
        for sub in (user, viewer):
            assert await asyncio.wait_for(sub.next(), 5) == Chunk(offset, b"azureuser\r")

    run(lab, scenario)


def test_a_new_daemon_adopts_running_vms_without_restarting_them(
    lab: Lab, hv: FakeHypervisor, settings: Settings
) -> None:
    async def scenario() -> None:
        running = await lab.vms.create(new_vm("vm1"))
        await lab.vms.create(new_vm("vm2"), start=False)
        lab.consoles.close_all()  # the old daemon goes away
        before = list(hv.calls)
        restarted = Lab(settings, hv)
        try:
            adopted = await restarted.console_keeper.check_once()
            assert adopted == [running.identity.domain_name]
            assert hv.calls[len(before) :] == [("open_console", running.identity.domain_name)]
            broker = restarted.consoles.existing(running.identity.domain_name)
            assert broker is not None and broker.attached
            sub = broker.subscribe(SessionMode.VIEW, "v", replay=100)
            assert await asyncio.wait_for(sub.next(), 5) == Chunk(0, banner())
        finally:
            restarted.consoles.close_all()

    run(lab, scenario)


def test_screenshot_is_stored_as_a_bmp_blob(lab: Lab) -> None:
    async def scenario() -> None:
        view = await lab.vms.create(new_vm())
        image = await lab.boot_diagnostics.screenshot(view)
        assert image.size == (2, 2)
        assert image.convert("RGB").getpixel((0, 0)) == (255, 0, 0)
        b = lab.ctx.boot_blobs(view.identity, view.model)
        assert lab.ctx.blobs.read(b.account, b.container, b.screenshot).data[:2] == b"BM"
        stopped = await lab.vms.power_off(view)
        with pytest.raises(StateError):
            await lab.boot_diagnostics.screenshot(stopped)

    run(lab, scenario)


# -- reconcile ----------------------------------------------------------------------------------


def test_up_creates_then_adopts_then_starts(lab: Lab, hv: FakeHypervisor) -> None:
    defn = parse_lab_definition(DEMO_LAB, source="demo.yaml", known_images=["tiny"])

    async def scenario() -> None:
        first = await lab.reconciler.up(defn)
        assert [(r.vm.identity.name, r.action) for r in first] == [
            ("vm1", "created"), ("vm2", "created")
        ]  # fmt: skip
        assert all(r.vm.power_state is PowerState.RUNNING for r in first)
        vm1, vm2 = (r.vm for r in first)
        assert vm1.identity.resource_group == "demo-rg"
        assert vm1.identity.subscription_id == SUBSCRIPTION
        assert vm1.model.boot_diagnostics.storage_account == "demodiag"
        assert vm2.model.boot_diagnostics.storage_account == MANAGED_ACCOUNT
        assert vm2.model.kernel_args == "lab.seq=3"
        assert (vm2.model.vcpus, vm2.model.memory_mib, vm2.model.size_name) == (
            1, 1024, "Standard_B1s"
        )  # fmt: skip
        assert vm1.model.tags == {"role": "web"}
        assert serial_log(lab, vm1) == banner("vm1")
        assert lab.ctx.serial_log_path(vm1.identity, vm1.model).is_relative_to(
            lab.settings.blob_dir / "demodiag"
        )

        calls = len(hv.calls)
        second = await lab.reconciler.up(defn)
        assert [(r.vm.identity, r.action) for r in second] == [
            (vm1.identity, "running"), (vm2.identity, "running")
        ]  # fmt: skip
        assert hv.calls[calls:] == []  # adopted: nothing defined, started or touched

        await lab.vms.power_off(lab.lookup.vm("vm2"))
        third = await lab.reconciler.up(defn)
        assert [r.action for r in third] == ["running", "started"]
        assert third[1].vm.power_state is PowerState.RUNNING
        assert third[1].vm.identity == vm2.identity

        down = await lab.reconciler.down(defn)
        assert [(r.vm.identity.name, r.action) for r in down] == [
            ("vm1", "deleted"), ("vm2", "deleted")
        ]  # fmt: skip
        assert lab.vms.list() == []

    run(lab, scenario)


# -- the fake itself ----------------------------------------------------------------------------


def _define(lab: Lab, name: str = "vm1") -> str:
    async def create() -> str:
        return (await lab.vms.create(new_vm(name), start=False)).identity.domain_name

    return asyncio.run(create())


def test_fake_state_transitions_and_lifecycle_events(lab: Lab, hv: FakeHypervisor) -> None:
    domain = _define(lab)
    events: list[tuple[str, DomainState, str]] = []
    hv.on_lifecycle(lambda *event: events.append(event))
    hv.start(domain, paused=True)
    assert hv.domain(domain).state is DomainState.PAUSED
    log = lab.ctx.serial_log_path(hv.domain(domain).identity, hv.domain(domain).model)
    assert log.read_bytes() == b""  # the CPUs have not run yet
    hv.resume(domain)
    assert hv.domain(domain).state is DomainState.RUNNING
    assert log.read_bytes() == banner()
    hv.reset(domain)
    hv.reboot(domain)
    assert hv.domain(domain).state is DomainState.RUNNING
    assert log.read_bytes().count(banner()) == 3
    hv.shutdown(domain)
    assert (hv.domain(domain).state, hv.domain(domain).reason) == (
        DomainState.SHUTOFF, "shut down by the guest"
    )  # fmt: skip
    hv.start(domain, paused=False)
    hv.destroy(domain)
    assert hv.domain(domain).reason == "powered off"
    assert events == [
        (domain, DomainState.RUNNING, ""),
        (domain, DomainState.PAUSED, ""),
        (domain, DomainState.RUNNING, ""),
        (domain, DomainState.SHUTOFF, "shut down by the guest"),
        (domain, DomainState.RUNNING, ""),
        (domain, DomainState.SHUTOFF, "powered off"),
    ]


def test_fake_refuses_what_libvirt_refuses(lab: Lab, hv: FakeHypervisor) -> None:
    domain = _define(lab)
    for op in ("resume", "shutdown", "reset", "reboot", "screenshot", "send_break", "inject_nmi"):
        with pytest.raises(HypervisorError, match="not running"):
            getattr(hv, op)(domain)
    with pytest.raises(HypervisorError, match="not running"):
        hv.open_console(domain, lambda _d: None, lambda: None)
    hv.destroy(domain)  # like the driver: destroying an inactive domain is a no-op
    hv.start(domain, paused=False)
    with pytest.raises(HypervisorError, match="not paused"):
        hv.resume(domain)
    with pytest.raises(HypervisorError, match="already running"):
        hv.start(domain, paused=True)
    for op in ("domain", "start", "destroy", "undefine", "screenshot"):
        with pytest.raises(NotFound):
            if op == "start":
                hv.start("scl-nope", paused=False)
            else:
                getattr(hv, op)("scl-nope")
    with pytest.raises(HypervisorError, match="XML"):
        hv.define("<domain><name>x</name>")
    assert hv.screenshot(domain) == SCREENSHOT_PPM


def test_fake_define_keeps_the_live_config_of_a_running_domain(
    lab: Lab, hv: FakeHypervisor
) -> None:
    domain = _define(lab)
    hv.start(domain, paused=False)
    view = lab.lookup.vm("vm1")
    spec = lab.vms._spec(view.identity, view.model, deallocated=True, host="local")
    hv.define(build_domain_xml(spec))
    assert not hv.domain(domain).deallocated  # the persistent config changed, not the live one
    hv.destroy(domain)
    assert hv.domain(domain).deallocated
    # Another VM id under the same name is another domain: libvirt refuses it.
    other = lab.vms._spec(replace(view.identity, vm_id="f" * 8), view.model, False, "local")
    with pytest.raises(HypervisorError, match="already exists"):
        hv.define(build_domain_xml(other))


def test_fake_set_metadata_takes_only_the_unprefixed_element(lab: Lab, hv: FakeHypervisor) -> None:
    domain = _define(lab)
    hv.start(domain, paused=False)
    view = lab.lookup.vm("vm1")
    spec = lab.vms._spec(view.identity, view.model, deallocated=True, host="local")
    prefixed = build_domain_xml(spec).split("<metadata>")[1].split("</metadata>")[0].strip()
    with pytest.raises(HypervisorError, match="namespace"):
        hv.set_metadata(domain, prefixed)
    hv.set_metadata(domain, metadata_element(spec))
    assert hv.domain(domain).deallocated  # live and persistent
    hv.destroy(domain)
    assert hv.domain(domain).deallocated


def test_fake_console_echo_takeover_and_hangup(lab: Lab, hv: FakeHypervisor) -> None:
    domain = _define(lab)
    hv.start(domain, paused=True)
    seen: list[bytes] = []
    closed: list[str] = []
    first = hv.open_console(domain, seen.append, lambda: closed.append("first"))
    first.write(b"early")  # typed while paused: echoed once the CPUs run
    hv.resume(domain)
    log = lab.ctx.serial_log_path(hv.domain(domain).identity, hv.domain(domain).model)
    assert log.read_bytes() == banner() + b"early"
    second = hv.open_console(domain, seen.append, lambda: closed.append("second"))
    assert closed == ["first"] and first.closed
    with pytest.raises(HypervisorError, match="closed"):
        first.write(b"x")
    second.write(b"ls\r")
    hv.guest_output(domain, b"out\r\n")
    assert log.read_bytes() == banner() + b"early" + b"ls\r" + b"out\r\n"
    assert seen == [banner(), b"early", b"ls\r", b"out\r\n"]
    assert hv.console_input(domain) == b"earlyls\r"
    second.close()
    assert closed == ["first"]  # an explicit close is not a hang-up
    third = hv.open_console(domain, seen.append, lambda: closed.append("third"))
    hv.destroy(domain)
    assert closed == ["first", "third"] and third.closed


def test_concurrent_up_creates_each_vm_once(lab: Lab, hv: FakeHypervisor) -> None:
    defn = parse_lab_definition(DEMO_LAB, source="demo.yaml")

    async def scenario() -> None:
        first, second = await asyncio.gather(lab.reconciler.up(defn), lab.reconciler.up(defn))
        actions = sorted(r.action for r in first + second)
        assert actions == ["created", "created", "running", "running"]
        assert (
            sorted(name for op, name in hv.calls if op == "define").count(
                first[0].vm.identity.domain_name
            )
            == 2
        )  # the create, then the redefine of the start: once per VM, not twice
        with pytest.raises(Conflict):
            await lab.vms.create(new_vm("vm1", rg="demo-rg"))

    run(lab, scenario)
