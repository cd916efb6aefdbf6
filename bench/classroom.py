"""Classrooms (issue 19): a trainee's Start to the first console byte, memory per trainee VM,
and how many Debian scenario VMs this machine holds idle at a login prompt.

What is measured, on the bench's own daemon (temporary data dir, HTTPS API on a free port) and
a temporary image cache holding hard links to the built `tiny` and `debian` images, so a
scenario's broken disk is derived anew ("cold") whenever the bench says so:

1. **Anchor**: a plain VM of the same image and size, `POST /v1/up` of a one-VM lab file, from
   the request to the first byte of its serial log (`GET /v1/vms/NAME/boot-log`, polled every
   20 ms). The same for a Debian VM.
2. **Start to first byte**: trainees of a class sign in with the lab's authority (password
   grant, as the portal does) and press Start (`POST /_portal/api/scenarios/<group>/<name>/
   start`, answered at once), timed to the first byte of their VM's serial log:
   one trainee with the derived disk cold, one warm; 5 trainees at once, cold and warm
   (median and slowest). `config-typo` (tiny) and `root-shell` (Debian). Five Debian starts
   at once meet capacity admission (one boot per core): the later ones wait in its queue.
3. **Memory**: RSS of each trainee VM's QEMU process at its login prompt (tiny, Debian), and
   the daemon's RSS growth per trainee VM.
4. **Capacity**: --debian-vms Debian scenario VMs idle at `login:`; their QEMU processes' CPU
   over --idle seconds and their RSS, projected to what this machine (its cores and memory)
   and each core and GiB hold; and what admission lets start (configured memory against its
   ceiling).

Target (`--check`): one trainee's warm start reaches its first console byte within 1.5x the
plain VM's time (the anchor), for both images.

    .venv/bin/python bench/classroom.py [--debian-vms 6] [--idle 10] [--check] [--keep-data]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import benchlab
import httpx
from console import rss_kib

from lab.client.http import LabClient
from lab.domain.errors import RemoteError
from lab.domain.vm import DOMAIN_PREFIX, domain_name, lab_id_for
from lab.settings import Settings
from tests.integration.labharness import free_port, tiny_vm_yaml, virsh

BENCH = "classroom"
TINY, DEBIAN = "config-typo", "root-shell"
POLL_S = 0.02
FIRST_BYTE_TIMEOUT_S = 600
LOGIN_TIMEOUT_S = 900
TARGET_RATIO = 1.5
ANCHOR_GROUP = "bench-rg"


def linked_cache(source: Path, names: tuple[str, ...]) -> Path:
    """A temporary image cache with hard links to `names` (their pointer and directory)."""
    cache = Path(tempfile.mkdtemp(prefix="lab-bench-images-"))
    for name in names:
        pointer = source / name
        target = pointer.resolve()
        shutil.copytree(target, cache / target.name, copy_function=os.link)
        (cache / name).symlink_to(target.name)
    return cache


def forget_derived(cache: Path) -> None:
    """Cold again: the scenarios' broken disks are derived anew on their next start."""
    for entry in cache.glob("scn-*"):
        if entry.is_symlink():
            entry.unlink()
        else:
            shutil.rmtree(entry)


class Classroom:
    def __init__(self, lab: benchlab.BenchLab, api_port: int) -> None:
        self.lab = lab
        self.url = f"https://127.0.0.1:{api_port}"
        self.ca = str(lab.data_dir / "tls" / "ca.pem")
        self.tokens: dict[str, str] = {}
        self.count = 0

    def trainees(self, n: int) -> list[str]:
        """n new trainees (a class of their own), signed in."""
        self.count += 1
        name = f"b{self.count}"
        made = self.lab.client.json("POST", "/v1/classes", json={"name": name, "trainees": n})
        for row in made["sheet"]:
            # The sheet's one-time password: changed first, as a trainee's first sign-in does.
            mine = row["password"] + "-mine"
            httpx.post(f"{self.url}/_portal/api/password", verify=self.ca, json={
                "username": row["username"], "currentPassword": row["password"],
                "newPassword": mine}).raise_for_status()  # fmt: skip
            r = httpx.post(f"{self.url}/adfs/oauth2/token", verify=self.ca, data={
                "grant_type": "password", "client_id": "serial-console-lab-portal",
                "username": row["username"], "password": mine,
                "scope": "https://management.azure.com/.default"})  # fmt: skip
            r.raise_for_status()
            self.tokens[row["username"]] = r.json()["access_token"]
        return [row["username"] for row in made["sheet"]]

    def start(self, trainee: str, scenario: str) -> float:
        """Seconds from pressing Start to the first byte of the VM's serial log."""
        began = time.monotonic()
        r = httpx.post(f"{self.url}/_portal/api/scenarios/{trainee}/{scenario}/start",
                       verify=self.ca, timeout=60,
                       headers={"Authorization": f"Bearer {self.tokens[trainee]}"})
        r.raise_for_status()
        return first_byte(self.lab.client, scenario, trainee, began)

    def at_once(self, trainees: list[str], scenario: str) -> list[float]:
        times: list[float] = [0.0] * len(trainees)

        def one(i: int) -> None:
            times[i] = self.start(trainees[i], scenario)

        threads = [threading.Thread(target=one, args=(i,)) for i in range(len(trainees))]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        return times


