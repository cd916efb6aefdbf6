"""Scale sets: time from the Azure API PUT of a set to `login:` on every instance, and memory.

What is measured, for a 1-instance set and then an N-instance set (--instances, default 10):
`PUT /subscriptions/{sub}/resourceGroups/{rg}/providers/Microsoft.Compute/
virtualMachineScaleSets/{set}?api-version=2024-07-01` over HTTPS with a Contributor token
(tiny image, sku `Lab_1vCPU_256MiB`, boot diagnostics on), timed from sending the PUT to the
moment each instance's serial log, read through the daemon (`GET /v1/vms/{set}/boot-log?
instanceId=N`, as `lab boot-log SET --instance-id N` does), shows `login: `; polled every
0.2 s. Memory: the RSS of each instance's QEMU process (found by the libvirt domain name the
daemon's `GET /v1/vmss/{set}` lists, in QEMU's `guest=` argument), sampled from /proc every
0.2 s until the instance's `login:`, and its VmHWM (the kernel's own peak, which no sampling
interval misses); the daemon's, libvirtd's and virtlogd's RSS are sampled alike. Reported: a
table per set, then the ratios N-instance time / 1-instance time and per-instance peak RSS
(N-set mean / single).

Instances boot concurrently, but the lab lets no more boot at once than the host has cores: an
instance holds its slot until its console shows `login:` (see README, "Scale sets"). So with
C cores the N instances boot in about ceil(N / C) rounds, and the time ratio is expected near
that round count, not near 1; the output says so.

The bench starts its own daemon on a temporary data dir (sharing the built image cache) with
the HTTPS API on a free port and an empty lab file (one resource group); each set is deleted
through the API once measured. At the end, also on failure, every set it made is deleted (and,
should that fail, its domains are removed with virsh), then `lab down`, the daemon stopped (the
SIGTERM `lab shutdown` sends) and the data dir removed (kept with --keep-data).

    .venv/bin/python bench/vmss.py [--instances 10] [--keep-data]
"""

from __future__ import annotations

import argparse
import math
import os
import socket
import ssl
import statistics
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import benchlab
import httpx

from lab.domain.errors import LabError
from lab.domain.vm import DOMAIN_PREFIX, lab_id_for

SUBSCRIPTION = "8f6a2c1e-5b3d-4c7a-9e21-0d4b6f3a9c10"
GROUP = "bench-rg"
API_VERSION = "2024-07-01"
SKU = "Lab_1vCPU_256MiB"
LAB = f"""\
subscriptionId: {SUBSCRIPTION}
resourceGroups:
  - name: {GROUP}
"""
SETS = (f"/subscriptions/{SUBSCRIPTION}/resourceGroups/{GROUP}/providers/Microsoft.Compute"
        "/virtualMachineScaleSets")  # fmt: skip
PROMPT = b"login: "
#: How often the serial logs are read and the processes' memory sampled.
PERIOD_S = 0.2
#: How often the daemon's listing of the set is read while some instance is not in it yet.
LISTING_PERIOD_S = 1.0
#: An instance holds its boot slot at most this long (lab.services.boot_slots.BOOT_SLOT_TIMEOUT_S).
SLOT_TIMEOUT_S = 120.0
OPERATION_TIMEOUT_S = 300.0
TICKS = os.sysconf("SC_CLK_TCK")
MIB = 1024.0


def note(message: str) -> None:
    benchlab.note("vmss", message)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def set_body(capacity: int, prefix: str) -> dict[str, Any]:
    """The PUT body: as tests/unit/test_azure_vmss.py's `body()`."""
    return {
        "location": "westeurope",
        "sku": {"name": SKU, "capacity": capacity},
        "properties": {
            "upgradePolicy": {"mode": "Manual"},
            "virtualMachineProfile": {
                "osProfile": {"computerNamePrefix": prefix, "adminUsername": "azureuser",
                              "adminPassword": "Passw0rd!"},
                "storageProfile": {"imageReference": {"offer": "tiny", "sku": "tiny"}},
                "diagnosticsProfile": {"bootDiagnostics": {"enabled": True}},
            },
        },
    }  # fmt: skip


