"""More than one host (issue 18): two test hosts (libvirtd + virtlogd in network namespaces,
`testhosts.py`) beside the local one, reached over qemu+tcp://.

Each test host's data dir is hidden from the front (bind-mounted over inside the host's mount
namespace only): what the front knows of a remote guest's files, it learnt through libvirt.
The hosts share this machine's 2 cores: these tests prove placement, consoles, logs and faults,
not speed.
"""

from __future__ import annotations

import json
import re
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from lab.settings import Settings
from tests.integration.labharness import LabHarness, WsConsole, report_figures, tiny_vm_yaml
from tests.integration.test_faults import arm_client
from tests.integration.testhosts import TestHost, test_hosts

pytestmark = [pytest.mark.integration, pytest.mark.hosts]

SUB = "11111111-2222-3333-4444-555555555555"
BOOT = rb"lab: init done"
CNT = re.compile(rb"CNT (\d+)\r\n")
#: One line every 5 ms or so until /tmp/stop exists (a busybox loop under TCG).
FLOOD = ("(i=0; while [ ! -e /tmp/stop ]; do i=$((i+1)); echo CNT $i; usleep 5000; done; "
         "echo CNTEND $i) > /dev/ttyS0 &")  # fmt: skip
FIGURES: list[str] = []
#: h2's memory limit (MiB).
H2_MEMORY_MIB = 3072


def lab_yaml(vms: str) -> str:
    return (f"subscriptionId: {SUB}\nresourceGroups:\n  - name: hosts-rg\n"
            f"    virtualMachines:\n{vms}")  # fmt: skip


def pinned(name: str, host: str) -> str:
    return tiny_vm_yaml(name) + f"        host: {host}\n"


def shell(c: WsConsole) -> None:
    """A shell prompt on the console, logging in if the guest is at `login:`."""
    c.send(b"\r")
    if c.expect(rb"login: |\$ ", timeout=30).group(0) == b"login: ":
        c.send(b"azureuser\r")
        c.expect(rb"Password: ")
        c.send(b"Passw0rd!\r")
        c.expect(rb"\$ ")


def run_in(lab: LabHarness, vm: str, command: str) -> str:
    """Log in on the VM's console, run `command`; its exit status."""
    with lab.client.console(vm, replay=0) as conn:
        c = WsConsole(conn)
        c.login()
        return c.run(command)


class Multi:
    def __init__(self, lab: LabHarness, hosts: list[TestHost]) -> None:
        self.lab = lab
        self.h1, self.h2 = hosts

    def host_of(self, vm: str) -> str:
        return str(self.lab.vm(vm)["host"])

    def remote_log(self, vm: str) -> bytes:
        """The serial log as the VM's host has it (read inside the host's namespaces)."""
        host = {self.h1.name: self.h1, self.h2.name: self.h2}[self.host_of(vm)]
        domain = str(self.lab.vm(vm)["domain"])
        return subprocess.run(host.nsenter("cat", f"{host.data_dir}/{domain}--serial.log"),
                              capture_output=True, check=True).stdout  # fmt: skip

    def both_logs(self, vm: str, timeout: float = 10) -> tuple[bytes, bytes]:
        """(the front's copy, the host's file) once they are the same, or at `timeout`."""
        deadline = time.monotonic() + timeout
        while True:
            remote, served = self.remote_log(vm), self.lab.boot_log(vm)
            if served == remote or time.monotonic() > deadline:
                return served, remote
            time.sleep(0.2)


@pytest.fixture(scope="module", autouse=True)
def figures(request: pytest.FixtureRequest) -> Iterator[None]:
    yield
    report_figures(request.config, "multi-host figures", FIGURES)


