"""The debian image through the lab, as a trainee meets it: built once (then cached), a VM from a
lab file boots GRUB from its own disk with the menu on the serial console, its config disk gives
it the VM's host name and the lab file's admin user, and the admin logs in on the console.

Slow under TCG (a cold build ~40 s, each boot ~20 s): marked `debian` as well as `integration`.
Run alone with ``pytest -m integration tests/integration/test_debian_image.py -s`` to see the
timings it prints.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import time

import pytest
from azure.core.exceptions import HttpResponseError
from azure.mgmt.compute.models import (
    RunCommandInput,
    VirtualMachineExtension,
    VirtualMachineExtensionProperties,
)

from lab.client import connect
from lab.domain.vm import lab_id_for
from tests.integration.azcli import ensure_azure_cli
from tests.integration.labharness import LabHarness
from tests.integration.test_azure_cli import SUB, CliLab
from tests.integration.test_azure_compute import compute

pytestmark = [pytest.mark.integration, pytest.mark.debian]

VM, USER, PASSWORD = "deb1", "azureuser", "Passw0rd!"
#: The user the VM access extension makes, and its password (which must leak nowhere).
RESCUE, RESCUE_PASSWORD = "rescue", "Resc-u3-Only-Here!"
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
        # The whole boot (`bootMessages: normal`, the default): SeaBIOS first, the countdown a
        # trainee can interrupt, the kernel from its banner, systemd's status lines.
        assert re.match(rb"\x1bc[^\n]*SeaBIOS \(version ", log), log[:200]
        assert b"The highlighted entry will be executed automatically in" in log
        assert b"Loading Linux" in log
        assert b"Linux version 6." in log and b"Reached target" in log
        # SeaBIOS turns line wrap off; GRUB (01_lab) turns it on again before the kernel.
        assert log.index(b"\x1b[?7l") < log.index(b"\x1b[?7h") < log.index(b"Linux version")
        assert f"lab: admin user {USER} ready".encode() in log
        timings["boot log bytes"] = len(log)

        with connect(VM, settings=harness.settings, timeout=60) as console:
            console.login(USER, PASSWORD)
            assert console.run("hostname") == (f"{VM}\n", 0)
            out, status = console.run("id")
            assert status == 0 and f"({USER})" in out and "(sudo)" in out, out
            out, status = console.run(f"printf '%s\\n' '{PASSWORD}' | sudo -S -p '' id -un")
            assert (out.strip().splitlines()[-1], status) == ("root", 0), out
            out, _ = console.run("findmnt -no SOURCE,FSTYPE /; cat /proc/cmdline")
            assert "ext4" in out and "console=ttyS0,115200n8" in out and "root=UUID=" in out
            # GRUB read the VM's boot messages from its config disk (01_lab, lab_boot_args).
            assert "earlyprintk=ttyS0,115200" in out and "quiet" not in out, out
            kernel = console.run("uname -r")[0].strip()
            # Entropy from the host at boot (virtio-rng): without it the first getrandom()
            # callers spin in the kernel's jitter loop on both vCPUs, where a guest hung in CI.
            out, _ = console.run("cat /sys/devices/virtual/misc/hw_random/rng_current")
            assert out.strip().startswith("virtio_rng"), out
            # Something to lose: reimage goes back to the image's disk.
            assert console.run("touch ~/before-reimage && ls ~")[0].strip() == "before-reimage"

        check_the_guest_agent(harness, kernel, timings)

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


def check_the_guest_agent(harness: LabHarness, kernel: str, timings: dict[str, float]) -> None:
    """Azure's VM agent functions through qemu-guest-agent, with the official SDK: Run Command
    returns what the script printed; the VM access extension makes a new admin user whose
    password then logs in on the serial console, and that password is nowhere else; with the
    agent stopped, both fail as Azure's do after the lab's bounded wait (5 s in tests)."""
    client = compute(harness)
    started = time.monotonic()
    result = client.virtual_machines.begin_run_command(
        "debian-rg", VM, RunCommandInput(command_id="RunShellScript", script=["uname -r", "id -un"])
    ).result()
    timings["Run Command uname -r"] = round(time.monotonic() - started, 2)
    assert result.value[0].code == "ProvisioningState/succeeded"
    assert result.value[0].message == f"Enable succeeded: \n[stdout]\n{kernel}\nroot\n\n[stderr]\n"
    started = time.monotonic()
    client.virtual_machines.begin_run_command(
        "debian-rg", VM, RunCommandInput(command_id="RunShellScript", script=["true"])
    ).result()
    timings["Run Command true (SDK)"] = round(time.monotonic() - started, 2)
    az_passwords = check_the_agent_through_az(harness, timings)

    started = time.monotonic()
    client.virtual_machine_extensions.begin_create_or_update(
        "debian-rg", VM, "VMAccessForLinux",
        VirtualMachineExtension(location="westeurope", properties=VirtualMachineExtensionProperties(
            publisher="Microsoft.OSTCExtensions", type="VMAccessForLinux",
            type_handler_version="1.5",
            protected_settings={"username": RESCUE, "password": RESCUE_PASSWORD})),
    ).result()  # fmt: skip
    timings["reset password"] = round(time.monotonic() - started, 2)
    ext = client.virtual_machine_extensions.get("debian-rg", VM, "VMAccessForLinux",
                                                expand="instanceView")  # fmt: skip
    assert ext.properties.provisioning_state == "Succeeded"
    assert ext.properties.instance_view.statuses[0].code == "ProvisioningState/succeeded"
    # The serial log before the test types anything there itself.
    serial_log = harness.boot_log(VM)
    with connect(VM, settings=harness.settings, timeout=60) as console:
        for user, password in ((RESCUE, RESCUE_PASSWORD), *az_passwords):
            console.login(user, password)
            out, status = console.run("id")
            assert status == 0 and f"({user})" in out and "(sudo)" in out, out
            console.sendline("exit")
        # The agent down: the training case for the serial console.
        console.login(USER, PASSWORD)
        console.run(f"printf '%s\\n' '{PASSWORD}' | sudo -S -p '' systemctl stop "
                    "qemu-guest-agent")  # fmt: skip
    started = time.monotonic()
    with pytest.raises(HttpResponseError) as down:
        client.virtual_machines.begin_run_command(
            "debian-rg", VM, RunCommandInput(command_id="RunShellScript", script=["true"])
        ).result()
    waited = time.monotonic() - started
    assert down.value.error.code == "VMAgentStatusCommunicationError", down.value
    assert 5 <= waited < 20, f"the bounded wait took {waited:.1f} s"
    timings["agent down: refused after"] = round(waited, 1)
    # The password went to the guest and nowhere else the lab writes.
    leaks = {
        "serial log": serial_log, "daemon log": harness.daemon_log().encode(),
        **{str(p.relative_to(harness.data_dir)): p.read_bytes()
           for p in harness.data_dir.glob("*") if p.is_file() and p.suffix != ".sock"},
    }  # fmt: skip
    for secret in (RESCUE_PASSWORD, *(p for _, p in az_passwords)):
        assert [k for k, v in leaks.items() if secret.encode() in v] == [], secret


def check_the_agent_through_az(harness: LabHarness, timings: dict[str, float]
                               ) -> list[tuple[str, str]]:  # fmt: skip
    """The real `az`, signed in as a service principal: `az vm run-command invoke` returns the
    script's output, and `az vm user update` makes a user (whose login the caller checks, with
    the password returned)."""
    cli = CliLab(harness, ensure_azure_cli(), harness.data_dir / "az-homes", {})
    az = cli.signed_in("debian", cli.sp("az-on-debian", "--role", "Contributor", "--scopes",
                                        f"/subscriptions/{SUB}"))  # fmt: skip
    vm = ("-g", "debian-rg", "-n", VM)
    run = az("vm", "run-command", "invoke", *vm, "--command-id", "RunShellScript",
             "--scripts", "hostname && true")  # fmt: skip
    [status] = json.loads(run.stdout)["value"]
    assert status["code"] == "ProvisioningState/succeeded", status
    assert status["message"] == f"Enable succeeded: \n[stdout]\n{VM}\n\n[stderr]\n", status
    timings["az vm run-command invoke"] = round(run.seconds, 2)
    user, password = "azrescue", "Az-Resc-u3-Only!"
    update = az("vm", "user", "update", *vm, "-u", user, "-p", password)
    assert password not in update.stdout + update.stderr
    timings["az vm user update"] = round(update.seconds, 2)
    return [(user, password)]
