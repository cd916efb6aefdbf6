"""The load tests' machinery (issue 8), shared by tests/integration/test_load.py (short runs,
asserted) and bench/load.py (long runs, figures and ratios).

Three phases, each returning its measured figures:

- `run_flood`: one guest floods its console (`cat /dev/urandom | base64`, through `tee` to
  count the bytes) for N s with V read-only viewers attached (websocket clients in a process of
  their own, `load_viewers.py`), while another VM's console is timed for keystroke round trips
  (one byte to its echo, the guest tty in `-icanon` under `cat`, as bench/console.py does) and
  the daemon's memory is sampled.
- `run_rotation`: a guest writes enough for virtlogd to rotate its log several times and delete
  the oldest file, while a reader polls the boot log by offset and the files on disk are summed.
- `run_fleet`: N VMs at once, while the daemon's API and the Azure-compatible API are timed.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import re
import ssl
import statistics
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from lab.client import connect
from lab.client.http import LabClient
from lab.console.broker import SLOW_NOTICE
from lab.settings import Settings
from lab.storage.serial_log import LogCap, RotatingLog
from tests.integration.labharness import LabHarness, WsConsole, tiny_vm_yaml

SUBSCRIPTION = "22222222-3333-4444-5555-666666666666"
#: The default console queue limit (LabHarness lowers it for the stalled-viewer test).
QUEUE_LIMIT = Settings().console_queue_limit
VIEWERS_SCRIPT = Path(__file__).with_name("load_viewers.py")
#: busybox base64 wraps its output at 76 characters.
B64_LINE = re.compile(rb"[A-Za-z0-9+/]{76}")
B64_LAST = re.compile(rb"[A-Za-z0-9+/]{0,75}={0,2}")
ECHO_SETUP = b"stty -icanon -echoctl min 1 time 0; cat >/dev/null\r"
KEYS = b"abcdefghijklmnopqrstuvwxyz"
FLOOD_VM, RTT_VM = "ldflood", "ldrtt"


#: The flood's guest boots `quiet`: the flood's check is that the log holds exactly the guest's
#: base64 lines, and at the kernel's default log level its own lines come between them ("random:
#: crng init done" 14 s after boot, in the clean-clone run at d24020e).
LOAD_LAB = (
    f"subscriptionId: {SUBSCRIPTION}\nresourceGroups:\n  - name: load-rg\n    virtualMachines:\n"
    + tiny_vm_yaml("ldflood", boot_messages="quiet") + tiny_vm_yaml("ldrtt")
)


def fleet_lab(count: int) -> str:
    vms = "".join(tiny_vm_yaml(f"fl{i:02d}", memory_mib=128) for i in range(count))
    return f"subscriptionId: {SUBSCRIPTION}\nresourceGroups:\n  - name: fleet-rg\n" \
           f"    virtualMachines:\n{vms}"  # fmt: skip


class LoadHarness(LabHarness):
    """A lab of its own with the lab's default console queue limit (LabHarness lowers it)."""

    @property
    def env(self) -> dict[str, str]:
        env = super().env
        env["LAB_CONSOLE_QUEUE_LIMIT"] = str(QUEUE_LIMIT)
        return env

    def start_load_lab(self) -> None:
        """The flood VM and the round-trip VM, both at `login:`."""
        lab_file = self.write_lab("load.yaml", LOAD_LAB)
        self.cli("up", str(lab_file))
        for vm in (FLOOD_VM, RTT_VM):
            self.wait_for_log(vm, rf"{vm} login: ", timeout=180)


# -- helpers ------------------------------------------------------------------------------------
def pct(values: list[float], p: float) -> float:
    """Nearest-rank percentile."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(p / 100 * len(ordered)) - 1)]


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def proc_kib(pid: int, key: str) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    raise KeyError(key)


class RssSampler(threading.Thread):
    """The daemon's VmRSS every 0.25 s (the peak), until stopped."""

    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.pid = pid
        self.peak_kib = 0
        self.samples: list[int] = []
        self._stop_event = threading.Event()

    def run(self) -> None:
        while not self._stop_event.is_set():
            with contextlib.suppress(OSError, KeyError):
                kib = proc_kib(self.pid, "VmRSS")
                self.samples.append(kib)
                self.peak_kib = max(self.peak_kib, kib)
            self._stop_event.wait(0.25)

    def stop(self) -> None:
        self._stop_event.set()
        self.join(timeout=5)


