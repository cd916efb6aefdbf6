"""`lab up` and `lab down`: converge the running lab to a lab definition.

`up` is idempotent: it creates the VMs that are missing, starts the ones that are stopped or
deallocated, and adopts running ones without touching them. VMs are created and started
concurrently, but no more at once than the host has cores, so TCG guests don't starve each
other's boot.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from dataclasses import dataclass

from lab.domain.boot_diagnostics import MANAGED_ACCOUNT
from lab.domain.errors import NotFound
from lab.domain.labfile import (
    BootDiagnosticsDef,
    LabDefinition,
    ResourceGroupDef,
    ScaleSetDef,
    VirtualMachineDef,
    VmProfileDef,
)
from lab.domain.power import PowerState
from lab.domain.scale_set import ScaleSetModel, UpgradeMode
from lab.domain.storage_account import StorageAccount
from lab.domain.vm import BootDiagnosticsModel, VmModel, VmView
from lab.services.identity import IdentityService
from lab.services.scale_sets import ScaleSetService
from lab.services.storage_accounts import StorageAccountService
from lab.services.vms import NewVm, VmService
from lab.storage.images import hash_password


@dataclass(frozen=True)
class ReconcileResult:
    vm: VmView
    #: created | started | running (adopted, untouched) | deleted | absent
    action: str


def boot_diagnostics_model(bd: BootDiagnosticsDef) -> BootDiagnosticsModel:
    account = bd.storage_account or (MANAGED_ACCOUNT if bd.enabled else None)
    return BootDiagnosticsModel(
        enabled=bd.enabled, storage_uri=bd.storage_uri, storage_account=account
    )


def vm_model(defn: LabDefinition, vm: VirtualMachineDef) -> VmModel:
    return model_from_def(vm, defn.location)


def model_from_def(vm: VirtualMachineDef | VmProfileDef, location: str) -> VmModel:
    """The model of a VM (or of a scale set's instances) as a lab file, or an API PUT
    validated the same way, defines it."""
    return VmModel(
        image=vm.image,
        vcpus=vm.vcpus,
        memory_mib=vm.memory_mib,
        os_type=vm.os_type,
        admin_username=vm.admin_username,
        kernel_args=vm.kernel_args,
        boot_diagnostics=boot_diagnostics_model(vm.boot_diagnostics),
        tags=dict(vm.tags) if isinstance(vm, VirtualMachineDef) else {},
        location=location,
        size_name=vm.size_name,
    )


def scale_set_model(
    subscription: str, group: str, location: str, ss: ScaleSetDef,
    password_hash: str | None = None,
) -> ScaleSetModel:  # fmt: skip
    """A scale set as a lab file (or an API PUT) defines it; a new set gets a new unique id
    (an existing one keeps its own: see `ScaleSetService.put`). The set keeps the hash of its
    admin password, made here (`openssl passwd`, a few milliseconds), or the `password_hash`
    it has already (an update that gives no password)."""
    prof = ss.virtual_machine_profile
    return ScaleSetModel(
        subscription_id=subscription, resource_group=group, name=ss.name,
        unique_id=str(uuid.uuid4()), location=location, tags=dict(ss.tags),
        profile=model_from_def(prof, location),
        admin_password_hash=password_hash or hash_password(prof.admin_password),
        capacity=ss.sku.capacity, upgrade_mode=UpgradeMode(ss.upgrade_policy.mode),
        computer_name_prefix=ss.computer_name_prefix,
    )  # fmt: skip


def storage_accounts(defn: LabDefinition) -> list[StorageAccount]:
    return [
        StorageAccount(
            subscription_id=defn.subscription_id, resource_group=rg.name, name=a.name,
            location=defn.location, allow_shared_key_access=a.allow_shared_key_access,
            default_action=a.network_rule_set.default_action, tags=dict(a.tags),
        )
        for rg in defn.resource_groups
        for a in rg.storage_accounts
    ]  # fmt: skip


class Reconciler:
    def __init__(
        self, vms: VmService, storage: StorageAccountService, scale_sets: ScaleSetService,
        identity: IdentityService | None = None,
    ) -> None:  # fmt: skip
        self.vms = vms
        self.storage = storage
        self.scale_sets = scale_sets
        self.identity = identity
        self._slots = asyncio.Semaphore(max(1, os.cpu_count() or 1))
        #: One lock per VM, so concurrent `up` requests never both create the same VM.
        self._vm_locks: dict[tuple[str, str], asyncio.Lock] = {}

    async def up(self, defn: LabDefinition) -> list[ReconcileResult]:
        # Accounts first: the lab file is the desired state, so its settings win.
        for account in storage_accounts(defn):
            self.storage.put(account)
        if self.identity is not None:
            # Off the event loop: each secret is hashed or checked with scrypt.
            await asyncio.to_thread(self._declare_principals, defn)
        tasks = [self._up_one(defn, rg, vm) for rg, vm in defn.virtual_machines()]
        results = list(await asyncio.gather(*tasks))
        # Scale sets after the VMs: their instances share the same cores (and their own
        # bound on concurrent boots).
        for rg, ss in defn.scale_sets():
            results += await self._up_scale_set(defn, rg, ss)
        return results

    def _declare_principals(self, defn: LabDefinition) -> None:
        assert self.identity is not None
        p = defn.principals
        for user in p.users:
            roles = [(a.role, a.scope) for a in user.role_assignments]
            self.identity.declare(kind="User", name=user.username, secret=user.password,
                                  app_id=None, roles=roles)  # fmt: skip
        for sp in p.service_principals:
            roles = [(a.role, a.scope) for a in sp.role_assignments]
            self.identity.declare(kind="ServicePrincipal", name=sp.name, secret=sp.secret,
                                  app_id=sp.app_id, roles=roles)  # fmt: skip

    async def _up_scale_set(
        self, defn: LabDefinition, rg: ResourceGroupDef, ss: ScaleSetDef
    ) -> list[ReconcileResult]:
        desired = await asyncio.to_thread(
            scale_set_model, defn.subscription_id, rg.name, defn.location, ss
        )
        before = {v.identity.instance_id for v in await self.scale_sets.instances_now(desired)}
        model = await self.scale_sets.put(desired)
        results = []
        for view in await self.scale_sets.instances_now(model):
            if view.identity.instance_id not in before:
                results.append(ReconcileResult(view, "created"))
            elif view.power_state is PowerState.RUNNING:
                results.append(ReconcileResult(view, "running"))
            else:
                results.append(ReconcileResult(await self.vms.start(view), "started"))
        return results

    async def _up_one(
        self,
        defn: LabDefinition,
        rg: ResourceGroupDef,
        vm: VirtualMachineDef,
    ) -> ReconcileResult:
        key = (rg.name.lower(), vm.name.lower())
        lock = self._vm_locks.setdefault(key, asyncio.Lock())
        async with lock, self._slots:
            # Looked up under the lock: another `up` may have just created or started it.
            listed = await self.vms.list_now()  # off the loop (see VmService.machines_now)
            current = next((v for v in listed if v.identity.key == key), None)
            if current is None:
                password_hash = await asyncio.to_thread(hash_password, vm.admin_password)
                new = NewVm(defn.subscription_id, rg.name, vm.name, vm_model(defn, vm),
                            password_hash)  # fmt: skip
                return ReconcileResult(await self.vms.create(new), "created")
            if current.power_state is PowerState.RUNNING:
                return ReconcileResult(current, "running")
            return ReconcileResult(await self.vms.start(current), "started")

    async def down(self, defn: LabDefinition) -> list[ReconcileResult]:
        existing = {v.identity.key: v for v in await self.vms.list_now()}
        results = []
        for rg, vm in defn.virtual_machines():
            current = existing.get((rg.name.lower(), vm.name.lower()))
            if current is None:
                continue
            await self.vms.delete(current)
            results.append(ReconcileResult(current, "deleted"))
        for rg, ss in defn.scale_sets():
            try:
                model = self.scale_sets.get(rg.name, ss.name)
            except NotFound:
                continue
            instances = await self.scale_sets.instances_now(model)
            await self.scale_sets.delete(model)
            results += [ReconcileResult(v, "deleted") for v in instances]
        return results