# -- /proc --------------------------------------------------------------------------------------
def proc_memory(pid: int) -> tuple[int, int] | None:
    """(VmRSS, VmHWM) in KiB; None once the process is gone."""
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    values = {}
    for line in text.splitlines():
        key, _, rest = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            values[key] = int(rest.split()[0])
    if len(values) < 2:
        return None  # a zombie has no memory lines
    return values["VmRSS"], values["VmHWM"]


def proc_start(pid: int) -> float | None:
    """When the process started, in CLOCK_BOOTTIME seconds (its /proc/PID/stat starttime)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return int(fields[19]) / TICKS


def find_pid(comm: str) -> int | None:
    """The first process named `comm`."""
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if (entry / "comm").read_text().strip() == comm:
                    return int(entry.name)
            except OSError:
                continue
    return None


def qemu_guests() -> dict[str, int]:
    """Every QEMU process on the host: its libvirt domain name (`-name guest=...`) -> pid."""
    found: dict[str, int] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if not (entry / "comm").read_text().startswith("qemu-system"):
                continue
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        for arg in cmdline.split(b"\0"):
            if arg.startswith(b"guest="):
                found[arg[len(b"guest=") :].split(b",", 1)[0].decode()] = int(entry.name)
    return found


def machine_busy() -> float:
    """CPU seconds the whole machine has spent busy (all cores), from /proc/stat."""
    values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    user, nice, system, _idle, _iowait, irq, softirq = values[:7]
    return (user + nice + system + irq + softirq) / TICKS


# -- one phase's figures ------------------------------------------------------------------------
@dataclass
class Instance:
    id: str
    domain: str = ""
    pid: int | None = None
    #: Seconds after the PUT was sent.
    qemu_started: float | None = None
    login: float | None = None
    #: Set by the sampler once it has taken its last sample after `login`.
    frozen: bool = False
    rss_peak_kib: int = 0
    hwm_kib: int = 0
    rss_end_kib: int = 0
    offset: int = 0
    tail: bytes = b""

    @property
    def boot(self) -> float | None:
        """QEMU process start to `login:`."""
        if self.login is None or self.qemu_started is None:
            return None
        return self.login - self.qemu_started


@dataclass
class Peak:
    start_kib: int = 0
    peak_kib: int = 0

    def sample(self, pid: int | None) -> None:
        mem = proc_memory(pid) if pid else None
        if mem is not None:
            self.start_kib = self.start_kib or mem[0]
            self.peak_kib = max(self.peak_kib, mem[0])


@dataclass
class Phase:
    name: str
    capacity: int
    instances: list[Instance]
    put_status: int = 0
    put_seconds: float = 0.0
    operation: str = ""
    operation_seconds: float | None = None
    all_booted: float = 0.0
    busy_cores: float = 0.0
    services: dict[str, Peak] = field(default_factory=dict)

    def hwm_mib(self) -> list[float]:
        return [i.hwm_kib / MIB for i in self.instances]


class Sampler(threading.Thread):
    """Every PERIOD_S: finds the instances' QEMU processes by domain name and samples their
    memory until each one's `login:` (one last sample after it), and the services' memory."""

    def __init__(self, phase: Phase, t0: float, boot_t0: float, services: dict[str, int | None]):
        super().__init__(name="rss-sampler", daemon=True)
        self.phase, self.t0, self.boot_t0 = phase, t0, boot_t0
        self.service_pids = services
        phase.services = {k: Peak() for k in services}
        self.halt = threading.Event()

    def run(self) -> None:
        while True:
            self.tick()
            if self.halt.wait(PERIOD_S):
                return

    def tick(self) -> None:
        unfound = [i for i in self.phase.instances if i.domain and i.pid is None]
        if unfound:
            guests = qemu_guests()
            for inst in unfound:
                inst.pid = guests.get(inst.domain)
                started = proc_start(inst.pid) if inst.pid else None
                if started is not None:
                    inst.qemu_started = started - self.boot_t0
        for inst in self.phase.instances:
            if inst.pid is None or inst.frozen:
                continue
            last = inst.login is not None  # read before the sample: the sample is then after
            mem = proc_memory(inst.pid)
            if mem is not None:
                inst.rss_peak_kib = max(inst.rss_peak_kib, mem[0])
                inst.hwm_kib = max(inst.hwm_kib, mem[1])
            inst.frozen = last
        for key, pid in self.service_pids.items():
            self.phase.services[key].sample(pid)


# -- the lab ------------------------------------------------------------------------------------
class VmssLab(benchlab.BenchLab):
    """The bench's daemon with the HTTPS API on a free port, an empty lab file, and the sets
    made through the API; `close()` deletes the sets before the usual teardown."""

    def __init__(self, keep: bool) -> None:
        # A free port rather than the default one, which the user's own lab may be serving.
        self.port = free_port()
        super().__init__("vmss", LAB, keep=keep, api_port=self.port)
        self.sets: list[str] = []
        self.arm: httpx.Client | None = None

    def connect_arm(self) -> None:
        token = self.lab("token", "--role", "Contributor", "--user", "bench-vmss").strip()
        context = ssl.create_default_context(cafile=str(self.data_dir / "tls" / "ca.pem"))
        self.arm = httpx.Client(base_url=f"https://127.0.0.1:{self.port}", verify=context,
                                headers={"Authorization": f"Bearer {token}"},
                                timeout=60)  # fmt: skip

    def set_url(self, name: str) -> str:
        return f"{SETS}/{name}?api-version={API_VERSION}"

    def operation_status(self, url: str) -> str:
        assert self.arm is not None
        r = self.arm.get(url)
        r.raise_for_status()
        status: str = r.json()["status"]
        return status

    def wait_operation(self, url: str, timeout: float = OPERATION_TIMEOUT_S) -> str:
        deadline = time.monotonic() + timeout
        while (status := self.operation_status(url)) == "InProgress":
            if time.monotonic() > deadline:
                raise TimeoutError(f"operation still InProgress after {timeout:g} s: {url}")
            time.sleep(0.5)
        return status

    def delete_set(self, name: str) -> None:
        """DELETE through the API, waiting for the operation; forgets the set once gone."""
        assert self.arm is not None
        r = self.arm.delete(self.set_url(name))
        if r.status_code not in (200, 202, 204):
            raise RuntimeError(f"DELETE of set {name}: HTTP {r.status_code}: {r.text[:300]}")
        if r.status_code == 202:
            status = self.wait_operation(r.headers["Azure-AsyncOperation"])
            if status != "Succeeded":
                raise RuntimeError(f"DELETE of set {name}: operation {status}")
        self.sets.remove(name)

    # -- cleanup --------------------------------------------------------------------------------
    def down(self) -> None:
        for name in list(self.sets):
            try:
                self.delete_set(name)
            except Exception as exc:
                note(f"deleting set {name} through the API failed: {exc}")
        super().down()
        if self.arm is not None:
            self.arm.close()
            self.arm = None
        self._virsh_remove()

    def _virsh_remove(self) -> None:
        """Any domain of this bench's data dir still defined (a failed delete): destroyed and
        undefined. Only this lab's: their names start with its data dir's lab id."""
        uri = self.settings.libvirt_uri
        prefix = f"{DOMAIN_PREFIX}{lab_id_for(self.data_dir)}+"
        names = subprocess.run(["virsh", "-c", uri, "list", "--all", "--name"],
                               capture_output=True, text=True, check=False).stdout  # fmt: skip
        for name in (n.strip() for n in names.splitlines()):
            if name.startswith(prefix):
                note(f"removing leftover domain {name} with virsh")
                for verb in ("destroy", "undefine"):
                    subprocess.run(["virsh", "-c", uri, verb, name], capture_output=True)


# -- one phase ----------------------------------------------------------------------------------
def run_phase(lab: VmssLab, name: str, capacity: int, services: dict[str, int | None]) -> Phase:
    """PUT a `capacity`-instance set, wait for `login:` on every instance, delete the set."""
    assert lab.arm is not None
    phase = Phase(name, capacity, [Instance(str(i)) for i in range(capacity)])
    rounds = math.ceil(capacity / (os.cpu_count() or 1))
    deadline_s = 60 + (SLOT_TIMEOUT_S + 30) * rounds
    lab.sets.append(name)  # before the PUT: a set made in part is deleted as well
    busy0 = machine_busy()
    t0 = time.monotonic()
    boot_t0 = time.clock_gettime(time.CLOCK_BOOTTIME)
    sampler = Sampler(phase, t0, boot_t0, services)
    r = lab.arm.put(lab.set_url(name), json=set_body(capacity, name))
    phase.put_seconds = time.monotonic() - t0
    phase.put_status = r.status_code
    if r.status_code not in (200, 201):
        raise RuntimeError(f"PUT of set {name}: HTTP {r.status_code}: {r.text[:500]}")
    operation_url = r.headers["Azure-AsyncOperation"]
    sampler.start()
    try:
        next_listing = next_operation = 0.0
        while True:
            now = time.monotonic() - t0
            if now > deadline_s:
                missing = [i.id for i in phase.instances if i.login is None]
                raise TimeoutError(f"set {name}: no login prompt after {deadline_s:g} s on "
                                   f"instances {', '.join(missing)}")  # fmt: skip
            if now >= next_listing and any(not i.domain for i in phase.instances):
                next_listing = now + LISTING_PERIOD_S
                read_listing(lab, phase)
            for inst in phase.instances:
                if inst.domain and inst.login is None:
                    read_log(lab, name, inst, t0)
            if now >= next_operation and phase.operation_seconds is None:
                next_operation = now + 1.0
                status = lab.operation_status(operation_url)
                if status != "InProgress":
                    phase.operation = status
                    phase.operation_seconds = time.monotonic() - t0
                    if status != "Succeeded":
                        raise RuntimeError(f"PUT of set {name}: operation {status}")
            if all(i.login is not None for i in phase.instances):
                break
            time.sleep(PERIOD_S)
        phase.all_booted = max(i.login or 0.0 for i in phase.instances)
        phase.busy_cores = (machine_busy() - busy0) / (time.monotonic() - t0)
        # The sampler takes each instance's last sample after its login.
        deadline = time.monotonic() + 5
        while not all(i.frozen or i.pid is None for i in phase.instances):
            if time.monotonic() > deadline:
                break
            time.sleep(0.05)
    finally:
        sampler.halt.set()
        sampler.join()
    for inst in phase.instances:
        mem = proc_memory(inst.pid) if inst.pid else None
        inst.rss_end_kib = mem[0] if mem else 0
    if phase.operation_seconds is None:
        status = lab.wait_operation(operation_url)
        phase.operation = status
        phase.operation_seconds = time.monotonic() - t0
    missing_pids = [i.id for i in phase.instances if i.pid is None]
    if missing_pids:
        raise RuntimeError(f"set {name}: no QEMU process found for instances {missing_pids}")
    note(f"set {name}: every instance at login: after {phase.all_booted:.1f} s; deleting it")
    lab.delete_set(name)
    return phase


def read_listing(lab: VmssLab, phase: Phase) -> None:
    """The instances' libvirt domain names, from the daemon's `GET /v1/vmss/{set}`."""
    try:
        listed = lab.client.json("GET", f"/v1/vmss/{phase.name}")
    except LabError:
        return  # not saved yet
    domains = {i["instanceId"]: i["domain"] for i in listed["instances"]}
    for inst in phase.instances:
        inst.domain = inst.domain or domains.get(inst.id, "")


def read_log(lab: VmssLab, name: str, inst: Instance, t0: float) -> None:
    """The instance's serial log since the last read, through the daemon; notes `login:`."""
    try:
        r = lab.client.request("GET", f"/v1/vms/{name}/boot-log",
                               params={"instanceId": inst.id, "start": inst.offset})  # fmt: skip
    except LabError:
        return  # the instance is still being created
    seen = inst.tail + r.content
    inst.offset = int(r.headers["X-Lab-Next"])
    if PROMPT in seen:
        inst.login = time.monotonic() - t0
    inst.tail = seen[-len(PROMPT) :]