def read_range(client: LabClient, vm: str, start: int, end: int) -> tuple[int, bytes]:
    """Bytes [start, end) of the boot log by offset through the API; (first offset, bytes)."""
    parts: list[bytes] = []
    offset = start
    first: int | None = None
    while offset < end:
        r = client.request("GET", f"/v1/vms/{vm}/boot-log",
                           params={"start": offset, "length": end - offset})  # fmt: skip
        if first is None:
            first = int(r.headers["X-Lab-Start"])
        if not r.content:
            break
        parts.append(r.content)
        offset = int(r.headers["X-Lab-Next"])
    return (start if first is None else first), b"".join(parts)


def log_size(client: LabClient, vm: str) -> int:
    r = client.request("GET", f"/v1/vms/{vm}/boot-log", params={"start": -1})
    return int(r.headers["X-Lab-Size"])


def wait_quiet(client: LabClient, vm: str, quiet: float = 1.0, timeout: float = 120) -> int:
    """The log's size once it has not grown for `quiet` s."""
    deadline = time.monotonic() + timeout
    size, since = log_size(client, vm), time.monotonic()
    while time.monotonic() - since < quiet:
        if time.monotonic() > deadline:
            raise AssertionError(f"{vm}: the console never went quiet")
        time.sleep(0.1)
        now = log_size(client, vm)
        if now != size:
            size, since = now, time.monotonic()
    return size


def find_in_log(
    client: LabClient, vm: str, rx: re.Pattern[bytes], start: int, timeout: float
) -> tuple[int, re.Match[bytes]]:
    """Poll the log from `start` (and on, by offset) for `rx`; (global offset of the match's
    start, match). Keeps 512 bytes of overlap between reads so a match is never cut."""
    deadline = time.monotonic() + timeout
    offset, buf = start, b""
    while True:
        r = client.request("GET", f"/v1/vms/{vm}/boot-log", params={"start": offset})
        got = int(r.headers["X-Lab-Start"])
        if got != offset:  # rotated away while we slept: continue at the first kept byte
            buf = b""
        base = got - len(buf)
        buf += r.content
        offset = int(r.headers["X-Lab-Next"])
        m = rx.search(buf)
        if m:
            return base + m.start(), m
        buf = buf[-512:]
        if time.monotonic() > deadline:
            raise AssertionError(f"{vm}: {rx.pattern!r} not seen in {timeout} s")
        time.sleep(0.2)


def check_base64_lines(data: bytes, *, partial_first: bool) -> tuple[int, int]:
    """Assert `data` is busybox base64 output (76-character lines) with no byte missing;
    (lines, bytes duplicated).

    A line longer than 76 characters (or an empty one: a doubled newline) holds bytes the log
    got twice: QEMU's chardev logs a byte whose write to the pty failed with EAGAIN, then the
    serial device sends it again (see lab/hypervisor/pty_console.py and README, "Load"). A
    line shorter than 76 characters other than the last would be a byte lost.
    """
    lines = data.split(b"\n")
    assert lines[-1] == b"", "the flood does not end with a whole line"
    lines = lines[:-1]
    if partial_first and lines:
        lines = lines[1:]  # the retained part may start inside a line
    duplicated = 0
    for i, line in enumerate(lines):
        if i == len(lines) - 1 and B64_LAST.fullmatch(line):
            continue
        if line == b"":
            duplicated += 1
            continue
        assert re.fullmatch(rb"[A-Za-z0-9+/]*", line), f"line {i} is not base64: {line[:100]!r}"
        assert len(line) >= 76, f"line {i} of the flood lost bytes: {line!r}"
        duplicated += len(line) - 76
    return len(lines), duplicated


def ws_login(con: WsConsole) -> None:
    """Log in at `login:`; the password after a pause (busybox's login turns the echo off only
    after printing its prompt, and flushes what was typed before)."""
    con.send(b"\r")
    con.expect(rb"login: ")
    con.send(b"azureuser\r")
    con.expect(rb"Password: ")
    time.sleep(0.6)
    con.send(b"Passw0rd!\r")
    con.expect(rb"\$ ")


def echo_console(lab: LabHarness, vm: str) -> WsConsole:
    """An interactive console in which every typed byte comes straight back (the guest tty's
    echo, `stty -icanon`, `cat` consuming input), as bench/console.py measures it."""
    con = WsConsole(lab.client.open_console(vm, mode="interactive", replay=0, user="load-rtt"))
    ws_login(con)
    con.send(ECHO_SETUP)
    time.sleep(1.5)
    drain(con)
    return con


