"""The libvirt domain XML of a lab VM, from one pure function.

`build_domain_xml(spec)` takes everything it needs in a `DomainSpec` (probing the host for
KVM happens before, in `accel.py`) and returns the XML; golden files in
`tests/unit/golden/` pin its output.

Choices that matter for the serial console:
- a 16550 UART (`isa-serial`) on ttyS0/COM1, backed by a pty: the lab daemon's console broker
  reads it itself for a guest on this machine (`pty_console.py`), through libvirt's console
  stream for one on another host;
- `<log file=... append='on'/>` on that serial device: virtlogd writes every byte the guest
  prints, from power-on, even while no lab process runs; that file *is* the
  boot-diagnostics serial log blob;
- a VGA device so `virDomainScreenshot` has a screen to capture;
- no USB controller (libvirt adds one unless told): nothing of the lab's uses USB (keys go to the
  PS/2 keyboard), and SeaBIOS and the guest kernel each spent time at boot probing it;
- two ways to boot: direct kernel boot (`<kernel>`, `<initrd>`, `<cmdline>`: the tiny image,
  its per-VM settings in the initrd) or the disk's own boot loader (a boot order on the disks: the
  debian image's GRUB, its per-VM settings on a read-only raw config disk, `vdb`);
- `on_reboot=restart`, so a guest reboot or a reset keeps the same QEMU process and the console
  connection is not interrupted (Azure's reset semantics);
- a virtio RNG fed from the host's /dev/urandom, as Azure hands its guests entropy at boot: without
  it a Debian guest's first getrandom() callers (dbus-daemon, ssh-keygen making the host keys)
  block until the kernel's entropy pool fills ("random: crng init done" at 17 s under TCG),
  spinning in the kernel's timer-jitter entropy loop on every vCPU meanwhile. With 2 vCPUs
  on 2 busy host cores that is where a guest locked up for good in CI (both vCPUs stuck, in
  ssh-keygen and dbus-daemon, from 26 s of uptime). With the device the pool is ready at 6 s,
  before any program asks, and that path is never taken;
- a virtio-serial channel for QEMU's guest agent (`org.qemu.guest_agent.0`): the debian image
  runs qemu-guest-agent on it, which is how the lab resets passwords and runs Run Command
  scripts (`lab.services.vm_agent`); the tiny image has no agent, so it never answers there;
- the DAC seclabel runs QEMU as the lab's own user without relabelling files, so images in the
  user's data dir stay readable and owned by the user (libvirt would otherwise chown them).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Literal
from xml.sax.saxutils import escape, quoteattr

from lab.domain.vm import METADATA_NS, VmIdentity, VmModel


@dataclass(frozen=True)
class DomainSpec:
    identity: VmIdentity
    model: VmModel
    uuid: str
    #: "kvm" or "qemu" (TCG).
    domain_type: str
    #: Direct kernel boot's files and command line; ignored (may be empty) for a disk boot.
    kernel: str
    initrd: str
    cmdline: str
    disk: str | None
    serial_log: str
    #: The uid:gid QEMU runs as (the lab's own user).
    run_as: tuple[int, int]
    deallocated: bool = False
    machine: str = "pc"
    #: "kernel": QEMU loads `kernel` and `initrd`; "disk": the firmware boots `disk`.
    boot: Literal["kernel", "disk"] = "kernel"
    #: A raw disk image attached read-only after `disk` (the per-VM config of a disk boot).
    config_disk: str | None = None
    #: SeaBIOS prints on the serial console too (`<bios useserial>`: QEMU's `graphics=off`,
    #: which turns SeaBIOS's serial console on); `lab.domain.boot_messages`. OVMF always does.
    firmware_on_serial: bool = False

    @property
    def uefi(self) -> bool:
        """A generation 2 VM: OVMF, not SeaBIOS."""
        return self.model.hyper_v_generation == "V2"


#: Debian's `ovmf` package: the UEFI firmware of generation 2 VMs (without Secure Boot, which the
#: lab does not emulate) and the template of each VM's own variable store (its NVRAM: boot
#: entries, setup settings), which libvirt copies at the first start and removes on undefine.
OVMF_CODE = "/usr/share/OVMF/OVMF_CODE_4M.fd"
OVMF_VARS = "/usr/share/OVMF/OVMF_VARS_4M.fd"
#: How long OVMF waits for Esc (its setup menu) before it boots: QEMU's boot menu timeout,
#: which OVMF takes as its own. Without it OVMF looks for the key for an instant a person (or
#: a script on a loaded host) misses.
OVMF_ESC_WAIT_MS = 3000


def build_domain_xml(spec: DomainSpec) -> str:
    """Return the libvirt domain XML for `spec`."""
    if spec.boot == "disk" and not spec.disk:
        raise ValueError("a disk boot needs a disk")
    ident, model = spec.identity, spec.model
    cpu = "<cpu mode='host-passthrough'/>" if spec.domain_type == "kvm" else ""
    disk_boot = spec.boot == "disk"
    disk = _disk_xml(spec.disk, boot_order=1 if disk_boot else None) if spec.disk else ""
    if spec.config_disk:
        # In the boot order too: libvirt starts QEMU with `-boot strict=on`, and SeaBIOS then
        # gives BIOS drive numbers only to the devices in the order, so GRUB would not see the
        # config disk it reads the VM's boot messages from (`lab_boot_args`, 01_lab).
        disk += _config_disk_xml(spec.config_disk, boot_order=2 if disk_boot else None)
    uid, gid = spec.run_as
    return f"""<domain type={quoteattr(spec.domain_type)}>
  <name>{escape(ident.domain_name)}</name>
  <uuid>{escape(spec.uuid)}</uuid>
  <title>{escape(f"{ident.resource_group}/{ident.name}")}</title>
  <metadata>
{_metadata_xml(spec)}
  </metadata>
  <memory unit='MiB'>{model.memory_mib}</memory>
  <vcpu>{model.vcpus}</vcpu>
  <os>
    <type arch='x86_64' machine={quoteattr(spec.machine)}>hvm</type>
{_boot_xml(spec)}
  </os>
  <features>
    <acpi/>
  </features>
  {cpu}
  <clock offset='utc'/>
  <on_poweroff>destroy</on_poweroff>
  <on_reboot>restart</on_reboot>
  <on_crash>destroy</on_crash>
  <devices>
{disk}    <serial type='pty'>
      <log file={quoteattr(spec.serial_log)} append='on'/>
      <target type='isa-serial' port='0'>
        <model name='isa-serial'/>
      </target>
    </serial>
    <console type='pty'>
      <target type='serial' port='0'/>
    </console>
    <video>
      <model type='vga'/>
    </video>
    <channel type='unix'>
      <target type='virtio' name='org.qemu.guest_agent.0'/>
    </channel>
    <controller type='usb' model='none'/>
    <memballoon model='none'/>
    <rng model='virtio'>
      <backend model='random'>/dev/urandom</backend>
    </rng>
  </devices>
  <seclabel type='static' model='dac' relabel='no'>
    <label>+{uid}:+{gid}</label>
  </seclabel>
