"""Kernel module discovery: .modinfo parsing and dependency-first load order."""

from __future__ import annotations

import gzip
import lzma
import struct
from pathlib import Path

import pytest

from lab.domain.errors import ImageError
from lab.storage.images.kmod import modinfo, read_module, resolve_modules


def fake_module(info: dict[str, str], *, extra_section: bytes = b"") -> bytes:
    """A minimal ELF64 LE relocatable with .text, .modinfo and .shstrtab sections."""
    modinfo_data = b"".join(f"{k}={v}\0".encode() for k, v in info.items())
    shstrtab = b"\0.text\0.modinfo\0.shstrtab\0"
    body = extra_section + modinfo_data + shstrtab
    text_off = 64
    modinfo_off = text_off + len(extra_section)
    shstr_off = modinfo_off + len(modinfo_data)
    shoff = 64 + len(body)
    shoff += -shoff % 8
    header = b"\x7fELF" + bytes([2, 1, 1]) + b"\0" * 9
    header += struct.pack("<HHIQQQIHHHHHH", 1, 62, 1, 0, 0, shoff, 0, 64, 0, 0, 64, 4, 3)

    def sh(name: int, offset: int, size: int, kind: int = 1) -> bytes:
        return struct.pack("<IIQQQQIIQQ", name, kind, 0, 0, offset, size, 0, 0, 1, 0)

    sections = (
        b"\0" * 64
        + sh(1, text_off, len(extra_section))
        + sh(7, modinfo_off, len(modinfo_data))
        + sh(16, shstr_off, len(shstrtab), kind=3)
    )
    blob = header + body
    return blob + b"\0" * (shoff - len(blob)) + sections


def test_modinfo_reads_the_section() -> None:
    elf = fake_module(
        {"license": "GPL", "depends": "virtio_ring,virtio", "name": "virtio_pci"},
        extra_section=b"depends=decoy\0" * 3,
    )
    info = modinfo(elf)
    assert info["depends"] == "virtio_ring,virtio"
    assert info["name"] == "virtio_pci"


def test_modinfo_rejects_non_elf() -> None:
    with pytest.raises(ImageError, match="ELF"):
        modinfo(b"not an elf file at all" * 4)


def _tree(tmp_path: Path, modules: dict[str, tuple[str, str]]) -> Path:
    """lib/modules/<v> with modules {relative path: (name, depends)}."""
    root = tmp_path / "lib/modules/6.1.0-test"
    for rel, (name, depends) in modules.items():
        path = root / "kernel" / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        elf = fake_module({"name": name, "depends": depends})
        if rel.endswith(".xz"):
            path.write_bytes(lzma.compress(elf, format=lzma.FORMAT_XZ))
        elif rel.endswith(".gz"):
            path.write_bytes(gzip.compress(elf))
        else:
            path.write_bytes(elf)
    return root


def test_load_order_puts_dependencies_first(tmp_path: Path) -> None:
    root = _tree(
        tmp_path,
        {
            "drivers/virtio/virtio_ring.ko": ("virtio_ring", ""),
            "drivers/virtio/virtio.ko": ("virtio", "virtio_ring"),
            "drivers/virtio/virtio_pci_modern_dev.ko": ("virtio_pci_modern_dev", ""),
            "drivers/virtio/virtio_pci_legacy_dev.ko": ("virtio_pci_legacy_dev", ""),
            "drivers/virtio/virtio_pci.ko": (
                "virtio_pci",
                "virtio_ring,virtio_pci_modern_dev,virtio_pci_legacy_dev,virtio",
            ),
            "drivers/block/virtio_blk.ko.xz": ("virtio_blk", "virtio,virtio_ring"),
            "drivers/acpi/button.ko.gz": ("button", ""),
            "drivers/input/evdev.ko": ("evdev", ""),
        },
    )
    modules = resolve_modules(root, ["virtio_pci", "virtio_blk", "button", "evdev"])
    names = [m.name for m in modules]
    assert names == [
        "virtio_ring",
        "virtio_pci_modern_dev",
        "virtio_pci_legacy_dev",
        "virtio",
        "virtio_pci",
        "virtio_blk",
        "button",
        "evdev",
    ]
    for index, module in enumerate(modules):
        assert set(module.depends) <= set(names[:index])
        assert module.elf.startswith(b"\x7fELF"), "compressed modules are stored unpacked"


def test_builtin_modules_are_skipped_and_dashes_match_underscores(tmp_path: Path) -> None:
    root = _tree(tmp_path, {"drivers/a/virtio-blk.ko": ("virtio_blk", "virtio")})
    (root / "modules.builtin").write_text("kernel/drivers/virtio/virtio.ko\n")
    assert [m.name for m in resolve_modules(root, ["virtio-blk"])] == ["virtio_blk"]


def test_missing_module_names_who_needs_it(tmp_path: Path) -> None:
    root = _tree(tmp_path, {"drivers/a/virtio_blk.ko": ("virtio_blk", "virtio")})
    with pytest.raises(ImageError, match=r"'virtio'.*needed by virtio_blk"):
        resolve_modules(root, ["virtio_blk"])


def test_dependency_cycle_is_reported(tmp_path: Path) -> None:
    root = _tree(tmp_path, {"a.ko": ("a", "b"), "b.ko": ("b", "a")})
    with pytest.raises(ImageError, match="cycle"):
        resolve_modules(root, ["a"])


def test_read_module_plain(tmp_path: Path) -> None:
    path = tmp_path / "m.ko"
    path.write_bytes(b"\x7fELFdata")
    assert read_module(path) == b"\x7fELFdata"