# -- main ---------------------------------------------------------------------------------------
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--instances", type=int, default=10,
                        help="instances of the measured set (default 10; the lab allows 0-20)",
                        )  # fmt: skip
    parser.add_argument("--keep-data", action="store_true",
                        help="keep the temporary data dir (daemon log, serial logs)")  # fmt: skip
    # Figures only: no target to miss (make bench-check passes --check to every bench).
    parser.add_argument("--check", action="store_true", help="accepted; this bench has no target")
    args = parser.parse_args()
    if not 1 <= args.instances <= 20:
        parser.error("--instances must be 1-20 (a scale set's capacity is at most 20)")

    benchlab.exit_on_sigterm()
    lab = VmssLab(keep=args.keep_data)
    phases: list[Phase] = []
    try:
        note(f"starting a daemon on {lab.data_dir} (HTTPS API on port {lab.port})")
        status = lab.start()
        assert lab.daemon is not None
        lab.connect_arm()
        services = {
            "daemon": lab.daemon.pid,
            "libvirtd": find_pid("libvirtd") or find_pid("virtqemud"),
            "virtlogd": find_pid("virtlogd"),
        }
        busy0, t0 = machine_busy(), time.monotonic()
        time.sleep(2)
        idle = (machine_busy() - busy0) / (time.monotonic() - t0)
        if idle > 0.25:
            note(f"the machine is not quiet: {idle:.2f} cores busy before the bench")
        for name, capacity in (("solo", 1), ("fleet", args.instances)):
            note(f"PUT set {name}, capacity {capacity}; waiting for login: on every instance")
            phases.append(run_phase(lab, name, capacity, services))
            time.sleep(3)  # let the delete's aftermath settle before the next phase
    except BaseException:
        lab.note_daemon_failure()
        raise
    finally:
        note("cleaning up (delete the sets, lab down, lab shutdown)")
        lab.close()
    report(status, idle, phases)


