"""The builder of the ``tiny`` image: a Debian cloud kernel, a busybox initramfs, a blank disk.

Ingredients, all from Debian packages fetched with ``apt-get download`` (none from the host's
own system): the kernel and its modules from ``linux-image-6.1.0-NN-cloud-amd64`` (reached
through the ``linux-image-cloud-amd64`` meta package), and the static busybox of
``busybox-static``. The recipe directory ``images/tiny/`` adds ``init`` (PID 1), the files under
``rootfs/`` and ``recipe.toml`` (packages, modules, command line, disk size).

Output (in the image directory):

``vmlinuz``
    the kernel, as shipped.
``initrd.img``
    a compressed newc cpio archive (written in Python, so ``/dev/console`` and root
    ownership need no privileges), zero-padded to a multiple of 4 bytes so the per-VM config
    archive can be appended (see `lab.storage.images.guestconfig`).
``disk.qcow2``
    a blank ext4 file system (``mkfs.ext4`` on a plain file, then ``qemu-img convert``). It is
    made reproducibly (fixed UUID, hash seed and timestamps derived from the content hash), so
    rebuilding the same image gives the same bytes and qcow2 overlays on it stay valid.
"""

from __future__ import annotations

import gzip
import io
import os
import shutil
import tomllib
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, Literal

from lab.domain.errors import ImageError
from lab.storage.images import debpkg, kmod
from lab.storage.images.builder import BuildContext, BuildOutput
from lab.storage.images.commands import require_tool, run
from lab.storage.images.cpio import CpioWriter

RECIPE_FILE: Final = "recipe.toml"
INIT_FILE: Final = "init"
ROOTFS_DIR: Final = "rootfs"

KERNEL_FILE: Final = "vmlinuz"
INITRD_FILE: Final = "initrd.img"
DISK_FILE: Final = "disk.qcow2"

#: Fixed timestamp of every file in the image (2024-01-01): reproducible bytes.
EPOCH: Final = 1704067200

#: The directories every initramfs gets, with their modes (parents first).
_BASE_DIRS: Final = (
    ("bin", 0o755),
    ("sbin", 0o755),
    ("usr", 0o755),
    ("usr/bin", 0o755),
    ("usr/sbin", 0o755),
    ("etc", 0o755),
    ("etc/lab", 0o755),
    ("dev", 0o755),
    ("proc", 0o555),
    ("sys", 0o555),
    ("run", 0o755),
    ("tmp", 0o1777),
    ("root", 0o700),
    ("home", 0o755),
    ("data", 0o755),
    ("mnt", 0o755),
    ("var", 0o755),
    ("var/log", 0o755),
    ("lib", 0o755),
    ("lib/modules", 0o755),
)


@dataclass(frozen=True)
class TinyRecipe:
    """``images/tiny/recipe.toml``, checked."""

    kernel_package: str
    busybox_package: str
    modules: tuple[str, ...]
    cmdline: str
    compression: Literal["gzip", "zstd"]
    disk_size_mib: int
    disk_label: str

    @classmethod
    def load(cls, recipe_dir: Path) -> TinyRecipe:
        path = recipe_dir / RECIPE_FILE
        try:
            data: dict[str, Any] = tomllib.loads(path.read_text())
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise ImageError(f"Cannot read the image recipe {path}: {exc}") from exc

        def field(key: str, kind: type, default: Any = None) -> Any:
            value = data.get(key, default)
            if not isinstance(value, kind) or (isinstance(value, bool) and kind is not bool):
                raise ImageError(f"{path}: '{key}' must be a {kind.__name__}, got {value!r}")
            return value

        modules = field("modules", list, [])
        if not all(isinstance(m, str) and m for m in modules):
            raise ImageError(f"{path}: 'modules' must be a list of module names")
        compression = field("compression", str, "zstd")
        if compression not in ("gzip", "zstd"):
            raise ImageError(f'{path}: \'compression\' must be "gzip" or "zstd"')
        size = field("disk_size_mib", int, 256)
        if not 16 <= size <= 64 * 1024:
            raise ImageError(f"{path}: 'disk_size_mib' must be between 16 and 65536")
        return cls(
            kernel_package=field("kernel_package", str),
            busybox_package=field("busybox_package", str),
            modules=tuple(modules),
            cmdline=" ".join(field("cmdline", str).split()),
            compression=compression,
            disk_size_mib=size,
            disk_label=field("disk_label", str, "data")[:16],
        )


