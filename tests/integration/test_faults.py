"""Faults (issue 8) on real guests: the lab daemon killed 20 times, libvirtd restarted under
the lab, a guest's QEMU killed, power operations raced. Through all of them two guests print a
counter to their serial port, and their boot logs must hold every value once, in order.

The module has its own lab (daemon and data dir) so its faults do not touch the shared one,
except libvirtd's restart, which every lab on the machine lives through (the shared lab's
brokers are reattached by the same keeper this checks).
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import ssl
import subprocess
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from lab.domain.errors import RemoteError
from lab.hypervisor.base import PAUSED_ON_IO_ERROR
from lab.settings import Settings
from tests.integration.labharness import (
    LabHarness,
    WsConsole,
    report_figures,
    seq_numbers,
    tiny_vm_yaml,
)

pytestmark = pytest.mark.integration

FAULT_LAB = """\
subscriptionId: 11111111-2222-3333-4444-555555555555
resourceGroups:
  - name: fault-rg
    virtualMachines:
{vms}
"""
VMS = ("f1", "f2")
BOOT = rb"lab: init done"
#: One line every 20 ms or so (a busybox shell loop under TCG) until /tmp/stop exists.
COUNTER = (
    "(i=0; while [ ! -e /tmp/stop ]; do i=$((i+1)); echo CNT $i; usleep 20000; done; "
    "echo CNTEND $i) > /dev/ttyS0 &"
)
CNT = re.compile(rb"CNT (\d+)\r\n")
KILLS = 20
#: What the module measured, printed at its end.
FIGURES: list[str] = []


def login_prompt(vm: str) -> bytes:
    return rf"{vm} login: ".encode()


def lab_yaml(names: tuple[str, ...]) -> str:
    return FAULT_LAB.format(vms="".join(tiny_vm_yaml(n) for n in names))


@pytest.fixture(scope="module", autouse=True)
def figures(request: pytest.FixtureRequest) -> Iterator[None]:
    yield
    report_figures(request.config, "fault figures", FIGURES)


@pytest.fixture(scope="module")
def faults(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LabHarness]:
    """A lab of two guests, logged in on their consoles, each printing the counter."""
    h = LabHarness(
        data_dir=Path(tmp_path_factory.mktemp("faults")),
        image_cache=Settings().image_cache_dir,
        idle_minutes=30,
    )
    try:
        h.cli("image", "build", "tiny")
        h.start_daemon()
        h.cli("up", str(h.write_lab("faults.yaml", lab_yaml(VMS))))
        for vm in VMS:
            h.wait_for_log(vm, login_prompt(vm), timeout=180)
            with h.client.console(vm, replay=0) as conn:
                c = WsConsole(conn)
                c.login()
                c.send(COUNTER.encode() + b"\r")
            h.wait_for_log(vm, rb"CNT 5\r\n", timeout=60)
        yield h
    finally:
        h.cleanup()


def counted(h: LabHarness, vm: str) -> list[int]:
    """The counter values in the VM's boot log, in order (whole lines only)."""
    return [int(n) for n in CNT.findall(h.boot_log(vm))]


def assert_every_value_once_in_order(h: LabHarness, vm: str) -> int:
    values = counted(h, vm)
    assert values, f"{vm}: no counter in the log"
    expected = list(range(1, values[-1] + 1))
    if values != expected:
        missing = sorted(set(expected) - set(values))[:10]
        dupes = len(values) - len(set(values))
        raise AssertionError(f"{vm}: {len(values)} values, missing {missing}, {dupes} repeated")
    return values[-1]


def boots(h: LabHarness, vm: str) -> int:
    return len(re.findall(BOOT, h.boot_log(vm)))


def live_counter(h: LabHarness, vm: str, timeout: float = 20) -> int:
    """A counter value that reaches a new viewer live (no replay): the broker follows."""
    with h.client.console(vm, mode="view", replay=0) as conn:
        c = WsConsole(conn)
        return int(c.expect(CNT, timeout=timeout).group(1))


