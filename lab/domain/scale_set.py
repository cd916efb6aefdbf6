"""Virtual machine scale sets: a model (what every instance should be, at a version), a
capacity, an upgrade policy, and Azure's naming of instances.

Instances get ids 0, 1, 2, ... in order of creation, never reused; an instance is named
`<set>_<id>` and its guest's host name is the set's computer-name prefix plus the id as six
base-36 digits (`web000000`, ..., `web00000A`), as in Azure.
"""

from __future__ import annotations

from collections.abc import Iterable
from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field, field_validator

from lab.domain.errors import NotFound
from lab.domain.passwords import is_password_hash
from lab.domain.resource_ids import SCALE_SETS, not_found_message, scale_set_id
from lab.domain.vm import VmModel, VmView

_BASE36 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ"
#: The most instances a lab scale set may have (each is a real QEMU guest).
MAX_CAPACITY = 20


class UpgradeMode(StrEnum):
    #: Instances keep their model until upgraded (manualUpgrade, `lab vmss update-instances`).
    MANUAL = "Manual"
    #: The lab rolls every instance to a new model at once, one instance at a time.
    AUTOMATIC = "Automatic"


class ScaleSetModel(BaseModel):
    """A scale set as the lab keeps it (in the state file, mode 0600). New instances need the
    admin password: the set keeps only its SHA-512 crypt hash, which the guests take as it is
    (`lab.domain.passwords`)."""

    model_config = ConfigDict(frozen=True)

    subscription_id: str
    resource_group: str
    name: str
    unique_id: str
    location: str = "westeurope"
    tags: dict[str, str] = {}
    #: What each instance runs; its `model_version` is the set's current model version.
    profile: VmModel
    #: `$6$...`; never the plain text (state files from before hold `admin_password`: the
    #: scale-set service hashes it when it loads them).
    admin_password_hash: str = Field(repr=False)
    capacity: int
    upgrade_mode: UpgradeMode = UpgradeMode.MANUAL
    computer_name_prefix: str
    #: The id the next instance gets (ids are never reused).
    next_instance_id: int = 0
    #: Azure's `platformFaultDomainCount` (instance i is in fault domain i % count); None: one
    #: per usable host, at most 5, counted when instances are placed.
    platform_fault_domain_count: int | None = None

    @field_validator("admin_password_hash")
    @classmethod
    def _check_hash(cls, value: str) -> str:
        if not is_password_hash(value):
            # Never quote the value: it may be a password put here by mistake.
            raise ValueError("must be a SHA-512 crypt hash ($6$<salt>$<hash>)")
        return value

    @property
    def model_version(self) -> int:
        return self.profile.model_version

    @property
    def resource_id(self) -> str:
        return scale_set_id(self.subscription_id, self.resource_group, self.name)

    @property
    def key(self) -> tuple[str, str]:
        return (self.resource_group.lower(), self.name.lower())


def instance_name(scale_set: str, instance_id: int | str) -> str:
    return f"{scale_set}_{instance_id}"


def computer_name(prefix: str, instance_id: int) -> str:
    digits = ""
    n = instance_id
    for _ in range(6):
        n, r = divmod(n, 36)
        digits = _BASE36[r] + digits
    return f"{prefix}{digits}"


def profile_changed(old: VmModel, new: VmModel) -> bool:
    """Whether a new profile is a new model version (anything but the version itself)."""
    return old.model_copy(update={"model_version": 0}) != new.model_copy(
        update={"model_version": 0}
    )


def pick_instance(model: ScaleSetModel, instances: Iterable[VmView], instance_id: str) -> VmView:
    for view in instances:
        if view.identity.instance_id == str(instance_id):
            return view
    kind = f"{SCALE_SETS}/{model.name}/virtualMachines"
    raise NotFound(not_found_message(kind, str(instance_id), model.resource_group),
                   target=str(instance_id))  # fmt: skip