class TinyBuilder:
    """`ImageBuilder` of the ``tiny`` recipe."""

    #: Bump when this module changes what ends up in the image for the same recipe and pins.
    version = 1

    def resolve(self, recipe_dir: Path) -> dict[str, str]:
        recipe = TinyRecipe.load(recipe_dir)
        records = debpkg.show_candidates([recipe.kernel_package, recipe.busybox_package])
        kernel = debpkg.resolve_meta(
            recipe.kernel_package, "linux-image-", records[recipe.kernel_package]
        )
        return {
            kernel.name: kernel.version,
            recipe.busybox_package: records[recipe.busybox_package]["Version"],
        }

    def build(self, ctx: BuildContext) -> BuildOutput:
        recipe = TinyRecipe.load(ctx.recipe_dir)
        for tool in ("apt-get", "dpkg-deb", "mkfs.ext4", "qemu-img"):
            require_tool(tool)
        if recipe.compression == "zstd":
            require_tool("zstd")
        kernel_pkg, busybox_pkg = self._packages(recipe, ctx)

        ctx.progress(f"Downloading {kernel_pkg.spec}", 0.02)
        kernel_deb = debpkg.download(kernel_pkg, ctx.debs_dir)
        ctx.progress(f"Downloading {busybox_pkg.spec}", 0.25)
        busybox_deb = debpkg.download(busybox_pkg, ctx.debs_dir)

        ctx.progress(f"Unpacking {kernel_deb.name}", 0.30)
        kernel_root = ctx.work_dir / "kernel"
        debpkg.extract(kernel_deb, kernel_root)
        ctx.progress(f"Unpacking {busybox_deb.name}", 0.45)
        busybox_root = ctx.work_dir / "busybox"
        debpkg.extract(busybox_deb, busybox_root)

        kernel_version, vmlinuz = _find_kernel(kernel_root)
        ctx.progress(f"Collecting kernel modules for {kernel_version}", 0.50)
        modules = kmod.resolve_modules(
            kernel_root / "lib/modules" / kernel_version, list(recipe.modules)
        )

        ctx.progress("Writing the initramfs", 0.55)
        busybox = busybox_root / "bin/busybox"
        if not busybox.is_file():
            raise ImageError(f"{busybox_deb.name} has no bin/busybox")
        cpio_bytes = build_initramfs(
            recipe_dir=ctx.recipe_dir,
            busybox=busybox,
            applets=_busybox_applets(busybox),
            kernel_version=kernel_version,
            modules=modules,
        )
        ctx.progress(f"Compressing the initramfs ({recipe.compression})", 0.65)
        initrd = compress(cpio_bytes, recipe.compression)
        (ctx.out_dir / INITRD_FILE).write_bytes(initrd)

        ctx.progress("Copying the kernel", 0.80)
        shutil.copyfile(vmlinuz, ctx.out_dir / KERNEL_FILE)

        ctx.progress(f"Making the {recipe.disk_size_mib} MiB ext4 data disk", 0.85)
        make_blank_disk(
            ctx.out_dir / DISK_FILE,
            work_dir=ctx.work_dir,
            size_mib=recipe.disk_size_mib,
            label=recipe.disk_label,
            seed=ctx.content_hash,
        )
        return BuildOutput(
            kernel=KERNEL_FILE,
            initrd=INITRD_FILE,
            disk=DISK_FILE,
            kernel_version=kernel_version,
            cmdline=recipe.cmdline,
        )

    @staticmethod
    def _packages(
        recipe: TinyRecipe, ctx: BuildContext
    ) -> tuple[debpkg.DebPackage, debpkg.DebPackage]:
        kernel = [n for n in ctx.pins if n.startswith("linux-image-")]
        if len(kernel) != 1 or recipe.busybox_package not in ctx.pins:
            raise ImageError(f"The resolved packages {dict(ctx.pins)} do not fit the recipe.")
        return (
            debpkg.DebPackage(kernel[0], ctx.pins[kernel[0]]),
            debpkg.DebPackage(recipe.busybox_package, ctx.pins[recipe.busybox_package]),
        )


def _find_kernel(root: Path) -> tuple[str, Path]:
    """(kernel version, path of vmlinuz) in an unpacked linux-image package."""
    candidates = sorted((root / "boot").glob("vmlinuz-*"))
    if len(candidates) != 1:
        raise ImageError(f"Expected one boot/vmlinuz-* in the kernel package, found {candidates}")
    version = candidates[0].name.removeprefix("vmlinuz-")
    if not (root / "lib/modules" / version).is_dir():
        raise ImageError(f"The kernel package has no lib/modules/{version}")
    return version, candidates[0]


def _busybox_applets(busybox: Path) -> list[str]:
    """The applet paths (``bin/sh``, ``sbin/init``, ...) this busybox build provides.

    Asked of the downloaded busybox itself (a static amd64 binary, so it runs on the build
    host too): only it knows which applets it was compiled with and where they belong.
    """
    busybox.chmod(0o755)
    out = run([busybox, "--list-full"]).stdout.decode()
    applets = [line.strip().strip("/") for line in out.splitlines() if line.strip()]
    if "bin/sh" not in applets or "sbin/init" not in applets:
        raise ImageError(f"{busybox} lacks the sh or init applet; cannot make a tiny image")
    return applets


