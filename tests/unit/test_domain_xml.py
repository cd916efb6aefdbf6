"""Golden-file tests of `build_domain_xml`: the exact libvirt XML of a lab VM.

Run with `UPDATE_GOLDEN=1` to rewrite the files after an intended change, then review the diff.
"""

from __future__ import annotations

import dataclasses
import os
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from lab.domain.vm import METADATA_NS, BootDiagnosticsModel, VmIdentity, VmModel
from lab.hypervisor.domain_xml import DomainSpec, build_domain_xml, metadata_element
from lab.hypervisor.metadata import parse_metadata

GOLDEN = Path(__file__).parent / "golden"
NS = {"lab": METADATA_NS}


def tcg_with_disk() -> DomainSpec:
    identity = VmIdentity(
        lab_id="0123abcd",
        subscription_id="8f6a2c1e-5b3d-4c7a-9e21-0d4b6f3a9c10",
        resource_group="Demo-RG",
        name="vm1",
        vm_id="6b1f3c52-2d4e-4c1a-9f0b-7e6d5c4b3a21",
    )
    model = VmModel(
        image="debian",
        vcpus=2,
        memory_mib=1024,
        admin_username="azureuser",
        kernel_args="console=ttyS0,115200",
        boot_diagnostics=BootDiagnosticsModel(
            enabled=True,
            storage_uri="https://demodiag.blob.core.windows.net/",
            storage_account="demodiag",
        ),
        tags={"role": "web"},
        size_name="Standard_B2s",
    )
    return DomainSpec(
        identity=identity,
        model=model,
        uuid=identity.vm_id,
        domain_type="qemu",
        kernel="/data/images/debian-0123456789ab/vmlinuz",
        initrd=f"/data/disks/{identity.domain_name}/initrd.img",
        cmdline="console=ttyS0,115200 quiet console=ttyS0,115200",
        disk=f"/data/disks/{identity.domain_name}/disk.qcow2",
        serial_log=(
            "/data/blobs/demodiag/bootdiagnostics-vm1-6b1f3c52-2d4e-4c1a-9f0b-7e6d5c4b3a21/"
            "vm1.6b1f3c52-2d4e-4c1a-9f0b-7e6d5c4b3a21.serialconsole.log"
        ),
        run_as=(1000, 1000),
        firmware_on_serial=True,
    )


def kvm_deallocated_escaped() -> DomainSpec:
    identity = VmIdentity(
        lab_id="feedf00d",
        subscription_id="00000000-0000-0000-0000-000000000000",
        resource_group="rg_(test).1",
        name="Tiny.VM-2",
        vm_id="0f0e0d0c-0b0a-4908-8706-050403020100",
    )
    model = VmModel(
        image="tiny",
        vcpus=1,
        memory_mib=256,
        admin_username="azureuser",
        kernel_args='lab.msg="a&b<c>" it\'s',
        boot_messages="quiet",
        tags={"owner": "Tom & Jerry", "quote": "say \"hi\" 'there'", "cmp": "1 < 2 > 0"},
    )
    return DomainSpec(
        identity=identity,
        model=model,
        uuid=identity.vm_id,
        domain_type="kvm",
        kernel="/data/images/tiny-abcdefabcdef/vmlinuz",
        initrd=f"/data/disks/{identity.domain_name}/initrd.img",
        cmdline='console=ttyS0 lab.msg="a&b<c>" it\'s',
        disk=None,
        serial_log='/data/blobs/labmanageddiag/c/it\'s "odd" & <x>.log',
        run_as=(1234, 5678),
        deallocated=True,
    )


def scale_set_instance() -> DomainSpec:
    """An instance: its own domain name (4 parts), the set and instance in the metadata."""
    base = tcg_with_disk()
    identity = dataclasses.replace(
        base.identity, name="web_3", scale_set="web", instance_id="3", computer_name="web000003"
    )
    model = base.model.model_copy(update={"model_version": 2})
    return dataclasses.replace(base, identity=identity, model=model, uuid=identity.vm_id,
                               initrd=f"/data/disks/{identity.domain_name}/initrd.img",
                               disk=f"/data/disks/{identity.domain_name}/disk.qcow2")  # fmt: skip


def disk_boot_with_config_disk() -> DomainSpec:
    """The debian image: the firmware boots GRUB from the OS disk (no kernel, initrd or command
    line); the VM's settings are on a raw config disk, attached read-only as vdb."""
    base = tcg_with_disk()
    vm_dir = f"/data/disks/{base.identity.domain_name}"
    return dataclasses.replace(base, kernel="", initrd="", cmdline="", boot="disk",
                               config_disk=f"{vm_dir}/config.img")  # fmt: skip


def generation_2_disk_boot() -> DomainSpec:
    """A generation 2 VM: OVMF from Debian's package and a variable store made from its
    template, no SeaBIOS serial switch (OVMF prints on the serial port by itself)."""
    base = disk_boot_with_config_disk()
    model = base.model.model_copy(update={"hyper_v_generation": "V2"})
    return dataclasses.replace(base, model=model)