def drain(con: WsConsole) -> None:
    con.buffer = b""
    with contextlib.suppress(TimeoutError):
        while True:
            con.conn.recv(timeout=0.3)


def round_trip(con: WsConsole, key: bytes, timeout: float = 30.0) -> float:
    """Milliseconds from sending one byte to its echo."""
    t0 = time.perf_counter()
    con.send(key)
    deadline = t0 + timeout
    seen = b""
    while True:
        try:
            message = con.conn.recv(timeout=max(0.001, deadline - time.perf_counter()))
        except TimeoutError:
            raise AssertionError(
                f"no echo of {key!r} in {timeout} s; got {seen[-200:]!r}"
            ) from None
        if isinstance(message, bytes):
            if key in message:
                return (time.perf_counter() - t0) * 1000
            seen += message


def measure_rtt(con: WsConsole, until: threading.Event | float, gap: float = 0.02) -> list[float]:
    """Round trips one after another (`gap` s apart) until the event is set or the time (a
    `time.monotonic()` value) has come."""
    times: list[float] = []
    i = 0
    while not (until.is_set() if isinstance(until, threading.Event) else time.monotonic() > until):
        times.append(round_trip(con, KEYS[i % len(KEYS) : i % len(KEYS) + 1]))
        i += 1
        time.sleep(gap)
    return times


def rtt_line(name: str, times: list[float]) -> str:
    return (f"{name}: {len(times)} samples, ms p50 {pct(times, 50):.2f} p95 {pct(times, 95):.2f}"
            f" p99 {pct(times, 99):.2f} max {max(times):.2f}")  # fmt: skip