@pytest.fixture(scope="module")
def multi(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Multi]:
    base = Path(tmp_path_factory.mktemp("hosts"))
    with test_hosts(2, base) as hosts:
        lab = LabHarness(data_dir=base / "data", image_cache=Settings().image_cache_dir,
                         idle_minutes=30)  # fmt: skip
        try:
            lab.data_dir.mkdir()
            lab.start_daemon()
            for t in hosts:
                # h2 with limits below its size: the refusal test fills it on paper.
                limits = ["--max-memory-mib", str(H2_MEMORY_MIB)] if t.name == "h2" else []
                # h1 over qemu+tcp (the CLI warns: no authentication), h2 over qemu+ssh.
                uri = t.ssh_uri if t.name == "h2" else t.uri
                added = lab.cli("host", "add", t.name, uri, "--data-dir", str(t.data_dir),
                                *limits)  # fmt: skip
                assert ("without authentication" in added.stderr) == (t.name == "h1")
            lab.cli("up", str(lab.write_lab("r.yaml", lab_yaml(pinned("r1", "h1")))))
            lab.wait_for_log("r1", rb"r1 login: ", timeout=180)
            yield Multi(lab, hosts)
        finally:
            lab.cleanup()


def test_a_pinned_vm_runs_on_its_host_and_its_log_comes_the_remote_way(multi: Multi) -> None:
    lab, h1 = multi.lab, multi.h1
    assert multi.host_of("r1") == "h1"
    domain = str(lab.vm("r1")["domain"])
    assert domain in h1.virsh("list", "--name")
    # The front cannot see the host's files: the log it serves came over libvirt.
    assert not any(Path(h1.data_dir).iterdir())
    remote_log = multi.remote_log("r1")
    served = lab.boot_log("r1")
    assert b"r1 login: " in remote_log
    assert served == remote_log  # at `login:` the guest prints nothing more
    ls = json.loads(lab.cli("host", "ls", "--json").stdout)
    by_name = {h["name"]: h for h in ls}
    assert set(by_name) == {"local", "h1", "h2"}
    assert by_name["h1"]["vms"] == 1 and by_name["h1"]["usedVcpus"] == 1
    assert by_name["h1"]["state"] == "ready" and by_name["h1"]["usedMemoryMiB"] == 256


def test_a_vm_on_a_host_added_over_ssh_boots_and_its_log_and_console_work(multi: Multi) -> None:
    """h2 is reached over qemu+ssh (an sshd in its namespaces; libvirt runs `virt-ssh-helper`
    there): the image goes there, the guest boots, its log comes back over the same ssh."""
    lab, h2 = multi.lab, multi.h2
    path = lab.write_lab("s.yaml", lab_yaml(pinned("s1", "h2")))
    lab.cli("up", str(path))
    try:
        lab.wait_for_log("s1", rb"s1 login: ", timeout=180)
        assert multi.host_of("s1") == "h2"
        with lab.client.console("s1", replay=0) as conn:
            c = WsConsole(conn)
            shell(c)
            c.send(b"echo over-$((6*7))-ssh\r")
            c.expect(rb"over-42-ssh", timeout=30)
        served, remote_log = multi.both_logs("s1")
        assert served == remote_log and b"over-42-ssh" in served
        accepted = (h2.ssh_dir / "sshd.log").read_text()
        assert "Accepted publickey for root" in accepted  # it came over ssh
    finally:
        lab.cli("down", str(path), check=False)


