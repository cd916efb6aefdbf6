"""Shared pieces of the unit tests that run a real `Lab` over `FakeHypervisor`: a hand-made
image cache, settings on a temp data dir, and helpers (fixtures are in conftest.py)."""

from __future__ import annotations

import asyncio
import hashlib
import subprocess
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any, Literal

from lab.domain.boot_diagnostics import MANAGED_ACCOUNT
from lab.domain.vm import BootDiagnosticsModel, VmModel, VmView
from lab.hypervisor.fake import BOOT_BANNER, FakeHypervisor
from lab.services.lab import Lab
from lab.services.vms import NewVm
from lab.storage.images import ImageManifest

SUBSCRIPTION = "8f6a2c1e-5b3d-4c7a-9e21-0d4b6f3a9c10"
PASSWORD = "Passw0rd!"
#: `openssl passwd -6 -salt labtests` of PASSWORD: what the lab keeps of it.
PASSWORD_HASH = ("$6$labtests$zMzTTzG3bGCzWFzUs6rt3btZAQBi9DFC1hmLRAy7LNjhAjO6t0NTlcP9Vxf4.v.0"
                 "SdLxZXLMqYdQz8mWTfuzM/")  # fmt: skip
KERNEL = b"fake kernel\n"
BASE_INITRD = b"070701fake base initrd\0\0"
SHUTDOWN_TIMEOUT = 0.3


def make_image(
    cache: Path, name: str, *, disk: bool, boot: Literal["kernel", "disk"] = "kernel"
) -> ImageManifest:
    """A built image as `ImageCache` stores it: `<cache>/<name>` -> `<name>-<hash12>/`. A
    disk-boot image has a disk and no kernel or initrd."""
    chash = hashlib.sha256(f"fake {name}".encode()).hexdigest()
    directory = cache / f"{name}-{chash[:12]}"
    directory.mkdir(parents=True)
    if boot == "kernel":
        (directory / "vmlinuz").write_bytes(KERNEL)
        (directory / "initrd.img").write_bytes(BASE_INITRD)
    if disk:
        subprocess.run(
            ["qemu-img", "create", "-q", "-f", "qcow2", str(directory / "disk.qcow2"), "16M"],
            check=True,
        )
    manifest = ImageManifest(
        name=name,
        content_hash=chash,
        kernel="vmlinuz" if boot == "kernel" else "",
        initrd="initrd.img" if boot == "kernel" else "",
        disk="disk.qcow2" if disk else "",
        kernel_version="6.1.0-fake",
        cmdline="console=ttyS0,115200n8 panic=-1",
        boot=boot,
    )
    (directory / "manifest.json").write_text(manifest.to_json())
    (cache / name).symlink_to(directory.name)
    return manifest


def run(lab: Lab, scenario: Callable[[], Coroutine[Any, Any, None]]) -> None:
    """Run on a fresh event loop; close every console broker before the loop goes."""

    async def wrapped() -> None:
        try:
            await asyncio.wait_for(scenario(), 20)
        finally:
            lab.consoles.close_all()

    asyncio.run(wrapped())


def new_vm(name: str = "vm1", rg: str = "rg1", image: str = "tiny", **model: Any) -> NewVm:
    fields: dict[str, Any] = {
        "image": image,
        "vcpus": 1,
        "memory_mib": 256,
        "admin_username": "azureuser",
        "boot_diagnostics": BootDiagnosticsModel(enabled=True, storage_account=MANAGED_ACCOUNT),
        **model,
    }
    return NewVm(SUBSCRIPTION, rg, name, VmModel(**fields), PASSWORD_HASH)


def ops(hv: FakeHypervisor, domain: str) -> list[str]:
    return [op for op, name in hv.calls if name == domain]


def serial_log(lab: Lab, view: VmView) -> bytes:
    return lab.boot_diagnostics.serial_log(view).data


def banner(name: str = "vm1") -> bytes:
    return BOOT_BANNER.format(name=name).encode()