class Viewers:
    """`load_viewers.py` in a process of its own: N read-only viewers reading continuously
    but the first `stalled`, which read nothing until `finish` (`nice`: the process's
    niceness; real viewers are browsers on other machines)."""

    def __init__(
        self, lab: LabHarness, vm: str, count: int, nice: int = 0, stalled: int = 0
    ) -> None:
        self.proc = subprocess.Popen(
            ["nice", "-n", str(nice), sys.executable, str(VIEWERS_SCRIPT),
             str(lab.settings.socket_path), vm, str(count), str(stalled)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=lab.env,
        )  # fmt: skip
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        assert line.strip() == "READY", f"the viewers did not connect: {line!r}"

    def finish(self, target: int, timeout: float = 120) -> dict[str, object]:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(f"TARGET {target} {timeout}\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        self.proc.wait(timeout=30)
        result: dict[str, object] = json.loads(line)
        return result

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


@dataclass(eq=False)
class LatencyProbe(threading.Thread):
    """GETs on the daemon's API (unix socket) and the Azure-compatible API (HTTPS, a Reader
    token), alternately, every `gap` s until stopped: each one's latency and any failure."""

    lab: LabHarness
    token: str
    gap: float = 0.05
    times: dict[str, list[float]] = field(default_factory=lambda: {"daemon": [], "azure": []})
    failures: list[str] = field(default_factory=list)
    stop_event: threading.Event = field(default_factory=threading.Event)

    def __post_init__(self) -> None:
        super().__init__(daemon=True)

    def run(self) -> None:
        daemon = LabClient(self.lab.settings)
        ctx = ssl.create_default_context(cafile=str(self.lab.ca))
        azure = httpx.Client(base_url=f"https://127.0.0.1:{self.lab.api_port}", verify=ctx,
                             headers={"Authorization": f"Bearer {self.token}"},
                             timeout=30)  # fmt: skip
        path = (f"/subscriptions/{SUBSCRIPTION}/resourceGroups/fleet-rg/providers/"
                "Microsoft.Compute/virtualMachines?api-version=2024-07-01")  # fmt: skip
        try:
            while not self.stop_event.is_set():
                for name in ("daemon", "azure"):
                    t0 = time.perf_counter()
                    try:
                        if name == "daemon":
                            r = daemon.request("GET", "/v1/vms")
                        else:
                            r = azure.get(path)
                        ok = r.status_code == 200
                        why = f"{r.status_code} {r.text[:200]}"
                    except Exception as exc:  # any failure is a figure, reported below
                        ok, why = False, repr(exc)
                    ms = (time.perf_counter() - t0) * 1000
                    if ok:
                        self.times[name].append(ms)
                    else:
                        self.failures.append(f"{name}: {why}")
                    # A gap before each request, not each pair: the first request after a gap
                    # meets whatever held the server meanwhile, and the other one never did.
                    self.stop_event.wait(self.gap / 2)
        finally:
            daemon.close()
            azure.close()

    def stop(self) -> None:
        self.stop_event.set()
        self.join(timeout=60)


# -- 1. flood -----------------------------------------------------------------------------------
@dataclass
class FloodResult:
    seconds: int
    viewers: int
    #: Of them, viewers that read nothing until the flood was over.
    stalled: int
    written: int
    lines: int
    #: Bytes the log holds twice (QEMU's EAGAIN logging, see `check_base64_lines`).
    duplicated: int
    window_start: int
    window_end: int
    kept_from: int
    elapsed: float
    complete: int
    dropped: int
    viewers_waited: float
    rss_before_kib: int
    hwm_before_kib: int
    hwm_after_kib: int
    rss_peak_kib: int
    quiet_rtt: list[float]
    flood_rtt: list[float]
    #: CPU the daemon and the viewers' process used during the flood, in cores.
    daemon_cores: float = 0.0
    viewers_cores: float = 0.0

    @property
    def rate(self) -> float:
        """Guest bytes/s."""
        return self.written / self.seconds

    @property
    def growth_kib(self) -> int:
        """The daemon's peak RSS over its RSS before the flood."""
        return self.hwm_after_kib - self.rss_before_kib

    def lines_out(self) -> list[str]:
        kept = ("all" if self.kept_from == self.window_start
                else f"{self.kept_from - self.window_start} rotated away")  # fmt: skip
        return [
            f"guest wrote {self.written} bytes in {self.seconds} s ({self.rate / 1024:.1f} KiB/s,"
            f" {self.lines} base64 lines checked); log offsets {self.window_start} ->"
            f" {self.window_end} (kept: {kept}): nothing lost, {self.duplicated} bytes doubled;"
            f" end marker after {self.elapsed:.1f} s",
            f"viewers: {self.complete} of {self.viewers} got every byte, {self.dropped} dropped as"
            f" too slow (of them {self.stalled} stalled on purpose; done"
            f" {self.viewers_waited:.1f} s after the log went quiet)",
            f"daemon memory: RSS before {self.rss_before_kib / 1024:.1f} MiB, VmHWM before"
            f" {self.hwm_before_kib / 1024:.1f} MiB, after {self.hwm_after_kib / 1024:.1f} MiB"
            f" (growth {self.growth_kib / 1024:.1f} MiB; sampled RSS peak"
            f" {self.rss_peak_kib / 1024:.1f} MiB)",
            f"CPU during the flood: daemon {self.daemon_cores:.2f} cores, the viewers' process"
            f" {self.viewers_cores:.2f}",
            rtt_line("keystroke round trip, other VM, quiet", self.quiet_rtt),
            rtt_line("keystroke round trip, other VM, during the flood", self.flood_rtt),
            f"ratio p95 flood / quiet: {pct(self.flood_rtt, 95) / pct(self.quiet_rtt, 95):.2f}",
        ]


def rss_growth_bound_kib(viewers: int) -> int:
    """How much the daemon's peak RSS may grow over its RSS before a flood.

    The broker's queues share their chunks (one `bytes` per log read, referenced by every
    viewer's queue), so the viewers together hold at most one queue limit of console output (a
    viewer further behind is dropped; the limit counts each chunk's queue entry too, and a flood
    is read in batches, so chunks are not tiny), plus per viewer the websocket's write buffer
    and the frame being sent. Bound: the queue limit twice (the bytes, plus the per-chunk
    objects and queue entries) + 512 KiB per viewer: 8 + 25 = 33 MiB for 50 viewers, where 50
    unshared 4 MiB queues could hold 200 MiB. Asserted by test_load.py;
    measured: README, "Load".
    """
    return (2 * QUEUE_LIMIT + viewers * 512 * 1024) // 1024


def run_flood(
    lab: LabHarness, seconds: int, nviewers: int, nice: int = 0, stalled: int = 0
) -> FloodResult:
    """A `seconds` console flood with `nviewers` viewers, the first `stalled` of which read
    nothing until it is over (each of those must be dropped as too slow)."""
    client = LabClient(lab.settings)
    pid = int(client.json("GET", "/v1/status")["pid"])
    rtt_con = echo_console(lab, RTT_VM)
    flood_con = WsConsole(client.open_console(FLOOD_VM, mode="interactive", replay=0,
                                              user="load-flood"))  # fmt: skip
    viewers: Viewers | None = None
    sampler = RssSampler(pid)
    try:
        ws_login(flood_con)
        quiet_rtt = measure_rtt(rtt_con, time.monotonic() + 5)
        start = wait_quiet(client, FLOOD_VM)
        hwm_before = proc_kib(pid, "VmHWM")
        rss_before = proc_kib(pid, "VmRSS")
        viewers = Viewers(lab, FLOOD_VM, nviewers, nice, stalled)
        assert log_size(client, FLOOD_VM) == start, "output while the viewers connected"
        sampler.start()
        cpu0 = (time.monotonic(), cpu_seconds(pid), cpu_seconds(viewers.proc.pid))

        tag = uuid.uuid4().hex[:8]
        # -opost: the tty passes the flood through as is (no \n -> \r\n), so the bytes tee
        # counts are the bytes the log gets. The shell's "Terminated" for the cat that timeout
        # stops goes to /dev/null. The markers' words are split in the typed line, so its echo
        # does not match them.
        command = (
            f"stty -opost; printf '%s\\n' FL''OOD{tag}BEGIN; "
            f"n=$( (timeout {seconds} cat /dev/urandom; true) 2>/dev/null | base64"
            " | tee /dev/ttyS0 | wc -c); "
            f"printf '%s %s\\n' FL''OOD{tag}END \"$n\"; stty opost\r"
        )
        t_flood = time.monotonic()
        flood_con.send(command.encode())
        flood_con.conn.close()  # the viewers are the flood's audience; the guest goes on
        begin_at, begin = find_in_log(client, FLOOD_VM, re.compile(rb"FLOOD" + tag.encode()
                                      + rb"BEGIN\n"), start, timeout=30)  # fmt: skip
        window_start = begin_at + len(begin.group(0))
        flood_rtt = measure_rtt(rtt_con, t_flood + seconds)
        wall = time.monotonic() - cpu0[0]
        daemon_cores = (cpu_seconds(pid) - cpu0[1]) / wall
        viewers_cores = (cpu_seconds(viewers.proc.pid) - cpu0[2]) / wall
        end_at, end = find_in_log(client, FLOOD_VM, re.compile(rb"FLOOD" + tag.encode()
                                  + rb"END (\d+)\n"), window_start, timeout=120)  # fmt: skip
        flood_elapsed = time.monotonic() - t_flood
        written = int(end.group(1))
        stop = wait_quiet(client, FLOOD_VM)
        result = viewers.finish(stop - start)
        sampler.stop()
        hwm_after = proc_kib(pid, "VmHWM")
    finally:
        sampler.stop()
        if viewers is not None:
            viewers.kill()
        rtt_con.conn.close()
        flood_con.conn.close()

    # The log: its global offsets advanced by exactly what the guest wrote, and what virtlogd
    # kept of it is whole base64 lines.
    kept_from, window = read_range(client, FLOOD_VM, window_start, end_at)
    lines, duplicated = check_base64_lines(window, partial_first=kept_from > window_start)
    assert kept_from + len(window) == end_at
    extra = end_at - window_start - written
    # Nothing lost: the offsets advanced by what the guest wrote plus the doubled bytes seen.
    if kept_from == window_start:
        assert extra == duplicated, (
            f"the guest wrote {written} bytes; the log's offsets advanced"
            f" {end_at - window_start}, {duplicated} of them doubled bytes"
        )
    else:
        assert extra >= duplicated

    # The viewers: every byte, or dropped with the slow-viewer notice after a gapless start of
    # them; the stalled ones dropped.
    first_kept, whole = read_range(client, FLOOD_VM, start, stop)
    whole_sha = hashlib.sha256(whole).hexdigest() if first_kept == start else None
    complete, dropped, bad = 0, 0, []
    views = result["viewers"]
    assert isinstance(views, list) and len(views) == nviewers
    for i, v in enumerate(views):
        got_all = v["received"] == stop - start and (
            v["sha256"] == whole_sha
            or (whole_sha is None and v["tail_sha256"]
                == hashlib.sha256(whole[-v["tail_len"]:]).hexdigest())
        )  # fmt: skip
        a_start = whole_sha is None or (
            v["sha256"] == hashlib.sha256(whole[: v["received"]]).hexdigest()
        )
        # A stalled client may not even get the notice: the daemon's keepalive ping went
        # unanswered, and it closed the connection.
        told = v["closed"] == SLOW_NOTICE or (i < stalled and v["ended"])
        if got_all:
            complete += 1
        elif told and a_start:
            dropped += 1
        else:
            bad.append(v)
        assert i >= stalled or not got_all, f"a viewer that read nothing was kept: {v}"
    assert not bad, (
        f"viewers with neither every byte nor the slow-viewer notice after a start of them:"
        f" {bad[:3]}"
    )

    return FloodResult(
        seconds=seconds, viewers=nviewers, stalled=stalled, written=written, lines=lines,
        duplicated=extra,
        window_start=window_start, window_end=end_at, kept_from=kept_from,
        elapsed=flood_elapsed, complete=complete, dropped=dropped,
        viewers_waited=float(result["waited_s"]), rss_before_kib=rss_before,
        hwm_before_kib=hwm_before, hwm_after_kib=hwm_after, rss_peak_kib=sampler.peak_kib,
        daemon_cores=daemon_cores, viewers_cores=viewers_cores,
        quiet_rtt=quiet_rtt, flood_rtt=flood_rtt,
    )  # fmt: skip


# -- 2. rotation --------------------------------------------------------------------------------
def log_files(lab: LabHarness, vm: str) -> list[Path]:
    """The VM's serial log blob and virtlogd's rotated copies of it."""
    return sorted((lab.data_dir / "blobs").glob(f"*/*/{vm}.*.serialconsole.log*"))


@dataclass
class RotationResult:
    cap: LogCap
    written: int
    lines: int
    duplicated: int
    elapsed: float
    window_start: int
    reads: int
    files_seen: int
    max_disk: int
    max_files: int
    on_disk: int
    first_kept: int
    size: int
    boundaries: int

    @property
    def rotations(self) -> int:
        return self.files_seen - 1

    def lines_out(self) -> list[str]:
        total = self.cap.total or 0
        return [
            f"virtlogd cap: max_size {self.cap.max_size} bytes, max_backups {self.cap.max_backups}"
            f" ({total} bytes per VM)",
            f"guest wrote {self.written} bytes ({self.lines} lines) in {self.elapsed:.1f} s"
            f" ({self.written / self.elapsed / 1024:.1f} KiB/s) from log offset"
            f" {self.window_start}: nothing lost, {self.duplicated} bytes doubled",
            f"reader: {self.reads} reads by offset, each starting where the last ended; log files"
            f" seen {self.files_seen} ({self.rotations} rotations)",
            f"on disk: at most {self.max_disk} bytes in {self.max_files} files (ratio to the cap"
            f" {self.max_disk / total:.3f}); at the end {self.on_disk} bytes, kept from offset"
            f" {self.first_kept} of {self.size}",
            f"reads straddling the {self.boundaries} kept file boundaries: identical to the"
            " stream",
        ]


def run_rotation(lab: LabHarness, cap: LogCap, vm: str = FLOOD_VM) -> RotationResult:
    """A guest writes until its log is a whole file past the cap (at least 3 rotations)."""
    assert cap.total is not None, "virtlogd keeps logs unbounded (max_size = 0)"
    client = LabClient(lab.settings)
    start = wait_quiet(client, vm)
    # Enough that the log is past its cap by another whole file, so virtlogd has rotated at
    # least max_backups + 1 times and deleted its oldest file at least once (the flood test
    # before this one has usually written half of it already).
    target_end = max(start + 3 * cap.max_size, cap.total + cap.max_size + 64 * 1024)
    raw = (target_end - start) * 3 // 4  # base64: 4 characters per 3 bytes (+ a newline per 76)

    console = connect(vm, settings=lab.settings, timeout=60, user="load-rotation")
    try:
        console.wait_for_login()
        console.login("azureuser", "Passw0rd!")
        tag = uuid.uuid4().hex[:8]
        console.sendline(
            f"stty -opost; printf '%s\\n' RO''TATE{tag}BEGIN; "
            f"n=$(head -c {raw} /dev/urandom | base64 | tee /dev/ttyS0 | wc -c); "
            f"printf '%s %s\\n' RO''TATE{tag}END \"$n\"; stty opost"
        )
    finally:
        console.close()

    # A reader polls by offset, as a boot-diagnostics client does; each answer must start
    # where the previous one ended, across every rotation. On disk, the files stay in the cap.
    t0 = time.monotonic()
    begin_at, begin = find_in_log(client, vm, re.compile(rb"ROTATE" + tag.encode()
                                  + rb"BEGIN\n"), start, timeout=30)  # fmt: skip
    offset = window_start = begin_at + len(begin.group(0))
    stream = bytearray()
    reads, max_disk, max_files, inodes = 0, 0, 0, set()
    end_rx = re.compile(rb"ROTATE" + tag.encode() + rb"END (\d+)\n")
    deadline = time.monotonic() + 600
    end = None
    while end is None:
        assert time.monotonic() < deadline, "the writer never finished"
        r = client.request("GET", f"/v1/vms/{vm}/boot-log", params={"start": offset})
        reads += 1
        assert int(r.headers["X-Lab-Start"]) == offset, (
            f"read at {offset} answered from {r.headers['X-Lab-Start']}: a gap"
        )
        stream += r.content
        offset = int(r.headers["X-Lab-Next"])
        end = end_rx.search(stream, max(0, len(stream) - len(r.content) - 64))
        files = log_files(lab, vm)
        sizes = []
        for f in files:
            with contextlib.suppress(FileNotFoundError):
                st = f.stat()
                sizes.append(st.st_size)
                inodes.add(st.st_ino)
        max_disk, max_files = max(max_disk, sum(sizes)), max(max_files, len(sizes))
        time.sleep(0.3)
    elapsed = time.monotonic() - t0
    written = int(end.group(1))
    window = bytes(stream[: end.start()])
    lines, duplicated = check_base64_lines(window, partial_first=False)
    assert len(window) - written == duplicated, (
        f"guest wrote {written} bytes, the reader got {len(window)}, {duplicated} doubled"
    )

    # The log on disk now: within the cap, the oldest bytes gone; reads by offset still work.
    files = log_files(lab, vm)
    on_disk = sum(f.stat().st_size for f in files)
    r = client.request("GET", f"/v1/vms/{vm}/boot-log", params={"start": 0, "length": 16})
    first_kept, size = int(r.headers["X-Lab-Start"]), int(r.headers["X-Lab-Size"])
    assert first_kept > 0, "nothing was rotated away"
    assert size - first_kept == on_disk
    # Reads that straddle each file boundary give the bytes the reader saw there.
    segments = RotatingLog(files[-1] if files[-1].name.endswith(".log") else
                           next(f for f in files if f.name.endswith(".log"))).segments()
    boundaries = [s.start for s in segments[1:]]
    assert boundaries, "the kept log is a single file"
    for b in boundaries:
        got_from, got = read_range(client, vm, b - 100, b + 100)
        assert got_from == b - 100
        lo = b - 100 - window_start
        assert lo >= 0 and got == bytes(stream[lo : lo + 200]), f"bytes around {b} differ"
    return RotationResult(
        cap=cap, written=written, lines=lines, duplicated=duplicated, elapsed=elapsed,
        window_start=window_start, reads=reads, files_seen=len(inodes), max_disk=max_disk,
        max_files=max_files, on_disk=on_disk, first_kept=first_kept, size=size,
        boundaries=len(boundaries),
    )  # fmt: skip


# -- 3. many VMs --------------------------------------------------------------------------------
@dataclass
class FleetResult:
    count: int
    up_s: float
    at_login: dict[str, float]
    states: set[str]
    running: int
    #: VMs whose kernel complained about its timer at boot (`TIMER_COMPLAINTS`).
    timer_complaints: dict[str, str]
    #: Latencies (ms) per API, during the boots and with every VM at `login:`.
    booting: dict[str, list[float]]
    after: dict[str, list[float]]
    failures: list[str]

    def all_times(self, name: str) -> list[float]:
        return self.booting[name] + self.after[name]

    def lines_out(self) -> list[str]:
        t = list(self.at_login.values())
        out = [
            f"{self.count} VMs (1 vCPU, 128 MiB): `lab up` returned in {self.up_s:.1f} s; all at"
            f" login: after {max(t):.1f} s (first {min(t):.1f} s, median"
            f" {statistics.median(t):.1f} s); {self.running} listed, power states"
            f" {sorted(self.states)}",
        ]
        for name in self.booting:
            for phase, values in (("during the boots", self.booting[name]),
                                  (f"all {self.count} running", self.after[name])):  # fmt: skip
                out.append(
                    f"GET {name} API {phase}: {len(values)} requests, ms p50"
                    f" {pct(values, 50):.1f} p99 {pct(values, 99):.1f} max {max(values):.1f}"
                )
        out.append(f"failed requests: {len(self.failures)}; guests whose kernel complained"
                   f" about its timer: {len(self.timer_complaints)}")  # fmt: skip
        return out


#: What a guest kernel prints when its timer check fails: the 8259A fallback, then the panic.
#: (A TCG guest short of host CPU fails a check that busy-waits for timer ticks; the images
#: boot with `no_timer_check`.)
TIMER_COMPLAINTS = re.compile(
    rb"MP-BIOS bug: 8254 timer not connected|IO-APIC \+ timer doesn't work"
)


#: How long the fleet's guests may take to show `login:` (they take 39-51 s here).
LOGIN_TIMEOUT_S = 400


def fleet_names(count: int) -> list[str]:
    return [f"fl{i:02d}" for i in range(count)]


def not_at_login(client: LabClient, missing: set[str], offsets: dict[str, int]) -> str:
    """What a VM that never showed `login:` was doing: its listed state, how much it logged
    and the end of its log (a hung guest, a guest that never started and lost bytes all
    look the same in a bare name)."""
    listed = {v["name"]: v for v in client.json("GET", "/v1/vms")}
    out = [f"not at login after {LOGIN_TIMEOUT_S} s: {sorted(missing)}"]
    for vm in sorted(missing):
        r = client.request("GET", f"/v1/vms/{vm}/boot-log",
                           params={"start": max(0, offsets[vm] - 600)})  # fmt: skip
        state = listed.get(vm, {}).get("powerState", "not listed")
        out.append(f"{vm}: {state}; {r.headers['X-Lab-Next']} bytes logged; log ends"
                   f" {r.content[-600:]!r}")  # fmt: skip
    return "\n".join(out)


def run_fleet(lab: LabHarness, count: int, settle_s: float = 10) -> FleetResult:
    """`count` VMs up at once; the APIs timed from before `lab up` until all are at `login:`
    and `settle_s` after. The VMs stay (the caller takes them down)."""
    token = lab.cli("token", "--role", "Reader").stdout.strip()
    fleet_file = lab.write_lab("fleet.yaml", fleet_lab(count))
    names = fleet_names(count)
    client = LabClient(lab.settings)
    probe = LatencyProbe(lab, token)
    probe.start()
    at_login: dict[str, float] = {}
    try:
        t0 = time.monotonic()
        lab.cli("up", str(fleet_file))
        t_up = time.monotonic() - t0
        offsets = dict.fromkeys(names, 0)
        rx = re.compile(rb"fl\d\d login: ")
        tails = dict.fromkeys(names, b"")
        complaints: dict[str, str] = {}
        while len(at_login) < count:
            if time.monotonic() - t0 > LOGIN_TIMEOUT_S:
                raise AssertionError(not_at_login(client, set(names) - set(at_login), offsets))
            for vm in names:
                if vm in at_login:
                    continue
                r = client.request("GET", f"/v1/vms/{vm}/boot-log", params={"start": offsets[vm]})
                tails[vm] = tails[vm][-64:] + r.content
                offsets[vm] = int(r.headers["X-Lab-Next"])
                if m := TIMER_COMPLAINTS.search(tails[vm]):
                    complaints.setdefault(vm, m.group().decode())
                if rx.search(tails[vm]):
                    at_login[vm] = time.monotonic() - t0
            time.sleep(0.5)
        boot_marks = {k: len(v) for k, v in probe.times.items()}
        time.sleep(settle_s)  # all running and idle at login:
        running = [v for v in client.json("GET", "/v1/vms") if v["name"] in at_login]
    finally:
        probe.stop()
    return FleetResult(
        count=count, up_s=t_up, at_login=at_login, states={v["powerState"] for v in running},
        running=len(running), timer_complaints=complaints,
        booting={k: v[: boot_marks[k]] for k, v in probe.times.items()},
        after={k: v[boot_marks[k] :] for k, v in probe.times.items()},
        failures=probe.failures,
    )  # fmt: skip
