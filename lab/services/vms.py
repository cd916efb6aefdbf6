"""VM backends: create, power operations with Azure's meaning, reimage, delete, views.

Power operations run on the daemon's event loop; blocking libvirt calls go to a thread. While
one runs, the VM shows its transitional state and any other operation on it is refused with
409, so two operations never interleave.
"""

from __future__ import annotations

import asyncio
import builtins
import dataclasses
import logging
import shutil
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

from lab.domain import boot_messages
from lab.domain.errors import Conflict, InvalidInput, PropertyChangeNotAllowed
from lab.domain.hosts import LOCAL
from lab.domain.passwords import is_password_hash
from lab.domain.power import TRANSITION, PowerOperation, PowerState, operation, require_state
from lab.domain.vm import VmIdentity, VmModel, VmView
from lab.hypervisor.base import PAUSED_ON_IO_ERROR, DomainInfo, DomainState
from lab.hypervisor.domain_xml import DomainSpec, build_domain_xml, metadata_element
from lab.services.boot_slots import BootSlots
from lab.services.consoles import ConsoleService
from lab.services.context import LabContext
from lab.services.host_staging import SERIAL_LOG, HostStaging, vm_file
from lab.services.hosts import FaultDomain, HostService
from lab.services.log_mirror import LogMirror, LogMirrors
from lab.services.shared_call import SharedCall
from lab.storage.disks import create_overlay, reset_overlay
from lab.storage.images import (
    CONFIG_DISK_FILE,
    ImageManifest,
    hash_password,
    write_guest_config_disk,
    write_guest_config_initrd,
)

log = logging.getLogger(__name__)

#: How often a waiting operation looks at the domain state.
_POLL_S = 0.1


@dataclass(frozen=True)
class NewVm:
    """A VM to create: what the lab file (or an API PUT) says, with its password hashed where
    it arrived (`lab.storage.images.hash_password`): the lab keeps no plain text."""

    subscription_id: str
    resource_group: str
    name: str
    model: VmModel
    #: The SHA-512 crypt hash of the admin password ($6$...).
    admin_password_hash: str = field(repr=False)
    #: For a scale-set instance: the set, the instance id and the guest's host name.
    scale_set: str | None = None
    instance_id: str | None = None
    computer_name: str | None = None

    def __post_init__(self) -> None:
        if not is_password_hash(self.admin_password_hash):
            # A plain-text password must not reach the guest's files (nor this message).
            raise ValueError("NewVm.admin_password_hash must be a SHA-512 crypt hash ($6$...)")


class StepTimer:
    """Seconds per named step, in order: `done(name)` ends the step begun at the last call."""

    def __init__(self) -> None:
        self._last = time.perf_counter()
        self.steps: list[tuple[str, float]] = []

    def done(self, name: str) -> None:
        now = time.perf_counter()
        self.steps.append((name, now - self._last))
        self._last = now

    def __str__(self) -> str:
        return ", ".join(f"{name} {seconds * 1000:.0f} ms" for name, seconds in self.steps)


