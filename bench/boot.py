"""Power-on to `login:`, through the lab and on a bare QEMU in the same run, for each level of
boot messages (`bootMessages: normal`, the default, and `quiet`): seconds and serial-log bytes.

Through the lab: `POST /v1/vms/{vm}/start` on a stopped VM (define, start paused, broker
attach, resume), then the serial log (what the lab persists) is watched for the login prompt.
Bare: `qemu-system-x86_64 -serial stdio` with what the lab's domain has: the same kernel,
initrd and command line (the tiny image) or the same OS and config disks (the debian image,
whose GRUB reads the boot-message level from the config disk), the same memory, vCPUs,
accelerator and firmware output (`graphics=off` where the lab turns SeaBIOS's serial console
on), reading stdout for the prompt. Runs alternate so drift hits both alike.

`--uefi` adds generation 2 guests (`hyperVGeneration: V2`, normal boot messages): OVMF from
Debian's package, bare QEMU given the same firmware and a fresh copy of its variable store, so
BIOS and UEFI compare each against its own bare anchor.

Targets (tiny image, each level): lab <= bare + 0.30 s (the performance issue's).

    .venv/bin/python bench/boot.py [--runs 5] [--debian] [--uefi] [--check]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path

import benchlab

from lab.client.http import LabClient

GUEST = """\
      - name: {name}
        image: {image}
        size: {{vcpus: {vcpus}, memoryMiB: {memory}}}
        adminUsername: azureuser
        adminPassword: "Passw0rd!"
        bootDiagnostics: {{enabled: true}}
        bootMessages: {level}
        hyperVGeneration: {generation}
"""
LEVELS = ("normal", "quiet")


@dataclass
class Guest:
    name: str
    image: str
    level: str
    vcpus: int
    memory: int
    generation: str = "V1"
    lab: list[tuple[float, int]] = field(default_factory=list)
    bare: list[tuple[float, int]] = field(default_factory=list)

    @property
    def prompt(self) -> bytes:
        return f"{self.name} login: ".encode()


def lab_yaml(guests: list[Guest]) -> str:
    vms = "".join(GUEST.format(name=g.name, image=g.image, vcpus=g.vcpus, memory=g.memory,
                               level=g.level, generation=g.generation)
                  for g in guests)  # fmt: skip
    return f"resourceGroups:\n  - name: bench-rg\n    virtualMachines:\n{vms}"


def log_size(client: LabClient, vm: str) -> int:
    r = client.request("GET", f"/v1/vms/{vm}/boot-log", params={"start": -1})
    return int(r.headers["X-Lab-Size"])


def wait_prompt_in_log(client: LabClient, guest: Guest, start: int,
                       timeout: float = 300) -> tuple[float, int]:  # fmt: skip
    """When the prompt came, and the log's bytes from `start` to it."""
    deadline = time.monotonic() + timeout
    buf = b""
    offset = start
    while time.monotonic() < deadline:
        r = client.request("GET", f"/v1/vms/{guest.name}/boot-log", params={"start": offset})
        buf += r.content
        offset = int(r.headers["X-Lab-Next"])
        at = buf.find(guest.prompt)
        if at >= 0:
            return time.monotonic(), at + len(guest.prompt)
        time.sleep(0.01)
    raise TimeoutError(f"no login prompt from {guest.name} through the lab")


def lab_boot(client: LabClient, guest: Guest) -> tuple[float, int]:
    client.request("POST", f"/v1/vms/{guest.name}/powerOff", params={"skipShutdown": "true"})
    size = log_size(client, guest.name)
    t0 = time.monotonic()
    client.request("POST", f"/v1/vms/{guest.name}/start")
    at, nbytes = wait_prompt_in_log(client, guest, size)
    return at - t0, nbytes


def bare_command(domain_xml: str, accel: str, work: Path) -> list[str]:
    """The bare QEMU command line with what the lab's domain boots."""
    root = ET.fromstring(domain_xml)
    memory = root.find("memory")
    assert memory is not None and memory.text
    mib = int(memory.text) // 1024 if memory.get("unit", "KiB") == "KiB" else int(memory.text)
    vcpus = root.findtext("vcpu") or "1"
    machine = "pc,graphics=off" if root.find("os/bios[@useserial='yes']") is not None else "pc"
    cmd = ["qemu-system-x86_64", "-accel", "kvm" if accel == "kvm" else "tcg", "-m", str(mib),
           "-smp", vcpus, "-machine", machine, "-display", "none", "-nodefaults", "-vga", "std",
           "-serial", "stdio", "-device", "virtio-rng-pci"]  # fmt: skip
    loader = root.findtext("os/loader")
    if loader:  # OVMF, and a fresh variable store from the template libvirt copies
        nvram = root.find("os/nvram")
        template = nvram.get("template") if nvram is not None else None
        assert template, "a UEFI domain names its variable store's template"
        variables = work / "bare-vars.fd"
        variables.write_bytes(Path(template).read_bytes())
        cmd += ["-drive", f"if=pflash,format=raw,readonly=on,file={loader}",
                "-drive", f"if=pflash,format=raw,file={variables}"]  # fmt: skip
    kernel = root.findtext("os/kernel")
    if kernel:
        cmd += ["-kernel", kernel, "-initrd", root.findtext("os/initrd") or "",
                "-append", root.findtext("os/cmdline") or ""]  # fmt: skip
    for n, disk in enumerate(root.findall("devices/disk")):
        source = disk.find("source")
        assert source is not None
        path = Path(source.get("file") or "")
        if n == 0:  # the OS disk: a fresh overlay on its base, as a start after reimage
            info = subprocess.run(["qemu-img", "info", "-U", "--output=json", str(path)],
                                  capture_output=True, text=True, check=True)  # fmt: skip
            base = json.loads(info.stdout)["backing-filename"]
            path = work / "bare-overlay.qcow2"
            subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-F", "qcow2", "-b",
                            base, str(path)], check=True)  # fmt: skip
            cmd += ["-drive", f"file={path},if=virtio,format=qcow2"]
        else:  # the config disk, read-only
            cmd += ["-drive", f"file={path},if=virtio,format=raw,readonly=on"]
    return cmd


