"""`lab up` and `lab down`: converge the running lab to a lab definition.

`up` is idempotent: it creates the VMs that are missing, starts the ones that are stopped or
deallocated, and adopts running ones without touching them. VMs are created and started
concurrently; the boot slots (`boot_slots.py`) keep more of them from booting at once than the
host has cores.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from lab.domain.definitions import vm_model
from lab.domain.errors import NotFound
from lab.domain.labfile import (
    LabDefinition,
    ResourceGroupDef,
    ScaleSetDef,
    VirtualMachineDef,
)
from lab.domain.power import PowerState
from lab.domain.storage_account import StorageAccount
from lab.domain.vm import VmView
from lab.services.identity import IdentityService
from lab.services.scale_sets import ScaleSetService
from lab.services.storage_accounts import StorageAccountService
from lab.services.vms import VmService


@dataclass(frozen=True)
class ReconcileResult:
    vm: VmView
    #: created | started | running (adopted, untouched) | deleted | absent
    action: str


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
            self.scale_sets.from_definition, defn.subscription_id, rg.name, defn.location, ss
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
        async with lock:
            # Looked up under the lock: another `up` may have just created or started it.
            listed = await self.vms.list_now()  # off the loop (see VmService.machines_now)
            current = next((v for v in listed if v.identity.key == key), None)
            if current is None:
                view = await self.vms.create_from_definition(
                    defn.subscription_id, rg.name, vm.name, vm_model(vm, defn.location),
                    password=vm.admin_password)  # fmt: skip
                return ReconcileResult(view, "created")
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