class VmService:
    def __init__(
        self, ctx: LabContext, consoles: ConsoleService, slots: BootSlots | None = None,
        hosts: HostService | None = None,
    ) -> None:  # fmt: skip
        self.ctx = ctx
        self.consoles = consoles
        #: Where guests go (None: the local host only, as in unit tests without hosts).
        self.hosts = hosts
        self.staging = HostStaging(ctx)
        self.log_mirrors = LogMirrors()
        #: Every guest boot takes one of these (`_in_slot`).
        self.slots = slots or BootSlots()
        self._in_flight: dict[str, PowerOperation] = {}
        self._machines_shared = SharedCall(self.machines)

    # -- views --------------------------------------------------------------------------------
    def machines(self) -> builtins.list[VmView]:
        """Every guest of the lab: VMs and scale-set instances."""
        infos = self.ctx.hypervisor.list_domains(self.ctx.lab_id)
        views = [self._view(i) for i in infos]
        return sorted(views, key=lambda v: (v.identity.key, int(v.identity.instance_id or 0)))

    def list(self) -> builtins.list[VmView]:
        """The VMs (scale-set instances are listed by their scale set)."""
        return [v for v in self.machines() if not v.identity.is_instance]

    async def machines_now(self) -> builtins.list[VmView]:
        """`machines` for a coroutine: off the event loop (libvirtd can take seconds while it
        starts other domains), one call shared by the callers that ask meanwhile."""
        return builtins.list(await self._machines_shared())

    async def list_now(self) -> builtins.list[VmView]:
        """`list` for a coroutine (see `machines_now`)."""
        return [v for v in await self.machines_now() if not v.identity.is_instance]

    def _view(self, info: DomainInfo) -> VmView:
        op = self._in_flight.get(info.name)
        if op is not None:
            state = TRANSITION[op]
        elif info.state in (DomainState.RUNNING, DomainState.PAUSED, DomainState.OTHER):
            state = PowerState.RUNNING
        else:
            state = PowerState.DEALLOCATED if info.deallocated else PowerState.STOPPED
        stopped = state in (PowerState.STOPPED, PowerState.DEALLOCATED)
        # A guest QEMU paused on a failed disk write is "running" (its process and console
        # are), but says why nothing moves.
        reason = info.reason if stopped or info.reason == PAUSED_ON_IO_ERROR else None
        if info.unreachable:
            reason = info.unreachable  # the state is the last one seen
        hang = None if stopped else self.consoles.hang_warning(info.name)
        return VmView(info.identity, info.model, state, info.deallocated, reason, hang,
                      host=info.host)  # fmt: skip

    def in_operation(self, domain: str) -> bool:
        return domain in self._in_flight

    @asynccontextmanager
    async def _operation(self, view: VmView, op: PowerOperation) -> AsyncIterator[None]:
        domain = view.identity.domain_name
        # `view` may predate an operation started since (the reconciler holds views across
        # awaits): an operation in flight decides, or two would interleave.
        in_flight = self._in_flight.get(domain)
        actual = TRANSITION[in_flight] if in_flight is not None else view.power_state
        require_state(op, actual, vm=view.identity.name)
        self._in_flight[domain] = op
        try:
            yield
        finally:
            self._in_flight.pop(domain, None)

    # -- create -------------------------------------------------------------------------------
    async def create_from_definition(
        self, subscription_id: str, resource_group: str, name: str, model: VmModel, *,
        password: str | None = None, password_hash: str | None = None,
        scale_set: str | None = None, instance_id: str | None = None,
        computer_name: str | None = None, start: bool = True,
        fault_domain: FaultDomain | None = None,
    ) -> VmView:  # fmt: skip
        """The one way a VM comes to be, whichever front end asks (a lab file, an ARM PUT, a
        scenario, a scale set's instance): its `model` from `lab.domain.definitions`, its admin
        password hashed here where it arrives (a scale set passes the hash it keeps), then
        `create`; its boot takes a boot slot (`boot_slots.py`)."""
        if password_hash is None:
            if password is None:
                raise ValueError("create_from_definition needs a password or its hash")
            # openssl, a few milliseconds: off the event loop.
            password_hash = await asyncio.to_thread(hash_password, password)
        new = NewVm(subscription_id, resource_group, name, model, password_hash,
                    scale_set=scale_set, instance_id=instance_id,
                    computer_name=computer_name)  # fmt: skip
        return await self.create(new, start=start, fault_domain=fault_domain)

    async def create(
        self, new: NewVm, *, start: bool = True, fault_domain: FaultDomain | None = None
    ) -> VmView:
        """`create_from_definition`'s last step, for a VM whose password is hashed already."""
        identity = VmIdentity(
            lab_id=self.ctx.lab_id,
            subscription_id=new.subscription_id,
            resource_group=new.resource_group,
            name=new.name,
            vm_id=str(uuid.uuid4()),
            scale_set=new.scale_set,
            instance_id=new.instance_id,
            computer_name=new.computer_name,
        )
        # The libvirt calls here and below run in threads: while libvirtd starts other domains
        # they take 0.2-2.6 s (20 at once on 2 cores), which on the event loop stalled every
        # console and API request meanwhile.
        existing = await asyncio.to_thread(self.machines)
        if any(v.identity.domain_name == identity.domain_name for v in existing):
            raise Conflict(
                f"VM '{new.name}' already exists in resource group '{new.resource_group}'",
                target=new.name,
            )
        host = LOCAL
        if self.hosts is not None:
            what = f"VM '{new.name}'" if new.scale_set is None else (
                f"instance {new.instance_id} of scale set '{new.scale_set}'")  # fmt: skip
            host = await asyncio.to_thread(self.hosts.place, new.model, what=what,
                                           domain=identity.domain_name,
                                           fault_domain=fault_domain)  # fmt: skip
        try:
            image = await self._write_guest_config(identity, new.model, new.admin_password_hash)
            if image.disk and host == LOCAL:
                image_dir = self.ctx.images.path(image)
                vm_dir = self.ctx.vm_dir(identity)
                await asyncio.to_thread(create_overlay, image_dir / image.disk,
                                        vm_dir / "disk.qcow2")  # fmt: skip
            await asyncio.to_thread(self.staging.stage, identity, new.model, host)
            await asyncio.to_thread(self._define, identity, new.model, deallocated=False,
                                    host=host)  # fmt: skip
        finally:
            if self.hosts is not None:
                self.hosts.settled(identity.domain_name)
        view = self._view(await asyncio.to_thread(self.ctx.hypervisor.domain,
                                                  identity.domain_name))  # fmt: skip
        if start:
            return await self.start(view)
        return view

    async def _write_guest_config(
        self, identity: VmIdentity, model: VmModel, admin_password_hash: str
    ) -> ImageManifest:
        """The VM's host name and admin account, where its image's guest reads them: a per-VM
        initrd (the image's plus a config archive) for a kernel boot, a config disk for a disk
        boot (it stays across reimages: the guest applies it again to a fresh OS disk)."""
        image = self.ctx.images.get(model.image)
        if image.boot == "disk" and model.kernel_args:
            raise InvalidInput(
                f"kernelArgs cannot be used with the image '{image.name}': it boots GRUB from "
                "its own disk. Edit the GRUB entry at the menu (`e`) or /etc/default/grub in "
                "the VM instead.",
                target="kernelArgs",
            )
        vm_dir = self.ctx.vm_dir(identity)
        vm_dir.mkdir(parents=True, exist_ok=True)
        if image.boot == "disk":
            await asyncio.to_thread(
                write_guest_config_disk,
                vm_dir / CONFIG_DISK_FILE,
                hostname=identity.host_name,
                admin_username=model.admin_username,
                admin_password_hash=admin_password_hash,
                boot_args=boot_messages.kernel_args(model.boot_messages),
            )
            return image
        await asyncio.to_thread(
            write_guest_config_initrd,
            self.ctx.images.path(image) / image.initrd,
            vm_dir / "initrd.img",
            hostname=identity.host_name,
            admin_username=model.admin_username,
            admin_password_hash=admin_password_hash,
        )
        return image

    def _spec(
        self, identity: VmIdentity, model: VmModel, deallocated: bool, host: str
    ) -> DomainSpec:
        image = self.ctx.images.get(model.image)
        blobs = self.ctx.boot_blobs(identity, model)
        self.ctx.blobs.ensure_container(blobs.account, blobs.container)
        messages = boot_messages.kernel_args(model.boot_messages)
        cmdline = " ".join(p for p in (image.cmdline, messages, model.kernel_args) if p)
        disk_boot = image.boot == "disk"
        paths = self.staging.paths(identity, model, host)
        return DomainSpec(
            identity=identity,
            model=model,
            uuid=identity.vm_id,
            domain_type=self.ctx.hypervisor.accel_of(host),
            # A disk boot's kernel and command line are GRUB's business, inside the disk.
            kernel=paths.kernel,
            initrd=paths.initrd,
            cmdline="" if disk_boot else cmdline,
            disk=paths.disk,
            serial_log=paths.serial_log,
            run_as=self.ctx.run_as,
            deallocated=deallocated,
            boot=image.boot,
            config_disk=paths.config_disk,
            firmware_on_serial=boot_messages.firmware_on_serial(model.boot_messages),
        )

    def _define(
        self, identity: VmIdentity, model: VmModel, *, deallocated: bool, host: str
    ) -> None:
        spec = self._spec(identity, model, deallocated, host)
        self.ctx.hypervisor.define(build_domain_xml(spec), host=host)

    def _set_allocation(self, view: VmView, deallocated: bool) -> None:
        spec = self._spec(view.identity, view.model, deallocated, view.host)
        self.ctx.hypervisor.set_metadata(view.identity.domain_name, metadata_element(spec))

    # -- update -------------------------------------------------------------------------------
    def update(self, view: VmView, model: VmModel) -> VmView:
        """Change what can change on an existing VM: tags and whether boot diagnostics is on.
        Anything else (image, size, user, where the serial log is kept) is fixed at create, as
        in Azure; changing it is refused with Azure's code."""
        current = view.model
        if model.host is None:
            model = model.model_copy(update={"host": current.host})  # an ARM PUT has no pin
        fixed = current.model_copy(
            update={"tags": model.tags, "boot_diagnostics": model.boot_diagnostics}
        )
        moved = self.ctx.serial_log_path(view.identity, model) != self.ctx.serial_log_path(
            view.identity, current
        )
        if fixed != model or moved:
            changed = sorted(
                k for k in VmModel.model_fields if getattr(model, k) != getattr(current, k)
            )
            raise PropertyChangeNotAllowed(
                f"Changing property {', '.join(changed)} of VM '{view.identity.name}' is not "
                "allowed; only tags and diagnosticsProfile.bootDiagnostics.enabled can change. "
                "Delete and recreate the VM to change the others.",
                target=view.identity.name,
            )
        spec = self._spec(view.identity, model, view.deallocated, view.host)
        self.ctx.hypervisor.set_metadata(view.identity.domain_name, metadata_element(spec))
        return self.refresh(view)

    # -- power --------------------------------------------------------------------------------
    async def start(self, view: VmView) -> VmView:
        async with self._operation(view, PowerOperation.START):
            if view.power_state is not PowerState.RUNNING:
                if view.deallocated:
                    view = await self._allocate(view)
                try:
                    await self._power_on(view)
                finally:
                    if self.hosts is not None:
                        self.hosts.settled(view.identity.domain_name)
        return await self._refreshed(view)

    async def _allocate(self, view: VmView) -> VmView:
        """A deallocated VM gets a host again, as in Azure: placed like a new one (the most
        free host), so it may land on another (its disk goes along). A pinned VM stays on its
        host, and a scale set's instance on its fault domain's."""
        if self.hosts is None or view.model.host is not None or view.identity.is_instance:
            return view
        target = await asyncio.to_thread(
            self.hosts.place, view.model, what=f"VM '{view.identity.name}'",
            domain=view.identity.domain_name,
        )  # fmt: skip
        if target == view.host:
            return view
        log.info("VM %s was deallocated: it starts on host '%s' (it was on '%s')",
                 view.identity.name, target, view.host)  # fmt: skip
        await self._move(view, target)
        return dataclasses.replace(view, host=target)

    async def _power_on(self, view: VmView) -> None:
        """Start paused, attach the console broker, then let the CPUs run: no byte is missed."""
        hv = self.ctx.hypervisor
        domain = view.identity.domain_name

        async def power_on() -> None:
            steps = StepTimer()
            # Redefine first so the XML follows the current accelerator and lab version; a
            # remote host gets any file it lacks (after a reinstall, or a cleaned data dir).
            await asyncio.to_thread(self.staging.stage, view.identity, view.model, view.host)
            steps.done("stage")
            await asyncio.to_thread(self._define, view.identity, view.model, deallocated=False,
                                    host=view.host)  # fmt: skip
            self.follow_log(view)
            steps.done("define")
            await asyncio.to_thread(hv.start, domain, paused=True)
            steps.done("start paused")
            await self.consoles.attach(domain, self.ctx.serial_log_path(view.identity, view.model))
            await self.log_mirrors.align(domain)  # a remote guest's stream feeds its log copy
            steps.done("attach")
            await asyncio.to_thread(hv.resume, domain)
            steps.done("resume")
            # Where a power-on's time goes, for the boot bench and anyone reading the log.
            log.info("VM %s powered on: %s", view.identity.name, steps)

        await self._in_slot(view, power_on)

    def follow_log(self, view: VmView) -> None:
        """A guest on a remote host: copy its serial log to the front (`log_mirror.py`)."""
        files = self.staging.files(view.host)
        if files is None:
            self.log_mirrors.untrack(view.identity.domain_name)
            return
        local = self.ctx.serial_log_path(view.identity, view.model)
        remote = vm_file(view.identity, SERIAL_LOG)
        self.log_mirrors.track(view.identity.domain_name, LogMirror(files, remote, local))

    async def _booting(self, view: VmView, reboot: Callable[[str], None]) -> None:
        """An in-place reboot of a running guest (`reboot`: the hypervisor call), in a slot."""
        await self._in_slot(view, lambda: asyncio.to_thread(reboot, view.identity.domain_name))

    async def _in_slot(self, view: VmView, power_on: Callable[[], Awaitable[None]]) -> None:
        """Every boot of a guest goes through here: `power_on` runs in a boot slot."""
        log = self.ctx.serial_log_path(view.identity, view.model)
        await self.slots.boot(view.identity.domain_name, log, power_on)

    async def power_off(self, view: VmView, *, skip_shutdown: bool = False) -> VmView:
        async with self._operation(view, PowerOperation.POWER_OFF):
            self.slots.release(view.identity.domain_name)
            if view.power_state is PowerState.RUNNING:
                await self._stop(view, graceful=not skip_shutdown)
        return await self._refreshed(view)

    async def _stop(self, view: VmView, *, graceful: bool) -> None:
        hv = self.ctx.hypervisor
        domain = view.identity.domain_name
        if graceful:
            await asyncio.to_thread(hv.shutdown, domain)
            if await self._wait_shutoff(domain, self.ctx.settings.shutdown_timeout):
                return
        await asyncio.to_thread(hv.destroy, domain)
        await self._wait_shutoff(domain, 10.0)

    async def _wait_shutoff(self, domain: str, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            info = await asyncio.to_thread(self.ctx.hypervisor.domain, domain)
            if info.state in (DomainState.SHUTOFF, DomainState.CRASHED):
                return True
            await asyncio.sleep(_POLL_S)
        return False

    async def restart(self, view: VmView) -> VmView:
        """Graceful reboot: the guest gets the ACPI power button, then QEMU resets in place."""
        async with self._operation(view, PowerOperation.RESTART):
            await self._booting(view, self.ctx.hypervisor.reboot)
        return await self._refreshed(view)

    async def reset(self, view: VmView) -> VmView:
        """Hard reset, like the power button: same QEMU process, the console stays connected."""
        async with self._operation(view, PowerOperation.RESET):
            await self._booting(view, self.ctx.hypervisor.reset)
            self.consoles.forget_hang(view.identity.domain_name)
        return await self._refreshed(view)

    async def power_cycle(self, view: VmView) -> VmView:
        """Pull the plug and power on again: a new QEMU process."""
        return await self._new_process(view, PowerOperation.POWER_CYCLE)

    async def redeploy(self, view: VmView) -> VmView:
        """Azure's redeploy moves a VM to a new host and powers it on, from any state: the
        host with the most free capacity other than its own (its disk goes with it); with one
        host, or a pinned VM, a new QEMU process on the same one."""
        async with self._operation(view, PowerOperation.REDEPLOY):
            if view.power_state is PowerState.RUNNING:
                await self._stop(view, graceful=False)
            target = view.host
            if self.hosts is not None and view.model.host is None:
                target = await asyncio.to_thread(
                    self.hosts.place, view.model, what=f"VM '{view.identity.name}'",
                    avoid=view.host,
                )  # fmt: skip
            if target != view.host:
                await self._move(view, target)
                view = dataclasses.replace(view, host=target)
            await self._power_on(view)
        return await self._refreshed(view)

    async def _move(self, view: VmView, target: str) -> None:
        """Take a stopped VM from its host to `target`: its log copied to here first, its
        disk moved, its domain undefined there and defined on `target` by the power-on."""
        domain = view.identity.domain_name
        await self.log_mirrors.pull_now(domain)
        self.log_mirrors.untrack(domain)
        # Its broker reads the log the other way on the new host (a copy or virtlogd's file).
        self.consoles.remove(domain, f"the VM moved to host '{target}'")
        await asyncio.to_thread(self.staging.move_disk, view.identity, view.model, view.host,
                                target)  # fmt: skip
        await asyncio.to_thread(self.ctx.hypervisor.undefine, domain)
        await asyncio.to_thread(self.staging.remove, view.identity, view.host)
        files = self.staging.files(target)
        if files is not None:
            # A log the VM left there on an earlier stay is in the copy already.
            remote = vm_file(view.identity, SERIAL_LOG)
            await asyncio.to_thread(files.delete, remote)
            local = self.ctx.serial_log_path(view.identity, view.model)
            LogMirror(files, remote, local).start_here()

    async def _new_process(self, view: VmView, op: PowerOperation) -> VmView:
        async with self._operation(view, op):
            if view.power_state is PowerState.RUNNING:
                await self._stop(view, graceful=False)
            await self._power_on(view)
        return await self._refreshed(view)

    async def deallocate(self, view: VmView) -> VmView:
        async with self._operation(view, PowerOperation.DEALLOCATE):
            self.slots.release(view.identity.domain_name)
            if view.power_state is PowerState.RUNNING:
                await self._stop(view, graceful=True)
            self.consoles.remove(view.identity.domain_name, "the VM was deallocated")
            await asyncio.to_thread(self._set_allocation, view, True)
        return await self._refreshed(view)

    async def reimage(self, view: VmView) -> VmView:
        """Back to the image: a fresh disk overlay; a running VM is restarted on it. A disk-boot
        VM keeps its config disk, which the guest applies again at the first boot of the fresh
        OS disk (host name, admin user and the passwords)."""
        async with self._operation(view, PowerOperation.REIMAGE):
            was_running = view.power_state is PowerState.RUNNING
            if was_running:
                await self._stop(view, graceful=False)
            await asyncio.to_thread(self._fresh_disk, view.identity, view.model, view.host)
            if was_running:
                await self._power_on(view)
        return await self._refreshed(view)

    async def upgrade(
        self, view: VmView, model: VmModel, admin_password_hash: str
    ) -> VmView:
        """Move a scale-set instance to a new model: a running instance is stopped, redefined
        (a new image gets a fresh disk and config) and started again."""
        async with self._operation(view, PowerOperation.REIMAGE):
            was_running = view.power_state is PowerState.RUNNING
            if was_running:
                await self._stop(view, graceful=True)
            if model.image != view.model.image:
                await self._write_guest_config(view.identity, model, admin_password_hash)
                await asyncio.to_thread(self._fresh_disk, view.identity, model, view.host)
            self._define(view.identity, model, deallocated=view.deallocated, host=view.host)
            upgraded = VmView(view.identity, model, view.power_state, view.deallocated,
                              host=view.host)  # fmt: skip
            if was_running:
                await self._power_on(upgraded)
        return await self._refreshed(view)

    def _fresh_disk(self, identity: VmIdentity, model: VmModel, host: str) -> None:
        """Reimage's disk: a fresh overlay on the image (and, remote, its config again)."""
        image = self.ctx.images.get(model.image)
        if host != LOCAL:
            self.staging.stage(identity, model, host, fresh_disk=True)
        elif image.disk:
            base = self.ctx.images.path(image) / image.disk
            reset_overlay(base, self.ctx.vm_dir(identity) / "disk.qcow2")

    async def delete(self, view: VmView) -> None:
        """Delete the VM and its disks; the boot-diagnostics blobs are kept, as in Azure."""
        async with self._operation(view, PowerOperation.DELETE):
            domain = view.identity.domain_name
            self.slots.release(domain)
            self.consoles.remove(domain, "the VM was deleted")
            await self.log_mirrors.pull_now(domain)  # the blob keeps all the guest printed
            self.log_mirrors.untrack(domain)
            await asyncio.to_thread(self.ctx.hypervisor.undefine, domain)
            await asyncio.to_thread(self.staging.remove, view.identity, view.host)
            shutil.rmtree(self.ctx.vm_dir(view.identity), ignore_errors=True)

    async def perform(
        self, op: PowerOperation, view: VmView, *, skip_shutdown: bool = False
    ) -> VmView:
        """Run a power operation by name: the one dispatch the daemon and Azure APIs share,
        through the method the catalogue names (`lab.domain.power.OPERATIONS`)."""
        if op is PowerOperation.POWER_OFF:
            return await self.power_off(view, skip_shutdown=skip_shutdown)
        if op is PowerOperation.DELETE:
            raise InvalidInput("delete is not a power action (DELETE the VM)", target="action")
        run: Callable[[VmView], Awaitable[VmView]] = getattr(self, operation(op).method)
        return await run(view)

    def refresh(self, view: VmView) -> VmView:
        return self._view(self.ctx.hypervisor.domain(view.identity.domain_name))

    async def _refreshed(self, view: VmView) -> VmView:
        """`refresh` off the event loop (see `create`)."""
        return await asyncio.to_thread(self.refresh, view)
