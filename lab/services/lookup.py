"""Finding what a request names: VMs, scale sets, their instances and storage accounts.

Two ways of naming, one place each:
- Azure's: subscription, resource group and name, all case-insensitive (`..._at`); what is
  not there is ARM's 404 with ARM's message.
- The lab's CLI and daemon API: a name, its resource group only where the name is in
  several (`vm`, `scale_set`, `target`).
"""

from __future__ import annotations

import builtins
from collections.abc import Iterable
from typing import TYPE_CHECKING, TypeVar

from lab.domain.errors import InvalidInput, NotFound
from lab.domain.resource_ids import (
    SCALE_SETS,
    STORAGE_ACCOUNTS,
    VMS,
    not_found_message,
    placed,
    same,
)
from lab.domain.scale_set import ScaleSetModel
from lab.domain.storage_account import StorageAccount
from lab.domain.vm import VmView

if TYPE_CHECKING:
    from lab.services.scale_sets import ScaleSetService
    from lab.services.storage_accounts import StorageAccountService
    from lab.services.vms import VmService


T = TypeVar("T")


def pick_vm(views: Iterable[VmView], subscription: str, group: str, name: str) -> VmView:
    """The VM named so in Azure's way, among `views`."""
    for view in views:
        ident = view.identity
        where = placed(ident.subscription_id, ident.resource_group,
                       in_subscription=subscription, in_group=group)  # fmt: skip
        if where and same(ident.name, name):
            return view
    raise NotFound(not_found_message(VMS, name, group), target=name)


def _named(views: Iterable[VmView], name: str,
           group: str | None) -> builtins.list[tuple[str, VmView]]:  # fmt: skip
    """The views of that name (in that group, if one is given), each with its group."""
    return [(v.identity.resource_group, v) for v in views if same(v.identity.name, name)
            and (group is None or same(v.identity.resource_group, group))]  # fmt: skip


def _one(matches: builtins.list[tuple[str, T]], kind: str, name: str) -> T:
    """The one match of a lab name; several (in different groups) are refused with which."""
    if len(matches) > 1:
        groups = ", ".join(group for group, _ in matches)
        raise InvalidInput(f"{kind} '{name}' exists in several resource groups ({groups}); "
                           "name one with --resource-group.", target=name)  # fmt: skip
    return matches[0][1]


class Lookup:
    def __init__(self, vms: VmService, scale_sets: ScaleSetService,
                 storage: StorageAccountService) -> None:  # fmt: skip
        self.vms = vms
        self.scale_sets = scale_sets
        self.storage = storage

    # -- Azure's names ---------------------------------------------------------------------------
    def vm_at(self, subscription: str, group: str, name: str) -> VmView:
        return pick_vm(self.vms.list(), subscription, group, name)

    async def vm_at_now(self, subscription: str, group: str, name: str) -> VmView:
        """`vm_at` for a coroutine (see `VmService.machines_now`)."""
        return pick_vm(await self.vms.list_now(), subscription, group, name)

    async def by_resource_id_now(self, resource_id: str) -> VmView:
        """A VM or an instance by its Azure resource id (any case), for a coroutine."""
        for view in await self.vms.machines_now():
            if same(view.identity.resource_id, resource_id):
                return view
        raise NotFound(f"The Resource '{resource_id}' was not found.", target=resource_id)

    def scale_set_at(self, subscription: str, group: str, name: str) -> ScaleSetModel:
        model = self.scale_sets.get(group, name)
        if not same(model.subscription_id, subscription):
            raise NotFound(not_found_message(SCALE_SETS, name, group), target=name)
        return model

    def storage_account_at(self, subscription: str, group: str | None,
                           name: str) -> StorageAccount:  # fmt: skip
        """An account by name (names are global in Azure), in the subscription (and group)."""
        account = self.storage.get(name)
        if account is None or not placed(account.subscription_id, account.resource_group,
                                         in_subscription=subscription, in_group=group):  # fmt: skip
            raise NotFound(not_found_message(STORAGE_ACCOUNTS, name, str(group)), target=name)
        return account

    # -- the lab's names -------------------------------------------------------------------------
    def vm(self, name: str, group: str | None = None) -> VmView:
        """A VM by its name (scale-set instances are not VMs here; see `target`)."""
        matches = _named(self.vms.list(), name, group)
        if not matches:
            where = f" in resource group '{group}'" if group else ""
            raise NotFound(f"The Resource '{VMS}/{name}'{where} was not found. `lab ls` lists "
                           "the lab's VMs.", target=name)  # fmt: skip
        return _one(matches, "VM name", name)

    def scale_set(self, name: str, group: str | None = None) -> ScaleSetModel:
        """A scale set by its name, in any resource group unless one is given."""
        matches = [(m.resource_group, m) for m in self.scale_sets.list(group=group)
                   if same(m.name, name)]  # fmt: skip
        if not matches:
            raise NotFound(f"No scale set '{name}'" + (f" in resource group '{group}'"
                           if group else "") + "; `lab vmss ls` lists them.",
                           target=name)  # fmt: skip
        return _one(matches, "Scale set", name)

    def target(self, name: str, group: str | None, instance_id: str | None) -> VmView:
        """The target of a per-VM route: a VM, or with `instance_id` an instance of the scale
        set `name` (an instance's own name, `<set>_<id>`, works too). A scale set's name
        without an instance id is refused with how to pick one."""
        if instance_id is not None:
            return self.scale_sets.instance(self.scale_set(name, group), instance_id)
        try:
            return self.vm(name, group)
        except NotFound as not_a_vm:
            named = _named((v for v in self.vms.machines() if v.identity.is_instance),
                           name, group)  # fmt: skip
            if named:
                return _one(named, "Instance name", name)
            try:
                model = self.scale_set(name, group)
            except NotFound:
                raise not_a_vm from None
            ids = ", ".join(v.identity.instance_id or "" for v in self.scale_sets.instances(model))
            raise InvalidInput(
                f"'{name}' is a scale set; add --instance-id N to pick an instance "
                f"(instances: {ids or 'none'})", target="instanceId",
            ) from None  # fmt: skip
