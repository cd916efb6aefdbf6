"""Azure-compatible API figures: latency and throughput of an ARM GET of one VM.

What is measured: `GET /subscriptions/{sub}/resourceGroups/{rg}/providers/Microsoft.Compute/
virtualMachines/{vm}?api-version=2024-07-01` with a Reader bearer token, over HTTPS with the
lab's CA, the call every Azure SDK, CLI and portal-like poller makes most. Each phase keeps N
concurrent clients (closed loop: a client sends its next request when the previous answer is
read) on persistent keep-alive TLS connections, one per client, for --seconds after a warm-up;
the client times every request from send to the last body byte. Reported per phase: requests/s,
latency p50/p90/p99/max, errors, and the CPU each party used in the window (daemon, libvirtd,
the guest's QEMU, the load generator), because on a small machine they all share the same cores.
Targets: p50 under 5 ms (1 client) and at least 1,000 requests/s (the largest client count).

Why this way: the server is one Python process; a load generator in that process, or one
that burns a core of its own, would measure itself. So the clients run in separate processes
(--procs, the clients spread over them as threads) using the standard library's http.client,
which costs little CPU per request, and their CPU is reported next to the server's so the
reader can tell how much of the machine the generator took.

The bench starts its own daemon on a temporary data dir (sharing the built image cache) with
the HTTPS API on a free port, brings up a 1-VM lab (tiny image, 1 vCPU, 256 MiB), waits for the
guest's login prompt so its boot does not compete, and at the end runs `lab down`, stops the
daemon (the SIGTERM `lab shutdown` sends) and removes the data dir, also on failure.

    .venv/bin/python bench/api.py [--seconds 10] [--clients 1,50] [--procs 2] [--warmup 2]
    .venv/bin/python bench/api.py --seconds 3 --clients 1,10        # smoke run
"""

from __future__ import annotations

import argparse
import http.client
import json
import math
import multiprocessing as mp
import os
import signal
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

SUBSCRIPTION = "8f6a2c1e-5b3d-4c7a-9e21-0d4b6f3a9c10"
GROUP = "bench-rg"
VM = "abench1"
VCPUS = 1
MEMORY_MIB = 256
API_VERSION = "2024-07-01"
LAB = f"""\
subscriptionId: {SUBSCRIPTION}
resourceGroups:
  - name: {GROUP}
    virtualMachines:
      - name: {VM}
        image: tiny
        size: {{vcpus: {VCPUS}, memoryMiB: {MEMORY_MIB}}}
        adminUsername: azureuser
        adminPassword: "Passw0rd!"
        bootDiagnostics: {{enabled: true}}
"""
PATH = (f"/subscriptions/{SUBSCRIPTION}/resourceGroups/{GROUP}/providers/Microsoft.Compute"
        f"/virtualMachines/{VM}?api-version={API_VERSION}")  # fmt: skip
TARGET_P50_MS = 5.0
TARGET_RPS = 1000.0
TICKS = os.sysconf("SC_CLK_TCK")
TARGETS = benchlab.Targets()


def note(message: str) -> None:
    benchlab.note("api", message)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