def test_daemon_killed_20_times_loses_no_byte(faults: LabHarness) -> None:
    boots_before = {vm: boots(faults, vm) for vm in VMS}
    restarts = []
    for _ in range(KILLS):
        faults.kill_daemon(signal.SIGKILL)
        began = time.monotonic()
        faults.start_daemon()
        restarts.append(time.monotonic() - began)
        vms = {v["name"]: v["powerState"] for v in faults.client.json("GET", "/v1/vms")}
        assert vms == dict.fromkeys(VMS, "running")
        for vm in VMS:
            live_counter(faults, vm)
    # The keyboard is the new daemon's too: the shell typed into answers.
    with faults.client.console("f1", replay=0) as conn:
        c = WsConsole(conn)
        assert c.run("test -e /proc/self") == "0"
    for vm in VMS:
        assert_every_value_once_in_order(faults, vm)
        assert boots(faults, vm) == boots_before[vm], f"{vm} rebooted"
    FIGURES.append(
        f"lab daemon killed {KILLS} times: restart to answering {min(restarts):.2f}-"
        f"{max(restarts):.2f} s; counters {counted(faults, 'f1')[-1]} and "
        f"{counted(faults, 'f2')[-1]} lines, each once and in order"
    )


def _libvirtd_pids() -> list[int]:
    out = subprocess.run(["pidof", "libvirtd"], capture_output=True, text=True).stdout
    return [int(p) for p in out.split()]


def restart_libvirtd_around(during: Callable[[], None]) -> None:
    """Stop libvirtd, call `during()` while it is gone, start it again (as `make setup` does
    where no service manager runs)."""
    if Path("/run/systemd/system").exists():
        subprocess.run(["systemctl", "stop", "libvirtd"], check=True)
        try:
            during()
        finally:
            subprocess.run(["systemctl", "start", "libvirtd"], check=True)
        return
    pids = _libvirtd_pids()
    assert pids, "libvirtd is not running"
    for pid in pids:
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + 30
    while _libvirtd_pids() and time.monotonic() < deadline:
        time.sleep(0.1)
    try:
        assert not _libvirtd_pids(), "libvirtd did not stop"
        during()
    finally:
        libvirtd = shutil.which("libvirtd") or "/usr/sbin/libvirtd"
        subprocess.run([libvirtd, "-d"], check=True)


def test_libvirtd_restart_answers_503_then_recovers_on_its_own(faults: LabHarness) -> None:
    arm = arm_client(faults)
    vm_url = ("/subscriptions/11111111-2222-3333-4444-555555555555/resourceGroups/fault-rg/"
              "providers/Microsoft.Compute/virtualMachines/f1?api-version=2024-07-01")  # fmt: skip
    assert arm.get(vm_url).status_code == 200
    seen: dict[str, object] = {}

    def while_gone() -> None:
        with pytest.raises(RemoteError) as daemon_error:
            faults.client.request("GET", "/v1/vms")
        seen["daemon"] = daemon_error.value
        r = arm.get(vm_url)
        seen["arm"] = (r.status_code, r.json())
        time.sleep(2)  # the guests print on; virtlogd, not libvirtd, keeps their logs

    restart_libvirtd_around(while_gone)
    err = seen["daemon"]
    assert isinstance(err, RemoteError)
    assert (err.status, err.code) == (503, "ServiceUnavailable")
    assert "libvirt" in str(err) and "libvirtd running" in str(err)
    status, body = seen["arm"]  # type: ignore[misc]
    assert status == 503
    assert body["error"]["code"] == "ServiceUnavailable"
    assert "libvirt" in body["error"]["message"]

    # No daemon restart, no request needed: the lab reconnects and reattaches the brokers.
    back = time.monotonic()
    deadline = back + 60
    while True:
        try:
            vms = {v["name"]: v["powerState"] for v in faults.client.json("GET", "/v1/vms")}
            break
        except RemoteError:
            assert time.monotonic() < deadline, "the lab did not recover from libvirtd's restart"
            time.sleep(0.5)
    answering = time.monotonic() - back
    assert vms == dict.fromkeys(VMS, "running")
    assert arm.get(vm_url).status_code == 200
    for vm in VMS:
        live_counter(faults, vm, timeout=30)
    with faults.client.console("f2", replay=0) as conn:
        assert WsConsole(conn).run("test -e /proc/self") == "0"
    for vm in VMS:
        assert_every_value_once_in_order(faults, vm)
    FIGURES.append(f"libvirtd restarted: 503 ServiceUnavailable while it was gone, answering "
                   f"{answering:.1f} s after it started, consoles reattached, no line lost")


