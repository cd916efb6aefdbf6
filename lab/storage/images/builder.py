"""What an image builder is: the contract between `ImageCache` and one recipe's builder.

A builder turns a recipe directory (``images/<name>/``) plus exact external inputs (Debian
package versions) into the files of a bootable image. `ImageCache` owns everything around it:
hashing the inputs, the build directory and its atomic publication, the manifest, locking.

The split in two calls exists for speed: `resolve` (may be slow, runs apt) says which exact
inputs the recipe means today; the cache hashes those with the recipe files, and only when no
image with that hash exists does it call `build`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Final, Literal, Protocol

#: ``progress(step_description, fraction_done)``; fraction goes from 0.0 to 1.0.
ProgressFn = Callable[[str, float], None]

#: How an image boots: ``kernel``, the lab hands QEMU the image's kernel and a per-VM initrd
#: (direct kernel boot, ``tiny``); ``disk``, the firmware boots the disk's own boot loader
#: (GRUB, ``debian``) and the VM's settings ride on a small config disk.
BootMethod = Literal["kernel", "disk"]
BOOT_METHODS: Final[tuple[BootMethod, ...]] = ("kernel", "disk")


def no_progress(step: str, fraction: float) -> None:
    """The progress callback used when the caller gives none."""


@dataclass(frozen=True)
class BuildContext:
    """Everything one build may use. Only `out_dir` survives the build."""

    name: str
    recipe_dir: Path
    #: The resolved external inputs (package name -> exact version) the hash was made from.
    pins: Mapping[str, str]
    content_hash: str
    #: Scratch space, deleted after the build (successful or not).
    work_dir: Path
    #: Where the image files go; published atomically by the cache when `build` returns.
    out_dir: Path
    #: Shared download cache for .deb files (kept across builds).
    debs_dir: Path
    progress: ProgressFn


@dataclass(frozen=True)
class BuildOutput:
    """The files a build left in `BuildContext.out_dir`, and how to boot them.

    A disk-boot image leaves `kernel` and `initrd` empty: its kernel is inside the disk.
    """

    kernel: str
    initrd: str
    disk: str
    kernel_version: str
    cmdline: str
    os_type: str = "Linux"
    boot: BootMethod = "kernel"


class ImageBuilder(Protocol):
    """One kind of recipe (``tiny``, ``debian``)."""

    #: Bump when the builder's output changes for the same recipe and pins: it is hashed.
    version: int

    def resolve(self, recipe_dir: Path) -> dict[str, str]:
        """The exact external inputs the recipe means now, e.g. Debian package versions.

        The result must depend only on the recipe and on apt's state: the cache reuses it
        while apt's state fingerprint is unchanged.
        """
        ...

    def build(self, ctx: BuildContext) -> BuildOutput:
        """Make the image files in ``ctx.out_dir``; raise `ImageError` on failure."""
        ...
