"""KVM or TCG, decided once per host kernel and guest kernel: the probe's verdict
(`lab.hypervisor.accel.probe_kvm`) is cached in a small file like the lab's state, written and
read the same way."""

from __future__ import annotations

import json
import platform
from pathlib import Path

from lab.hypervisor import accel
from lab.storage.blobs import write_atomic
from lab.storage.state import load_cache


def choose_accel(setting: str, kernel: Path, initrd: Path, cache_file: Path) -> tuple[str, str]:
    """Return (domain type, why): "kvm" or "qemu". `setting` is auto|kvm|qemu."""
    if setting in ("kvm", "qemu"):
        return setting, f"forced by LAB_ACCEL={setting}"
    key = f"{platform.release()}|{kernel.resolve()}"
    cached = load_cache(cache_file, "the KVM probe's verdict")
    if cached is not None and cached.get("key") == key and {"accel", "why"} <= cached.keys():
        return str(cached["accel"]), str(cached["why"]) + " (cached)"
    works, why = accel.probe_kvm(kernel, initrd)
    chosen = "kvm" if works else "qemu"
    cache_file.parent.mkdir(parents=True, exist_ok=True)
    verdict = {"key": key, "accel": chosen, "why": why}
    write_atomic(cache_file, json.dumps(verdict).encode())
    return chosen, why
