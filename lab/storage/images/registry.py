"""Which builder makes which image: recipe name -> `ImageBuilder`.

A recipe is usable when it is registered here and ``images/<name>/`` exists: ``tiny`` (a kernel
and busybox initramfs, direct kernel boot) and ``debian`` (Debian 12 booting GRUB from its disk).
"""

from __future__ import annotations

from lab.storage.images.builder import ImageBuilder
from lab.storage.images.debian import DebianBuilder
from lab.storage.images.tiny import TinyBuilder

BUILDERS: dict[str, ImageBuilder] = {
    "tiny": TinyBuilder(),
    "debian": DebianBuilder(),
}


def register_builder(name: str, builder: ImageBuilder) -> None:
    """Add (or replace) the builder of recipe `name`."""
    BUILDERS[name] = builder