# -- report -------------------------------------------------------------------------------------
def fmt(value: float | None, spec: str = "7.2f") -> str:
    return format(value, spec) if value is not None else format("-", ">" + spec.split(".")[0])


def report(status: dict[str, Any], idle: float, phases: list[Phase]) -> None:
    cores = os.cpu_count() or 1
    single, fleet = phases
    rounds = math.ceil(fleet.capacity / cores)
    accel = "qemu (TCG)" if status["accel"] == "qemu" else status["accel"]
    print(f"accelerator: {accel}; {cores} cores; each instance: tiny image, {SKU}"
          f" (1 vCPU, 256 MiB); machine before the bench: {idle:.2f} cores busy")  # fmt: skip
    print(f"request: PUT {SETS.replace(SUBSCRIPTION, '<sub>')}/<set>?api-version={API_VERSION},"
          " Contributor token, boot diagnostics on; timed from sending the PUT to 'login: '"
          f" in each instance's serial log (daemon API boot-log, read every {PERIOD_S:g} s)"
          )  # fmt: skip
    print(f"memory: each instance's QEMU RSS, sampled from /proc every {PERIOD_S:g} s until its"
          " login:, and its VmHWM (the kernel's peak RSS of the process); the daemon's,"
          " libvirtd's and virtlogd's RSS sampled alike during each set's boot")  # fmt: skip
    print(f"boot slots: the lab boots at most {cores} instances at once (one per core);"
          " an instance keeps its slot until its console shows 'login: ', so"
          f" {fleet.capacity} instances boot in ~{rounds} rounds of {cores}")  # fmt: skip
    for ph in phases:
        print()
        print(f"set '{ph.name}', capacity {ph.capacity}: PUT answered {ph.put_status} in"
              f" {ph.put_seconds * 1000:.0f} ms; every instance at login: after"
              f" {ph.all_booted:.2f} s; operation {ph.operation} at"
              f" {fmt(ph.operation_seconds, '.2f')} s; machine {ph.busy_cores:.2f} of {cores}"
              " cores busy")  # fmt: skip
        print(f"  {'instance':>8} {'QEMU up s':>9} {'login: s':>8} {'boot s':>7}"
              f" {'RSS peak MiB':>12} {'VmHWM MiB':>9} {'RSS at end MiB':>14}")  # fmt: skip
        for inst in sorted(ph.instances, key=lambda i: (i.login or math.inf, int(i.id))):
            print(f"  {inst.id:>8} {fmt(inst.qemu_started, '9.2f')} {fmt(inst.login, '8.2f')}"
                  f" {fmt(inst.boot)} {inst.rss_peak_kib / MIB:12.1f} {inst.hwm_kib / MIB:9.1f}"
                  f" {inst.rss_end_kib / MIB:14.1f}")  # fmt: skip
        total_end = sum(i.rss_end_kib for i in ph.instances) / MIB
        boots = [b for b in (i.boot for i in ph.instances) if b is not None]
        print(f"  instances' QEMU RSS at the end, all together: {total_end:.1f} MiB; boot (QEMU"
              f" start to login:) median {statistics.median(boots):.2f} s, min {min(boots):.2f},"
              f" max {max(boots):.2f}")  # fmt: skip
        print("  " + "; ".join(f"{k} RSS {p.start_kib / MIB:.1f} -> peak {p.peak_kib / MIB:.1f} MiB"
                               for k, p in ph.services.items()))  # fmt: skip
    print()
    time_ratio = fleet.all_booted / single.all_booted
    hwm_single = statistics.mean(single.hwm_mib())
    hwm_fleet = fleet.hwm_mib()
    rss_single = single.instances[0].rss_peak_kib / MIB
    rss_fleet = statistics.mean(i.rss_peak_kib / MIB for i in fleet.instances)
    print(f"  ratio time {fleet.capacity}-instance / 1-instance: {time_ratio:.2f}"
          f" ({fleet.all_booted:.2f} s / {single.all_booted:.2f} s); {rounds} rounds of"
          f" {cores} expected (bounded by the cores), i.e. ~{rounds * single.all_booted:.1f} s"
          f" if every round took the single boot's time; ratio / rounds"
          f" {time_ratio / rounds:.2f}")  # fmt: skip
    boot_single = statistics.median(b for b in (i.boot for i in single.instances) if b)
    boot_fleet = statistics.median(b for b in (i.boot for i in fleet.instances) if b)
    print(f"  ratio per-instance boot (QEMU start to login:, median) {fleet.capacity}-set / single:"
          f" {boot_fleet / boot_single:.2f} ({boot_fleet:.2f} s vs {boot_single:.2f} s: the cost"
          f" of {cores} guests sharing the machine with the daemon, libvirtd and virtlogd)"
          )  # fmt: skip
    print(f"  ratio per-instance peak RSS (VmHWM) {fleet.capacity}-set / single:"
          f" {statistics.mean(hwm_fleet) / hwm_single:.2f} (mean {statistics.mean(hwm_fleet):.1f}"
          f" MiB, min {min(hwm_fleet):.1f}, max {max(hwm_fleet):.1f} vs {hwm_single:.1f} MiB)"
          )  # fmt: skip
    print(f"  ratio per-instance sampled RSS peak {fleet.capacity}-set / single:"
          f" {rss_fleet / rss_single:.2f} ({rss_fleet:.1f} vs {rss_single:.1f} MiB)")  # fmt: skip
    fleet_daemon, single_daemon = fleet.services["daemon"], single.services["daemon"]
    print(f"  ratio daemon RSS peak {fleet.capacity}-set / single:"
          f" {fleet_daemon.peak_kib / max(1, single_daemon.peak_kib):.2f}"
          f" ({fleet_daemon.peak_kib / MIB:.1f} vs {single_daemon.peak_kib / MIB:.1f} MiB)"
          )  # fmt: skip


if __name__ == "__main__":
    main()
