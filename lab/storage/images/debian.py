"""The builder of the ``debian`` image: Debian 12 booting from its own disk through GRUB.

The recipe directory ``images/debian/`` holds ``recipe.toml`` (suite, mirrors, packages, GRUB
and initramfs settings, units to enable and mask), two mmdebstrap hooks (``essential.sh``,
``customize.sh``) and ``rootfs/`` (files copied into the guest: the per-VM config unit). The
build, as root:

1. ``mmdebstrap --variant=minbase --mode=root --format=directory`` with the recipe's packages
   pinned to the versions `resolve` found, and the hooks: the essential hook preseeds grub-pc
   and puts the initramfs configuration in place before the kernel's postinst builds the initrd;
   the customize hook copies the files this module generates (fstab by UUID, /etc/default/grub
   with GRUB on the serial console, host name) and ``rootfs/``, enables and masks units, writes
   ``grub.cfg`` with a grub-probe stand-in and builds GRUB's ``core.img`` with the guest's own
   ``grub-mkimage``;
2. `bootdisk.make_boot_disk`: ``mkfs.ext4 -d``, ``sfdisk`` on a plain file, boot.img and
   core.img written into the first sectors, ``qemu-img convert`` to qcow2.

Downloaded packages are kept in the cache's ``debs/`` directory (shared with the tiny builder,
which fetches the same kernel package) and handed to apt inside the new root, so a rebuild after
a recipe edit downloads nothing that is already there.

Output: ``disk.qcow2`` (2 GiB virtual) and ``packages.txt`` (every installed package and
version); the manifest says ``boot: disk`` and names no kernel or initrd.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from lab.domain.errors import ImageError
from lab.storage.images import debpkg
from lab.storage.images.bootdisk import ESP_LABEL, DiskLayout, make_boot_disk
from lab.storage.images.builder import BuildContext, BuildOutput, ProgressFn
from lab.storage.images.commands import release_mounts, require_tool, run_streaming

RECIPE_FILE: Final = "recipe.toml"
ROOTFS_DIR: Final = "rootfs"
ESSENTIAL_HOOK: Final = "essential.sh"
CUSTOMIZE_HOOK: Final = "customize.sh"

DISK_FILE: Final = "disk.qcow2"
PACKAGES_FILE: Final = "packages.txt"
#: The guest's view of its disk: the lab attaches the OS disk as the first virtio disk.
ROOT_DEVICE: Final = "/dev/vda1"
#: Where customize.sh leaves the EFI system partition's files (GRUB's EFI image), in the work
#: directory, not the guest's root: in the guest the partition is mounted on /boot/efi.
ESP_DIR: Final = "esp"

_UNIT: Final = re.compile(r"[A-Za-z0-9@._:\\-]+\.(service|socket|target|mount|timer|path)")
_MODULE: Final = re.compile(r"[A-Za-z0-9_-]+")
_PACKAGE: Final = re.compile(r"[a-z0-9][a-z0-9+.-]+")
_HOSTNAME: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9-]{0,62}")


@dataclass(frozen=True)
class GrubSettings:
    timeout: int
    cmdline: str
    cmdline_default: str
    serial_command: str


@dataclass(frozen=True)
class DebianRecipe:
    """``images/debian/recipe.toml``, checked."""

    suite: str
    mirrors: tuple[str, ...]
    kernel_package: str
    packages: tuple[str, ...]
    dpkg_path_exclude: tuple[str, ...]
    dpkg_path_include: tuple[str, ...]
    disk_size_mib: int
    #: The EFI system partition at the end of the disk (GRUB's EFI image, for generation 2).
    esp_size_mib: int
    root_label: str
    hostname: str
    grub: GrubSettings
    initramfs_modules: tuple[str, ...]
    enable: tuple[str, ...]
    mask: tuple[str, ...]

    @property
    def cmdline(self) -> str:
        """The kernel command line of GRUB's default entry."""
        return " ".join(p for p in (self.grub.cmdline, self.grub.cmdline_default) if p)

    @classmethod
    def load(cls, recipe_dir: Path) -> DebianRecipe:
        path = recipe_dir / RECIPE_FILE
        try:
            data: dict[str, Any] = tomllib.loads(path.read_text())
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise ImageError(f"Cannot read the image recipe {path}: {exc}") from exc
        return cls.parse(data, path)

    @classmethod
    def parse(cls, data: dict[str, Any], path: Path) -> DebianRecipe:
        """The recipe from parsed TOML; `path` names it in errors."""

        def field(table: dict[str, Any], key: str, kind: type, default: Any = None) -> Any:
            value = table.get(key, default)
            if not isinstance(value, kind) or (isinstance(value, bool) and kind is not bool):
                raise ImageError(f"{path}: '{key}' must be a {kind.__name__}, got {value!r}")
            return value

        def strings(table: dict[str, Any], key: str, rx: re.Pattern[str] | None = None) -> Any:
            values = field(table, key, list, [])
            bad = [v for v in values if not isinstance(v, str) or not v.strip()]
            bad += [v for v in values if rx is not None and isinstance(v, str)
                    and not rx.fullmatch(v)]  # fmt: skip
            if bad:
                raise ImageError(f"{path}: '{key}' has invalid entries: {bad!r}")
            return tuple(values)

        def table(key: str) -> dict[str, Any]:
            return field(data, key, dict, {})  # type: ignore[no-any-return]

        suite, kernel_package = field(data, "suite", str), field(data, "kernel_package", str)
        grub, initramfs, units = table("grub"), table("initramfs"), table("units")
        timeout = field(grub, "timeout", int, 5)
        if not 1 <= timeout <= 60:
            raise ImageError(f"{path}: grub 'timeout' must be 1-60 seconds (a visible menu)")
        size = field(data, "disk_size_mib", int, 2048)
        if not 512 <= size <= 64 * 1024:
            raise ImageError(f"{path}: 'disk_size_mib' must be between 512 and 65536")
        esp = field(data, "esp_size_mib", int, 64)
        if not 16 <= esp <= size // 4:
            raise ImageError(f"{path}: 'esp_size_mib' must be between 16 and a quarter of "
                             "'disk_size_mib'")  # fmt: skip
        hostname = field(data, "hostname", str, "debian")
        if not _HOSTNAME.fullmatch(hostname):
            raise ImageError(f"{path}: 'hostname' {hostname!r} is not a valid host name")
        mirrors = strings(data, "mirrors")
        if not mirrors or not all(m.startswith("deb ") for m in mirrors):
            raise ImageError(f"{path}: 'mirrors' must be one-line apt sources (deb URI SUITE ...)")
        packages = strings(data, "packages", _PACKAGE)
        cmdline = " ".join(field(grub, "cmdline", str, "").split())
        if "console=ttyS0" not in cmdline:
            raise ImageError(f"{path}: grub 'cmdline' must put the console on ttyS0")
        return cls(
            suite=suite,
            mirrors=mirrors,
            kernel_package=kernel_package,
            packages=packages,
            dpkg_path_exclude=strings(data, "dpkg_path_exclude"),
            dpkg_path_include=strings(data, "dpkg_path_include"),
            disk_size_mib=size,
            esp_size_mib=esp,
            root_label=field(data, "root_label", str, "root")[:16],
            hostname=hostname,
            grub=GrubSettings(
                timeout=timeout,
                cmdline=cmdline,
                cmdline_default=" ".join(field(grub, "cmdline_default", str, "").split()),
                serial_command=" ".join(field(grub, "serial_command", str).split()),
            ),
            initramfs_modules=strings(initramfs, "modules", _MODULE),
            enable=strings(units, "enable", _UNIT),
            mask=strings(units, "mask", _UNIT),
        )


