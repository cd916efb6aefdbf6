"""The lab engine with real guests: boot, console login, boot log, power operations, adoption."""

from __future__ import annotations

import json
import re
import signal

import pexpect
import pytest

from tests.integration.conftest import LOGIN
from tests.integration.labharness import LAB_BIN, LabHarness, WsConsole, seq_numbers

pytestmark = pytest.mark.integration

#: Printed by the tiny image's init once per boot.
BOOT = rb"lab: init done"


def test_boot_log_holds_every_number_from_power_on(it_lab: LabHarness) -> None:
    log = it_lab.wait_for_log("it1", rb"SEQ 300\r?\n")
    # The init prints SEQ 1..300 as its very first action: every number is in the log, in
    # order. virtlogd logs QEMU's serial output whether or not the broker is attached, so this
    # proves the log, not the broker's attach-before-run ordering (VmService._power_on): that
    # one is proved through the broker, with virtlogd unable to log, in test_faults.py.
    assert seq_numbers(log.split(BOOT, 1)[0]) == list(range(1, 301))


def test_login_with_pexpect_through_lab_console(it_lab: LabHarness) -> None:
    # --replay 0: history would hold old prompts that a script must not match.
    child = pexpect.spawn(LAB_BIN, ["console", "it1", "--replay", "0"], env=it_lab.env, timeout=60)
    try:
        child.send("\r")
        if child.expect(["it1 login: ", r"\$ "]) == 1:  # an earlier test left a shell
            child.send("exit\r")
            child.expect("it1 login: ")
        child.send("azureuser\r")
        child.expect("Password: ")
        child.send("Passw0rd!\r")
        child.expect(r"azureuser@it1:\S*\$ ")
        child.send("echo $((6*7)) $(hostname)\r")
        child.expect(r"42 it1")
        # The Ctrl+] menu, as in the Azure CLI: s, then the SysRq key.
        child.send("\x1d")
        child.expect_exact("| Press n for NMI | s for SysRq | r to Reset VM |")
        child.send("s")
        child.expect_exact("Which SysRq command would you like to send? Press h for help: ")
        child.send("h")
        child.expect_exact("Successfully sent SysRq command")
        child.expect(r"sysrq: HELP : loglevel")
        child.send("exit\r")
        child.expect("it1 login: ")
        child.send("\x1d")
        child.send("q")
        child.expect(pexpect.EOF)
    finally:
        child.close()
    assert child.exitstatus == 0


