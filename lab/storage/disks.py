"""qcow2 overlays on cached images: a VM's writes survive power cycles; reimage drops them."""

from __future__ import annotations

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