def test_viewers_takeover_screenshot_power_cycle_and_reimage_on_a_host_over_ssh(
    multi: Multi,
) -> None:
    """What a local guest's console and power buttons do, on a guest of h2 (qemu+ssh): a
    viewer with replay sees what the interactive session does, a second interactive session
    takes over the same shell, the screenshot is a PNG, a power-cycle keeps the disk and a
    reimage (a fresh overlay made on the front and copied there) resets it."""
    lab = multi.lab
    path = lab.write_lab("p.yaml", lab_yaml(pinned("p1", "h2")))
    lab.cli("up", str(path))
    try:
        lab.wait_for_log("p1", rb"p1 login: ", timeout=180)
        size = lab.log_size("p1")
        with lab.client.console("p1", replay=0, user="alice") as first, \
                lab.client.console("p1", mode="view", replay=64, user="eve") as viewer:  # fmt: skip
            c = WsConsole(first)
            c.login()
            assert c.run("echo kept > $HOME/mark; sync") == "0"
            assert c.run("export MARK=view-$((6*7)); echo $MARK") == "0"
            WsConsole(viewer).expect(rb"view-42", timeout=30)  # the viewer sees it too
            with lab.client.console("p1", replay=0, user="bob") as second:
                taken = WsConsole(second)
                taken.send(b"echo again-$MARK\r")
                taken.expect(rb"again-view-42", timeout=30)  # the same shell, still logged in
        assert b"again-view-42" in lab.boot_log("p1", size)
        out = lab.data_dir / "p1.png"
        lab.cli("screenshot", "p1", "-o", str(out))
        assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        for verb, marked in (("power-cycle", "0"), ("reimage", "1")):
            start = lab.log_size("p1")
            lab.cli("vm", verb, "p1")
            lab.wait_for_log("p1", rb"p1 login: ", start=start, timeout=120)
            assert run_in(lab, "p1", "test -e $HOME/mark") == marked, verb
        assert multi.host_of("p1") == "h2"
    finally:
        lab.cli("down", str(path), check=False)


def test_a_host_whose_key_is_refused_is_not_added_and_says_why(
    multi: Multi, tmp_path: Path
) -> None:
    h2 = multi.h2
    stranger = tmp_path / "stranger"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(stranger)],
                   check=True)  # fmt: skip
    uri = h2.ssh_uri.replace(str(h2.ssh_dir / "client_key"), str(stranger))
    r = multi.lab.cli("host", "add", "h9", uri, "--data-dir", str(h2.data_dir), check=False)
    assert r.returncode == 5, r.stderr
    assert "h9" in r.stderr and f"root@{h2.address}" in r.stderr, r.stderr
    assert "Permission denied" in r.stderr, r.stderr  # what ssh said, not a bare "failed"
    assert "h9" not in [h["name"] for h in multi.lab.client.json("GET", "/v1/hosts")]


def test_console_sysrq_nmi_and_reset_on_a_remote_vm(multi: Multi) -> None:
    lab = multi.lab
    boots = lab.boot_log("r1").count(BOOT)
    with lab.client.console("r1", replay=0) as conn:
        c = WsConsole(conn)
        c.login()
        assert c.run("uname -n | grep -qx r1") == "0"
        size = lab.log_size("r1")
        lab.client.json("POST", "/v1/vms/r1/sysrq", json={"keys": "h"})
        c.expect(rb"sysrq: HELP", timeout=30)
        lab.client.request("POST", "/v1/vms/r1/nmi")
        c.expect(rb"NMI", timeout=30)
        # The boot log by offset: exactly what came after `size`.
        after = lab.boot_log("r1", start=size)
        assert b"sysrq: HELP" in after and not after.startswith(b"\0")
        lab.cli("vm", "reset", "r1")
        c.expect(BOOT, timeout=120)  # the same console connection sees the new boot
    lab.wait_for_log("r1", rb"r1 login: ", start=size, timeout=120)
    assert lab.boot_log("r1").count(BOOT) == boots + 1
    # Since its power-on r1's console stream has fed its log copy (viewers see an echo before
    # the host's file is read): byte for byte what the host's virtlogd wrote, none taken back.
    served, remote = multi.both_logs("r1")
    assert served == remote
    assert "log does not have" not in lab.daemon_log()


