"""Kernel modules for an initramfs: find them in an unpacked kernel package, order by dependency.

Debian's kernel package ships no ``modules.dep`` (``depmod`` writes it at install time), so the
dependencies are read from each module's own ``.modinfo`` ELF section (the ``depends=`` entry
``modinfo`` prints). Modules are stored uncompressed in the image because busybox ``insmod``
loads a plain ELF file; compressed ones (``.ko.xz``, ``.ko.zst``, ``.ko.gz``) are unpacked here.
"""

from __future__ import annotations

import gzip
import lzma
import struct
from dataclasses import dataclass
from pathlib import Path

from lab.domain.errors import ImageError
from lab.storage.images.commands import run

_SUFFIXES = (".ko", ".ko.xz", ".ko.zst", ".ko.gz")


def canonical(name: str) -> str:
    """Module names treat '-' and '_' alike (the kernel does too); use '_' throughout."""
    return name.replace("-", "_")


def _module_name(path: Path) -> str:
    for suffix in _SUFFIXES:
        if path.name.endswith(suffix):
            return canonical(path.name[: -len(suffix)])
    return canonical(path.stem)


def read_module(path: Path) -> bytes:
    """The ELF bytes of a module file, decompressed if needed."""
    if path.name.endswith(".ko.xz"):
        return lzma.decompress(path.read_bytes())
    if path.name.endswith(".ko.gz"):
        return gzip.decompress(path.read_bytes())
    if path.name.endswith(".ko.zst"):
        # No zstd in the standard library before Python 3.14: use the zstd tool.
        return run(["zstd", "-d", "-c", "-q", path]).stdout
    return path.read_bytes()


def modinfo(elf: bytes) -> dict[str, str]:
    """The ``key=value`` strings of a module's ``.modinfo`` section (last one wins)."""
    if elf[:4] != b"\x7fELF" or elf[4] != 2 or elf[5] != 1:
        raise ImageError("not a 64-bit little-endian ELF kernel module")
    (shoff,) = struct.unpack_from("<Q", elf, 0x28)
    shentsize, shnum, shstrndx = struct.unpack_from("<HHH", elf, 0x3A)

    def section(index: int) -> tuple[int, int, int]:
        name, _type, _flags, _addr, offset, size = struct.unpack_from(
            "<IIQQQQ", elf, shoff + index * shentsize
        )
        return name, offset, size

    _, str_off, str_size = section(shstrndx)
    names = elf[str_off : str_off + str_size]
    for index in range(shnum):
        name_off, offset, size = section(index)
        end = names.index(b"\0", name_off)
        if names[name_off:end] == b".modinfo":
            info: dict[str, str] = {}
            for item in elf[offset : offset + size].split(b"\0"):
                key, sep, value = item.decode(errors="replace").partition("=")
                if sep:
                    info[key] = value
            return info
    raise ImageError("kernel module has no .modinfo section")


@dataclass(frozen=True)
class Module:
    """One module to put in the image: its name, ELF bytes and direct dependencies."""

    name: str
    elf: bytes
    depends: tuple[str, ...]


def resolve_modules(modules_dir: Path, wanted: list[str]) -> list[Module]:
    """`wanted` and everything they depend on, dependencies first (the insmod order).

    `modules_dir` is ``lib/modules/<version>`` of the unpacked kernel package. Modules the
    kernel has built in (``modules.builtin``) need no loading and are skipped.
    """
    builtin: set[str] = set()
    builtin_list = modules_dir / "modules.builtin"
    if builtin_list.is_file():
        builtin = {_module_name(Path(line)) for line in builtin_list.read_text().split()}
    files: dict[str, Path] = {}
    for path in sorted((modules_dir / "kernel").rglob("*.ko*")):
        if path.name.endswith(_SUFFIXES):
            files.setdefault(_module_name(path), path)

    ordered: list[Module] = []
    done: set[str] = set()

    def visit(name: str, chain: tuple[str, ...]) -> None:
        name = canonical(name)
        if name in done or name in builtin:
            return
        if name in chain:
            raise ImageError(f"kernel modules depend on each other in a cycle: {(*chain, name)}")
        path = files.get(name)
        if path is None:
            raise ImageError(
                f"kernel module '{name}' is neither built in nor shipped in {modules_dir}"
                + (f" (needed by {chain[-1]})" if chain else "")
            )
        elf = read_module(path)
        depends = tuple(
            canonical(d) for d in modinfo(elf).get("depends", "").split(",") if d.strip()
        )
        for dep in depends:
            visit(dep, (*chain, name))
        ordered.append(Module(name, elf, depends))
        done.add(name)

    for name in wanted:
        visit(name, ())
    return ordered
