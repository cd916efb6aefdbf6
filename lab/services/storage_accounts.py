"""Storage accounts of the lab (from lab files and from the Azure API's PUT), kept in
`<data dir>/state/resources.json`. Account names are unique across the lab, as in Azure."""

from __future__ import annotations

import builtins

from lab.domain.boot_diagnostics import MANAGED_ACCOUNT
from lab.domain.errors import StorageAccountAlreadyTaken
from lab.domain.resource_ids import placed
from lab.domain.storage_account import StorageAccount, managed_account
from lab.domain.vm import VmView
from lab.storage.state import StateFile

_KEY = "storageAccounts"


class StorageAccountService:
    def __init__(self, state: StateFile) -> None:
        self.state = state
        state.section(_KEY, dict[str, StorageAccount], "the storage accounts")

    def list(
        self, subscription: str | None = None, group: str | None = None
    ) -> builtins.list[StorageAccount]:
        stored = self.state.read().get(_KEY, {}).values()
        accounts = [StorageAccount.model_validate(a) for a in stored]
        return [
            a for a in accounts
            if placed(a.subscription_id, a.resource_group, in_subscription=subscription,
                      in_group=group)
        ]  # fmt: skip

    def get(self, name: str) -> StorageAccount | None:
        raw = self.state.read().get(_KEY, {}).get(name.lower())
        return None if raw is None else StorageAccount.model_validate(raw)

    def put(self, account: StorageAccount) -> StorageAccount:
        """Create or update; an account name taken in another resource group is a conflict."""
        current = self.get(account.name)
        if current is not None and (
            current.subscription_id.lower(),
            current.resource_group.lower(),
        ) != (account.subscription_id.lower(), account.resource_group.lower()):
            raise StorageAccountAlreadyTaken(
                f"The storage account named {account.name} is already taken.", target=account.name
            )
        accounts = self.state.read().get(_KEY, {})
        accounts[account.name.lower()] = account.model_dump()
        self.state.update(_KEY, accounts)
        return account

    def for_vm(self, view: VmView) -> StorageAccount | None:
        """The account holding a VM's boot diagnostics (the managed one for storageUri null),
        or None when it does not exist."""
        name = view.model.boot_diagnostics.storage_account
        if name is None or name == MANAGED_ACCOUNT:
            return managed_account(view.identity.subscription_id, view.model.location)
        return self.get(name)
