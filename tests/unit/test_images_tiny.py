"""The tiny builder's pieces that run without apt: recipe, initramfs layout, compression, disk."""

from __future__ import annotations

import gzip
import json
import shutil
import subprocess
from pathlib import Path

import pytest

from lab.domain.errors import ImageError
from lab.storage.images import tiny
from lab.storage.images.kmod import Module

RECIPE = Path(__file__).resolve().parents[2] / "images" / "tiny"


def test_repository_recipe_loads() -> None:
    recipe = tiny.TinyRecipe.load(RECIPE)
    assert recipe.kernel_package == "linux-image-cloud-amd64"
    assert recipe.busybox_package == "busybox-static"
    assert {"virtio_pci", "virtio_blk", "button", "evdev"} <= set(recipe.modules)
    # ttyS0 last: it becomes /dev/console, init's stdio.
    consoles = [a for a in recipe.cmdline.split() if a.startswith("console=")]
    assert consoles == ["console=tty0", "console=ttyS0,115200n8"]
    # TCG guests short of host CPU fail the kernel's timer check (see the recipe).
    assert "no_timer_check" in recipe.cmdline.split()
    assert recipe.compression in ("gzip", "zstd")


def test_init_is_valid_posix_sh() -> None:
    subprocess.run(["sh", "-n", str(RECIPE / "init")], check=True)
    for script in ("rootfs/etc/lab/shutdown", "rootfs/etc/acpi/PWRF/00000080"):
        subprocess.run(["sh", "-n", str(RECIPE / script)], check=True)
        assert (RECIPE / script).stat().st_mode & 0o111, f"{script} must be executable"


def test_init_prints_the_sequence_before_anything_slow() -> None:
    lines = [
        line.strip()
        for line in (RECIPE / "init").read_text().splitlines()
        if line.strip() and not line.strip().startswith("#")
    ]
    seq_at = next(i for i, line in enumerate(lines) if 'echo "SEQ $i"' in line)
    before = lines[:seq_at]
    assert sum("mount" in line for line in before) == 1, "only /proc is mounted before SEQ"
    assert not any("insmod" in line or "sleep" in line for line in before)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("kernel_package = 1", "kernel_package"),
        ('kernel_package = "k"\nbusybox_package = "b"\ncmdline = "x"\nmodules = [1]', "modules"),
        ('kernel_package = "k"\nbusybox_package = "b"\ncmdline = "x"\ncompression = "xz"', "gzip"),
        ('kernel_package = "k"\nbusybox_package = "b"\ncmdline = "x"\ndisk_size_mib = 1', "disk"),
        ("not toml [", "Cannot read"),
    ],
)
def test_bad_recipes_are_image_errors(tmp_path: Path, content: str, message: str) -> None:
    (tmp_path / "recipe.toml").write_text(content)
    with pytest.raises(ImageError, match=message):
        tiny.TinyRecipe.load(tmp_path)


def _fake_initramfs(tmp_path: Path) -> bytes:
    busybox = tmp_path / "busybox"
    busybox.write_bytes(b"\x7fELF fake busybox")
    modules = [
        Module("virtio_ring", b"\x7fELF ring", ()),
        Module("virtio", b"\x7fELF virtio", ("virtio_ring",)),
    ]
    return tiny.build_initramfs(
        recipe_dir=RECIPE,
        busybox=busybox,
        applets=["bin/sh", "sbin/init", "usr/bin/awk", "linuxrc", "bin/busybox"],
        kernel_version="6.1.0-test",
        modules=modules,
    )


