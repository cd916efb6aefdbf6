"""A storage account as the lab keeps it: where boot-diagnostics blobs live, and the two
settings that decide whether the serial console may read them (firewall, shared-key access)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict

from lab.domain.boot_diagnostics import MANAGED_ACCOUNT
from lab.domain.resource_ids import storage_account_id


class StorageAccount(BaseModel):
    model_config = ConfigDict(frozen=True)

    subscription_id: str
    resource_group: str
    name: str
    location: str = "westeurope"
    allow_shared_key_access: bool = True
    #: The firewall's default action: "Allow", or "Deny" (requests from outside refused).
    default_action: str = "Allow"
    tags: dict[str, str] = {}
    #: How often each access key (key1, key2) was regenerated: its value derives from this.
    key_generations: dict[str, int] = {}

    @property
    def resource_id(self) -> str:
        return storage_account_id(self.subscription_id, self.resource_group, self.name)

    @property
    def firewall_on(self) -> bool:
        return self.default_action == "Deny"


def managed_account(subscription_id: str, location: str) -> StorageAccount:
    """The account behind managed boot diagnostics (storageUri null): always reachable."""
    return StorageAccount(
        subscription_id=subscription_id, resource_group="lab-managed", name=MANAGED_ACCOUNT,
        location=location,
    )  # fmt: skip
