"""The boot disk assembly: partition table, sparse copy, GRUB's sectors, and a whole small disk
made with mkfs.ext4 -d, sfdisk and qemu-img from a directory (no loop devices, no mounts)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from lab.domain.errors import ImageError
from lab.storage.images.bootdisk import (
    BOOT_CODE_SIZE,
    SECTOR,
    DiskLayout,
    copy_sparse,
    make_boot_disk,
    partition_table_script,
    write_boot_code,
)

SEED = "0123456789abcdef" * 4
needs_tools = pytest.mark.skipif(
    not all(shutil.which(t) for t in ("mkfs.ext4", "sfdisk", "qemu-img", "debugfs")),
    reason="needs mkfs.ext4, sfdisk, qemu-img and debugfs",
)


def test_layout_identities_come_from_the_seed() -> None:
    layout = DiskLayout.from_seed(SEED, size_mib=16, label="a-very-long-root-label")
    assert layout == DiskLayout.from_seed(SEED, size_mib=16, label="a-very-long-root-label")
    assert layout.fs_uuid == "01234567-89ab-4def-8123-456789abcdef"
    assert layout.disk_id == "01234567"
    assert layout.label == "a-very-long-root"[:16]
    assert layout.partition_bytes == 15 * 1024 * 1024
    with pytest.raises(ValueError):
        DiskLayout.from_seed("abc", size_mib=16, label="x")


def test_partition_table_script() -> None:
    layout = DiskLayout.from_seed(SEED, size_mib=16, label="root")
    assert partition_table_script(layout) == (
        "label: dos\nlabel-id: 0x01234567\nunit: sectors\n\n"
        "start=2048, size=30720, type=83, bootable\n"
    )


def test_partition_table_script_with_an_efi_system_partition_at_the_end() -> None:
    layout = DiskLayout.from_seed(SEED, size_mib=64, label="root", esp_mib=16)
    assert layout.partition_bytes == 47 << 20
    assert partition_table_script(layout).endswith(
        "start=2048, size=96256, type=83, bootable\nstart=98304, type=ef\n"
    )


def test_copy_sparse_copies_data_at_the_offset_and_keeps_holes(tmp_path: Path) -> None:
    src, dst = tmp_path / "src", tmp_path / "dst"
    with src.open("wb") as f:
        f.truncate(8 << 20)
        f.seek(4096)
        f.write(b"A" * 5000)
        f.seek(6 << 20)
        f.write(b"B" * 100)
    with dst.open("wb") as f:
        f.truncate(16 << 20)
    copied = copy_sparse(src, dst, 1 << 20)
    assert 5100 <= copied < 1 << 20, "only the data extents"
    data = dst.read_bytes()
    assert data[(1 << 20) + 4096 : (1 << 20) + 9096] == b"A" * 5000
    assert data[(7 << 20) : (7 << 20) + 100] == b"B" * 100
    assert data.count(0) == len(data) - 5100
    assert os.stat(dst).st_blocks * 512 < 4 << 20, "the destination stays sparse"


def test_copy_sparse_refuses_what_does_not_fit(tmp_path: Path) -> None:
    src, dst = tmp_path / "src", tmp_path / "dst"
    src.write_bytes(b"x" * 4096)
    dst.write_bytes(b"\0" * 4096)
    with pytest.raises(ImageError, match="does not fit"):
        copy_sparse(src, dst, 512)


def test_boot_code_keeps_the_partition_table(tmp_path: Path) -> None:
    disk = tmp_path / "disk"
    mbr = bytearray(SECTOR * 4)
    mbr[446:510] = b"P" * 64
    mbr[510:512] = b"\x55\xaa"
    disk.write_bytes(bytes(mbr))
    write_boot_code(disk, b"\xeb" + b"b" * (SECTOR - 1), b"core" * 200)
    data = disk.read_bytes()
    assert data[:BOOT_CODE_SIZE] == (b"\xeb" + b"b" * (SECTOR - 1))[:BOOT_CODE_SIZE]
    assert data[BOOT_CODE_SIZE:446] == b"\0" * (446 - BOOT_CODE_SIZE), "disk signature kept"
    assert data[446:512] == b"P" * 64 + b"\x55\xaa"
    assert data[SECTOR : SECTOR + 800] == b"core" * 200


def test_boot_code_that_does_not_fit_is_refused(tmp_path: Path) -> None:
    disk = tmp_path / "disk"
    disk.write_bytes(b"\0" * SECTOR)
    with pytest.raises(ImageError, match="one sector"):
        write_boot_code(disk, b"short", b"")
    with pytest.raises(ImageError, match="before the partition"):
        write_boot_code(disk, b"\0" * SECTOR, b"c" * (2047 * SECTOR + 1))


@needs_tools
def test_make_boot_disk_end_to_end(tmp_path: Path) -> None:
    root = tmp_path / "root"
    (root / "etc").mkdir(parents=True)
    (root / "etc/hostname").write_text("guest\n")
    (root / "boot").mkdir()
    boot_img = tmp_path / "boot.img"
    boot_img.write_bytes(b"\xebBOOT" + bytes(SECTOR - 5))
    core_img = tmp_path / "core.img"
    core_img.write_bytes(b"CORE" * 1000)
    work = tmp_path / "work"
    work.mkdir()
    out = tmp_path / "disk.qcow2"
    layout = DiskLayout.from_seed(SEED, size_mib=16, label="root")
    steps: list[float] = []
    make_boot_disk(out, root=root, boot_img=boot_img, core_img=core_img, work_dir=work,
                   layout=layout, progress=lambda s, f: steps.append(f),
                   fractions=(0.5, 0.9))  # fmt: skip
    assert steps == sorted(steps) and steps[0] >= 0.5 and steps[-1] == 0.9
    assert list(work.iterdir()) == [], "scratch files are removed"

    info = json.loads(subprocess.run(["qemu-img", "info", "--output=json", str(out)],
                                     capture_output=True, check=True).stdout)  # fmt: skip
    assert info["format"] == "qcow2" and info["virtual-size"] == 16 << 20
    raw = tmp_path / "disk.raw"
    subprocess.run(["qemu-img", "convert", "-O", "raw", str(out), str(raw)], check=True)
    dump = json.loads(subprocess.run(["sfdisk", "--json", str(raw)], capture_output=True,
                                     check=True).stdout)["partitiontable"]  # fmt: skip
    assert dump["label"] == "dos" and dump["id"] == "0x01234567"
    [part] = dump["partitions"]
    assert part["start"] == 2048 and part["bootable"] and part["type"] == "83"
    data = raw.read_bytes()
    assert data[:5] == b"\xebBOOT"
    assert data[510:512] == b"\x55\xaa"
    assert data[SECTOR : SECTOR + 4000] == b"CORE" * 1000
    fs = 2048 * SECTOR
    assert data[fs + 1024 + 0x38 : fs + 1024 + 0x3A] == b"\x53\xef", "ext4 at 1 MiB"
    read = subprocess.run(["debugfs", "-R", "cat /etc/hostname", f"{raw}?offset={fs}"],
                          capture_output=True, text=True, check=True)  # fmt: skip
    assert read.stdout == "guest\n"
    header = subprocess.run(["dumpe2fs", "-h", f"{raw}?offset={fs}"], capture_output=True,
                            text=True, check=True).stdout  # fmt: skip
    assert f"Filesystem UUID:          {layout.fs_uuid}" in header
    assert "Filesystem volume name:   root\n" in header


@needs_tools
@pytest.mark.skipif(not all(shutil.which(t) for t in ("mkfs.vfat", "mcopy", "mtype")),
                    reason="needs dosfstools and mtools")  # fmt: skip
def test_a_boot_disk_with_an_efi_system_partition(tmp_path: Path) -> None:
    """One disk for both firmwares: the root partition first, then a FAT partition of type ef
    holding the EFI directory given, labelled ESP (the guest's fstab mounts it by label)."""
    root = tmp_path / "root"
    root.mkdir()
    esp = tmp_path / "esp"
    (esp / "EFI/BOOT").mkdir(parents=True)
    (esp / "EFI/BOOT/BOOTX64.EFI").write_bytes(b"MZ grub" * 100)
    (tmp_path / "boot.img").write_bytes(bytes(SECTOR))
    (tmp_path / "core.img").write_bytes(b"CORE")
    work = tmp_path / "work"
    work.mkdir()
    out = tmp_path / "disk.qcow2"
    layout = DiskLayout.from_seed(SEED, size_mib=48, label="root", esp_mib=16)
    make_boot_disk(out, root=root, boot_img=tmp_path / "boot.img",
                   core_img=tmp_path / "core.img", work_dir=work, layout=layout,
                   esp_content=esp)  # fmt: skip
    raw = tmp_path / "disk.raw"
    subprocess.run(["qemu-img", "convert", "-O", "raw", str(out), str(raw)], check=True)
    dump = json.loads(subprocess.run(["sfdisk", "--json", str(raw)], capture_output=True,
                                     check=True).stdout)["partitiontable"]  # fmt: skip
    first, second = dump["partitions"]
    assert (first["start"], first["size"], first["type"]) == (2048, 63488, "83")
    assert (second["start"], second["size"], second["type"]) == (65536, 32768, "ef")
    image = f"{raw}@@{65536 * SECTOR}"
    env = {**os.environ, "MTOOLS_SKIP_CHECK": "1"}
    read = subprocess.run(["mtype", "-i", image, "::/EFI/BOOT/BOOTX64.EFI"], env=env,
                          capture_output=True, check=True)  # fmt: skip
    assert read.stdout == b"MZ grub" * 100
    label = subprocess.run(["mlabel", "-s", "-i", image, "::"], env=env, capture_output=True,
                           text=True, check=True)  # fmt: skip
    assert "ESP" in label.stdout
    with pytest.raises(ImageError, match="both its size and its content"):
        make_boot_disk(out, root=root, boot_img=tmp_path / "boot.img",
                       core_img=tmp_path / "core.img", work_dir=work, layout=layout)  # fmt: skip