def test_a_scale_set_spreads_and_too_big_a_vm_is_refused(multi: Multi) -> None:
    lab = multi.lab
    big = tiny_vm_yaml("big", memory_mib=H2_MEMORY_MIB + 1024) + "        host: h2\n"
    r = lab.cli("up", str(lab.write_lab("big.yaml", lab_yaml(pinned("r1", "h1") + big))),
                check=False)  # fmt: skip
    assert r.returncode == 4, r.stderr
    assert "AllocationFailed" in r.stderr and f"of {H2_MEMORY_MIB} MiB free" in r.stderr
    assert "big" not in [v["name"] for v in lab.client.json("GET", "/v1/vms")]  # nothing half-made
    ss = lab.write_lab("ss.yaml", f"""\
subscriptionId: {SUB}
resourceGroups:
  - name: hosts-rg
    scaleSets:
      - name: web
        sku: {{capacity: 4}}
        virtualMachineProfile:
          image: tiny
          size: {{vcpus: 1, memoryMiB: 256}}
          adminUsername: azureuser
          adminPassword: "Passw0rd!"
""")  # fmt: skip
    lab.cli("up", str(ss))
    try:
        instances = [v for v in lab.client.json("GET", "/v1/vms",
                                                params={"includeInstances": "true"})
                     if v["scaleSet"] == "web"]  # fmt: skip
        hosts = sorted(str(v["host"]) for v in instances)
        assert len(hosts) == 4 and set(hosts) == {"local", "h1", "h2"}, (
            hosts, lab.cli("host", "ls").stdout, lab.daemon_log()[-3000:])
        # The instance view says where: the host, and the fault domain (one host each).
        arm = arm_client(lab)
        fault_domains: dict[str, set[int]] = {}
        for v in instances:
            r = arm.get(f"/subscriptions/{SUB}/resourceGroups/hosts-rg/providers/Microsoft."
                        f"Compute/virtualMachineScaleSets/web/virtualMachines/{v['instanceId']}"
                        "/instanceView?api-version=2024-07-01")  # fmt: skip
            assert r.status_code == 200, r.text
            assert r.json()["hostId"] == v["host"]
            fault_domains.setdefault(v["host"], set()).add(r.json()["platformFaultDomain"])
        assert all(len(fds) == 1 for fds in fault_domains.values()), fault_domains
        assert len(set().union(*fault_domains.values())) == 3
        FIGURES.append(f"scale set of 4: instances on {', '.join(hosts)}")
    finally:
        lab.cli("down", str(ss), check=False)


def test_front_killed_while_a_remote_guest_floods_loses_no_byte(multi: Multi) -> None:
    lab = multi.lab
    with lab.client.console("r1", replay=0) as conn:
        c = WsConsole(conn)
        shell(c)
        start = lab.log_size("r1")
        c.send(b"rm -f /tmp/stop; " + FLOOD.encode() + b"\r")
    lab.wait_for_log("r1", rb"CNT 50\r\n", start=start, timeout=60)
    for _ in range(5):
        lab.kill_daemon(signal.SIGKILL)
        time.sleep(0.5)  # the guest goes on printing; its host's virtlogd keeps every byte
        lab.start_daemon()
    with lab.client.console("r1", replay=0) as conn:
        c = WsConsole(conn)
        c.send(b"touch /tmp/stop\r")
    log = lab.wait_for_log("r1", rb"CNTEND \d+", start=start, timeout=60)
    values = [int(n) for n in CNT.findall(log)]
    last = int(re.search(rb"CNTEND (\d+)", log).group(1))  # type: ignore[union-attr]
    assert values == list(range(1, last + 1)), (len(values), last)
    FIGURES.append(f"front killed 5 times during a remote flood: {last} lines, each once, "
                   "in order")  # fmt: skip


def test_a_remote_libvirtd_killed_marks_its_vms_then_they_are_adopted(multi: Multi) -> None:
    lab, h1 = multi.lab, multi.h1
    with lab.client.console("r1", replay=0) as conn:
        shell(WsConsole(conn))
    boots = lab.boot_log("r1").count(BOOT)
    h1.kill_libvirtd()
    try:
        deadline = time.monotonic() + 30
        while "h1" not in str((vm := lab.vm("r1"))["stopReason"]):
            assert time.monotonic() < deadline, vm
            time.sleep(0.5)
        assert "cannot be reached" in str(vm["stopReason"]) and h1.uri in str(vm["stopReason"])
        ls = {h["name"]: h for h in json.loads(lab.cli("host", "ls", "--json").stdout)}
        assert ls["h1"]["state"] == "unreachable" and ls["h2"]["state"] == "ready"
        r = lab.cli("vm", "restart", "r1", check=False)
        assert r.returncode == 5 and "h1" in r.stderr, r.stderr
    finally:
        h1.start_libvirtd()
    deadline = time.monotonic() + 30
    while (vm := lab.vm("r1"))["stopReason"] is not None:
        assert time.monotonic() < deadline, vm
        time.sleep(0.5)
    assert vm["powerState"] == "running"
    with lab.client.console("r1", replay=0) as conn:
        c = WsConsole(conn)
        c.send(b"echo back-$((6*7))\r")
        c.expect(rb"back-42", timeout=30)
    assert lab.boot_log("r1").count(BOOT) == boots, "adopted without a reboot"


