"""A VM's identity and model as the lab keeps it (in the libvirt domain's metadata).

`VmModel` is what the lab definition (or an API PUT) asked for, minus the admin password,
which only lives in the VM's config initrd. `VmIdentity` is what makes a libvirt domain one of
this lab's VMs; both round-trip through the domain `<metadata>` so the lab can rebuild its
whole view from libvirt after a restart.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict

from lab.domain.boot_messages import BootMessages
from lab.domain.guest_health import HangWarning
from lab.domain.power import PowerState
from lab.domain.resource_ids import instance_id, vm_id

#: Azure's VM generation: V1 boots through a BIOS (SeaBIOS), V2 through UEFI (OVMF).
HyperVGeneration = Literal["V1", "V2"]

#: XML namespace of the lab's domain metadata.
METADATA_NS = "https://serial-console-lab.dev/xmlns/vm/1"
#: Prefix of every libvirt domain the lab creates; a lab id follows.
DOMAIN_PREFIX = "scl-"


class BootDiagnosticsModel(BaseModel):
    model_config = ConfigDict(frozen=True)

    enabled: bool = False
    #: None means managed storage (a lab-managed account).
    storage_uri: str | None = None
    #: The storage account holding the blobs (derived from storage_uri, or the managed one).
    storage_account: str | None = None


class VmModel(BaseModel):
    """What a VM is meant to be: the desired state the lab converges to."""

    model_config = ConfigDict(frozen=True)

    image: str
    vcpus: int
    memory_mib: int
    os_type: str = "Linux"
    admin_username: str
    kernel_args: str = ""
    #: `lab.domain.boot_messages`: what the guest prints on the serial console as it boots.
    boot_messages: BootMessages = "normal"
    #: Generation 2 (UEFI, OVMF) or 1 (BIOS, SeaBIOS), as the instance view reports it.
    hyper_v_generation: HyperVGeneration = "V1"
    boot_diagnostics: BootDiagnosticsModel = BootDiagnosticsModel()
    tags: dict[str, str] = {}
    location: str = "westeurope"
    size_name: str | None = None
    #: For a scale-set instance: the version of the set's model it runs.
    model_version: int = 0
    #: The host the VM must run on (the lab file's `host:`); None: the lab places it.
    host: str | None = None


@dataclass(frozen=True)
class VmIdentity:
    lab_id: str
    subscription_id: str
    resource_group: str
    #: A VM's name; for a scale-set instance, Azure's instance name `<scale set>_<instanceId>`.
    name: str
    vm_id: str
    #: Set for a scale-set instance: the set's name and the instance id ("0", "1", ...).
    scale_set: str | None = None
    instance_id: str | None = None
    #: The guest's host name: the VM name, or `<prefix>000000`-style for an instance.
    computer_name: str | None = None

    @property
    def is_instance(self) -> bool:
        return self.scale_set is not None

    @property
    def host_name(self) -> str:
        return self.computer_name or self.name

    @property
    def domain_name(self) -> str:
        if self.scale_set is not None and self.instance_id is not None:
            return instance_domain_name(
                self.lab_id, self.resource_group, self.scale_set, self.instance_id
            )
        return domain_name(self.lab_id, self.resource_group, self.name)

    @property
    def key(self) -> tuple[str, str]:
        """Azure names are case-insensitive: (resource group, VM name), lowercased."""
        return (self.resource_group.lower(), self.name.lower())

    @property
    def resource_id(self) -> str:
        if self.scale_set is not None:
            return instance_id(self.subscription_id, self.resource_group, self.scale_set,
                               self.instance_id or "")  # fmt: skip
        return vm_id(self.subscription_id, self.resource_group, self.name)


@dataclass
class VmView:
    """A VM as the lab sees it right now: identity, model and live power state."""

    identity: VmIdentity
    model: VmModel
    power_state: PowerState
    deallocated: bool = False
    #: Why the VM last stopped when it was not asked to (e.g. "crashed", "QEMU exited").
    stop_reason: str | None = None
    #: A running guest whose kernel says it is hung (see `guest_health`).
    hang: HangWarning | None = None
    extra: dict[str, str] = field(default_factory=dict)
    #: The host the VM is on (`lab.domain.hosts.LOCAL` for the daemon's own libvirtd).
    host: str = "local"


def lab_id_for(data_dir: Path) -> str:
    """A short stable id per data dir, so two labs never see each other's domains."""
    return hashlib.sha256(str(data_dir.resolve()).encode()).hexdigest()[:8]


def domain_name(lab_id: str, resource_group: str, vm_name: str) -> str:
    # '+' is allowed in neither resource group nor VM names, so the name is unambiguous;
    # lowercase because Azure names are case-insensitive.
    return f"{DOMAIN_PREFIX}{lab_id}+{resource_group.lower()}+{vm_name.lower()}"


def instance_domain_name(lab_id: str, resource_group: str, scale_set: str, instance: str) -> str:
    # A fourth '+'-separated part: no VM's domain name has one, so the two never collide.
    return f"{DOMAIN_PREFIX}{lab_id}+{resource_group.lower()}+{scale_set.lower()}+{instance}"