def arm_client(h: LabHarness) -> httpx.Client:
    """An HTTPS client of the lab's Azure-compatible API, with an Owner token."""
    return httpx.Client(
        base_url=f"https://127.0.0.1:{h.api_port}",
        verify=ssl.create_default_context(cafile=str(h.ca)),
        headers={"Authorization": f"Bearer {h.cli('token').stdout.strip()}"}, timeout=30,
    )  # fmt: skip


def _qemu_pid(domain: str) -> int:
    return int(Path(f"/run/libvirt/qemu/{domain}.pid").read_text().strip())


def test_a_killed_qemu_shows_stopped_with_the_reason_and_its_log_intact(
    faults: LabHarness,
) -> None:
    vm = faults.vm("f2")
    before = faults.boot_log("f2")
    last = assert_every_value_once_in_order(faults, "f2")
    os.kill(_qemu_pid(str(vm["domain"])), signal.SIGKILL)
    deadline = time.monotonic() + 30
    while (vm := faults.vm("f2"))["powerState"] != "stopped":
        assert time.monotonic() < deadline, vm
        time.sleep(0.2)
    reason = "crashed: the QEMU process ended unexpectedly (killed, or it failed)"
    assert vm["stopReason"] == reason
    assert reason in faults.cli("ls").stdout.replace("\n", "")
    r = arm_client(faults).get(
        "/subscriptions/11111111-2222-3333-4444-555555555555/resourceGroups/fault-rg/providers/"
        "Microsoft.Compute/virtualMachines/f2/instanceView?api-version=2024-07-01"
    )
    power = r.json()["statuses"][1]
    assert (power["code"], power["message"]) == ("PowerState/stopped", f"The VM stopped: {reason}.")
    after = faults.boot_log("f2")
    assert after.startswith(before)
    assert assert_every_value_once_in_order(faults, "f2") >= last
    # It starts again, as from any stop; the old log stays in front of the new boot.
    size = faults.log_size("f2")
    faults.cli("vm", "start", "f2")
    faults.wait_for_log("f2", login_prompt("f2"), start=size, timeout=120)
    assert faults.boot_log("f2").startswith(after)


def test_power_operations_at_once_are_serialized_or_refused(faults: LabHarness) -> None:
    """Eight operations on one VM at the same moment: each finishes or gets 409, and the VM
    ends in a state libvirt agrees with, booting normally."""
    actions = ["powerCycle", "restart", "reset", "powerOff", "reset", "restart", "powerCycle",
               "powerOff"]  # fmt: skip
    size = faults.log_size("f2")

    def act(action: str) -> tuple[str, int, str]:
        try:
            r = faults.client.request("POST", f"/v1/vms/f2/{action}")
            return action, r.status_code, ""
        except RemoteError as exc:
            return action, exc.status, f"{exc.code}: {exc}"

    with ThreadPoolExecutor(len(actions)) as pool:
        results = list(pool.map(act, actions))
    done = [r for r in results if r[1] == 200]
    refused = [r for r in results if r[1] == 409]
    assert len(done) + len(refused) == len(actions), results
    assert done and refused, results
    for _a, _s, message in refused:
        assert message.startswith(("Conflict: ", "OperationNotAllowed: ")), message
    vm = faults.vm("f2")
    domstate = subprocess.run(["virsh", "domstate", str(vm["domain"])], capture_output=True,
                              text=True, check=True).stdout.strip()  # fmt: skip
    expected = {"running": "running", "stopped": "shut off"}
    assert vm["powerState"] in expected, vm
    assert domstate == expected[str(vm["powerState"])], (vm["powerState"], domstate)
    if vm["powerState"] == "stopped":
        faults.cli("vm", "start", "f2")
    faults.wait_for_log("f2", login_prompt("f2"), start=size, timeout=120)
    with faults.client.console("f2", replay=0) as conn:
        c = WsConsole(conn)
        c.login()
        assert c.run("true") == "0"
    FIGURES.append(f"8 power operations at once: {len(done)} done, {len(refused)} refused "
                   "with 409, end state as libvirt's")  # fmt: skip