# --- files the builder writes into the guest ------------------------------------------------


def generated_files(recipe: DebianRecipe, root_uuid: str) -> dict[str, str]:
    """Path inside the guest -> content of each file made from the recipe."""
    g = recipe.grub
    header = "# Written by the lab's image builder (images/debian/recipe.toml).\n"
    # GRUB's own variables ($lab_boot_args) reach grub.cfg as they are, not expanded by the
    # shell that sources /etc/default/grub.
    default_args = g.cmdline_default.replace("$", "\\$")
    return {
        "etc/fstab": (
            f"{header}# <file system> <mount point> <type> <options> <dump> <pass>\n"
            f"UUID={root_uuid} / ext4 errors=remount-ro 0 1\n"
            # The EFI system partition, where a generation 2 VM's firmware finds GRUB.
            # nofail: a damaged ESP must not stop a boot that did not need it.
            f"LABEL={ESP_LABEL} /boot/efi vfat umask=0077,nofail 0 0\n"
        ),
        "etc/default/grub": (
            f"{header}# Run `update-grub` after editing. `info -f grub -n 'Simple configuration'`\n"
            "GRUB_DEFAULT=0\n"
            f"GRUB_TIMEOUT={g.timeout}\n"
            "GRUB_TIMEOUT_STYLE=menu\n"
            "GRUB_DISTRIBUTOR=`lsb_release -i -s 2> /dev/null || echo Debian`\n"
            f'GRUB_CMDLINE_LINUX_DEFAULT="{default_args}"\n'
            f'GRUB_CMDLINE_LINUX="{g.cmdline}"\n'
            "# The menu and its editor on the serial console (ttyS0, COM1), where the lab's\n"
            "# console and boot diagnostics are.\n"
            "GRUB_TERMINAL=serial\n"
            f'GRUB_SERIAL_COMMAND="{g.serial_command}"\n'
            "GRUB_DISABLE_OS_PROBER=true\n"
        ),
        "etc/hostname": f"{recipe.hostname}\n",
        "etc/hosts": (
            "127.0.0.1\tlocalhost\n"
            f"127.0.1.1\t{recipe.hostname}\n"
            "\n"
            "::1\t\tlocalhost ip6-localhost ip6-loopback\n"
            "ff02::1\t\tip6-allnodes\n"
            "ff02::2\t\tip6-allrouters\n"
        ),
        "etc/initramfs-tools/conf.d/lab.conf": (
            f"{header}# The modules are listed in /usr/share/initramfs-tools/modules.d/lab.conf.\n"
            "MODULES=list\n"
            # The build runs in a chroot, where the root file system's type cannot be probed:
            # without it the initramfs would lack fsck.ext4 and skip checking the root.
            "FSTYPE=ext4\n"
            # No swap, so nothing to resume from (and no wait for a resume device).
            "RESUME=none\n"
        ),
        "usr/share/initramfs-tools/modules.d/lab.conf": (
            "# The lab's initramfs modules (MODULES=list, /etc/initramfs-tools/conf.d/lab.conf).\n"
            + "".join(f"{m}\n" for m in recipe.initramfs_modules)
        ),
    }


