"""Power-on to `login:` for the tiny image: through the lab vs a bare QEMU, in the same run.

Through the lab: `POST /v1/vms/{vm}/start` on a stopped VM (define, start paused, broker
attach, resume), then the serial log (what the lab persists) is watched for the login prompt.
Bare: `qemu-system-x86_64 -kernel ... -initrd ... -serial stdio` with the same kernel, initrd,
command line, disk, memory, vCPUs and accelerator, reading stdout for the prompt.
Runs alternate so drift hits both alike. Target: lab <= 1.10 x bare + 0.5 s.

    .venv/bin/python bench/boot.py [--runs 5]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import time
from pathlib import Path

import benchlab

from lab.client.http import LabClient

LAB = """\
resourceGroups:
  - name: bench-rg
    virtualMachines:
      - name: bench1
        image: tiny
        size: {vcpus: 1, memoryMiB: 256}
        adminUsername: azureuser
        adminPassword: "Passw0rd!"
        bootDiagnostics: {enabled: true}
"""
PROMPT = b"bench1 login: "


def wait_prompt_in_log(client: LabClient, start: int, timeout: float = 120) -> float:
    deadline = time.monotonic() + timeout
    buf = b""
    offset = start
    while time.monotonic() < deadline:
        r = client.request("GET", "/v1/vms/bench1/boot-log", params={"start": offset})
        buf += r.content
        offset = int(r.headers["X-Lab-Next"])
        if PROMPT in buf:
            return time.monotonic()
        time.sleep(0.01)
    raise TimeoutError("no login prompt through the lab")


def lab_boot(client: LabClient) -> float:
    client.request("POST", "/v1/vms/bench1/powerOff", params={"skipShutdown": "true"})
    size = int(
        client.request("GET", "/v1/vms/bench1/boot-log", params={"start": -1}).headers["X-Lab-Size"]
    )
    t0 = time.monotonic()
    client.request("POST", "/v1/vms/bench1/start")
    return wait_prompt_in_log(client, size) - t0


def bare_boot(accel: str, kernel: Path, initrd: Path, cmdline: str, disk: Path) -> float:
    overlay = disk.with_name("bare-overlay.qcow2")
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-F", "qcow2", "-b", str(disk),
                    str(overlay)], check=True)  # fmt: skip
    cmd = ["qemu-system-x86_64", "-accel", "kvm" if accel == "kvm" else "tcg", "-m", "256",
           "-smp", "1", "-display", "none", "-nodefaults", "-vga", "std", "-serial", "stdio",
           "-kernel", str(kernel), "-initrd", str(initrd), "-append", cmdline,
           "-drive", f"file={overlay},if=virtio,format=qcow2"]  # fmt: skip
    t0 = time.monotonic()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    assert proc.stdout is not None
    buf = b""
    try:
        while PROMPT not in buf:
            chunk = os.read(proc.stdout.fileno(), 65536)
            if not chunk:
                raise RuntimeError("bare QEMU exited before the login prompt")
            buf += chunk
        return time.monotonic() - t0
    finally:
        proc.kill()
        proc.wait()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    benchlab.Targets.add_option(parser)
    args = parser.parse_args()
    benchlab.exit_on_sigterm()
    lab = benchlab.BenchLab("boot", LAB)
    client = lab.client
    try:
        status = lab.start()
        wait_prompt_in_log(client, 0)
        vm_dir = next((lab.data_dir / "disks").iterdir())
        xml = subprocess.run(["virsh", "dumpxml", vm_dir.name], capture_output=True, text=True,
                             check=True).stdout  # fmt: skip
        import xml.etree.ElementTree as ET

        os_el = ET.fromstring(xml).find("os")
        assert os_el is not None
        kernel = Path(os_el.findtext("kernel") or "")
        cmdline = os_el.findtext("cmdline") or ""
        source = ET.fromstring(xml).find("devices/disk/source")
        assert source is not None
        disk = Path(source.get("file") or "")
        # -U: the running guest holds the overlay's write lock; reading its header is safe.
        info = subprocess.run(["qemu-img", "info", "-U", "--output=json", str(disk)],
                              capture_output=True, text=True, check=True)  # fmt: skip
        base_disk = Path(json.loads(info.stdout)["backing-filename"])
        lab_times, bare_times = [], []
        for _ in range(args.runs):
            lab_times.append(lab_boot(client))
            initrd = vm_dir / "initrd.img"
            bare_times.append(bare_boot(status["accel"], kernel, initrd, cmdline, base_disk))
    except BaseException:
        lab.note_daemon_failure()
        raise
    finally:
        lab.close()
    lab_med, bare_med = statistics.median(lab_times), statistics.median(bare_times)
    target = 1.10 * bare_med + 0.5
    print(f"accelerator: {status['accel']}; {args.runs} runs each, power-on to 'login:'")
    print(f"  lab  : median {lab_med:.2f} s  (runs: {', '.join(f'{t:.2f}' for t in lab_times)})")
    print(f"  bare : median {bare_med:.2f} s  (runs: {', '.join(f'{t:.2f}' for t in bare_times)})")
    print(f"  ratio lab/bare: {lab_med / bare_med:.2f}; overhead {lab_med - bare_med:+.2f} s")
    targets = benchlab.Targets()
    verdict = targets.verdict("boot time", lab_med <= target)
    print(f"  target lab <= 1.10 x bare + 0.5 s = {target:.2f} s: {verdict}")
    return targets.exit_status(args.check, "boot")


if __name__ == "__main__":
    raise SystemExit(main())
