"""The debian image through the lab, as a trainee meets it: built once (then cached), a VM from a
lab file boots GRUB from its own disk with the menu on the serial console, its config disk gives
it the VM's host name and the lab file's admin user, and the admin logs in on the console.

Slow under TCG (a cold build ~40 s, each boot ~20 s): marked `debian` as well as `integration`.
Run alone with ``pytest -m integration tests/integration/test_debian_image.py -s`` to see the
timings it prints.
"""

from __future__ import annotations

import os
import re
import shutil
import time

import pytest

from lab.client import connect
from lab.domain.vm import lab_id_for
from tests.integration.labharness import LabHarness

pytestmark = [pytest.mark.integration, pytest.mark.debian]

VM, USER, PASSWORD = "deb1", "azureuser", "Passw0rd!"
LAB = f"""\
subscriptionId: 11111111-2222-3333-4444-555555555555
resourceGroups:
  - name: debian-rg
    storageAccounts:
      - name: debiandiag
    virtualMachines:
      - name: {VM}
        image: debian
        size: {{vcpus: 2, memoryMiB: 1024}}
        adminUsername: {USER}
        adminPassword: "{PASSWORD}"
        bootDiagnostics: {{enabled: true, storageUri: "https://debiandiag.blob.core.windows.net/"}}
"""
#: GRUB's menu on a serial terminal: its title and the help line under the entries.
GRUB_MENU = rb"GNU GRUB +version 2[\s\S]*Use the \^ and v keys to select which entry is highlighted"
LOGIN = rf"{VM} login: ".encode()


def seconds_until(lab: LabHarness, pattern: bytes, started: float, *, start: int = 0,
                  timeout: float = 240) -> float:  # fmt: skip
    lab.wait_for_log(VM, pattern, start=start, timeout=timeout)
    return round(time.monotonic() - started, 1)


def test_debian_vm_boots_grub_on_the_serial_console_and_logs_in(
    harness: LabHarness, record_property: pytest.RecordProperty
) -> None:
    if os.geteuid() != 0 or shutil.which("mmdebstrap") is None:
        pytest.skip("building the debian image needs root and mmdebstrap (make setup)")
    timings: dict[str, float] = {}

    started = time.monotonic()
    built = harness.cli("image", "build", "debian", timeout=1800)
    timings["image build (this run)"] = round(time.monotonic() - started, 2)
    print(f"\n{built.stdout.strip()}")
    started = time.monotonic()
    again = harness.cli("image", "build", "debian")
    timings["image build again (cached)"] = round(time.monotonic() - started, 2)
    assert "cached" in again.stdout, again.stdout
    assert "disk boot" in again.stdout
    match = re.search(r"built in ([\d.]+) s", again.stdout)
    assert match is not None
    timings["image build (cold, from the manifest)"] = float(match.group(1))

    lab_file = harness.write_lab("debian.yaml", LAB)
    try:
        started = time.monotonic()
        harness.cli("up", str(lab_file), timeout=300)
        timings["GRUB menu"] = seconds_until(harness, GRUB_MENU, started)
        timings["login:"] = seconds_until(harness, LOGIN, started)
        log = harness.boot_log(VM)
        # The countdown a trainee can interrupt, and the kernel on the serial console.
        assert b"The highlighted entry will be executed automatically in" in log
        assert b"Loading Linux" in log
        assert f"lab: admin user {USER} ready".encode() in log

        with connect(VM, settings=harness.settings, timeout=60) as console:
            console.login(USER, PASSWORD)
            assert console.run("hostname") == (f"{VM}\n", 0)
            out, status = console.run("id")
            assert status == 0 and f"({USER})" in out and "(sudo)" in out, out
            out, status = console.run(f"printf '%s\\n' '{PASSWORD}' | sudo -S -p '' id -un")
            assert (out.strip().splitlines()[-1], status) == ("root", 0), out
            out, _ = console.run("findmnt -no SOURCE,FSTYPE /; cat /proc/cmdline")
            assert "ext4" in out and "console=ttyS0,115200n8" in out and "root=UUID=" in out
            # Entropy from the host at boot (virtio-rng): without it the first getrandom()
            # callers spin in the kernel's jitter loop on both vCPUs, where a guest hung in CI.
            out, _ = console.run("cat /sys/devices/virtual/misc/hw_random/rng_current")
            assert out.strip().startswith("virtio_rng"), out
            # Something to lose: reimage goes back to the image's disk.
            assert console.run("touch ~/before-reimage && ls ~")[0].strip() == "before-reimage"

        # Reimage: a fresh OS disk; the config disk stays and its settings apply again.
        size = harness.log_size(VM)
        started = time.monotonic()
        harness.cli("vm", "reimage", VM, timeout=300)
        timings["reimage: GRUB menu"] = seconds_until(harness, GRUB_MENU, started, start=size)
        timings["reimage: login:"] = seconds_until(harness, LOGIN, started, start=size)
        with connect(VM, settings=harness.settings, timeout=60) as console:
            console.login(USER, PASSWORD)
            assert console.run("hostname; ls ~ | wc -l") == (f"{VM}\n0\n", 0)
    finally:
        print("debian image timings (s):", timings)
        for name, value in timings.items():
            record_property(name, value)
        harness.cli("down", str(lab_file), check=False, timeout=300)

    vm_dirs = harness.settings.disk_dir.glob(f"scl-{lab_id_for(harness.data_dir)}+debian-rg+*")
    assert list(vm_dirs) == [], "lab down removed the OS and config disks"