def grub_probe_standin(root_uuid: str) -> str:
    """A ``grub-probe`` for ``grub-mkconfig`` at build time, when the disk does not exist yet.

    It answers what the real one answers inside the booted guest for ``/`` and ``/boot``
    (device, file system, its UUID, partition map) and nothing for BIOS hints: a hint GRUB
    cannot resolve at boot makes it print "error: no such device" and wait.
    """
    return f"""#!/bin/sh
# grub-probe stand-in of the lab's image builder: the answers for {ROOT_DEVICE}, ext4 {root_uuid}.
target=device
while [ $# -gt 0 ]; do
    case "$1" in
        --target=*) target=${{1#--target=}} ;;
        -t | --target) shift; target=${{1:-}} ;;
    esac
    shift
done
case "$target" in
    device) echo {ROOT_DEVICE} ;;
    fs) echo ext2 ;;
    fs_uuid) echo {root_uuid} ;;
    partmap) echo msdos ;;
    *) ;;
esac
exit 0
"""


def _stage(recipe: DebianRecipe, recipe_dir: Path, staging: Path, root_uuid: str) -> None:
    """The files the hooks copy into the guest: generated ones, then the recipe's rootfs/."""
    for name, content in generated_files(recipe, root_uuid).items():
        made = staging / name
        made.parent.mkdir(parents=True, exist_ok=True)
        made.write_text(content)
        made.chmod(0o644)
    rootfs = recipe_dir / ROOTFS_DIR
    for src in sorted(rootfs.rglob("*")) if rootfs.is_dir() else []:
        rel = src.relative_to(rootfs)
        target = staging / rel
        if src.is_symlink():
            target.parent.mkdir(parents=True, exist_ok=True)
            target.symlink_to(os.readlink(src))
        elif src.is_dir():
            target.mkdir(parents=True, exist_ok=True)
            target.chmod(0o755)
        elif src.is_file():
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(src, target)
            # Git keeps only the executable bit, so that is all the mode taken over.
            target.chmod(0o755 if src.stat().st_mode & 0o111 else 0o644)
    # Parent directories made on the way (etc/, usr/...) must not end up with a umask's mode.
    for directory in [staging, *(p for p in staging.rglob("*") if p.is_dir())]:
        directory.chmod(0o755)


# --- progress --------------------------------------------------------------------------------