def moved_with_its_disk(multi: Multi, vm: str, verb: str) -> str:
    """`lab vm VERB VM` puts the VM on another host, where it boots with the file left in its
    home (`$HOME/mark`); the new host."""
    lab = multi.lab
    before, size = multi.host_of(vm), lab.log_size(vm)
    lab.cli("vm", verb, vm)
    after = multi.host_of(vm)
    assert after != before
    lab.wait_for_log(vm, f"{vm} login: ".encode(), start=size, timeout=120)
    assert run_in(lab, vm, "grep -qx kept $HOME/mark") == "0"
    return after


def test_redeploy_moves_a_vm_with_its_disk(multi: Multi) -> None:
    lab = multi.lab
    # r1 is pinned (a pinned VM stays where it is pinned); m1 is not.
    lab.cli("up", str(lab.write_lab("m.yaml", lab_yaml(pinned("r1", "h1") +
                                                        tiny_vm_yaml("m1")))))  # fmt: skip
    lab.wait_for_log("m1", rb"m1 login: ", timeout=120)
    assert run_in(lab, "m1", "echo kept > $HOME/mark; sync") == "0"
    before = multi.host_of("m1")
    after = moved_with_its_disk(multi, "m1", "redeploy")
    FIGURES.append(f"redeploy moved m1 from {before} to {after} with its disk")


def test_a_deallocated_vm_starts_on_another_host_when_its_own_is_drained(multi: Multi) -> None:
    """Azure's deallocate gives the host up; the next start is placed anew (a drained host
    takes no new guests), and the VM's disk goes with it."""
    lab = multi.lab
    path = lab.write_lab("d.yaml", lab_yaml(tiny_vm_yaml("d1")))
    lab.cli("up", str(path))
    try:
        lab.wait_for_log("d1", rb"d1 login: ", timeout=120)
        assert run_in(lab, "d1", "echo kept > $HOME/mark; sync") == "0"
        before = multi.host_of("d1")
        lab.cli("vm", "deallocate", "d1")
        lab.cli("host", "drain", before)
        try:
            after = moved_with_its_disk(multi, "d1", "start")
        finally:
            lab.cli("host", "undrain", before)
        FIGURES.append(f"deallocate, then start with {before} drained: d1 moved to {after}")
    finally:
        lab.cli("down", str(path), check=False)


def test_host_rm_refuses_while_vms_are_there_then_force_deletes_them(multi: Multi) -> None:
    lab = multi.lab
    r = lab.cli("host", "rm", "h1", check=False)
    assert r.returncode == 4 and "holds" in r.stderr and "--force" in r.stderr, r.stderr
    bad = lab.cli("host", "add", "h9", "qemu+tcp://127.0.0.1:1/system", check=False)
    assert bad.returncode == 5 and "h9" in bad.stderr and "127.0.0.1:1" in bad.stderr
    r = lab.cli("host", "rm", "h1", "--force", "--yes")
    assert "deleted r1" in r.stderr
    assert "r1" not in [v["name"] for v in lab.client.json("GET", "/v1/vms")]
    assert "h1" not in [h["name"] for h in lab.client.json("GET", "/v1/hosts")]
    assert not multi.h1.virsh("list", "--all", "--name").strip()  # nothing orphaned there
