"""qcow2 overlays on cached images: a VM's writes survive power cycles; reimage drops them."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from lab.domain.errors import ImageError


def create_overlay(base: Path, overlay: Path) -> None:
    overlay.parent.mkdir(parents=True, exist_ok=True)
    tmp = overlay.with_name(overlay.name + ".tmp")
    cmd = ["qemu-img", "create", "-q", "-f", "qcow2", "-F", "qcow2", "-b", str(base), str(tmp)]
    result = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise ImageError(f"creating the disk overlay {overlay} failed: {result.stderr.strip()}")
    tmp.replace(overlay)


def reset_overlay(base: Path, overlay: Path) -> None:
    """Reimage: a fresh overlay on the same base, replacing the old one atomically."""
    create_overlay(base, overlay)


def create_overlay_on(base: Path, backing_path: str, overlay: Path) -> None:
    """An overlay of `base` whose backing file is `backing_path`, a path on another host
    (the same image, copied there): made here, unsafe (`-u`: the backing is not opened), with
    `base`'s virtual size, and copied to the host with the rest of the VM's files."""
    info = subprocess.run(["qemu-img", "info", "--output=json", str(base)],
                          capture_output=True, text=True, check=False)  # fmt: skip
    if info.returncode != 0:
        raise ImageError(f"reading the image {base} failed: {info.stderr.strip()}")
    size = str(json.loads(info.stdout)["virtual-size"])
    overlay.parent.mkdir(parents=True, exist_ok=True)
    tmp = overlay.with_name(overlay.name + ".tmp")
    cmd = ["qemu-img", "create", "-q", "-f", "qcow2", "-F", "qcow2", "-u", "-b", backing_path,
           str(tmp), size]  # fmt: skip
    result = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise ImageError(f"creating the disk overlay {overlay} failed: {result.stderr.strip()}")
    tmp.replace(overlay)


def rebase_overlay(overlay: Path, backing_path: str) -> None:
    """Point `overlay` at `backing_path`, the same image elsewhere (unsafe: not opened)."""
    cmd = ["qemu-img", "rebase", "-u", "-F", "qcow2", "-b", backing_path, str(overlay)]
    result = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise ImageError(f"re-pointing the disk {overlay} failed: {result.stderr.strip()}")
