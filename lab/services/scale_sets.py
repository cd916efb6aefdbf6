"""Scale sets: the model in the lab's state file, instances as libvirt domains.

Instances are created concurrently; the boot slots (`boot_slots.py`) keep more of them from
booting at once than the host has cores, and a create or scale-out ends when every new instance
has booted. Scaling in removes the highest instance ids first. Every
instance records the model version it runs; a new model is rolled to every instance at once
under `Automatic`, and waits for `upgrade` (Azure's manualUpgrade) under `Manual`.

A set keeps the SHA-512 crypt hash of its admin password, for the instances to come; a state
file from before that kept the plain text has it hashed when it is loaded (`_hash_passwords`).
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import uuid
from collections.abc import Awaitable
from typing import Any

from lab.domain.definitions import scale_set_model
from lab.domain.errors import InvalidInput, NotFound
from lab.domain.hosts import fault_domain_count
from lab.domain.labfile import ScaleSetDef
from lab.domain.power import PowerOperation
from lab.domain.resource_ids import placed, same
from lab.domain.scale_set import (
    MAX_CAPACITY,
    ScaleSetModel,
    UpgradeMode,
    computer_name,
    instance_name,
    pick_instance,
    profile_changed,
)
from lab.domain.vm import VmView
from lab.services.hosts import FaultDomain
from lab.services.vms import VmService
from lab.storage.images import hash_password
from lab.storage.state import StateFile

_KEY = "scaleSets"
#: Instance ids picked by a caller; None means every instance.
InstanceIds = list[str] | None


def _store_key(group: str, name: str) -> str:
    return f"{group.lower()}/{name.lower()}"


def _hash_passwords(models: Any) -> Any:
    """The scale sets' section of a state file, with any plain-text `admin_password` (what the
    lab kept before it kept hashes) replaced by its `admin_password_hash`."""
    if not isinstance(models, dict):
        return models  # not what the lab writes: the section's check says so
    migrated = {}
    for key, model in models.items():
        if isinstance(model, dict) and "admin_password" in model:
            model = dict(model)
            password = model.pop("admin_password")
            if "admin_password_hash" not in model and isinstance(password, str):
                # One that cannot be hashed gets no hash: the section's check reports it.
                with contextlib.suppress(InvalidInput):
                    model["admin_password_hash"] = hash_password(password)
        migrated[key] = model
    return migrated


class ScaleSetService:
    def __init__(self, vms: VmService, state: StateFile) -> None:
        self.vms = vms
        self.state = state
        state.section(_KEY, dict[str, ScaleSetModel], "the scale sets' models",
                      migrate=_hash_passwords)  # fmt: skip
        #: One lock per set: a PUT, a scale and an upgrade of one set never interleave.
        self._locks: dict[tuple[str, str], asyncio.Lock] = {}

    # -- models -------------------------------------------------------------------------------
    def list(
        self, subscription: str | None = None, group: str | None = None
    ) -> builtins.list[ScaleSetModel]:
        models = [ScaleSetModel.model_validate(m) for m in self.state.read().get(_KEY, {}).values()]
        return sorted(
            (m for m in models
             if placed(m.subscription_id, m.resource_group, in_subscription=subscription,
                       in_group=group)),
            key=lambda m: m.key,
        )  # fmt: skip

    def get(self, group: str, name: str) -> ScaleSetModel:
        raw = self.state.read().get(_KEY, {}).get(_store_key(group, name))
        if raw is None:
            raise NotFound(
                f"The Resource 'Microsoft.Compute/virtualMachineScaleSets/{name}' under resource "
                f"group '{group}' was not found.", target=name,
            )  # fmt: skip
        return ScaleSetModel.model_validate(raw)

    def _save(self, model: ScaleSetModel) -> None:
        models = self.state.read().get(_KEY, {})
        models[_store_key(model.resource_group, model.name)] = model.model_dump(mode="json")
        self.state.update(_KEY, models)

    def _forget(self, model: ScaleSetModel) -> None:
        models = self.state.read().get(_KEY, {})
        models.pop(_store_key(model.resource_group, model.name), None)
        self.state.update(_KEY, models)

    def _lock(self, model: ScaleSetModel) -> asyncio.Lock:
        return self._locks.setdefault(model.key, asyncio.Lock())

    # -- instances ----------------------------------------------------------------------------
    # Each query comes twice: plain for sync callers, `_now` for coroutines (the domains' states
    # read off the event loop, see `VmService.machines_now`).
    def instances(self, model: ScaleSetModel) -> builtins.list[VmView]:
        return _of_set(model, self.vms.machines())

    async def instances_now(self, model: ScaleSetModel) -> builtins.list[VmView]:
        return _of_set(model, await self.vms.machines_now())

    def instance(self, model: ScaleSetModel, instance_id: str) -> VmView:
        return pick_instance(model, self.instances(model), instance_id)

    async def instance_now(self, model: ScaleSetModel, instance_id: str) -> VmView:
        return pick_instance(model, await self.instances_now(model), instance_id)

    async def selected_now(
        self, model: ScaleSetModel, instance_ids: InstanceIds
    ) -> builtins.list[VmView]:
        """The instances named (all of them for None); an unknown id is an error."""
        instances = await self.instances_now(model)
        if instance_ids is None:
            return instances
        return [pick_instance(model, instances, str(i)) for i in instance_ids]

    @staticmethod
    def latest_model_applied(model: ScaleSetModel, view: VmView) -> bool:
        return view.model.model_version == model.model_version

    # -- create, update, scale ----------------------------------------------------------------
    @staticmethod
    def from_definition(
        subscription: str, group: str, location: str, ss: ScaleSetDef,
        password_hash: str | None = None,
    ) -> ScaleSetModel:  # fmt: skip
        """The set a lab file (or an API PUT) defines, with a new unique id (`put` keeps an
        existing set's) and its admin password hashed here (`openssl passwd`, a few
        milliseconds), or the `password_hash` it keeps (an update that gives no password)."""
        return scale_set_model(
            subscription, group, location, ss, unique_id=str(uuid.uuid4()),
            password_hash=password_hash
            or hash_password(ss.virtual_machine_profile.admin_password),
        )

    async def put(self, desired: ScaleSetModel) -> ScaleSetModel:
        """Create the set, or bring it to `desired`: a changed profile is a new model version
        (rolled out at once under Automatic); then scale to the desired capacity."""
        async with self._lock(desired):
            try:
                current: ScaleSetModel | None = self.get(desired.resource_group, desired.name)
            except NotFound:
                current = None
            model = desired
            if current is not None:
                version = current.model_version
                if profile_changed(current.profile, desired.profile):
                    version += 1
                model = desired.model_copy(update={
                    "unique_id": current.unique_id,
                    "next_instance_id": current.next_instance_id,
                    "profile": desired.profile.model_copy(update={"model_version": version}),
                })  # fmt: skip
            self._save(model)
            model = await self._scale_locked(model, model.capacity)
            if model.upgrade_mode is UpgradeMode.AUTOMATIC:
                await self._upgrade_locked(model, None)
            return model

    async def scale(self, model: ScaleSetModel, capacity: int) -> ScaleSetModel:
        if not 0 <= capacity <= MAX_CAPACITY:
            raise InvalidInput(f"capacity {capacity} is out of range: a lab scale set has 0 to "
                               f"{MAX_CAPACITY} instances (each is a real QEMU guest)",
                               target="capacity")  # fmt: skip
        async with self._lock(model):
            current = self.get(model.resource_group, model.name)
            return await self._scale_locked(current.model_copy(update={"capacity": capacity}),
                                             capacity)  # fmt: skip

    async def _scale_locked(self, model: ScaleSetModel, capacity: int) -> ScaleSetModel:
        have = await self.instances_now(model)
        if len(have) < capacity:
            missing = capacity - len(have)
            first = model.next_instance_id
            # Saved before anything boots: ids are never reused, even after a crash.
            model = model.model_copy(update={"next_instance_id": first + missing,
                                             "capacity": capacity})  # fmt: skip
            self._save(model)
            await _all([self._create(model, first + i) for i in range(missing)])
        elif len(have) > capacity:
            model = model.model_copy(update={"capacity": capacity})
            self._save(model)
            doomed = sorted(have, key=lambda v: int(v.identity.instance_id or 0))[capacity:]
            await _all([self.vms.delete(v) for v in doomed])
        else:
            model = model.model_copy(update={"capacity": capacity})
            self._save(model)
        return model

    async def _create(self, model: ScaleSetModel, instance_id: int) -> VmView:
        profile = model.profile.model_copy(update={"tags": model.tags,
                                                   "location": model.location})  # fmt: skip
        view = await self.vms.create_from_definition(
            model.subscription_id, model.resource_group, instance_name(model.name, instance_id),
            profile, password_hash=model.admin_password_hash, scale_set=model.name,
            instance_id=str(instance_id),
            computer_name=computer_name(model.computer_name_prefix, instance_id),
            fault_domain=self._fault_domain(model, instance_id),
        )  # fmt: skip
        await self.vms.slots.booted(view.identity.domain_name)
        return view

    def _fault_domain(self, model: ScaleSetModel, instance_id: int) -> FaultDomain | None:
        """Instances go round the set's fault domains (one host each, where there are enough
        hosts), as Azure spreads them over `platformFaultDomainCount`."""
        count = self.fault_domain_count(model)
        key = (model.resource_group.lower(), model.name.lower())
        return FaultDomain(instance_id % count, count, key) if count > 1 else None

    def fault_domain_count(self, model: ScaleSetModel) -> int:
        if model.platform_fault_domain_count is not None:
            return model.platform_fault_domain_count
        hosts = self.vms.hosts
        if hosts is None:
            return 1
        # Which hosts can take guests, not what they hold: no domain listing (an RPC per
        # host), as this runs on the event loop for every instance and instance view.
        return fault_domain_count(None, hosts.loads(infos=[]))

    # -- upgrade --------------------------------------------------------------------------------
    async def upgrade(self, model: ScaleSetModel, instance_ids: InstanceIds) -> None:
        """Azure's manualUpgrade: bring the named instances (all for None) to the set's model."""
        async with self._lock(model):
            await self._upgrade_locked(self.get(model.resource_group, model.name), instance_ids)

    async def _upgrade_locked(self, model: ScaleSetModel, instance_ids: InstanceIds) -> None:
        stale = [v for v in await self.selected_now(model, instance_ids)
                 if not self.latest_model_applied(model, v)]  # fmt: skip
        for view in stale:  # one at a time: the set keeps serving while it rolls
            profile = model.profile.model_copy(update={"tags": model.tags,
                                                       "location": model.location})  # fmt: skip
            await self.vms.upgrade(view, profile, model.admin_password_hash)

    # -- power and delete -----------------------------------------------------------------------
    async def perform(
        self, model: ScaleSetModel, operation: PowerOperation, instance_ids: InstanceIds,
        *, skip_shutdown: bool = False,
    ) -> builtins.list[VmView]:  # fmt: skip
        views = await self.selected_now(model, instance_ids)
        return await _all(
            [self.vms.perform(operation, v, skip_shutdown=skip_shutdown) for v in views]
        )

    async def delete_instances(
        self, model: ScaleSetModel, instance_ids: builtins.list[str]
    ) -> None:
        async with self._lock(model):
            views = await self.selected_now(model, instance_ids)
            await _all([self.vms.delete(v) for v in views])
            current = self.get(model.resource_group, model.name)
            remaining = await self.instances_now(current)
            self._save(current.model_copy(update={"capacity": len(remaining)}))

    async def delete(self, model: ScaleSetModel) -> None:
        async with self._lock(model):
            await _all([self.vms.delete(v) for v in await self.instances_now(model)])
            self._forget(model)


async def _all(work: builtins.list[Awaitable[Any]]) -> builtins.list[Any]:
    """Every instance at once: the boot slots bound the ones that boot."""
    return list(await asyncio.gather(*work))


def _of_set(model: ScaleSetModel, machines: list[VmView]) -> list[VmView]:
    return [
        v for v in machines
        if v.identity.scale_set is not None
        and same(v.identity.resource_group, model.resource_group)
        and same(v.identity.scale_set, model.name)
    ]  # fmt: skip