</domain>
"""


def _boot_xml(spec: DomainSpec) -> str:
    firmware = _firmware_xml(spec)
    if spec.boot == "disk":
        return firmware.lstrip("\n")  # the disks' own boot order (see `build_domain_xml`)
    return f"""    <kernel>{escape(spec.kernel)}</kernel>
    <initrd>{escape(spec.initrd)}</initrd>
    <cmdline>{escape(spec.cmdline)}</cmdline>{firmware}"""


def _firmware_xml(spec: DomainSpec) -> str:
    if spec.uefi:
        return f"""
    <loader readonly='yes' type='pflash'>{OVMF_CODE}</loader>
    <nvram template={quoteattr(OVMF_VARS)}/>
    <bootmenu enable='yes' timeout='{OVMF_ESC_WAIT_MS}'/>"""
    return "\n    <bios useserial='yes'/>" if spec.firmware_on_serial else ""


def _boot_order(order: int | None) -> str:
    return f"\n      <boot order='{order}'/>" if order is not None else ""


def _disk_xml(path: str, boot_order: int | None = None) -> str:
    return f"""    <disk type='file' device='disk'>
      <driver name='qemu' type='qcow2'/>
      <source file={quoteattr(path)}/>
      <target dev='vda' bus='virtio'/>{_boot_order(boot_order)}
    </disk>
"""


def _config_disk_xml(path: str, boot_order: int | None = None) -> str:
    return f"""    <disk type='file' device='disk'>
      <driver name='qemu' type='raw'/>
      <source file={quoteattr(path)}/>
      <target dev='vdb' bus='virtio'/>{_boot_order(boot_order)}
      <readonly/>
    </disk>
"""


def metadata_element(spec: DomainSpec) -> str:
    """The element alone, unprefixed, as `virDomainSetMetadata` takes it (libvirt adds the
    namespace and prefix itself and refuses an element that declares them)."""
    return _metadata_xml(spec, prefix="").strip()


def _metadata_xml(spec: DomainSpec, prefix: str = "lab:") -> str:
    ident = spec.identity
    # A pin only when there is one: the metadata of unpinned VMs is as it was before hosts.
    unset = {"host"} if spec.model.host is None else None
    model_json = json.dumps(spec.model.model_dump(mode="json", exclude=unset), sort_keys=True)
    allocation = "deallocated" if spec.deallocated else "allocated"
    fields = {
        "labId": ident.lab_id,
        "subscriptionId": ident.subscription_id,
        "resourceGroup": ident.resource_group,
        "name": ident.name,
        "vmId": ident.vm_id,
        "allocation": allocation,
        "model": model_json,
    }
    if ident.scale_set is not None:
        fields |= {"scaleSet": ident.scale_set, "instanceId": ident.instance_id or "",
                   "computerName": ident.computer_name or ""}  # fmt: skip
    xmlns = f" xmlns:lab={quoteattr(METADATA_NS)}" if prefix else ""
    body = "".join(
        f"\n      <{prefix}{tag}>{escape(value)}</{prefix}{tag}>" for tag, value in fields.items()
    )
    return f"    <{prefix}vm{xmlns}>{body}\n    </{prefix}vm>"