# -- CPU accounting -----------------------------------------------------------------------------
def proc_cpu(pid: int) -> float:
    """CPU seconds (user + system, all threads) of a process; 0 if it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError):
        return 0.0
    return (int(fields[11]) + int(fields[12])) / TICKS


def machine_busy() -> tuple[float, float]:
    """CPU seconds the whole machine spent busy (all cores) and stolen by the host (a VM's
    `steal`), from /proc/stat."""
    values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    user, nice, system, _idle, _iowait, irq, softirq, steal = values[:8]
    return (user + nice + system + irq + softirq) / TICKS, steal / TICKS


def machine_load(seconds: float = 2.0) -> float:
    """Cores busy over `seconds`: what else runs on the machine (before the bench's load)."""
    (busy0, _), t0 = machine_busy(), time.monotonic()
    time.sleep(seconds)
    return (machine_busy()[0] - busy0) / (time.monotonic() - t0)


def host_domains(uri: str) -> int:
    """How many libvirt domains the host has (other labs' too): each GET lists them all."""
    names = subprocess.run(["virsh", "-c", uri, "list", "--all", "--name"],
                           capture_output=True, text=True, check=False).stdout  # fmt: skip
    return sum(1 for line in names.splitlines() if line.strip())


def find_pid(match: str, comm: str | None = None) -> int | None:
    """The first process whose command line contains `match` (and whose name is `comm`)."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if comm is not None and (entry / "comm").read_text().strip() != comm:
                continue
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ")
            if match.encode() in cmdline:
                return int(entry.name)
        except OSError:
            continue
    return None


# -- the lab ------------------------------------------------------------------------------------
class ApiLab(benchlab.BenchLab):
    """The bench's daemon with the HTTPS API on a free port, and the 1-VM lab."""

    def __init__(self, keep: bool) -> None:
        # A free port rather than the default one, which the user's own lab may be serving.
        self.port = free_port()
        super().__init__("api", LAB, keep=keep, api_port=self.port)

    def wait_login_prompt(self, timeout: float = 180) -> bool:
        """Wait until the guest has booted (its boot would compete for the cores)."""
        deadline, offset, buf = time.monotonic() + timeout, 0, b""
        while time.monotonic() < deadline:
            r = self.client.request("GET", f"/v1/vms/{VM}/boot-log", params={"start": offset})
            buf = (buf + r.content)[-4096:]
            offset = int(r.headers["X-Lab-Next"])
            if f"{VM} login:".encode() in buf:
                return True
            time.sleep(0.2)
        return False

    def token(self) -> str:
        return self.lab("token", "--role", "Reader", "--user", "bench-api").strip()

    @property
    def ca(self) -> Path:
        return self.data_dir / "tls" / "ca.pem"


# -- the load generator (runs in child processes) -----------------------------------------------
@dataclass
class Target:
    host: str
    port: int
    ca: str
    token: str
    path: str = PATH


def _connect(target: Target, context: ssl.SSLContext) -> http.client.HTTPSConnection:
    conn = http.client.HTTPSConnection(target.host, target.port, context=context, timeout=30)
    conn.connect()
    conn.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return conn


def _client(target: Target, go: threading.Event, window: list[float], out: dict[str, Any],
            ready: threading.Barrier) -> None:  # fmt: skip
    context = ssl.create_default_context(cafile=target.ca)
    headers = {"Authorization": f"Bearer {target.token}", "Accept": "application/json"}
    conn = _connect(target, context)
    latencies: list[float] = []
    errors = reconnects = 0
    first_error = ""

    def one() -> tuple[int, bytes, float, float]:
        t0 = time.monotonic()
        conn.request("GET", target.path, headers=headers)
        response = conn.getresponse()
        body = response.read()
        return response.status, body, t0, time.monotonic()

    one()  # the handshake and first request are not part of any figure
    ready.wait()
    go.wait()
    start, end = window
    while True:
        try:
            status, body, t0, t1 = one()
        except (http.client.HTTPException, OSError) as exc:
            reconnects += 1
            first_error = first_error or f"{type(exc).__name__}: {exc}"
            conn.close()
            conn = _connect(target, context)
            continue
        if t1 >= end:
            break
        if t1 < start:
            continue  # warm-up
        latencies.append(t1 - t0)
        if status != 200:
            errors += 1
            first_error = first_error or f"HTTP {status}: {body[:200]!r}"
    conn.close()
    out.update(latencies=latencies, errors=errors, reconnects=reconnects, first_error=first_error)


def load_worker(target: Target, clients: int, ready_q: Any, go: Any, window: Any,
                result_q: Any) -> None:  # fmt: skip
    """One load-generator process: `clients` threads, each on its own keep-alive connection."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent cleans up
    local_go = threading.Event()
    barrier = threading.Barrier(clients + 1)
    span = [0.0, 0.0]
    outs: list[dict[str, Any]] = [{} for _ in range(clients)]
    threads = [threading.Thread(target=_client, args=(target, local_go, span, outs[i], barrier),
                                daemon=True) for i in range(clients)]  # fmt: skip
    for t in threads:
        t.start()
    barrier.wait()
    ready_q.put(os.getpid())
    go.wait()
    span[0], span[1] = window[0], window[1]
    local_go.set()
    for t in threads:
        t.join()
    result_q.put({
        "latencies": [x for o in outs for x in o.get("latencies", [])],
        "errors": sum(o.get("errors", 0) for o in outs),
        "reconnects": sum(o.get("reconnects", 0) for o in outs),
        "first_error": next((o["first_error"] for o in outs if o.get("first_error")), ""),
        "missing": sum(1 for o in outs if "latencies" not in o),
    })  # fmt: skip


# -- one phase ----------------------------------------------------------------------------------
@dataclass
class Phase:
    clients: int
    procs: int
    seconds: float
    latencies: list[float] = field(default_factory=list)
    errors: int = 0
    reconnects: int = 0
    first_error: str = ""
    cpu: dict[str, float] = field(default_factory=dict)

    @property
    def requests(self) -> int:
        return len(self.latencies)

    @property
    def rps(self) -> float:
        return self.requests / self.seconds

    def pct(self, p: float) -> float:
        """Latency percentile in ms (nearest rank)."""
        values = sorted(self.latencies)
        if not values:
            return float("nan")
        rank = max(0, min(len(values) - 1, math.ceil(p / 100 * len(values)) - 1))
        return values[rank] * 1000


def run_phase(target: Target, clients: int, procs: int, warmup: float, seconds: float,
              pids: dict[str, int | None]) -> Phase:  # fmt: skip
    ctx = mp.get_context("spawn")
    procs = max(1, min(procs, clients))
    shares = [clients // procs + (1 if i < clients % procs else 0) for i in range(procs)]
    ready_q, result_q, go = ctx.Queue(), ctx.Queue(), ctx.Event()
    window = ctx.Array("d", 2, lock=False)
    workers = [ctx.Process(target=load_worker, args=(target, n, ready_q, go, window, result_q),
                           daemon=True) for n in shares]  # fmt: skip
    for w in workers:
        w.start()
    try:
        worker_pids = [ready_q.get(timeout=120) for _ in workers]
        start = time.monotonic() + warmup
        window[0], window[1] = start, start + seconds
        go.set()
        time.sleep(max(0.0, start - time.monotonic()))
        before = {k: proc_cpu(p) if p else 0.0 for k, p in pids.items()}
        before["load generator"] = sum(proc_cpu(p) for p in worker_pids)
        (busy0, steal0), t0 = machine_busy(), time.monotonic()
        time.sleep(max(0.0, start + seconds - time.monotonic()))
        after = {k: proc_cpu(p) if p else 0.0 for k, p in pids.items()}
        after["load generator"] = sum(proc_cpu(p) for p in worker_pids)
        (busy1, steal1), t1 = machine_busy(), time.monotonic()
        results = [result_q.get(timeout=120) for _ in workers]
        for w in workers:
            w.join(timeout=30)
    finally:
        for w in workers:
            if w.is_alive():
                w.kill()
                w.join()
    phase = Phase(clients, procs, seconds)
    for r in results:
        phase.latencies.extend(r["latencies"])
        phase.errors += r["errors"]
        phase.reconnects += r["reconnects"]
        phase.first_error = phase.first_error or r["first_error"]
        if r["missing"]:
            phase.first_error = phase.first_error or f"{r['missing']} client thread(s) died"
    wall = t1 - t0
    phase.cpu = {k: (after[k] - before[k]) / wall for k in after}
    phase.cpu["machine"] = (busy1 - busy0) / wall
    phase.cpu["steal"] = (steal1 - steal0) / wall
    return phase


# -- main ---------------------------------------------------------------------------------------
def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    benchlab.Targets.add_option(parser)
    parser.add_argument("--seconds", type=float, default=10,
                        help="measured seconds per phase (default 10)")  # fmt: skip
    parser.add_argument("--warmup", type=float, default=2,
                        help="seconds of load before each phase, not measured (default 2)",
                        )  # fmt: skip
    parser.add_argument("--clients", default="1,50",
                        help="concurrent client counts, one phase each (default 1,50)")  # fmt: skip
    parser.add_argument("--procs", type=int, default=2,
                        help="load-generator processes the clients are spread over"
                             " (default 2; 1 for a 1-client phase)")  # fmt: skip
    parser.add_argument("--keep-data", action="store_true",
                        help="keep the temporary data dir (daemon log)")  # fmt: skip
    args = parser.parse_args()
    counts = [int(n) for n in args.clients.split(",") if n.strip()]

    benchlab.exit_on_sigterm()
    lab = ApiLab(keep=args.keep_data)
    phases: list[Phase] = []
    try:
        note(f"starting a daemon on {lab.data_dir} (HTTPS API on port {lab.port}), 1-VM lab")
        status = lab.start()
        assert lab.daemon is not None
        booted = lab.wait_login_prompt()
        if not booted:
            note("the guest showed no login prompt in time; measuring anyway")
        domain = lab.client.json("GET", f"/v1/vms/{VM}")["domain"]
        target = Target("127.0.0.1", lab.port, str(lab.ca), lab.token())
        pids = {
            "daemon": lab.daemon.pid,
            "libvirtd": find_pid("libvirtd", comm="libvirtd") or find_pid("virtqemud"),
            "guest QEMU": find_pid(f"guest={domain}"),
        }
        body, tls = probe(target)
        domains = host_domains(lab.settings.libvirt_uri)
        idle = machine_load()
        if idle > 0.25:
            note(f"the machine is not quiet: {idle:.2f} cores busy with no load; figures suffer")
        for n in counts:
            note(f"{n} client(s): {args.warmup:g} s warm-up, {args.seconds:g} s measured")
            phases.append(run_phase(target, n, args.procs, args.warmup, args.seconds, pids))
    except BaseException:
        lab.note_daemon_failure()
        raise
    finally:
        note("cleaning up (lab down, lab shutdown)")
        lab.close()
    report(status, args, booted, body, tls, idle, domains, phases)
    return TARGETS.exit_status(args.check, "api")


def probe(target: Target) -> tuple[bytes, str]:
    """One request outside any figure: checks the answer is the VM, returns body and TLS."""
    context = ssl.create_default_context(cafile=target.ca)
    conn = _connect(target, context)
    try:
        conn.request("GET", target.path, headers={"Authorization": f"Bearer {target.token}"})
        response = conn.getresponse()
        body = response.read()
        if response.status != 200 or json.loads(body).get("name") != VM:
            raise RuntimeError(f"the API answered {response.status}: {body[:300]!r}")
        assert isinstance(conn.sock, ssl.SSLSocket)
        return body, f"{conn.sock.version()}, {conn.sock.cipher()[0]}"
    finally:
        conn.close()


def report(status: dict[str, Any], args: argparse.Namespace, booted: bool, body: bytes,
           tls: str, idle: float, domains: int, phases: list[Phase]) -> None:  # fmt: skip
    print(f"accelerator: {status['accel']}; VM {VM}: {VCPUS} vCPU, {MEMORY_MIB} MiB, tiny image,"
          f" {'booted to login:' if booted else 'NOT at its login prompt'};"
          f" {os.cpu_count()} cores")  # fmt: skip
    print(f"request: GET {PATH.split('?')[0].replace(SUBSCRIPTION, '<sub>')}?api-version="
          f"{API_VERSION}, Reader token; {len(body)} B JSON; {tls}, keep-alive")  # fmt: skip
    print(f"load generator: http.client, one keep-alive connection per client thread, spread"
          f" over up to {args.procs} process(es); closed loop; {args.warmup:g} s warm-up, then"
          f" {args.seconds:g} s per phase")  # fmt: skip
    print(f"machine before the load (lab up, guest idle at its prompt): {idle:.2f} cores busy"
          f" of {os.cpu_count()}; libvirt domains on the host: {domains} (the GET reads every"
          " one of this lab's, and lists all)")  # fmt: skip
    print()
    print("ARM GET of one VM, client-side latency (send to last body byte), ms:")
    print(f"  {'clients':>7} {'procs':>5} {'requests':>8} {'req/s':>8} {'p50':>7} {'p90':>7}"
          f" {'p99':>7} {'max':>7} {'errors':>6}")  # fmt: skip
    for ph in phases:
        print(f"  {ph.clients:7d} {ph.procs:5d} {ph.requests:8d} {ph.rps:8.1f} {ph.pct(50):7.2f}"
              f" {ph.pct(90):7.2f} {ph.pct(99):7.2f} {ph.pct(100):7.2f} {ph.errors:6d}"
              + (f"  reconnects {ph.reconnects}" if ph.reconnects else ""))  # fmt: skip
        if ph.first_error:
            print(f"          first error: {ph.first_error}")
    print()
    cores = os.cpu_count() or 1
    print(f"CPU in each measured window, cores busy (CPU-s per wall-s; the machine has {cores}),"
          " and CPU ms per request:")  # fmt: skip
    keys = ["daemon", "libvirtd", "guest QEMU", "load generator"]
    print(f"  {'clients':>7} " + " ".join(f"{k:>14}" for k in keys)
          + f" {'machine':>8} {'other':>6} {'steal':>6}")  # fmt: skip
    for ph in phases:
        other = ph.cpu["machine"] - sum(ph.cpu[k] for k in keys)
        print(f"  {ph.clients:7d} " + " ".join(f"{ph.cpu[k]:14.2f}" for k in keys)
              + f" {ph.cpu['machine']:8.2f} {other:6.2f} {ph.cpu['steal']:6.2f}")  # fmt: skip
        per = [ph.cpu[k] * ph.seconds * 1000 / ph.requests if ph.requests else float("nan")
               for k in keys]  # fmt: skip
        print(f"  {'ms/req':>7} " + " ".join(f"{v:14.3f}" for v in per))
    print("  (the load generator, the daemon, libvirtd and the guest share these cores: the"
          " generator's CPU is time the server could not use; 'other' is the kernel's share"
          " not charged to a process, e.g. loopback TCP, plus anything else running; 'steal'"
          " is time the host hypervisor did not give this VM)")  # fmt: skip
    print()
    single = next((ph for ph in phases if ph.clients == 1), phases[0])
    top = max(phases, key=lambda ph: ph.clients)
    p50 = single.pct(50)
    verdict = TARGETS.verdict("p50", p50 < TARGET_P50_MS)
    print(f"  target p50 < {TARGET_P50_MS:g} ms ({single.clients} client): {verdict}"
          f" ({p50:.2f} ms; ratio p50/target {p50 / TARGET_P50_MS:.2f})")  # fmt: skip
    verdict = TARGETS.verdict("requests/s", top.rps >= TARGET_RPS)
    print(f"  target >= {TARGET_RPS:,.0f} requests/s ({top.clients} clients): {verdict}"
          f" ({top.rps:.1f} req/s; ratio req/s/target {top.rps / TARGET_RPS:.2f})")  # fmt: skip
    if any(ph.errors or ph.reconnects for ph in phases):
        print("  some requests failed or connections were reset: see above")
    mean_ms = statistics.mean(single.latencies) * 1000 if single.latencies else float("nan")
    print(f"  1 client: mean {mean_ms:.2f} ms, i.e. {single.rps:.0f} req/s one at a time")


if __name__ == "__main__":
    raise SystemExit(main())