def log_bytes(client: LabClient, vm: str, group: str, **params: Any) -> bytes:
    """The VM's serial log (b"" while the VM does not exist yet)."""
    try:
        return client.request("GET", f"/v1/vms/{vm}/boot-log",
                              params={"resourceGroup": group, **params}).content  # fmt: skip
    except RemoteError as exc:
        if exc.status == 404:
            return b""
        raise


def first_byte(client: LabClient, vm: str, group: str, began: float) -> float:
    deadline = began + FIRST_BYTE_TIMEOUT_S
    while time.monotonic() < deadline:
        if log_bytes(client, vm, group, start=0, length=1):
            return round(time.monotonic() - began, 2)
        time.sleep(POLL_S)
    raise RuntimeError(f"{group}/{vm}: no console byte in {FIRST_BYTE_TIMEOUT_S} s")


def wait_login(client: LabClient, vm: str, group: str) -> None:
    deadline = time.monotonic() + LOGIN_TIMEOUT_S
    while time.monotonic() < deadline:
        if b" login: " in log_bytes(client, vm, group)[-4096:]:
            return
        time.sleep(0.5)
    raise RuntimeError(f"{group}/{vm}: no login prompt in {LOGIN_TIMEOUT_S} s")


def one_vm_lab(name: str, image: str, vcpus: int, memory: int) -> str:
    vm = tiny_vm_yaml(name, memory_mib=memory).replace("image: tiny", f"image: {image}")
    return f"resourceGroups:\n  - name: {ANCHOR_GROUP}\n    virtualMachines:\n" + vm.replace(
        "vcpus: 1", f"vcpus: {vcpus}")


def anchor(lab: benchlab.BenchLab, name: str, image: str, vcpus: int, memory: int) -> float:
    began = time.monotonic()
    lab.client.json("POST", "/v1/up", timeout=600, json={
        "text": one_vm_lab(name, image, vcpus, memory), "source": f"{name}.yaml"})
    return first_byte(lab.client, name, ANCHOR_GROUP, began)


def qemu_pid(lab_id: str, group: str, vm: str) -> int:
    wanted = f"guest={domain_name(lab_id, group, vm)},".encode()
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                if wanted in proc.joinpath("cmdline").read_bytes():
                    return int(proc.name)
            except OSError:
                continue
    raise RuntimeError(f"no QEMU process for {group}/{vm}")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--debian-vms", type=int, default=6)
    parser.add_argument("--idle", type=float, default=10.0)
    parser.add_argument("--keep-data", action="store_true")
    benchlab.Targets.add_option(parser)
    args = parser.parse_args()
    benchlab.exit_on_sigterm()
    targets = benchlab.Targets()
    shared = Settings().image_cache_dir
    cache = linked_cache(shared, ("tiny", "debian"))
    port = free_port()
    lab = benchlab.BenchLab(BENCH, "resourceGroups: []\n", keep=args.keep_data, api_port=port)
    lab.settings = Settings(data_dir=lab.data_dir, image_cache=cache)
    lab.env = benchlab.bench_env(lab.data_dir, cache, port)
    lab.client = LabClient(lab.settings)
    out: list[str] = []
    try:
        lab.start_daemon()
        room = Classroom(lab, port)
        lab_id = lab_id_for(lab.data_dir)
        # A first VM, not counted: a new data dir probes the accelerator on its first start.
        anchor(lab, "warm-up", "tiny", 1, 256)
        delete_all(lab.client)
        for label, scenario, image, vcpus, memory in (("tiny", TINY, "tiny", 1, 256),
                                                      ("Debian", DEBIAN, "debian", 2, 1024)):
            # Each figure from an idle machine: the VMs of the one before are deleted first
            # (Debian VMs would also meet admission's memory ceiling, and wait for it).
            lab.note(f"{label}: anchor and starts")
            base = anchor(lab, f"anchor-{image}", image, vcpus, memory)
            delete_all(lab.client)
            forget_derived(cache)
            one_cold = room.start(room.trainees(1)[0], scenario)
            delete_all(lab.client)
            one_warm = room.start(room.trainees(1)[0], scenario)
            delete_all(lab.client)
            forget_derived(cache)
            five_cold = room.at_once(room.trainees(5), scenario)
            delete_all(lab.client)
            daemon_rss0 = rss_kib(lab.daemon.pid)  # type: ignore[union-attr]
            five = room.trainees(5)
            five_warm = room.at_once(five, scenario)
            ratio = round(one_warm / base, 2)
            verdict = targets.verdict(f"{label} warm start", ratio <= TARGET_RATIO)
            out += [
                f"{label} ({scenario}): plain VM (anchor) {base} s to the first console byte",
                f"  1 trainee: cold {one_cold} s, warm {one_warm} s (ratio {ratio} to the "
                f"anchor; target <= {TARGET_RATIO}: {verdict})",
                f"  5 at once: cold median {statistics.median(five_cold)} s, slowest "
                f"{max(five_cold)} s; warm median {statistics.median(five_warm)} s, slowest "
                f"{max(five_warm)} s",
            ]
            lab.note(f"{label}: waiting for the login prompts")
            for t in five:
                wait_login(lab.client, scenario, t)
            rss = [rss_kib(qemu_pid(lab_id, t, scenario)) / 1024 for t in five]
            daemon_rss = rss_kib(lab.daemon.pid)  # type: ignore[union-attr]
            out.append(f"  memory at login (5 VMs of {memory} MiB): QEMU RSS mean "
                       f"{statistics.mean(rss):.0f} MiB (max {max(rss):.0f}); the daemon grew "
                       f"{(daemon_rss - daemon_rss0) / 1024 / 5:.2f} MiB per VM")  # fmt: skip
            delete_all(lab.client)
        out += capacity(lab, room, lab_id, args.debian_vms, args.idle)
    except Exception:
        lab.note_daemon_failure()
        raise
    finally:
        if lab.daemon is not None:
            try:
                delete_all(lab.client)
            except Exception as exc:
                lab.note(f"deleting the bench's VMs failed: {exc}")
        lab.close()
        shutil.rmtree(cache, ignore_errors=True)
        # A guest a failed cleanup left behind: the bench's lab and data dir are gone now.
        remove_domains(lab.settings.libvirt_uri, lab_id_for(lab.data_dir))
    print(f"== bench/{BENCH} ==")
    print("\n".join(out))
    return targets.exit_status(args.check, BENCH)