CASES = {
    "tcg_disk_bootdiag": tcg_with_disk,
    "uefi_disk_boot": generation_2_disk_boot,
    "scale_set_instance": scale_set_instance,
    "kvm_nodisk_deallocated_escaped": kvm_deallocated_escaped,
    "disk_boot_config_disk": disk_boot_with_config_disk,
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_domain_xml_matches_golden_file(case: str) -> None:
    xml = build_domain_xml(CASES[case]())
    path = GOLDEN / f"{case}.xml"
    if os.environ.get("UPDATE_GOLDEN") == "1":
        path.write_text(xml)
    assert path.exists(), f"{path} is missing; run with UPDATE_GOLDEN=1 to create it"
    assert xml == path.read_text(), f"{path} differs; run with UPDATE_GOLDEN=1 and review the diff"


@pytest.mark.parametrize("case", sorted(CASES))
def test_domain_xml_parses_and_keeps_every_value(case: str) -> None:
    spec = CASES[case]()
    root = ET.fromstring(build_domain_xml(spec))
    assert root.tag == "domain"
    assert root.get("type") == spec.domain_type
    assert root.findtext("name") == spec.identity.domain_name
    assert root.findtext("uuid") == spec.uuid
    if spec.boot == "disk":
        # The OS disk first, then the config disk, which GRUB must see (SeaBIOS maps only the
        # devices in the boot order to BIOS drives when libvirt makes the boot strict).
        assert root.find("os/boot") is None
        orders = [(target.get("dev"), boot.get("order")) for d in root.findall("devices/disk")
                  if (target := d.find("target")) is not None
                  and (boot := d.find("boot")) is not None]  # fmt: skip
        assert orders == [("vda", "1"), ("vdb", "2")][: len(orders)], orders
        assert root.find("os/kernel") is None and root.find("os/initrd") is None
        assert root.find("os/cmdline") is None
    else:
        assert root.find("os/boot") is None
        assert root.findtext("os/cmdline") == spec.cmdline
        assert root.findtext("os/kernel") == spec.kernel
        assert root.findtext("os/initrd") == spec.initrd
    assert root.findtext("memory") == str(spec.model.memory_mib)
    assert root.findtext("vcpu") == str(spec.model.vcpus)
    log = root.find("devices/serial/log")
    assert log is not None
    assert log.get("file") == spec.serial_log
    assert log.get("append") == "on"
    assert root.find("devices/serial/target").get("type") == "isa-serial"  # type: ignore[union-attr]
    disks = root.findall("devices/disk")
    expected = [p for p in (spec.disk, spec.config_disk) if p]
    assert [d.find("source").get("file") for d in disks] == expected  # type: ignore[union-attr]
    assert [d.find("target").get("dev") for d in disks] == ["vda", "vdb"][: len(expected)]  # type: ignore[union-attr]
    formats = [d.find("driver").get("type") for d in disks]  # type: ignore[union-attr]
    assert formats == ["qcow2", "raw"][: len(expected)]
    readonly = [d.find("readonly") is not None for d in disks]
    assert readonly == [False, True][: len(expected)], "only the config disk is read-only"
    cpu = root.find("cpu")
    assert (cpu is not None) == (spec.domain_type == "kvm")
    assert root.findtext("seclabel/label") == f"+{spec.run_as[0]}:+{spec.run_as[1]}"


@pytest.mark.parametrize("case", sorted(CASES))
def test_metadata_in_domain_xml_round_trips(case: str) -> None:
    spec = CASES[case]()
    root = ET.fromstring(build_domain_xml(spec))
    element = root.find("metadata/lab:vm", NS)
    assert element is not None, "the metadata element is not in the lab namespace"
    identity, model, deallocated = parse_metadata(ET.tostring(element, encoding="unicode"))
    assert identity == spec.identity
    assert model == spec.model
    assert deallocated is spec.deallocated


@pytest.mark.parametrize("case", sorted(CASES))
def test_metadata_element_is_unprefixed_and_round_trips(case: str) -> None:
    spec = CASES[case]()
    element = metadata_element(spec)
    # virDomainSetMetadata adds namespace and prefix itself: the element must have neither.
    assert "xmlns" not in element
    assert "<lab:" not in element and "</lab:" not in element
    assert element.startswith("<vm>")
    assert element.endswith("</vm>")
    root = ET.fromstring(element)
    assert root.tag == "vm"
    assert all(not child.tag.startswith("{") and ":" not in child.tag for child in root)
    identity, model, deallocated = parse_metadata(element)
    assert (identity, model, deallocated) == (spec.identity, spec.model, spec.deallocated)


def test_a_disk_boot_needs_a_disk() -> None:
    spec = dataclasses.replace(disk_boot_with_config_disk(), disk=None)
    with pytest.raises(ValueError, match="disk boot needs a disk"):
        build_domain_xml(spec)


def test_kernel_boot_output_is_unchanged_by_the_disk_boot_fields() -> None:
    """The new fields default to the old behaviour: existing domains are redefined identically."""
    spec = tcg_with_disk()
    explicit = dataclasses.replace(spec, boot="kernel", config_disk=None)
    assert build_domain_xml(explicit) == build_domain_xml(spec)


def test_allocation_flag_follows_the_spec() -> None:
    spec = tcg_with_disk()
    for flag in (False, True):
        changed = DomainSpec(**{**spec.__dict__, "deallocated": flag})
        assert parse_metadata(metadata_element(changed))[2] is flag
        root = ET.fromstring(build_domain_xml(changed))
        assert root.findtext("metadata/lab:vm/lab:allocation", namespaces=NS) == (
            "deallocated" if flag else "allocated"
        )


@pytest.mark.parametrize("case", sorted(CASES))
def test_every_vm_gets_entropy_from_the_host_at_boot(case: str) -> None:
    # Without it a Debian guest's first getrandom() callers spin in the kernel's jitter-entropy
    # loop on every vCPU until the pool fills; that is where a 2-vCPU guest hung in CI.
    root = ET.fromstring(build_domain_xml(CASES[case]()))
    rng = root.find("devices/rng")
    assert rng is not None and rng.get("model") == "virtio"
    backend = rng.find("backend")
    assert backend is not None and backend.get("model") == "random"
    assert backend.text == "/dev/urandom"