DISK_DIAGNOSTICS = '{enabled: true, storageUri: "https://fulldiag.blob.core.windows.net/"}'
DISK_LAB = """\
subscriptionId: 11111111-2222-3333-4444-555555555555
resourceGroups:
  - name: full-rg
    storageAccounts:
      - name: fulldiag
    virtualMachines:
""" + tiny_vm_yaml("d1", boot_diagnostics=DISK_DIAGNOSTICS)
DISK_VM2 = tiny_vm_yaml("d2", boot_diagnostics=DISK_DIAGNOSTICS)


@pytest.fixture
def small_disk_lab(tmp_path: Path) -> Iterator[LabHarness]:
    """A lab whose data dir is a 64 MiB tmpfs, with one guest at `login:`."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root (CI and `make test` run as root)")
    mnt = tmp_path / "small"
    mnt.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64m,mode=0700", "tmpfs", str(mnt)],
                   check=True)  # fmt: skip
    h = LabHarness(data_dir=mnt / "data", image_cache=Settings().image_cache_dir,
                   idle_minutes=30)  # fmt: skip
    try:
        h.data_dir.mkdir()
        h.start_daemon()
        h.cli("up", str(h.write_lab("full.yaml", DISK_LAB)))
        h.wait_for_log("d1", login_prompt("d1"), timeout=180)
        yield h
    finally:
        try:
            h.cleanup()
        finally:
            subprocess.run(["umount", "-l", str(mnt)], check=False)


def fill(directory: Path) -> Path:
    """Fill the file system of `directory` to the last byte; returns the ballast file."""
    ballast = directory / "ballast"
    subprocess.run(["dd", "if=/dev/zero", f"of={ballast}", "bs=1M"], capture_output=True)
    fd = os.open(ballast, os.O_WRONLY | os.O_APPEND)
    try:
        while True:
            os.write(fd, b"\0" * 512)
    except OSError:
        pass
    finally:
        os.close(fd)
    return ballast


def test_a_full_data_dir_refuses_writes_clearly_and_the_console_keeps_working(
    small_disk_lab: LabHarness,
) -> None:
    h = small_disk_lab
    state = h.data_dir / "state" / "resources.json"
    arm = arm_client(h)
    account = ("/subscriptions/11111111-2222-3333-4444-555555555555/resourceGroups/full-rg/"
               "providers/Microsoft.Storage/storageAccounts/{}?api-version=2023-05-01")  # fmt: skip
    with h.client.console("d1", replay=0) as conn:
        c = WsConsole(conn)
        c.login()
        # Nothing dirty in the guest, and no shell history written after each command: the
        # guest writes to its disk only when the test says (busybox saves history each time).
        assert c.run("unset HISTFILE; sync") == "0"
        state_before = state.read_bytes()
        log_before = h.boot_log("d1")
        ballast = fill(h.data_dir)

        # Far more output than the log file's last page has room for: virtlogd gives the log
        # up, and the broker feeds the viewers from the chardev itself.
        c.send(b"seq 1 3000; echo full-$((6*7))\r")
        c.expect(rb"\r\n3000\r\nfull-42", timeout=30)
        assert c.run("true") == "0"

        r = arm.put(account.format("newdiag"), json={"location": "westeurope"})
        assert r.status_code == 507, r.text
        assert r.json()["error"]["code"] == "InsufficientStorage"
        assert "No space left" in r.json()["error"]["message"]
        two = h.data_dir.parent.parent / "two.yaml"  # beside the full disk, not on it
        two.write_text(DISK_LAB + DISK_VM2)
        up = h.cli("up", str(two), check=False)
        assert up.returncode == 7, up.stderr
        assert "No space left" in up.stderr and "free some space" in up.stderr
        assert state.read_bytes() == state_before
        assert [v["name"] for v in h.client.json("GET", "/v1/vms")] == ["d1"]  # no half VM
        assert h.boot_log("d1").startswith(log_before)

        # The guest writes to its own disk: QEMU pauses it (rather than fail the write), and
        # the lab says why; once there is space the lab resumes it and the write completes.
        c.send(b"dd if=/dev/zero of=$HOME/big bs=1M count=8 2>/dev/null; sync; "
               b"echo wrote-$((6*7))\r")  # fmt: skip
        deadline = time.monotonic() + 60
        while (vm := h.vm("d1"))["stopReason"] != PAUSED_ON_IO_ERROR:
            assert time.monotonic() < deadline, vm
            time.sleep(0.2)
        assert vm["powerState"] == "running"
        assert "paused by QEMU" in h.cli("ls").stdout.replace("\n", "")
        ballast.unlink()
        c.expect(rb"wrote-42", timeout=60)
        assert h.vm("d1")["stopReason"] is None
        c.send(b"echo free-$((6*7))\r")
        c.expect(rb"free-42", timeout=30)
        # The log goes on (written by the lab now that virtlogd gave it up).
        h.wait_for_log("d1", rb"free-42", start=len(log_before), timeout=30)
        again = arm.put(account.format("newdiag"), json={"location": "westeurope"})
        assert again.status_code == 201, again.text
    FIGURES.append("data dir full (64 MiB tmpfs): API writes 507 InsufficientStorage, `lab up` "
                   "exit 7, state and log untouched; the console kept working; a guest disk "
                   "write paused the VM (shown), resumed once there was space; the log went on")


SEQ_LAB = """\
subscriptionId: 11111111-2222-3333-4444-555555555555
resourceGroups:
  - name: seq-rg
    virtualMachines:
