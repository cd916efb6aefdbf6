"""A disk that boots through BIOS and UEFI from a root directory, without loop devices or mounts.

The steps (measured to work on a host without udev, where ``losetup -P`` makes no partition
nodes):

1. ``mkfs.ext4 -d ROOT`` writes the root directory into a partition image (a plain file);
2. ``sfdisk`` writes a DOS partition table into a plain disk file: the root partition at
   sector 2048 (bootable), and, when the layout has one, an EFI system partition (type ``ef``)
   at the end of the disk;
3. the partition image is copied into the disk file at 1 MiB (only its data: both are sparse);
   the EFI system partition is a FAT file system (``mkfs.vfat``) holding GRUB's EFI image,
   copied in with ``mcopy`` (mtools), and then into its place on the disk. OVMF takes an MBR
   partition of type ``ef`` as an ESP, so one disk boots either firmware;
4. GRUB's ``boot.img`` goes into the first 440 bytes of sector 0 (the partition table and the
   disk signature after it stay) and ``core.img`` from sector 1 on, the gap before the partition;
   the defaults compiled into both already point at those sectors;
5. ``qemu-img convert`` makes the qcow2 image the lab's VM overlays stand on.
"""

from __future__ import annotations

import os
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from lab.domain.errors import ImageError
from lab.storage.images.builder import ProgressFn, no_progress
from lab.storage.images.commands import run

SECTOR: Final = 512
#: The partition starts at 1 MiB, as every partitioning tool has done since 2009.
PARTITION_START_SECTOR: Final = 2048
#: boot.img's bytes that may go into sector 0: 440, then the disk signature and partition table.
BOOT_CODE_SIZE: Final = 440
#: The EFI system partition's file system label (the guest's fstab mounts it by label).
ESP_LABEL: Final = "ESP"
#: Fixed timestamp of the file system's own metadata (2024-01-01), as in the tiny image.
EPOCH: Final = 1704067200


@dataclass(frozen=True)
class DiskLayout:
    """What makes a boot disk's bytes: sizes and the identities derived from the content hash."""

    size_mib: int
    fs_uuid: str
    hash_seed: str
    #: The DOS disk identifier (``label-id``), 8 hex digits.
    disk_id: str
    label: str
    #: The EFI system partition's size at the end of the disk; 0: none (a BIOS-only disk).
    esp_mib: int = 0

    @classmethod
    def from_seed(cls, seed: str, *, size_mib: int, label: str, esp_mib: int = 0) -> DiskLayout:
        """A layout whose UUIDs come from `seed` (a content hash of 64 hex digits): the same
        image content always gets the same identities."""
        if len(seed) < 64:
            raise ValueError("the seed must be a sha256 hex digest")
        return cls(
            size_mib=size_mib,
            fs_uuid=str(uuid.UUID(seed[:32], version=4)),
            hash_seed=str(uuid.UUID(seed[32:64], version=4)),
            disk_id=seed[:8],
            label=label[:16],
            esp_mib=esp_mib,
        )

    @property
    def partition_bytes(self) -> int:
        return (self.size_mib - self.esp_mib) * 1024 * 1024 - PARTITION_START_SECTOR * SECTOR

    @property
    def esp_start_sector(self) -> int:
        return (self.size_mib - self.esp_mib) * 1024 * 1024 // SECTOR


def partition_table_script(layout: DiskLayout) -> str:
    """The ``sfdisk`` script: a DOS label, the bootable Linux partition from 1 MiB, then the EFI
    system partition (if any) to the end."""
    root_sectors = layout.partition_bytes // SECTOR
    esp = f"start={layout.esp_start_sector}, type=ef\n" if layout.esp_mib else ""
    return (
        "label: dos\n"
        f"label-id: 0x{layout.disk_id}\n"
        "unit: sectors\n"
        "\n"
        f"start={PARTITION_START_SECTOR}, size={root_sectors}, type=83, bootable\n"
        f"{esp}"
    )


def copy_sparse(src: Path, dst: Path, offset: int) -> int:
    """Copy `src` into `dst` at byte `offset`, skipping the holes of `src`; the bytes copied.

    `dst` must already be large enough (a sparse file of the disk's size): only the data
    extents are written, so a 2 GiB partition holding 400 MB costs 400 MB of writes.
    """
    copied = 0
    with src.open("rb") as fin, dst.open("r+b") as fout:
        size = os.fstat(fin.fileno()).st_size
        if offset + size > os.fstat(fout.fileno()).st_size:
            raise ImageError(f"{src.name} does not fit into {dst.name} at offset {offset}")
        pos = 0
        while pos < size:
            try:
                start = os.lseek(fin.fileno(), pos, os.SEEK_DATA)
            except OSError:  # ENXIO: no data after pos
                break
            end = os.lseek(fin.fileno(), start, os.SEEK_HOLE)
            left = end - start
            while left > 0:
                n = os.copy_file_range(
                    fin.fileno(), fout.fileno(), left, offset_src=start, offset_dst=offset + start
                )
                if n == 0:
                    raise ImageError(f"short copy from {src.name} at {start}")
                start += n
                left -= n
                copied += n
            pos = end
    return copied