def bare_boot(cmd: list[str], guest: Guest, timeout: float = 300) -> tuple[float, int]:
    t0 = time.monotonic()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    assert proc.stdout is not None
    buf = b""
    deadline = t0 + timeout
    try:
        while guest.prompt not in buf:
            if time.monotonic() > deadline:
                raise TimeoutError(f"no login prompt from bare QEMU ({guest.name})")
            chunk = os.read(proc.stdout.fileno(), 65536)
            if not chunk:
                raise RuntimeError("bare QEMU exited before the login prompt")
            buf += chunk
        return time.monotonic() - t0, buf.find(guest.prompt) + len(guest.prompt)
    finally:
        proc.kill()
        proc.wait()


def median(runs: list[tuple[float, int]], i: int) -> float:
    return statistics.median(r[i] for r in runs)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--debian", action="store_true",
                        help="the debian image too (GRUB, systemd; ~20-60 s a boot under TCG)")
    parser.add_argument("--uefi", action="store_true",
                        help="generation 2 (OVMF) guests too, next to the BIOS ones")
    benchlab.Targets.add_option(parser)
    args = parser.parse_args()
    benchlab.exit_on_sigterm()
    guests = [Guest(f"tiny-{lv}", "tiny", lv, 1, 256) for lv in LEVELS]
    if args.debian:
        guests += [Guest(f"deb-{lv}", "debian", lv, 2, 1024) for lv in LEVELS]
    if args.uefi:
        guests += [Guest(f"{g.name.split('-')[0]}-uefi", g.image, g.level, g.vcpus, g.memory,
                         generation="V2") for g in guests if g.level == "normal"]  # fmt: skip
    lab = benchlab.BenchLab("boot", lab_yaml(guests))
    client = lab.client
    try:
        if args.debian:
            lab.lab("image", "build", "debian")
        status = lab.start()
        commands = {}
        for guest in guests:
            wait_prompt_in_log(client, guest, 0)
            domain = next(d.name for d in (lab.data_dir / "disks").iterdir()
                          if d.name.endswith(f"+{guest.name}"))  # fmt: skip
            xml = subprocess.run(["virsh", "dumpxml", domain], capture_output=True, text=True,
                                 check=True).stdout  # fmt: skip
            commands[guest.name] = bare_command(xml, status["accel"], lab.data_dir)
            # Each VM boots only while measured: the others' boots would slow it.
            client.request("POST", f"/v1/vms/{guest.name}/powerOff",
                           params={"skipShutdown": "true"})  # fmt: skip
        for _ in range(args.runs):
            for guest in guests:
                guest.lab.append(lab_boot(client, guest))
                client.request("POST", f"/v1/vms/{guest.name}/powerOff",
                               params={"skipShutdown": "true"})  # fmt: skip
                guest.bare.append(bare_boot(commands[guest.name], guest))
    except BaseException:
        lab.note_daemon_failure()
        raise
    finally:
        lab.close()
    targets = benchlab.Targets()
    print(f"accelerator: {status['accel']}; {args.runs} runs each, power-on to 'login:' "
          "(medians)")  # fmt: skip
    print(f"  {'guest':12} {'lab s':>7} {'bare s':>7} {'ratio':>6} {'extra s':>8} "
          f"{'log bytes':>10} {'bare bytes':>10}")  # fmt: skip
    for g in guests:
        lab_s, bare_s = median(g.lab, 0), median(g.bare, 0)
        nbytes = f"{median(g.lab, 1):10.0f} {median(g.bare, 1):10.0f}"
        print(f"  {g.name:12} {lab_s:7.2f} {bare_s:7.2f} {lab_s / bare_s:6.2f} "
              f"{lab_s - bare_s:+8.2f} {nbytes}")  # fmt: skip
        if g.image == "tiny" and g.generation == "V1":
            target = bare_s + 0.30
            verdict = targets.verdict(f"boot time {g.name}", lab_s <= target)
            print(f"    target lab <= bare + 0.30 s = {target:.2f} s: {verdict}")
    named = {g.name: g for g in guests}
    for image in ("tiny", "deb"):
        normal, quiet = named.get(f"{image}-normal"), named.get(f"{image}-quiet")
        if normal and quiet:
            print(f"  {image}: normal against quiet, through the lab: "
                  f"{median(normal.lab, 0) - median(quiet.lab, 0):+.2f} s, "
                  f"{median(normal.lab, 1) / max(1.0, median(quiet.lab, 1)):.1f}x the bytes; "
                  f"bare: {median(normal.bare, 0) - median(quiet.bare, 0):+.2f} s")  # fmt: skip
        uefi = named.get(f"{image}-uefi")
        if normal and uefi:
            print(f"  {image}: UEFI (OVMF) against BIOS (SeaBIOS), normal: through the lab "
                  f"{median(uefi.lab, 0) - median(normal.lab, 0):+.2f} s, bare "
                  f"{median(uefi.bare, 0) - median(normal.bare, 0):+.2f} s; log bytes "
                  f"{median(uefi.lab, 1):.0f} against {median(normal.lab, 1):.0f}")  # fmt: skip
    return targets.exit_status(args.check, "boot")


if __name__ == "__main__":
    raise SystemExit(main())
