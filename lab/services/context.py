"""Everything a service needs, built once per daemon from the settings."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from lab.domain.boot_diagnostics import MANAGED_ACCOUNT, BootDiagnosticsBlobs, blobs_for
from lab.domain.vm import VmIdentity, VmModel, lab_id_for
from lab.hypervisor.hosts import HostRouter
from lab.settings import Settings
from lab.storage.blobs import BlobStore
from lab.storage.images import ImageCache


@dataclass
class LabContext:
    settings: Settings
    #: Every host's libvirt, behind one interface (the local host alone, until hosts are added).
    hypervisor: HostRouter
    images: ImageCache
    blobs: BlobStore

    @property
    def lab_id(self) -> str:
        return lab_id_for(self.settings.data_dir)

    @property
    def run_as(self) -> tuple[int, int]:
        return os.getuid(), os.getgid()

    def vm_dir(self, identity: VmIdentity) -> Path:
        return self.settings.disk_dir / identity.domain_name

    def boot_blobs(self, identity: VmIdentity, model: VmModel) -> BootDiagnosticsBlobs:
        account = model.boot_diagnostics.storage_account or MANAGED_ACCOUNT
        return blobs_for(account, identity.name, identity.vm_id)

    def serial_log_path(self, identity: VmIdentity, model: VmModel) -> Path:
        b = self.boot_blobs(identity, model)
        return self.blobs.path(b.account, b.container, b.serial_log)