@pytest.mark.skipif(shutil.which("cpio") is None, reason="needs the cpio tool")
def test_initramfs_layout(tmp_path: Path) -> None:
    listing = subprocess.run(
        ["cpio", "-t", "-v", "--quiet"],
        input=_fake_initramfs(tmp_path),
        capture_output=True,
        check=True,
    ).stdout.decode()
    entries = {}
    for line in listing.splitlines():
        parts = line.split()
        entries[parts[-3] if parts[-2] == "->" else parts[-1]] = line
    assert entries["init"].startswith("-rwxr-xr-x")
    assert entries["dev/console"].startswith("crw-------")
    assert entries["bin/busybox"].startswith("-rwxr-xr-x")
    assert entries["bin/sh"].startswith("lrwxrwxrwx") and "-> /bin/busybox" in entries["bin/sh"]
    assert "-> /bin/busybox" in entries["usr/bin/awk"]
    assert entries["tmp"].startswith("drwxrwxrwt")
    assert entries["etc/acpi/PWRF/00000080"].startswith("-rwxr-xr-x")
    assert entries["etc/lab/shutdown"].startswith("-rwxr-xr-x")
    assert entries["etc/inittab"].startswith("-rw-r--r--")
    assert "lib/modules/6.1.0-test/virtio.ko" in entries
    assert all(" root     root " in line for line in entries.values())
    names = list(entries)
    for name in names:
        parent = name.rpartition("/")[0]
        assert not parent or names.index(parent) < names.index(name), f"{parent} before {name}"


@pytest.mark.skipif(shutil.which("cpio") is None, reason="needs the cpio tool")
def test_initramfs_module_load_order_file(tmp_path: Path) -> None:
    dest = tmp_path / "root"
    dest.mkdir()
    subprocess.run(
        ["cpio", "-i", "-d", "--quiet", "--no-absolute-filenames", "lib/modules/*"],
        input=_fake_initramfs(tmp_path),
        cwd=dest,
        check=True,
        capture_output=True,
    )
    moddir = dest / "lib/modules/6.1.0-test"
    assert (moddir / "load-order").read_text() == "virtio_ring\nvirtio\n"
    assert (moddir / "virtio.ko").read_bytes() == b"\x7fELF virtio"


def test_initramfs_is_reproducible(tmp_path: Path) -> None:
    assert _fake_initramfs(tmp_path) == _fake_initramfs(tmp_path)


def test_gzip_compression_is_padded_and_reversible() -> None:
    data = b"070701" + bytes(range(256)) * 41
    packed = tiny.compress(data, "gzip")
    assert len(packed) % 4 == 0
    # Python's gzip, like the kernel, reads past the zero padding without complaint.
    assert gzip.decompress(packed) == data


@pytest.mark.skipif(shutil.which("zstd") is None, reason="needs zstd")
def test_zstd_compression_is_padded_and_reversible() -> None:
    data = b"070701" + bytes(range(256)) * 41
    packed = tiny.compress(data, "zstd")
    assert len(packed) % 4 == 0
    assert packed[:4] == b"\x28\xb5\x2f\xfd"
    out = subprocess.run(
        ["zstd", "-d", "-c", "-q"], input=packed.rstrip(b"\0"), capture_output=True
    )
    assert out.stdout == data


@pytest.mark.skipif(
    shutil.which("mkfs.ext4") is None or shutil.which("qemu-img") is None,
    reason="needs mkfs.ext4 and qemu-img",
)
def test_blank_disk_is_a_reproducible_ext4_qcow2(tmp_path: Path) -> None:
    seed = "ab" * 32
    disks = []
    for n in (1, 2):
        work = tmp_path / f"w{n}"
        work.mkdir()
        disk = tmp_path / f"disk{n}.qcow2"
        tiny.make_blank_disk(disk, work_dir=work, size_mib=32, label="data", seed=seed)
        assert list(work.iterdir()) == [], "the raw file is removed"
        disks.append(disk)
    assert disks[0].read_bytes() == disks[1].read_bytes()
    info = json.loads(
        subprocess.run(
            ["qemu-img", "info", "--output=json", str(disks[0])],
            capture_output=True,
            check=True,
        ).stdout
    )
    assert info["format"] == "qcow2"
    assert info["virtual-size"] == 32 * 1024 * 1024
    raw = tmp_path / "raw.img"
    subprocess.run(
        ["qemu-img", "convert", "-O", "raw", str(disks[0]), str(raw)],
        check=True,
        capture_output=True,
    )
    # ext4 superblock magic 0xEF53 at offset 1024 + 0x38.
    assert raw.read_bytes()[1024 + 0x38 : 1024 + 0x3A] == b"\x53\xef"