""" + tiny_vm_yaml("s1") + '        kernelArgs: "lab.seq=300"\n'


@pytest.fixture
def seq_lab(tmp_path: Path) -> Iterator[LabHarness]:
    """A lab with one guest that prints SEQ 1..300 first thing, stopped after its first boot."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root (CI and `make test` run as root)")
    h = LabHarness(data_dir=tmp_path / "data", image_cache=Settings().image_cache_dir,
                   idle_minutes=30)  # fmt: skip
    try:
        h.data_dir.mkdir()
        h.start_daemon()
        h.cli("up", str(h.write_lab("seq.yaml", SEQ_LAB)))
        h.wait_for_log("s1", login_prompt("s1"), timeout=180)
        h.cli("vm", "stop", "s1", "--skip-shutdown")
        yield h
    finally:
        h.cleanup()


def test_power_on_output_reaches_viewers_through_the_broker_when_virtlogd_cannot_log(
    seq_lab: LabHarness,
) -> None:
    """The broker attaches to a paused guest before its CPUs run (VmService._power_on). Only
    the chardev stream shows that: virtlogd logs QEMU's output whether or not anyone attached.
    So the log's disk is full at power-on: virtlogd gives the log up at its first write, and
    the log keeper hands viewers what the stream carried since the attach. With the CPUs let
    run before the attach, the first SEQ lines are missing here (seen failing)."""
    h = seq_lab
    [log] = h.data_dir.rglob("*.serialconsole.log")
    # A small empty disk in place of the log's directory, filled. The daemon is restarted
    # around the swap so that its log offsets start from this disk, as they would on a disk
    # that was full before the VM was ever started.
    h.kill_daemon()
    mnt = log.parent
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m,mode=0700", "tmpfs", str(mnt)],
                   check=True)  # fmt: skip
    try:
        fill(mnt)
        h.start_daemon()
        h.cli("vm", "start", "s1")
        with h.client.console("s1", replay=0) as conn:
            seen = WsConsole(conn).expect(rb"(?s)\A.*?SEQ 300\r?\n", timeout=60).group(0)
        assert seq_numbers(seen) == list(range(1, 301))
        # They came from the stream: the disk was full, so the log itself holds none of them.
        assert b"SEQ" not in (log.read_bytes() if log.exists() else b"")
    finally:
        h.cli("vm", "stop", "s1", "--skip-shutdown", check=False)
        subprocess.run(["umount", "-l", str(mnt)], check=False)
    FIGURES.append("serial log's disk full at power-on: viewers got SEQ 1..300 from the stream")
