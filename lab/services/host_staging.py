"""A guest's files where its host can use them: the paths its domain XML names, and the copies
a remote host needs.

On the local host a guest's files are where the lab makes them: the image cache, the VM's dir,
the serial log in the blob store. On a remote host they are in the host's data dir
(`HostFiles`, one flat directory): the image's files once per host, named by the image's
content hash (copied when first needed, with progress in the daemon's log); the VM's per-VM
files (its config initrd or config disk, its disk overlay) made here and copied; and the serial
log, which the host's virtlogd writes there and the lab copies back by offset (`log_mirror.py`)
to the same local path a local VM's log has, so the console, boot diagnostics and boot slots
read every VM's log the same way.
"""

from __future__ import annotations

import logging
import shutil
from dataclasses import dataclass
from pathlib import Path

from lab.domain.hosts import LOCAL
from lab.domain.vm import VmIdentity, VmModel
from lab.hypervisor.host_files import HostFiles
from lab.services.context import LabContext
from lab.storage.disks import create_overlay_on, rebase_overlay
from lab.storage.images import CONFIG_DISK_FILE, ImageManifest

log = logging.getLogger(__name__)

INITRD = "initrd.img"
DISK = "disk.qcow2"
SERIAL_LOG = "serial.log"


@dataclass(frozen=True)
class GuestPaths:
    """Where the guest's files are, as its host sees them."""

    kernel: str
    initrd: str
    disk: str | None
    config_disk: str | None
    serial_log: str


def image_file(image: ImageManifest, name: str) -> str:
    return f"image-{image.content_hash[:16]}-{name}"


def vm_file(identity: VmIdentity, name: str) -> str:
    return f"{identity.domain_name}--{name}"


class HostStaging:
    def __init__(self, ctx: LabContext) -> None:
        self.ctx = ctx

    def files(self, host: str) -> HostFiles | None:
        return None if host == LOCAL else self.ctx.hypervisor.files(host)

    def paths(self, identity: VmIdentity, model: VmModel, host: str) -> GuestPaths:
        image = self.ctx.images.get(model.image)
        disk_boot = image.boot == "disk"
        files = self.files(host)
        if files is None:
            image_dir = self.ctx.images.path(image)
            vm_dir = self.ctx.vm_dir(identity)
            return GuestPaths(
                kernel="" if disk_boot else str(image_dir / image.kernel),
                initrd="" if disk_boot else str(vm_dir / INITRD),
                disk=str(vm_dir / DISK) if image.disk else None,
                config_disk=str(vm_dir / CONFIG_DISK_FILE) if disk_boot else None,
                serial_log=str(self.ctx.serial_log_path(identity, model)),
            )
        return GuestPaths(
            kernel="" if disk_boot else files.path(image_file(image, image.kernel)),
            initrd="" if disk_boot else files.path(vm_file(identity, INITRD)),
            disk=files.path(vm_file(identity, DISK)) if image.disk else None,
            config_disk=files.path(vm_file(identity, CONFIG_DISK_FILE)) if disk_boot else None,
            serial_log=files.path(vm_file(identity, SERIAL_LOG)),
        )

    def stage(self, identity: VmIdentity, model: VmModel, host: str, *,
              fresh_disk: bool = False) -> None:  # fmt: skip
        """Copy what the guest needs to a remote host (nothing for the local host): the
        image's files if the host lacks them, the VM's config, and its disk overlay (made here
        on the host's copy of the image) unless it is there and `fresh_disk` is not asked."""
        files = self.files(host)
        if files is None:
            return
        image = self.ctx.images.get(model.image)
        image_dir = self.ctx.images.path(image)
        vm_dir = self.ctx.vm_dir(identity)
        self.stage_image(image, files)
        config = CONFIG_DISK_FILE if image.boot == "disk" else INITRD
        self._copy(files, vm_dir / config, vm_file(identity, config),
                   what=f"the {config} of {identity.name}", if_missing=not fresh_disk)  # fmt: skip
        if image.disk:
            overlay = vm_dir / f"{host}-{DISK}"
            if fresh_disk or files.size(vm_file(identity, DISK)) is None:
                backing = files.path(image_file(image, image.disk))
                create_overlay_on(image_dir / image.disk, backing, overlay)
                self._copy(files, overlay, vm_file(identity, DISK),
                           what=f"a fresh disk overlay for {identity.name}")  # fmt: skip

    def move_disk(self, identity: VmIdentity, model: VmModel, source: str, target: str) -> None:
        """Take the VM's disk overlay (its writes) from `source` to `target`, re-pointed at
        the target's copy of the image; the other files follow with `stage`."""
        image = self.ctx.images.get(model.image)
        if not image.disk:
            return
        vm_dir = self.ctx.vm_dir(identity)
        local = vm_dir / DISK
        moving = vm_dir / f"moving-{DISK}"
        src = self.files(source)
        if src is None:
            shutil.copyfile(local, moving)
        else:
            name = vm_file(identity, DISK)
            log.info("copying the disk of %s from host '%s'", identity.name, source)
            with moving.open("wb") as f:
                offset = 0
                while chunk := src.read(name, offset, 4 * 2**20):
                    f.write(chunk)
                    offset += len(chunk)
        dst = self.files(target)
        base = (str(self.ctx.images.path(image) / image.disk) if dst is None
                else dst.path(image_file(image, image.disk)))  # fmt: skip
        if dst is not None:
            self.stage_image(image, dst)
        rebase_overlay(moving, base)
        if dst is None:
            moving.replace(local)
        else:
            self._copy(dst, moving, vm_file(identity, DISK), what=f"the disk of {identity.name}")
            moving.unlink()

    def stage_image(self, image: ImageManifest, files: HostFiles) -> None:
        image_dir = self.ctx.images.path(image)
        for name in (image.kernel if image.boot == "kernel" else "", image.disk):
            if name:
                self._copy(files, image_dir / name, image_file(image, name), if_missing=True,
                           what=f"image {image.name} ({name})")  # fmt: skip

    def remove(self, identity: VmIdentity, host: str) -> None:
        """Delete the VM's files on a remote host (its serial log stays, as the blob does)."""
        files = self.files(host)
        if files is None:
            return
        for name in (INITRD, CONFIG_DISK_FILE, DISK):
            files.delete(vm_file(identity, name))

    def _copy(self, files: HostFiles, local: Path, name: str, *, what: str,
              if_missing: bool = False) -> None:  # fmt: skip
        size = local.stat().st_size
        if if_missing and files.size(name) == size:
            return
        log.info("copying %s to host '%s': %s, %.1f MiB", what, files.host, name, size / 2**20)
        last = [0]

        def progress(sent: int, total: int) -> None:
            # A line per 64 MiB: a Debian image is a few hundred MiB.
            if sent - last[0] >= 64 * 2**20 or sent == total:
                last[0] = sent
                log.info("  %s to '%s': %.0f%% (%.1f of %.1f MiB)", name, files.host,
                         100 * sent / max(1, total), sent / 2**20, total / 2**20)  # fmt: skip

        files.upload(local, name, progress=progress)
