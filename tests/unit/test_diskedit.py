"""Offline edits of an ext4 root filesystem inside a qcow2 disk, without mounts: the breaks
of training scenarios."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from lab.domain.errors import InvalidInput
from lab.storage.diskedit import PARTITION_OFFSET, RootFs, edit_disk
from lab.storage.images.bootdisk import DiskLayout, make_boot_disk


@pytest.fixture
def disk(tmp_path: Path) -> Path:
    """A qcow2 disk like the Debian image's: one ext4 partition at 1 MiB."""
    root = tmp_path / "root"
    (root / "etc").mkdir(parents=True)
    (root / "etc" / "fstab").write_text("UUID=abc / ext4 defaults 0 1\n")
    (root / "etc" / "motd").write_text("hello\n")
    part = tmp_path / "part.img"
    subprocess.run(["mkfs.ext4", "-q", "-F", "-d", str(root), str(part), "32M"], check=True)
    raw = tmp_path / "disk.raw"
    subprocess.run(["truncate", "-s", "40M", str(raw)], check=True)
    subprocess.run(["dd", f"if={part}", f"of={raw}", "bs=1M", f"seek={PARTITION_OFFSET // 2**20}",
                    "conv=notrunc", "status=none"], check=True)  # fmt: skip
    out = tmp_path / "disk.qcow2"
    subprocess.run(["qemu-img", "convert", "-O", "qcow2", str(raw), str(out)], check=True)
    return out


def read_back(disk: Path, tmp_path: Path, path: str) -> tuple[bytes, int]:
    raw = tmp_path / "check.raw"
    subprocess.run(["qemu-img", "convert", "-O", "raw", str(disk), str(raw)], check=True)
    fs = RootFs(raw)
    try:
        return fs.read(path), fs.mode(path)
    finally:
        fs.close()


def test_edits_reach_the_filesystem_and_the_base_is_untouched(disk: Path, tmp_path: Path) -> None:
    out = tmp_path / "broken.qcow2"

    def edit(fs: RootFs) -> None:
        fstab = fs.read("/etc/fstab").replace(b"defaults", b"defualts")
        fs.write("/etc/fstab", fstab)
        fs.write("/etc/new file", b"x", mode=0o600)
        fs.chmod("/etc/motd", 0o000)
        fs.symlink("/etc/link", "/etc/motd")

    edit_disk(disk, out, edit)
    assert read_back(out, tmp_path, "/etc/fstab") == (b"UUID=abc / ext4 defualts 0 1\n", 0o100644)
    assert read_back(out, tmp_path, "/etc/new file") == (b"x", 0o100600)
    assert read_back(out, tmp_path, "/etc/motd")[1] == 0o100000
    assert read_back(disk, tmp_path, "/etc/fstab")[0].endswith(b"defaults 0 1\n")


def test_fill_takes_the_free_space_and_remove_removes(disk: Path, tmp_path: Path) -> None:
    out = tmp_path / "full.qcow2"
    free: list[int] = []

    def edit(fs: RootFs) -> None:
        fs.fill("/var-fill", leave_bytes=0)
        free.append(fs.free_bytes())
        fs.remove("/etc/motd")
        with pytest.raises(InvalidInput):
            fs.remove("/etc/motd")

    edit_disk(disk, out, edit)
    assert free[0] < 1024 * 1024  # under 1 MiB left of 32


@pytest.fixture
def disk_with_esp(tmp_path: Path) -> Path:
    """A disk like today's Debian image: the ext4 root at 1 MiB, then an EFI system partition
    (type ef, FAT) holding GRUB at the removable-media path."""
    root, esp = tmp_path / "root", tmp_path / "esp"
    (root / "boot/efi").mkdir(parents=True)
    (esp / "EFI/BOOT").mkdir(parents=True)
    (esp / "EFI/BOOT/BOOTX64.EFI").write_bytes(b"MZ grub")
    for name in ("boot.img", "core.img"):
        (tmp_path / name).write_bytes(bytes(512))
    (tmp_path / "work").mkdir()
    out = tmp_path / "esp-disk.qcow2"
    make_boot_disk(out, root=root, boot_img=tmp_path / "boot.img",
                   core_img=tmp_path / "core.img", work_dir=tmp_path / "work",
                   layout=DiskLayout.from_seed("ab" * 32, size_mib=48, label="root", esp_mib=16),
                   esp_content=esp)  # fmt: skip
    return out


@pytest.mark.skipif(not all(shutil.which(t) for t in ("mkfs.vfat", "mcopy")),
                    reason="needs dosfstools and mtools")  # fmt: skip
def test_paths_under_boot_efi_are_edited_on_the_efi_system_partition(
    disk_with_esp: Path, tmp_path: Path
) -> None:
    """A generation 2 scenario's break: GRUB's file gone from the ESP, which the root file
    system only mounts; what FAT cannot hold is refused by name."""
    out = tmp_path / "broken.qcow2"
    seen: list[bool] = []

    def edit(fs: RootFs) -> None:
        seen.append(fs.exists("/boot/efi/EFI/BOOT/BOOTX64.EFI"))
        assert fs.read("/boot/efi/EFI/BOOT/BOOTX64.EFI") == b"MZ grub"
        fs.write("/boot/efi/EFI/BOOT/startup.nsh", b"echo hi\r\n")
        fs.remove("/boot/efi/EFI/BOOT/BOOTX64.EFI")
        seen.append(fs.exists("/boot/efi/EFI/BOOT/BOOTX64.EFI"))
        with pytest.raises(InvalidInput, match="EFI system partition"):
            fs.remove("/boot/efi/EFI/BOOT/BOOTX64.EFI")
        with pytest.raises(InvalidInput, match="no modes"):
            fs.chmod("/boot/efi/EFI/BOOT/startup.nsh", 0o755)
        assert fs.exists("/boot/efi"), "the mount point on the root is the ESP's root"

    edit_disk(disk_with_esp, out, edit)
    assert seen == [True, False]
    raw = tmp_path / "check.raw"
    subprocess.run(["qemu-img", "convert", "-O", "raw", str(out), str(raw)], check=True)
    fs = RootFs(raw)
    try:
        assert fs.read("/boot/efi/EFI/BOOT/startup.nsh") == b"echo hi\r\n"
        assert not fs.exists("/boot/efi/EFI/BOOT/BOOTX64.EFI")
    finally:
        fs.close()