def build_initramfs(
    *,
    recipe_dir: Path,
    busybox: Path,
    applets: list[str],
    kernel_version: str,
    modules: list[kmod.Module],
) -> bytes:
    """The uncompressed newc archive of the tiny image's root file system."""
    init = recipe_dir / INIT_FILE
    if not init.is_file():
        raise ImageError(f"The recipe has no {init}")
    buf = io.BytesIO()
    dirs: set[str] = set()
    with CpioWriter(buf, mtime=EPOCH) as cpio:

        def mkdirs(path: str, mode: int = 0o755) -> None:
            if not path:
                return
            parts = path.split("/")
            for depth in range(1, len(parts) + 1):
                sub = "/".join(parts[:depth])
                if sub not in dirs:
                    cpio.add_dir(sub, mode)
                    dirs.add(sub)

        for path, mode in _BASE_DIRS:
            mkdirs(path, mode)
        # The kernel opens /dev/console for init's stdin/stdout/stderr before /init runs,
        # i.e. before devtmpfs is mounted: without this node init would have no console.
        cpio.add_char_device("dev/console", 5, 1, 0o600)
        cpio.add_symlink("var/run", "/run")
        cpio.add_symlink("etc/mtab", "/proc/mounts")

        cpio.add_file("bin/busybox", busybox.read_bytes(), 0o755)
        for applet in applets:
            if applet != "bin/busybox":
                mkdirs(os.path.dirname(applet))
                cpio.add_symlink(applet, "/bin/busybox")

        cpio.add_file("init", init.read_bytes(), 0o755)
        rootfs = recipe_dir / ROOTFS_DIR
        extra = sorted(rootfs.rglob("*")) if rootfs.is_dir() else []
        for extra_path in extra:
            rel = extra_path.relative_to(rootfs).as_posix()
            if extra_path.is_symlink():
                mkdirs(os.path.dirname(rel))
                cpio.add_symlink(rel, os.readlink(extra_path))
            elif extra_path.is_dir():
                mkdirs(rel)
            elif extra_path.is_file():
                mkdirs(os.path.dirname(rel))
                # Git keeps only the executable bit, so that is all the mode we take over.
                mode = 0o755 if extra_path.stat().st_mode & 0o111 else 0o644
                cpio.add_file(rel, extra_path.read_bytes(), mode)

        moddir = f"lib/modules/{kernel_version}"
        mkdirs(moddir)
        for module in modules:
            cpio.add_file(f"{moddir}/{module.name}.ko", module.elf, 0o644)
        order = "".join(f"{m.name}\n" for m in modules)
        cpio.add_file(f"{moddir}/load-order", order.encode(), 0o644)
    return buf.getvalue()


def compress(data: bytes, method: Literal["gzip", "zstd"]) -> bytes:
    """Compress an initramfs and zero-pad it to a multiple of 4 bytes.

    The padding matters for appending: the kernel only recognises a following cpio archive
    that starts 4-byte aligned, and it skips zero bytes between archives.
    """
    if method == "gzip":
        packed = gzip.compress(data, compresslevel=9, mtime=0)
    else:
        # -19: the image is built once and booted many times; zstd decompresses equally fast.
        packed = run(["zstd", "-19", "-q", "-c", "-"], input=data).stdout
    return packed + b"\0" * (-len(packed) % 4)


def make_blank_disk(path: Path, *, work_dir: Path, size_mib: int, label: str, seed: str) -> None:
    """A qcow2 disk holding an empty ext4 file system, made without loop devices or mounts."""
    raw = work_dir / "disk.raw"
    with raw.open("wb") as f:
        f.truncate(size_mib * 1024 * 1024)
    fs_uuid = uuid.UUID(seed[:32], version=4)
    hash_seed = uuid.UUID(seed[32:64], version=4)
    run(
        [
            "mkfs.ext4",
            "-q",
            "-F",
            "-L",
            label,
            "-U",
            str(fs_uuid),
            # No blocks reserved for root: the disk is the user's.
            "-m",
            "0",
            # Initialise inode tables and journal now: otherwise the guest kernel zeroes them
            # in the background on first mount, slow under TCG and noisy in every overlay.
            "-E",
            f"hash_seed={hash_seed},lazy_itable_init=0,lazy_journal_init=0,root_owner=0:0",
            raw,
        ],
        # Fixed timestamps make the file system bytes reproducible (E2FSPROGS_FAKE_TIME is
        # what e2fsprogs 1.47.0 reads; newer releases read SOURCE_DATE_EPOCH).
        env={"E2FSPROGS_FAKE_TIME": str(EPOCH), "SOURCE_DATE_EPOCH": str(EPOCH)},
    )
    run(["qemu-img", "convert", "-q", "-f", "raw", "-O", "qcow2", raw, path])
    raw.unlink()