#: mmdebstrap's "I: ..." phase lines -> (fraction at the start of the phase, what to show).
_PHASES: Final = (
    ("running apt-get update", 0.02, "Reading Debian's package lists"),
    ("downloading packages", 0.05, "Downloading the essential packages"),
    ("extracting archives", 0.10, "Unpacking the essential packages"),
    ("installing essential packages", 0.13, "Installing the essential packages"),
    ("running --essential-hook", 0.22, "Essential hook"),
    ("installing remaining packages", 0.24, "Installing the recipe's packages"),
    ("running --customize-hook", 0.62, "Configuring the guest"),
    ("cleaning package lists", 0.70, "Cleaning up"),
)
#: Where mmdebstrap's part of the build ends; the disk takes the rest.
MMDEBSTRAP_DONE: Final = 0.72


class MmdebstrapProgress:
    """Turns mmdebstrap's verbose output into `ProgressFn` calls that only move forward.

    Phase lines set the fraction; inside a phase each dpkg or apt line ("Setting up ...",
    "Get:...") moves it a little towards the next phase, and the hooks' "lab: ..." lines name
    the step.
    """

    def __init__(self, progress: ProgressFn) -> None:
        self.progress = progress
        self.fraction = 0.0
        self.limit = _PHASES[0][1]
        self.step = "Starting mmdebstrap"

    def __call__(self, line: str) -> None:
        text = line.strip()
        if text.startswith("I: "):
            for i, (needle, start, step) in enumerate(_PHASES):
                if needle in text:
                    self.fraction = max(self.fraction, start)
                    following = _PHASES[i + 1][1] if i + 1 < len(_PHASES) else MMDEBSTRAP_DONE
                    self.limit = max(self.limit, following)
                    self.step = step
                    self._report()
            return
        if text.startswith("lab: "):
            self.step = text.removeprefix("lab: ")
        elif text.startswith(("Setting up ", "Unpacking ")):
            self.step = text.split(" (")[0]
        elif not text.startswith("Get:"):
            return
        self.fraction += (self.limit - self.fraction) * 0.02
        self._report()

    def _report(self) -> None:
        self.progress(self.step, min(self.fraction, MMDEBSTRAP_DONE))


# --- the builder -----------------------------------------------------------------------------


class DebianBuilder:
    """`ImageBuilder` of the ``debian`` recipe."""

    #: Bump when this module changes what ends up in the image for the same recipe and pins.
    version = 1

    def resolve(self, recipe_dir: Path) -> dict[str, str]:
        recipe = DebianRecipe.load(recipe_dir)
        names = [recipe.kernel_package, *recipe.packages]
        records = debpkg.show_candidates(names)
        kernel = debpkg.resolve_meta(
            recipe.kernel_package, "linux-image-", records[recipe.kernel_package]
        )
        pins = {name: records[name]["Version"] for name in names}
        pins[kernel.name] = kernel.version
        return pins

    def build(self, ctx: BuildContext) -> BuildOutput:
        recipe = DebianRecipe.load(ctx.recipe_dir)
        if os.geteuid() != 0:
            raise ImageError(
                "Building the debian image needs root (mmdebstrap --mode=root, chroot): "
                "run `sudo lab image build debian`."
            )
        for tool in ("mmdebstrap", "chroot", "mountpoint", "mkfs.ext4", "sfdisk", "qemu-img",
                     "mkfs.vfat", "mcopy"):
            require_tool(tool)
        missing = [p for p in (recipe.kernel_package, *recipe.packages) if p not in ctx.pins]
        if missing:
            raise ImageError(f"The resolved packages {dict(ctx.pins)} lack {', '.join(missing)}.")
        layout = DiskLayout.from_seed(
            ctx.content_hash, size_mib=recipe.disk_size_mib, label=recipe.root_label,
            esp_mib=recipe.esp_size_mib,
        )
        esp = ctx.work_dir / ESP_DIR
        root = ctx.work_dir / "root"
        staging = ctx.work_dir / "staging"
        staging.mkdir()
        _stage(recipe, ctx.recipe_dir, staging, layout.fs_uuid)
        grub_probe = ctx.work_dir / "grub-probe"
        grub_probe.write_text(grub_probe_standin(layout.fs_uuid))
        ctx.debs_dir.mkdir(parents=True, exist_ok=True)

        argv = mmdebstrap_argv(recipe, ctx.pins, root, recipe_dir=ctx.recipe_dir)
        env = {
            "LAB_STAGING": str(staging),
            "LAB_ROOT_UUID": layout.fs_uuid,
            "LAB_GRUB_PROBE": str(grub_probe),
            "LAB_ENABLE": " ".join(recipe.enable),
            "LAB_MASK": " ".join(recipe.mask),
            "LAB_PACKAGES_OUT": str(ctx.out_dir / PACKAGES_FILE),
            "LAB_DEBS": str(ctx.debs_dir),
            "LAB_RECIPE_DIR": str(ctx.recipe_dir),
            "LAB_ESP_OUT": str(esp),
        }
        ctx.progress("Running mmdebstrap", 0.01)
        try:
            try:
                run_streaming(argv, MmdebstrapProgress(ctx.progress), env=env)
            finally:
                # mmdebstrap unmounts its chroot's /proc, /sys and /dev/pts when it ends, unless
                # it was killed: nothing may stay mounted in a directory about to be deleted.
                release_mounts(root)
        except ImageError as exc:
            if "was not found" in exc.message or "Unable to locate" in exc.message:
                raise ImageError(
                    f"{exc.message}\nThe host's package lists may be older than the mirror: "
                    "run `apt-get update` and build again."
                ) from exc
            raise

        kernel_version = _kernel_version(root)
        grub_dir = root / "boot/grub/i386-pc"
        make_boot_disk(
            ctx.out_dir / DISK_FILE,
            root=root,
            boot_img=grub_dir / "boot.img",
            core_img=grub_dir / "core.img",
            work_dir=ctx.work_dir,
            layout=layout,
            esp_content=esp,
            progress=ctx.progress,
            fractions=(MMDEBSTRAP_DONE + 0.01, 0.96),
        )
        return BuildOutput(
            kernel="",
            initrd="",
            disk=DISK_FILE,
            kernel_version=kernel_version,
            cmdline=recipe.cmdline,
            boot="disk",
        )


