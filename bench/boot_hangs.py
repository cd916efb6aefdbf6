"""Hung boots: the `debian` image booted many times through the lab, as trainees get it (2 vCPUs),
with the host loaded, counting the boots that reach `login:` and the ones that hang.

Each round reimages every VM of the bench's lab (a fresh OS disk, so each boot is a first boot:
the per-VM config and the SSH host keys are made again, as in CI's scenario runs) and watches
each VM's boot log from where the round began until `login:`, a hang sign (a soft lockup or an
RCU stall: `lab.domain.guest_health.HANG_SIGNS`) or `--timeout` seconds. The lab's own view is
read too: a hung VM must show its warning in `lab ls --json`. `--load N` runs N busy processes
on the host meanwhile, as a slower machine or a busier CI would be.

This is how the hang CI met in the `nmi-panic` scenario (both vCPUs stuck from 26 s of uptime,
in `ssh-keygen` and `dbus-daemon`) was chased; see "Hung guests" in the README.

    .venv/bin/python bench/boot_hangs.py [--vms 2] [--rounds 25] [--load 1] [--check]

Prints one line per boot and a summary; `--check` exits 1 if any boot hung or timed out.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import time

import benchlab

from lab.domain.guest_health import HANG_SIGNS

LOGIN = re.compile(rb"login: ")
HANG = re.compile("|".join(HANG_SIGNS).encode())


def lab_yaml(vms: int) -> str:
    machines = "".join(
        f"      - name: hang{i}\n        image: debian\n"
        "        size: {vcpus: 2, memoryMiB: 1024}\n        adminUsername: azureuser\n"
        '        adminPassword: "Passw0rd!"\n        bootDiagnostics: {enabled: true}\n'
        for i in range(vms)
    )
    return ("subscriptionId: 11111111-2222-3333-4444-555555555555\nresourceGroups:\n"
            f"  - name: hang-rg\n    virtualMachines:\n{machines}")  # fmt: skip


def log_from(bench: benchlab.BenchLab, vm: str, start: int) -> tuple[bytes, int]:
    r = bench.client.request("GET", f"/v1/vms/{vm}/boot-log", params={"start": start})
    return r.content, int(r.headers["X-Lab-Size"])


def warned(bench: benchlab.BenchLab) -> set[str]:
    rows = json.loads(bench.lab("ls", "--json"))
    return {r["name"] for r in rows if r.get("warning")}


Verdict = tuple[str, str, float]


def one_round(bench: benchlab.BenchLab, vms: list[str], timeout: float) -> list[Verdict]:
    starts = {vm: log_from(bench, vm, -1)[1] for vm in vms}
    began = time.monotonic()
    for vm in vms:
        bench.lab("vm", "reimage", vm)
    verdicts: dict[str, tuple[str, float]] = {}
    while len(verdicts) < len(vms):
        time.sleep(1)
        elapsed = time.monotonic() - began
        for vm in vms:
            if vm in verdicts:
                continue
            data, _ = log_from(bench, vm, starts[vm])
            if HANG.search(data):
                shown = vm in warned(bench)
                verdicts[vm] = ("hang (warning shown)" if shown else "hang (NO WARNING)", elapsed)
            elif LOGIN.search(data):
                verdicts[vm] = ("login", elapsed)
            elif elapsed > timeout:
                verdicts[vm] = ("timeout", elapsed)
    return [(vm, verdict, round(seconds, 1)) for vm, (verdict, seconds) in verdicts.items()]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--vms", type=int, default=2, help="Debian VMs booting at once")
    parser.add_argument("--rounds", type=int, default=25)
    parser.add_argument("--load", type=int, default=1, help="busy processes on the host")
    parser.add_argument("--timeout", type=float, default=400)
    parser.add_argument("--check", action="store_true", help="exit 1 if any boot hung")
    args = parser.parse_args()
    benchlab.exit_on_sigterm()
    bench = benchlab.BenchLab("boot_hangs", lab_yaml(args.vms))
    busy = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(args.load)]
    counts: dict[str, int] = {}
    seconds: list[float] = []
    try:
        bench.lab("image", "build", "debian")
        bench.start()
        vms = [f"hang{i}" for i in range(args.vms)]
        for n in range(args.rounds):
            for vm, verdict, took in one_round(bench, vms, args.timeout):
                print(f"round {n + 1} {vm}: {verdict} after {took} s", flush=True)
                counts[verdict] = counts.get(verdict, 0) + 1
                if verdict == "login":
                    seconds.append(took)
    except BaseException:
        bench.note_daemon_failure()
        raise
    finally:
        for p in busy:
            p.kill()
        bench.close()
    seconds.sort()
    median = seconds[len(seconds) // 2] if seconds else None
    print(f"boots: {sum(counts.values())}, {counts}; login median {median} s, "
          f"max {seconds[-1] if seconds else None} s ({args.vms} at once, 2 vCPUs each, "
          f"{args.load} busy host processes)")  # fmt: skip
    bad = sum(n for verdict, n in counts.items() if verdict != "login")
    return 1 if args.check and bad else 0


if __name__ == "__main__":
    sys.exit(main())
