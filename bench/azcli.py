"""What real Azure clients wait for: the Azure CLI's and the SDK's wall time per command, and
the sign-in authority's token endpoint under load.

Figures (each a median of --rounds):
- `az version -o none`: the anchor, the CLI's own start-up, measured in the same run;
- `az vm restart`, `az vm start` (after a deallocate) and `az vm boot-diagnostics
  get-boot-log` (managed storage), and each one's time beyond the anchor. Target: under 3 s
  beyond it (the CLI's own default poll would be 15-30 s);
- the official SDK's `begin_restart(...).result()` signed in with azure-identity's
  `ClientSecretCredential`. Target: under 1.5 s;
- token endpoint (client credentials, client secret): requests/s and p50/p99 latency for
  --clients concurrent clients, each on its own keep-alive connection.

The CLI is the real azure-cli from PyPI, in the cached virtualenv the tests use (installed on
first use). The bench starts its own daemon on a temporary data dir with the HTTPS API on a
free port and a 1-VM lab (tiny image), and removes everything at the end.

    .venv/bin/python bench/azcli.py [--rounds 3] [--clients 4] [--seconds 5] [--check]
"""

from __future__ import annotations

import argparse
import http.client
import json
import socket
import ssl
import statistics
import sys
import threading
import time
from pathlib import Path
from urllib.parse import urlencode

import benchlab

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from tests.integration.azcli import Az, ensure_azure_cli

SUB = "8f6a2c1e-5b3d-4c7a-9e21-0d4b6f3a9c10"
LAB = f"""\
subscriptionId: {SUB}
resourceGroups:
  - name: azb-rg
    virtualMachines:
      - name: azb1
        image: tiny
        size: {{vcpus: 1, memoryMiB: 256}}
        adminUsername: azureuser
        adminPassword: "Passw0rd!"
        bootDiagnostics: {{enabled: true}}
"""
VM = ("-g", "azb-rg", "-n", "azb1")
TARGET_BEYOND_CLI_S = 3.0
TARGET_SDK_RESTART_S = 1.5


def note(message: str) -> None:
    benchlab.note("azcli", message)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def boot_log(bl: benchlab.BenchLab, start: int) -> bytes:
    data, offset = b"", start
    while True:
        r = bl.client.request("GET", "/v1/vms/azb1/boot-log", params={"start": offset})
        data += r.content
        offset = int(r.headers["X-Lab-Next"])
        if offset >= int(r.headers["X-Lab-Size"]):
            return data


def log_size(bl: benchlab.BenchLab) -> int:
    r = bl.client.request("GET", "/v1/vms/azb1/boot-log", params={"start": -1})
    return int(r.headers["X-Lab-Size"])


def wait_login(bl: benchlab.BenchLab, start: int) -> None:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if b"azb1 login: " in boot_log(bl, start):
            return
        time.sleep(0.2)
    raise RuntimeError("azb1 showed no login prompt in 120 s")


def cli_figures(bl: benchlab.BenchLab, az: Az, rounds: int) -> dict[str, list[float]]:
    times: dict[str, list[float]] = {"az version": [], "az vm restart": [], "az vm start": [],
                                     "az vm boot-diagnostics get-boot-log": []}  # fmt: skip
    for _ in range(rounds):
        times["az version"].append(az("version", "-o", "none").seconds)
        start = log_size(bl)
        times["az vm restart"].append(az("vm", "restart", *VM).seconds)
        wait_login(bl, start)
        az("vm", "deallocate", *VM)
        start = log_size(bl)
        times["az vm start"].append(az("vm", "start", *VM).seconds)
        wait_login(bl, start)
        times["az vm boot-diagnostics get-boot-log"].append(
            az("vm", "boot-diagnostics", "get-boot-log", *VM).seconds)
    return times


def sdk_restarts(bl: benchlab.BenchLab, sp: dict[str, str], port: int, rounds: int) -> list[float]:
    from azure.identity import ClientSecretCredential
    from azure.mgmt.compute import ComputeManagementClient

    ca = str(bl.data_dir / "tls" / "ca.pem")
    cred = ClientSecretCredential("adfs", sp["appId"], sp["password"],
                                  authority=f"https://127.0.0.1:{port}", connection_verify=ca)
    client = ComputeManagementClient(cred, SUB, base_url=f"https://127.0.0.1:{port}",
                                     connection_verify=ca)  # fmt: skip
    client.virtual_machines.get("azb-rg", "azb1")  # signs in; not part of the figure
    out = []
    for _ in range(rounds):
        start = log_size(bl)
        t = time.monotonic()
        client.virtual_machines.begin_restart("azb-rg", "azb1").result()
        out.append(time.monotonic() - t)
        wait_login(bl, start)
    return out


