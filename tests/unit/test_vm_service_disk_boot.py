"""`VmService` with a disk-boot image (the debian image's kind) over `FakeHypervisor`.

The image cache holds a hand-made disk-boot image (a manifest with ``boot: disk``, a real qcow2
disk, no kernel or initrd): creating a VM writes its qcow2 overlay and its config disk (a real
ext4 image made with mkfs.ext4), and the domain boots from the disk with the config disk
attached read-only.
"""

from __future__ import annotations

import shutil
import subprocess
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from lab.domain.errors import InvalidInput
from lab.domain.power import PowerState
from lab.hypervisor.fake import FakeHypervisor
from lab.services.lab import Lab
from lab.storage.images import CONFIG_DISK_FILE
from tests.unit.fakelab import PASSWORD, new_vm, ops, run

pytestmark = pytest.mark.skipif(
    not all(shutil.which(t) for t in ("mkfs.ext4", "debugfs", "openssl", "qemu-img")),
    reason="needs mkfs.ext4, debugfs, openssl and qemu-img",
)


def debugfs_cat(image: Path, name: str) -> str:
    return subprocess.run(
        ["debugfs", "-R", f"cat /{name}", str(image)], capture_output=True, text=True, check=True
    ).stdout


def test_create_writes_an_overlay_and_a_config_disk_and_boots_from_the_disk(
    lab: Lab, hv: FakeHypervisor
) -> None:
    async def scenario() -> None:
        view = await lab.vms.create(new_vm(image="debian"))
        assert view.power_state is PowerState.RUNNING
        vm_dir = lab.ctx.vm_dir(view.identity)
        assert sorted(p.name for p in vm_dir.iterdir()) == [CONFIG_DISK_FILE, "disk.qcow2"]
        config = vm_dir / CONFIG_DISK_FILE
        assert config.stat().st_mode & 0o777 == 0o600
        assert PASSWORD.encode() not in config.read_bytes(), "only the hash is on the disk"
        assert debugfs_cat(config, "hostname") == "vm1\n"
        user, password_hash = debugfs_cat(config, "admin").splitlines()
        assert user == "azureuser" and password_hash.startswith("$6$")

        root = ET.fromstring(hv.xml(view.identity.domain_name))
        assert root.find("os/kernel") is None and root.find("os/cmdline") is None
        # The OS disk boots first; the config disk is in the order too, so GRUB sees it.
        orders = [b.get("order") for b in root.findall("devices/disk/boot")]
        assert root.find("os/boot") is None and orders == ["1", "2"]
        sources = [d.find("source").get("file") for d in root.findall("devices/disk")]  # type: ignore[union-attr]
        assert sources == [str(vm_dir / "disk.qcow2"), str(config)]
        assert root.find("devices/disk[2]/readonly") is not None

    run(lab, scenario)


def test_reimage_gives_a_fresh_os_disk_and_keeps_the_config_disk(
    lab: Lab, hv: FakeHypervisor
) -> None:
    async def scenario() -> None:
        view = await lab.vms.create(new_vm(image="debian"))
        vm_dir = lab.ctx.vm_dir(view.identity)
        disk, config = vm_dir / "disk.qcow2", vm_dir / CONFIG_DISK_FILE
        disk_inode, config_stat = disk.stat().st_ino, config.stat()
        result = await lab.vms.reimage(view)
        assert result.power_state is PowerState.RUNNING
        assert disk.stat().st_ino != disk_inode
        assert (config.stat().st_ino, config.stat().st_mtime_ns) == (
            config_stat.st_ino, config_stat.st_mtime_ns
        )  # fmt: skip
        assert ops(hv, view.identity.domain_name)[-4:] == [
            "define", "start", "open_console", "resume"
        ]  # fmt: skip
        assert f'<source file="{config}"/>' in hv.xml(view.identity.domain_name)

    run(lab, scenario)


def test_kernel_args_are_refused_for_a_disk_boot_image(lab: Lab, hv: FakeHypervisor) -> None:
    async def scenario() -> None:
        with pytest.raises(InvalidInput, match="boots GRUB from its own disk") as err:
            await lab.vms.create(new_vm(image="debian", kernel_args="single"))
        assert err.value.target == "kernelArgs"
        assert hv.calls == []

    run(lab, scenario)


def test_kernel_boot_vms_get_no_config_disk(lab: Lab, hv: FakeHypervisor) -> None:
    async def scenario() -> None:
        view = await lab.vms.create(new_vm(), start=False)
        vm_dir = lab.ctx.vm_dir(view.identity)
        assert not (vm_dir / CONFIG_DISK_FILE).exists()
        xml = hv.xml(view.identity.domain_name)
        assert "<boot " not in xml and "config.img" not in xml
        assert f"<initrd>{vm_dir / 'initrd.img'}</initrd>" in xml

    run(lab, scenario)