def remove_domains(uri: str, lab_id: str) -> None:
    for name in virsh(uri, "list", "--all", "--name").split():
        if name.startswith(f"{DOMAIN_PREFIX}{lab_id}+"):
            subprocess.run(["virsh", "-c", uri, "destroy", name], capture_output=True,
                           check=False)  # fmt: skip
            virsh(uri, "undefine", name)


def delete_all(client: LabClient) -> None:
    for v in client.json("GET", "/v1/vms"):
        client.request("DELETE", f"/v1/vms/{v['name']}",
                       params={"resourceGroup": v["resourceGroup"]}, timeout=300)  # fmt: skip


def capacity(lab: benchlab.BenchLab, room: Classroom, lab_id: str, n: int,
             idle: float) -> list[str]:  # fmt: skip
    lab.note(f"capacity: {n} Debian scenario VMs")
    trainees = room.trainees(n)
    room.at_once(trainees, DEBIAN)
    for t in trainees:
        wait_login(lab.client, DEBIAN, t)
    pids = [qemu_pid(lab_id, t, DEBIAN) for t in trainees]
    time.sleep(5)  # past the boot's tail (services settling)
    before = [cpu_seconds(p) for p in pids]
    time.sleep(idle)
    cpu = [(cpu_seconds(p) - b) / idle for p, b in zip(pids, before, strict=True)]
    rss = statistics.mean(rss_kib(p) for p in pids) / 1024
    cores = os.cpu_count() or 1
    mem_mib = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**20
    per_vm_cpu = statistics.mean(cpu)
    by_memory = int((mem_mib - 1024) / rss)
    by_cpu = int(cores / per_vm_cpu) if per_vm_cpu > 0 else 10**6
    admission = lab.client.json("GET", "/v1/admission")
    # What admission counts: the hosts' memory as libvirt reports it, less the host's reserve.
    offered = sum(h["maxMemoryMiB"] or 0 for h in lab.client.json("GET", "/v1/hosts"))
    admitted = int(offered * admission["memoryPercent"] / 100 / 1024)
    return [
        f"capacity: {n} Debian scenario VMs (1024 MiB, 2 vCPU) idle at login: QEMU RSS mean "
        f"{rss:.0f} MiB, CPU {per_vm_cpu * 100:.1f}% of a core each",
        f"  projection on this machine ({cores} cores, {mem_mib / 1024:.1f} GiB): "
        f"{min(by_memory, by_cpu)} VMs (memory allows {by_memory} with 1 GiB for the host, "
        f"CPU {by_cpu}); per GiB {1024 / rss:.1f}, per core {1 / max(per_vm_cpu, 1e-9):.0f}",
        f"  admission lets {admitted} start at once: configured 1024 MiB each against "
        f"{admission['memoryPercent']:g}% of the {offered} MiB libvirt's hosts offer guests "
        "(the configured size, not the RSS, is what it counts)",
    ]


if __name__ == "__main__":
    sys.exit(main())