def token_load(port: int, ca: str, sp: dict[str, str], clients: int,
               seconds: float) -> tuple[float, float, float, int]:  # fmt: skip
    """(requests/s, p50 ms, p99 ms, errors) of client-credentials token requests."""
    body = urlencode({"grant_type": "client_credentials", "client_id": sp["appId"],
                      "client_secret": sp["password"],
                      "scope": "https://management.azure.com/.default"})  # fmt: skip
    context = ssl.create_default_context(cafile=ca)
    latencies: list[float] = []
    errors = [0]
    lock = threading.Lock()
    stop = time.monotonic() + seconds

    def client() -> None:
        conn = http.client.HTTPSConnection("127.0.0.1", port, context=context, timeout=30)
        mine: list[float] = []
        while time.monotonic() < stop:
            t = time.perf_counter()
            conn.request("POST", "/adfs/oauth2/token", body,
                         {"Content-Type": "application/x-www-form-urlencoded"})  # fmt: skip
            r = conn.getresponse()
            r.read()
            mine.append(time.perf_counter() - t)
            if r.status != 200:
                with lock:
                    errors[0] += 1
        with lock:
            latencies.extend(mine)

    threads = [threading.Thread(target=client) for _ in range(clients)]
    started = time.monotonic()
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    elapsed = time.monotonic() - started
    latencies.sort()
    p = lambda q: latencies[min(len(latencies) - 1, int(q * len(latencies)))] * 1000  # noqa: E731
    return len(latencies) / elapsed, p(0.50), p(0.99), errors[0]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--clients", type=int, default=4)
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--check", action="store_true", help="exit 1 when a target is missed")
    args = ap.parse_args()
    benchlab.exit_on_sigterm()
    port = free_port()
    bl = benchlab.BenchLab("azcli", LAB, api_port=port)
    try:
        note("installing or finding azure-cli, starting the lab")
        az_bin = ensure_azure_cli()
        bl.start()
        wait_login(bl, 0)
        sp = json.loads(bl.lab("sp", "create-for-rbac", "--name", "bench", "--role",
                               "Contributor", "--scopes", f"/subscriptions/{SUB}"))  # fmt: skip
        az = Az(az_bin, bl.data_dir / "az", bl.data_dir / "tls" / "ca.pem")
        az("cloud", "register", "-n", "Lab", "--endpoint-resource-manager",
           f"https://127.0.0.1:{port}/")  # fmt: skip
        az("cloud", "set", "-n", "Lab")
        az("login", "--service-principal", "-u", sp["appId"], "-p", sp["password"],
           "--tenant", sp["tenant"])  # fmt: skip
        cli = {k: statistics.median(v) for k, v in cli_figures(bl, az, args.rounds).items()}
        sdk = statistics.median(sdk_restarts(bl, sp, port, args.rounds))
        rps, p50, p99, errors = token_load(port, str(bl.data_dir / "tls" / "ca.pem"), sp,
                                           args.clients, args.seconds)  # fmt: skip
    except Exception:
        bl.note_daemon_failure()
        raise
    finally:
        bl.close()
    anchor = cli["az version"]
    missed = []
    print(f"\nazcli: medians of {args.rounds} rounds; anchor `az version -o none` {anchor:.2f} s")
    print(f"{'command':<40} {'seconds':>8} {'beyond az version':>18} {'target':>8}")
    for name, seconds in cli.items():
        if name == "az version":
            continue
        beyond = seconds - anchor
        ok = beyond < TARGET_BEYOND_CLI_S
        missed += [] if ok else [name]
        print(f"{name:<40} {seconds:8.2f} {beyond:17.2f}s {'met' if ok else 'MISSED':>8}")
    ok = sdk < TARGET_SDK_RESTART_S
    missed += [] if ok else ["SDK begin_restart"]
    verdict = "met" if ok else "MISSED"
    print(f"{'SDK begin_restart().result()':<40} {sdk:8.2f} {'':>18} {verdict:>8}")
    print(f"token endpoint, {args.clients} clients, client secret: {rps:.0f} requests/s, "
          f"p50 {p50:.1f} ms, p99 {p99:.1f} ms, {errors} errors")
    if errors:
        missed.append("token endpoint errors")
    if args.check and missed:
        print(f"azcli: targets missed: {', '.join(missed)}")
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