def write_boot_code(disk: Path, boot_img: bytes, core_img: bytes) -> None:
    """GRUB's boot sector code into sector 0 (first 440 bytes) and core.img from sector 1."""
    if len(boot_img) != SECTOR:
        raise ImageError(f"boot.img is {len(boot_img)} bytes, not one sector")
    room = (PARTITION_START_SECTOR - 1) * SECTOR
    if len(core_img) > room:
        raise ImageError(f"core.img ({len(core_img)} bytes) does not fit before the partition")
    with disk.open("r+b") as f:
        f.seek(0)
        f.write(boot_img[:BOOT_CODE_SIZE])
        f.seek(SECTOR)
        f.write(core_img)


def make_root_filesystem(image: Path, root: Path, layout: DiskLayout) -> None:
    """An ext4 partition image holding the directory `root` (``mkfs.ext4 -d``)."""
    with image.open("wb") as f:
        f.truncate(layout.partition_bytes)
    # Inode tables and journal are initialised now, not by the guest in its first minutes.
    options = f"hash_seed={layout.hash_seed},lazy_itable_init=0,lazy_journal_init=0"
    argv: list[str | Path] = ["mkfs.ext4", "-q", "-F", "-d", root, "-L", layout.label]
    run(
        [*argv, "-U", layout.fs_uuid, "-E", options, image],
        env={"E2FSPROGS_FAKE_TIME": str(EPOCH), "SOURCE_DATE_EPOCH": str(EPOCH)},
    )


def make_esp(image: Path, content: Path, layout: DiskLayout) -> None:
    """A FAT partition image labelled `ESP_LABEL` holding the directory `content` (its ``EFI/``)."""
    image.unlink(missing_ok=True)
    run(["mkfs.vfat", "-C", "-n", ESP_LABEL, "-i", layout.disk_id, image,
         str(layout.esp_mib * 1024)])  # fmt: skip
    entries = sorted(content.iterdir())
    if entries:
        run(["mcopy", "-s", "-m", "-i", image, *entries, "::/"], env={"MTOOLS_SKIP_CHECK": "1"})


def make_boot_disk(
    out: Path,
    *,
    root: Path,
    boot_img: Path,
    core_img: Path,
    work_dir: Path,
    layout: DiskLayout,
    esp_content: Path | None = None,
    progress: ProgressFn = no_progress,
    fractions: tuple[float, float] = (0.0, 1.0),
) -> None:
    """Write `out`, a qcow2 disk with the directory `root` on its first partition, booting GRUB.

    `boot_img` and `core_img` are GRUB's files (taken from the guest, so they match its
    modules). `esp_content` fills the EFI system partition, which the layout must have.
    `fractions` is the part of the overall progress these steps cover.
    """
    if (esp_content is None) != (layout.esp_mib == 0):
        raise ImageError("an EFI system partition needs both its size and its content")
    lo, hi = fractions

    def step(text: str, part: float) -> None:
        progress(text, lo + (hi - lo) * part)

    boot, core = boot_img.read_bytes(), core_img.read_bytes()
    partition = work_dir / "root.ext4"
    raw = work_dir / "disk.raw"
    step(f"Writing the root file system (mkfs.ext4 -d, {layout.size_mib} MiB disk)", 0.0)
    make_root_filesystem(partition, root, layout)
    step("Partitioning the disk (sfdisk)", 0.45)
    with raw.open("wb") as f:
        f.truncate(layout.size_mib * 1024 * 1024)
    run(
        ["sfdisk", "--quiet", "--no-reread", "--no-tell-kernel", raw],
        input=partition_table_script(layout).encode(),
    )
    step("Copying the root file system into the partition", 0.5)
    copy_sparse(partition, raw, PARTITION_START_SECTOR * SECTOR)
    partition.unlink()
    if esp_content is not None:
        step("Writing the EFI system partition (mkfs.vfat, mcopy)", 0.55)
        esp = work_dir / "esp.fat"
        make_esp(esp, esp_content, layout)
        copy_sparse(esp, raw, layout.esp_start_sector * SECTOR)
        esp.unlink()
    step("Writing GRUB's boot.img and core.img", 0.6)
    write_boot_code(raw, boot, core)
    step("Converting to qcow2", 0.65)
    run(["qemu-img", "convert", "-q", "-f", "raw", "-O", "qcow2", raw, out])
    raw.unlink()
    step("Disk ready", 1.0)