def mmdebstrap_argv(
    recipe: DebianRecipe, pins: Mapping[str, str], root: Path, *, recipe_dir: Path
) -> list[str]:
    """The mmdebstrap command line (hooks read the ``LAB_*`` environment the builder sets)."""
    includes = ",".join(f"{name}={version}" for name, version in sorted(pins.items()))
    argv = [
        "mmdebstrap", "--verbose", "--mode=root", "--format=directory", "--variant=minbase",
        f"--include={includes}",
        # Keep the downloaded essential packages for the shared .deb cache (synced out below).
        "--skip=essential/unlink",
    ]  # fmt: skip
    argv += [f"--dpkgopt=path-exclude={p}" for p in recipe.dpkg_path_exclude]
    argv += [f"--dpkgopt=path-include={p}" for p in recipe.dpkg_path_include]
    archives = '"$1/var/cache/apt/archives"'
    argv += [
        # The shared .deb cache into apt's archive directory (hard links where possible): apt
        # checks each file against the package lists and downloads only what is missing.
        "--setup-hook=mkdir -p " + archives + ' && for f in "$LAB_DEBS"/*.deb; do '
        '[ -f "$f" ] || continue; ln "$f" ' + archives + "/ 2>/dev/null || cp "
        '"$f" ' + archives + "/; done",
        f'--essential-hook=sh {shlex.quote(str(recipe_dir / ESSENTIAL_HOOK))} "$1"',
        f'--customize-hook=sh {shlex.quote(str(recipe_dir / CUSTOMIZE_HOOK))} "$1"',
        # ... and what was downloaded back into the cache (a temp name, then rename).
        "--customize-hook=for f in " + archives + '/*.deb; do [ -f "$f" ] || continue; '
        'b=${f##*/}; [ -e "$LAB_DEBS/$b" ] && continue; '
        '{ ln "$f" "$LAB_DEBS/.$b.tmp" 2>/dev/null || cp "$f" "$LAB_DEBS/.$b.tmp"; } && '
        'mv "$LAB_DEBS/.$b.tmp" "$LAB_DEBS/$b"; done',
    ]
    argv += [recipe.suite, str(root), *recipe.mirrors]
    return argv


def _kernel_version(root: Path) -> str:
    kernels = sorted((root / "boot").glob("vmlinuz-*"))
    if len(kernels) != 1:
        raise ImageError(f"Expected one kernel in the guest's /boot, found {kernels}")
    version = kernels[0].name.removeprefix("vmlinuz-")
    if not (root / "boot" / f"initrd.img-{version}").is_file():
        raise ImageError(f"The guest has no /boot/initrd.img-{version}")
    return version
