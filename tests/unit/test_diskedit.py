"""Offline edits of an ext4 root filesystem inside a qcow2 disk, without mounts: the breaks
of training scenarios."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from lab.domain.errors import InvalidInput
from lab.storage.diskedit import PARTITION_OFFSET, RootFs, edit_disk


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