def test_boot_log_reads_by_offset_return_exactly_the_bytes_after_it(it_lab: LabHarness) -> None:
    full = it_lab.boot_log("it1")
    # 4095 only when the log is that long: alone, this test sees one boot (~3.6 KB).
    for offset in (0, 1, min(4095, len(full) - 2), len(full) // 2, len(full) - 1, len(full)):
        assert it_lab.boot_log("it1", start=offset) == full[offset:]
    r = it_lab.client.request("GET", "/v1/vms/it1/boot-log", params={"start": -10})
    assert r.content == full[-10:]
    assert int(r.headers["X-Lab-Next"]) == len(full)
    past = it_lab.cli("boot-log", "it1", "--start", str(len(full) + 100), check=False)
    assert past.returncode == 2
    assert "past the end" in past.stderr


def test_hard_reset_boots_again_and_keeps_the_console_connected(it_lab: LabHarness) -> None:
    boots = len(re.findall(BOOT, it_lab.boot_log("it1")))
    with it_lab.client.console("it1", mode="view", replay=0) as conn:
        viewer = WsConsole(conn)
        vm = json.loads(it_lab.cli("vm", "reset", "it1", "--json").stdout)
        assert vm["powerState"] == "running"
        viewer.expect(rb"SEQ 1\r?\n", timeout=60)  # the same connection sees the new boot
        viewer.expect(LOGIN, timeout=90)
    log = it_lab.wait_for_log("it1", BOOT, count=boots + 1)
    assert len(re.findall(rb"SEQ 1\r?\n", log)) == boots + 1


def test_graceful_power_off_reaches_stopped_and_guard_refuses_restart(it_lab: LabHarness) -> None:
    start = it_lab.log_size("it2")
    vm = json.loads(it_lab.cli("vm", "stop", "it2", "--json").stdout)
    assert vm["powerState"] == "stopped"
    # Graceful: the guest saw the ACPI power button and powered itself off.
    it_lab.wait_for_log("it2", rb"power button", start=start, timeout=5)
    listed = {v["name"]: v for v in json.loads(it_lab.cli("ls", "--json").stdout)}
    assert listed["it2"]["powerState"] == "stopped"  # other modules add VMs to the session
    refused = it_lab.cli("vm", "restart", "it2", check=False)
    assert refused.returncode == 4
    assert "not allowed" in refused.stderr and "stopped" in refused.stderr
    vm = json.loads(it_lab.cli("vm", "start", "it2", "--json").stdout)
    assert vm["powerState"] == "running"
    it_lab.wait_for_log("it2", LOGIN, start=start, timeout=120)


def _login_and_run(lab: LabHarness, vm: str, command: str) -> str:
    """Log in on a fresh interactive session, run `command`, return its exit status."""
    with lab.client.console(vm, replay=0) as conn:
        console = WsConsole(conn)
        console.login()
        return console.run(command)


def _power_and_wait_for_login(lab: LabHarness, vm: str, operation: str) -> None:
    start = lab.log_size(vm)
    lab.cli("vm", operation, vm)
    lab.wait_for_log(vm, LOGIN, start=start, timeout=120)


def test_disk_survives_power_cycle_and_reimage_resets_it(it_lab: LabHarness) -> None:
    write = "case $HOME in /data/*) echo kept > ~/marker && sync;; *) false;; esac"
    assert _login_and_run(it_lab, "it2", write) == "0"  # home is on the VM's disk
    _power_and_wait_for_login(it_lab, "it2", "power-cycle")
    assert _login_and_run(it_lab, "it2", "grep -q kept ~/marker") == "0"
    _power_and_wait_for_login(it_lab, "it2", "reimage")
    assert _login_and_run(it_lab, "it2", "test -e ~/marker") == "1"


def test_deallocate_then_start(it_lab: LabHarness) -> None:
    vm = json.loads(it_lab.cli("vm", "deallocate", "it2", "--json").stdout)
    assert vm["powerState"] == "deallocated"
    console = it_lab.cli("boot-log", "it2")  # the log outlives the VM's host resources
    assert b"it2 login:" in console.stdout.encode()
    start = it_lab.log_size("it2")
    it_lab.cli("vm", "start", "it2")
    it_lab.wait_for_log("it2", LOGIN, start=start, timeout=120)


def test_new_daemon_adopts_running_vms_without_reboot(it_lab: LabHarness) -> None:
    boots = len(re.findall(BOOT, it_lab.boot_log("it1")))
    it_lab.kill_daemon(signal.SIGKILL)
    it_lab.start_daemon()
    results = json.loads(it_lab.cli("up", str(it_lab.lab_files[0]), "--json").stdout)
    assert {r["vm"]["name"]: r["action"] for r in results} == {
        "it1": "running", "it2": "running", "it3": "running"
    }  # fmt: skip
    with it_lab.client.console("it1", replay=0) as conn:
        c = WsConsole(conn)
        c.send(b"\r")
        c.expect(LOGIN, timeout=30)
    assert len(re.findall(BOOT, it_lab.boot_log("it1"))) == boots


def test_invalid_lab_files_give_located_errors(harness: LabHarness) -> None:
    cases = {
        "unknown-field.yaml": ("resourceGroups:\n  - name: rg\n    virtualMachines:\n"
                               "      - name: v1\n        imag: tiny\n", ":5", "imag"),
        "bad-name.yaml": ("resourceGroups:\n  - name: rg\n    virtualMachines:\n"
                          "      - name: 'bad name-'\n        image: tiny\n"
                          "        adminUsername: azureuser\n        adminPassword: 'Passw0rd!'\n",
                          ":4", "name"),
        "bad-yaml.yaml": ("resourceGroups: [\n  - name: rg\n", ":", "YAML"),
        "no-image.yaml": ("resourceGroups:\n  - name: rg\n    virtualMachines:\n"
                          "      - name: v1\n        image: nosuch\n"
                          "        adminUsername: azureuser\n        adminPassword: 'Passw0rd!'\n",
                          ":5", "lab image build"),
    }  # fmt: skip
    for name, (text, where, what) in cases.items():
        path = harness.write_lab(name, text)
        result = harness.cli("up", str(path), check=False)
        assert result.returncode == 2, (name, result.stderr)
        assert f"{path}{where}" in result.stderr.replace("\n", ""), (name, result.stderr)
        assert what.lower() in result.stderr.lower(), (name, result.stderr)


def test_screenshot_is_a_png_and_the_bmp_blob(it_lab: LabHarness) -> None:
    out = it_lab.data_dir / "it1.png"
    it_lab.cli("screenshot", "it1", "-o", str(out))
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    vm = it_lab.vm("it1")
    blobs = list((it_lab.data_dir / "blobs" / "itdiag").glob(f"*/it1.{vm['vmId']}.screenshot.bmp"))
    assert len(blobs) == 1 and blobs[0].read_bytes()[:2] == b"BM"
