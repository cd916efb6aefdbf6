"""Images derived from a built image by editing its disk (a scenario's broken Debian, say),
cached beside their base by a hash of the base's content and the edit's key: a second start of
the same scenario finds its disk ready, and a VM reset is a fresh overlay on it."""

from __future__ import annotations

import dataclasses
import hashlib
import os
import secrets
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

from lab.storage.images.cache import ImageCache, ImageManifest, fsync_tree

#: `make_disk(base_disk, out_disk)` writes the derived qcow2 disk.
MakeDisk = Callable[[Path, Path], None]


def derive(cache: ImageCache, base_name: str, name: str, key: str,
           make_disk: MakeDisk) -> ImageManifest:  # fmt: skip
    base = cache.get(base_name)
    if not base.disk:
        raise ValueError(f"image {base_name} has no disk to derive from")
    chash = hashlib.sha256(f"{base.content_hash}\n{key}".encode()).hexdigest()
    target = cache.cache_dir / f"{name}-{chash[:12]}"
    if not (target / "manifest.json").exists():
        _build(cache, base, name, chash, target, make_disk)
    _point(cache.cache_dir / name, target.name)
    return cache.get(name)


def _build(cache: ImageCache, base: ImageManifest, name: str, chash: str, target: Path,
           make_disk: MakeDisk) -> None:  # fmt: skip
    base_dir = cache.path(base)
    work = Path(tempfile.mkdtemp(prefix=f".{name}.", dir=cache.cache_dir))
    try:
        make_disk(base_dir / base.disk, work / "disk.qcow2")
        for other in (base.kernel, base.initrd):
            if other and (base_dir / other).exists():
                os.link(base_dir / other, work / other)
        manifest = dataclasses.replace(base, name=name, content_hash=chash, disk="disk.qcow2")
        (work / "manifest.json").write_text(manifest.to_json())
        fsync_tree(work)  # on disk before it is published by the rename
        try:
            work.rename(target)  # atomic: readers see all of it or nothing
        except OSError:
            if not (target / "manifest.json").exists():
                raise  # not a concurrent build of the same content
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _point(pointer: Path, directory: str) -> None:
    # A name of its own per call: threads of one process may point the same image at once.
    tmp = pointer.with_name(f".{pointer.name}.ptr-{os.getpid()}-{secrets.token_hex(4)}")
    tmp.unlink(missing_ok=True)
    tmp.symlink_to(directory)
    os.replace(tmp, pointer)
