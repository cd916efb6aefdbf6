"""Console figures: keystroke round trip (lab vs a bare QEMU chardev, same run) and fan-out.

1. Keystroke round trip. The shell on the VM's serial console runs `cat >/dev/null` with the
   tty in `stty -icanon`, so the guest kernel echoes every byte the moment it arrives. One byte
   at a time is sent and timed until its echo comes back: over the lab's console websocket
   (daemon, broker, the pty the daemon reads itself; the echo comes back through the serial log
   virtlogd writes) and directly on the serial chardev (a unix socket) of a bare
   `qemu-system-x86_64` booted from the same kernel, per-VM initrd, command line and disk, with
   the same memory, vCPUs and accelerator. Samples alternate between the two, so drift hits
   both alike. Target: p99 overhead < 2 ms.
2. Fan-out. The guest runs `yes` on its serial console for --seconds while 0, 1, 10, 100
   read-only viewers (mode=view, replay=0, connected before it starts) read continuously. The
   interactive session that types the command reads the output too (it is one more subscriber
   in every round, also with 0 viewers). Reported: the guest's throughput (bytes of `yes` in the
   serial log / guest uptime while it ran), each viewer's throughput, whether every viewer got
   exactly the serial log's bytes of the window (byte count and SHA-256), viewers dropped as too
   slow (LAB_CONSOLE_QUEUE_LIMIT), and the daemon's RSS (sampled every 0.5 s). The counts run
   --repeats times, every other pass in reverse order (0,1,10,100,100,10,1,0), and the ratio is
   taken from the means. The same flood runs once on the bare QEMU too, its chardev socket read
   directly: the anchor. Targets: every byte to every viewer; throughput(100 viewers) /
   throughput(0) >= 0.90; throughput(0 viewers) / bare >= 0.80; bounded memory.

The bench starts its own daemon on a temporary data dir (sharing the built image cache) with a
1-VM lab, 1 vCPU (a second TCG vCPU would take the core the daemon and the viewers need),
256 MiB, and removes all of it at the end, also on failure. Take figures on a quiet machine:
other guests or tests on the same cores move every figure here.

    .venv/bin/python bench/console.py [--samples 500] [--seconds 10] [--viewers 0,1,10,100]
                                      [--repeats 2] [--keep-data]
    .venv/bin/python bench/console.py --samples 50 --seconds 3 --viewers 0,1,10   # smoke run
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import json
import math
import os
import re
import socket
import statistics
import subprocess
import time
import uuid
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlencode

import benchlab
import httpx
from websockets.asyncio.client import ClientConnection as AsyncConnection
from websockets.asyncio.client import unix_connect as async_unix_connect
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection

from lab.client import ConsoleSession, connect
from lab.console.broker import SLOW_NOTICE

VM = "cbench1"
VCPUS = 1
MEMORY_MIB = 256
USER = "azureuser"
PASSWORD = "Passw0rd!"
LAB = f"""\
resourceGroups:
  - name: bench-rg
    virtualMachines:
      - name: {VM}
        image: tiny
        size: {{vcpus: {VCPUS}, memoryMiB: {MEMORY_MIB}}}
        adminUsername: {USER}
        adminPassword: "{PASSWORD}"
        bootDiagnostics: {{enabled: true}}
"""
#: The tty echoes each byte as it arrives (no line buffering: -icanon); cat only consumes input,
#: so every typed byte comes back exactly once, echoed by the guest kernel.
ECHO_SETUP = "stty -icanon -echoctl min 1 time 0; cat >/dev/null"
KEYS = b"abcdefghijklmnopqrstuvwxyz"
WARMUP = 20
MAX_LOST = 5
PATTERN = b"0123456789abcdefghijklmnopqrstuvwxyz" * 2
RSS_PERIOD_S = 0.5


def note(message: str) -> None:
    benchlab.note("console", message)


# -- the lab and the bare QEMU ------------------------------------------------------------------
class ConsoleLab(benchlab.BenchLab):
    """The bench's daemon and 1-VM lab, and the bare QEMU; `close()` undoes all of it."""

    def __init__(self, keep: bool) -> None:
        super().__init__("console", LAB, keep=keep)
        self.bare: subprocess.Popen[bytes] | None = None
        self.bare_socket = self.data_dir / "bare-serial.sock"
        self.domain = ""

    # -- lab ------------------------------------------------------------------------------------
    def start(self) -> dict[str, Any]:
        status = super().start()
        self.domain = self.client.json("GET", f"/v1/vms/{VM}")["domain"]
        return status

    def up(self) -> None:
        self.client.json("POST", "/v1/up", json=self.lab_body())

    def lab_body(self) -> dict[str, str]:
        """The lab file as `/v1/up` and `/v1/down` take it."""
        return {"source": self.lab_file.name, "text": self.lab_yaml}

    def serial_log_path(self) -> Path:
        found = sorted((self.data_dir / "blobs").glob(f"*/*/{VM}.*.serialconsole.log"))
        if not found:
            raise RuntimeError("the VM's serial log blob is missing")
        return found[0]

    # -- bare QEMU ------------------------------------------------------------------------------
    def start_bare(self, accel: str) -> None:
        """The same kernel, per-VM initrd, command line, disk, memory, vCPUs and accelerator as
        the lab's VM, serial port on a unix socket chardev (a server the bench connects to)."""
        xml = subprocess.run(["virsh", "-c", self.settings.libvirt_uri, "dumpxml", self.domain],
                             capture_output=True, text=True, check=True).stdout  # fmt: skip
        root = ET.fromstring(xml)
        kernel = root.findtext("os/kernel") or ""
        initrd = root.findtext("os/initrd") or ""
        cmdline = root.findtext("os/cmdline") or ""
        source = root.find("devices/disk/source")
        assert source is not None and kernel and initrd
        # -U: the running guest holds the overlay's write lock; reading its header is safe.
        info = subprocess.run(["qemu-img", "info", "-U", "--output=json", source.get("file", "")],
                              capture_output=True, text=True, check=True)  # fmt: skip
        base_disk = json.loads(info.stdout)["backing-filename"]
        overlay = self.data_dir / "bare-overlay.qcow2"
        subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-F", "qcow2", "-b", base_disk,
                        str(overlay)], check=True)  # fmt: skip
        cmd = ["qemu-system-x86_64", "-accel", "kvm" if accel == "kvm" else "tcg",
               "-m", str(MEMORY_MIB), "-smp", str(VCPUS), "-display", "none", "-nodefaults",
               "-vga", "std",
               "-chardev", f"socket,id=ser0,path={self.bare_socket},server=on,wait=off",
               "-serial", "chardev:ser0",
               "-kernel", kernel, "-initrd", initrd, "-append", cmdline,
               "-drive", f"file={overlay},if=virtio,format=qcow2"]  # fmt: skip
        self.bare = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.PIPE)  # fmt: skip

    def connect_bare(self, timeout: float = 30) -> socket.socket:
        deadline = time.monotonic() + timeout
        while True:
            if self.bare is None or self.bare.poll() is not None:
                err = b""
                if self.bare is not None and self.bare.stderr is not None:
                    err = self.bare.stderr.read()
                raise RuntimeError(f"the bare QEMU is not running: {err.decode().strip()}")
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                sock.connect(str(self.bare_socket))
                return sock
            except (FileNotFoundError, ConnectionRefusedError):
                sock.close()
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)

    # -- cleanup --------------------------------------------------------------------------------
    def close(self) -> None:
        self.stop_bare()
        super().close()

    def stop_bare(self) -> None:
        if self.bare is not None:
            self.bare.kill()
            self.bare.wait()
            self.bare = None

    def down(self) -> None:
        try:
            self.client.request("POST", "/v1/down", timeout=180, json=self.lab_body())
        except Exception as exc:
            note(f"lab down through the daemon failed ({exc}); removing the domain with virsh")
            self._virsh_remove()

    def _virsh_remove(self) -> None:
        disks = self.data_dir / "disks"
        names = [p.name for p in disks.iterdir()] if disks.is_dir() else []
        for name in names:  # only the domains of this bench's own data dir
            for verb in ("destroy", "undefine"):
                subprocess.run(["virsh", "-c", self.settings.libvirt_uri, verb, name],
                               capture_output=True)  # fmt: skip


# -- keystroke round trip -----------------------------------------------------------------------
class SocketTransport:
    """`ConsoleTransport` on the bare QEMU's chardev socket, so both sides log in alike."""

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock

    def send(self, data: bytes) -> None:
        self._sock.sendall(data)

    def __iter__(self) -> Iterator[bytes | str]:
        while True:
            try:
                data = self._sock.recv(65536)
            except OSError:
                return
            if not data:
                return
            yield data

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self._sock.shutdown(socket.SHUT_RDWR)
        self._sock.close()


class EchoChannel(Protocol):
    def send(self, data: bytes) -> None: ...

    def recv(self, timeout: float) -> bytes: ...


class WsEcho:
    def __init__(self, conn: ClientConnection) -> None:
        self.conn = conn

    def send(self, data: bytes) -> None:
        self.conn.send(data)

    def recv(self, timeout: float) -> bytes:
        message = self.conn.recv(timeout=timeout)
        if isinstance(message, str):
            raise RuntimeError(f"console control message during the round trips: {message}")
        return message


class SockEcho:
    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def recv(self, timeout: float) -> bytes:
        self.sock.settimeout(timeout)
        data = self.sock.recv(65536)
        if not data:
            raise EOFError("the bare QEMU closed its chardev")
        return data


def prepare_echo(session: ConsoleSession) -> None:
    session.login(USER, PASSWORD, timeout=300)
    session.sendline(ECHO_SETUP)
    time.sleep(1.5)  # the shell runs stty, then cat; typed bytes are only timed after this


def key_for(i: int) -> bytes:
    j = i % len(KEYS)
    return KEYS[j : j + 1]


def round_trip(channel: EchoChannel, key: bytes, timeout: float = 5.0) -> float:
    """Milliseconds from sending `key` to seeing it come back."""
    t0 = time.perf_counter()
    channel.send(key)
    deadline = t0 + timeout
    while True:
        data = channel.recv(max(0.001, deadline - time.perf_counter()))
        if key in data:
            return (time.perf_counter() - t0) * 1000


def drain(channel: EchoChannel) -> None:
    with contextlib.suppress(TimeoutError):
        while True:
            channel.recv(0.3)


def measure_round_trips(
    channels: dict[str, EchoChannel], samples: int
) -> tuple[dict[str, list[float]], dict[str, int]]:
    names = list(channels)
    lost = dict.fromkeys(names, 0)
    for name in names:
        drain(channels[name])
        ok = 0
        for i in range(WARMUP + MAX_LOST):
            try:
                round_trip(channels[name], key_for(i))
                ok += 1
            except TimeoutError:
                pass
            if ok == WARMUP:
                break
        if ok < WARMUP:
            raise RuntimeError(f"{name}: the guest does not echo typed bytes")
    times: dict[str, list[float]] = {name: [] for name in names}
    for i in range(samples):
        key = key_for(i)
        for name in names if i % 2 == 0 else names[::-1]:
            try:
                times[name].append(round_trip(channels[name], key))
            except TimeoutError:
                lost[name] += 1
                if lost[name] > MAX_LOST:
                    raise RuntimeError(f"{name}: more than {MAX_LOST} echoes lost") from None
    return times, lost


def pct(values: list[float], p: float) -> float:
    """Nearest-rank percentile."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(p / 100 * len(ordered)) - 1)]


# -- fan-out ------------------------------------------------------------------------------------
@dataclass(eq=False)
class Reader:
    """One console websocket read continuously: byte count, SHA-256, first/last byte times."""

    name: str
    conn: AsyncConnection
    digest: Any = field(default_factory=hashlib.sha256)
    received: int = 0
    first: float | None = None
    #: Arrival of the latest chunk, and of the one that completed the window.
    last: float | None = None
    reached: float | None = None
    target: int | None = None
    closed_reason: str | None = None
    ended: bool = False
    done: asyncio.Event = field(default_factory=asyncio.Event)

    def set_target(self, target: int) -> None:
        self.target = target
        self._check()

    def _check(self) -> None:
        if self.target is not None and self.reached is None and self.received >= self.target:
            self.reached = self.last
            self.done.set()

    def restart(self) -> None:
        """Count from here: what came before belongs to the log before the window."""
        self.digest = hashlib.sha256()
        self.received = 0
        self.first = self.last = None

    async def run(self) -> None:
        try:
            async for message in self.conn:
                if isinstance(message, str):
                    control = json.loads(message)
                    if control.get("type") in ("closed", "error"):
                        self.closed_reason = control.get("reason") or control.get("message")
                    continue
                self.last = time.monotonic()
                if self.first is None:
                    self.first = self.last
                self.digest.update(message)
                self.received += len(message)
                self._check()
        except ConnectionClosed:
            pass
        finally:
            self.ended = True
            self.done.set()

    @property
    def rate(self) -> float | None:
        if self.reached is None or self.first is None or self.target is None:
            return None
        return self.target / max(1e-6, self.reached - self.first)


@dataclass
class RoundResult:
    viewers: int
    window_bytes: int
    yes_bytes: int
    guest_seconds: float
    viewer_rates: list[float]
    complete: int
    dropped: int
    incomplete: list[str]
    writer_note: str
    rss_before_kib: int
    rss_peak_kib: int
    rss_end_kib: int
    rotated: bool
    #: X-Lab-Size of the boot-log API when the window started and ended.
    api_start: int
    api_end: int

    @property
    def guest_rate(self) -> float:
        return self.yes_bytes / self.guest_seconds


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


class Fanout:
    def __init__(self, lab: ConsoleLab, daemon_pid: int) -> None:
        self.lab = lab
        self.pid = daemon_pid
        sock = str(lab.settings.socket_path)
        self.sock = sock
        self.http = httpx.AsyncClient(transport=httpx.AsyncHTTPTransport(uds=sock),
                                      base_url="http://lab", timeout=60)  # fmt: skip

    async def open(self, mode: str, user: str) -> AsyncConnection:
        # As LabClient.open_console builds it (and with the same client defaults).
        query = urlencode({"mode": mode, "user": user, "replay": "0"})
        return await async_unix_connect(self.sock, f"ws://lab/v1/vms/{VM}/console?{query}",
                                        max_size=None, open_timeout=60)  # fmt: skip

    async def log_size(self) -> int:
        r = await self.http.get(f"/v1/vms/{VM}/boot-log", params={"start": -1})
        r.raise_for_status()
        return int(r.headers["X-Lab-Size"])

    async def log_tail(self, nbytes: int) -> bytes:
        r = await self.http.get(f"/v1/vms/{VM}/boot-log", params={"start": -nbytes})
        r.raise_for_status()
        return r.content

    async def log_range(self, start: int, end: int) -> bytes:
        parts: list[bytes] = []
        offset = start
        while offset < end:
            r = await self.http.get(f"/v1/vms/{VM}/boot-log",
                                    params={"start": offset, "length": end - offset})  # fmt: skip
            r.raise_for_status()
            if not r.content:
                break
            parts.append(r.content)
            offset = int(r.headers["X-Lab-Next"])
        return b"".join(parts)

    async def wait_quiet(self, quiet: float = 0.8, timeout: float = 60) -> int:
        deadline = time.monotonic() + timeout
        size = await self.log_size()
        since = time.monotonic()
        while time.monotonic() - since < quiet:
            if time.monotonic() > deadline:
                raise TimeoutError("the serial console never went quiet")
            await asyncio.sleep(0.1)
            now_size = await self.log_size()
            if now_size != size:
                size, since = now_size, time.monotonic()
        return size

    async def run_round(self, nviewers: int, seconds: int) -> RoundResult:
        writer = Reader("writer", await self.open("interactive", "bench-writer"))
        tasks = [asyncio.create_task(writer.run())]
        viewers: list[Reader] = []
        stop_sampling = asyncio.Event()
        try:
            await writer.conn.send(b"\r")
            start = await self.wait_quiet()
            rss_before = rss_kib(self.pid)
            for _attempt in range(5):
                viewers = []
                for batch in range(0, nviewers, 20):
                    conns = await asyncio.gather(*(
                        self.open("view", f"viewer{i}")
                        for i in range(batch, min(nviewers, batch + 20))
                    ))  # fmt: skip
                    viewers += [Reader(f"viewer{batch + i}", c) for i, c in enumerate(conns)]
                if await self.log_size() == start:
                    break  # nothing printed while they connected: all start at `start`
                await asyncio.gather(*(v.conn.close() for v in viewers))
                start = await self.wait_quiet()
            else:
                raise RuntimeError("the console was never quiet while the viewers connected")
            writer.restart()  # it saw the prompt printed before `start`
            tasks += [asyncio.create_task(v.run()) for v in viewers]
            log_path = self.lab.serial_log_path()
            inode = log_path.stat().st_ino

            peak = [rss_before]

            async def sample_rss() -> None:
                while not stop_sampling.is_set():
                    peak[0] = max(peak[0], rss_kib(self.pid))
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(stop_sampling.wait(), RSS_PERIOD_S)

            tasks.append(asyncio.create_task(sample_rss()))

            command, marker = flood_command(seconds)
            await writer.conn.send(command + b"\r")
            deadline = time.monotonic() + seconds + 120
            while not marker.search(await self.log_tail(1024)):
                if time.monotonic() > deadline:
                    raise TimeoutError("the writer's end marker never reached the serial log")
                await asyncio.sleep(0.2)
            end = await self.wait_quiet()

            # The window [start, end) of the serial log through the boot-log API, whose offsets
            # stay stable across virtlogd's rotations (lab/storage/serial_log.py).
            rotated = log_path.stat().st_ino != inode if log_path.exists() else True
            window = await self.log_range(start, end)
            if len(window) != end - start:
                raise RuntimeError(
                    "the serial log rotated away the window's start before it could be read"
                )
            yes_bytes, guest_seconds = parse_flood(window, marker)
            reference = hashlib.sha256(window).hexdigest()

            for r in [writer, *viewers]:
                r.set_target(len(window))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(
                    asyncio.gather(*(r.done.wait() for r in [writer, *viewers])),
                    timeout=max(60, 6 * seconds),
                )
            rss_end = rss_kib(self.pid)
            peak[0] = max(peak[0], rss_end)
            stop_sampling.set()

            complete, dropped, incomplete = 0, 0, []
            for v in viewers:
                if v.received == len(window) and v.digest.hexdigest() == reference:
                    complete += 1
                    continue
                if v.closed_reason == SLOW_NOTICE:
                    dropped += 1
                incomplete.append(describe(v, len(window)))
            writer_ok = writer.received == len(window) and writer.digest.hexdigest() == reference
            return RoundResult(
                viewers=nviewers, window_bytes=len(window), yes_bytes=yes_bytes,
                guest_seconds=guest_seconds,
                viewer_rates=[r for v in viewers if (r := v.rate) is not None],
                complete=complete, dropped=dropped, incomplete=incomplete,
                writer_note="" if writer_ok else describe(writer, len(window)),
                rss_before_kib=rss_before, rss_peak_kib=peak[0], rss_end_kib=rss_end,
                rotated=rotated, api_start=start, api_end=end,
            )  # fmt: skip
        finally:
            stop_sampling.set()
            await asyncio.gather(*(r.conn.close() for r in [writer, *viewers]),
                                 return_exceptions=True)  # fmt: skip
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    async def close(self) -> None:
        await self.http.aclose()


def flood_command(seconds: int) -> tuple[bytes, re.Pattern[bytes]]:
    """The guest shell line that floods the console, and the regex of its end marker (which
    carries the guest's uptime before and after; the echoed line does not match it)."""
    tag = uuid.uuid4().hex[:10]
    command = (
        f"read -r t0 _ </proc/uptime; timeout {seconds} yes {PATTERN.decode()}; "
        "read -r t1 _ </proc/uptime; "
        f'printf \'%s%s %s %s\\n\' __FANOUT_ {tag} "$t0" "$t1"'
    )
    # Up to the line's end: a match on a partly received line would cut the second number.
    marker = re.compile(rb"__FANOUT_" + tag.encode() + rb" ([0-9.]+) ([0-9.]+)\r?\n")
    return command.encode(), marker


def parse_flood(output: bytes, marker: re.Pattern[bytes]) -> tuple[int, float]:
    """(bytes `yes` wrote, guest seconds it ran) from the console output of `flood_command`."""
    found = marker.search(output)
    if not found:
        raise RuntimeError("the flood's end marker is not in the console output")
    first_line = output.find(b"\n" + PATTERN + b"\r\n")
    yes_bytes = found.start() - (first_line + 1 if first_line >= 0 else 0)
    return yes_bytes, float(found.group(2)) - float(found.group(1))


def bare_flood(channel: SockEcho, seconds: int) -> float:
    """Guest bytes/s of the same flood on the bare QEMU, its chardev read by this process."""
    channel.send(b"\x03")  # SIGINT to cat
    time.sleep(0.5)
    channel.send(b"stty sane\r")
    drain(channel)
    command, marker = flood_command(seconds)
    channel.send(command + b"\r")
    output = bytearray()
    deadline = time.monotonic() + seconds + 120
    while not marker.search(output, max(0, len(output) - 65536 - 200)):
        if time.monotonic() > deadline:
            raise TimeoutError("the bare QEMU's flood never ended")
        with contextlib.suppress(TimeoutError):
            output += channel.recv(1.0)
    yes_bytes, guest_seconds = parse_flood(bytes(output), marker)
    return yes_bytes / guest_seconds


def describe(reader: Reader, expected: int) -> str:
    if reader.received == expected:
        what = "the right number of bytes but different ones"
    else:
        what = f"{reader.received} of {expected} bytes"
    why = f", closed: {reader.closed_reason!r}" if reader.closed_reason else ""
    ended = ", connection ended" if reader.ended else ""
    return f"{reader.name}: {what}{why}{ended}"


async def run_fanout(
    lab: ConsoleLab, daemon_pid: int, counts: list[int], seconds: int, repeats: int
) -> list[RoundResult]:
    """Rounds in the given order, then reversed, and so on: drift hits every count alike."""
    fanout = Fanout(lab, daemon_pid)
    results = []
    try:
        for rep in range(repeats):
            for n in counts if rep % 2 == 0 else counts[::-1]:
                note(f"fan-out: {n} viewers, guest writes for {seconds} s")
                results.append(await fanout.run_round(n, seconds))
    finally:
        await fanout.close()
    return results


# -- main ---------------------------------------------------------------------------------------
TARGETS = benchlab.Targets()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    benchlab.Targets.add_option(parser)
    parser.add_argument("--samples", "--runs", dest="samples", type=int, default=500,
                        help="keystroke round trips on each side (default 500)")  # fmt: skip
    parser.add_argument("--seconds", type=int, default=10,
                        help="seconds the guest floods its console per fan-out round")  # fmt: skip
    parser.add_argument("--viewers", default="0,1,10,100",
                        help="viewer counts of the fan-out rounds (default 0,1,10,100)",
                        )  # fmt: skip
    parser.add_argument("--repeats", type=int, default=2,
                        help="fan-out passes over the viewer counts, alternately in reverse"
                        " order (default 2)")  # fmt: skip
    parser.add_argument("--nice-viewers", type=int, default=0, metavar="N",
                        help="run the fan-out's viewer clients (this process) at nice N, so on "
                             "a small machine the load generator does not take the guest's CPU; "
                             "the lab's daemon is not reniced")  # fmt: skip
    parser.add_argument("--keep-data", action="store_true",
                        help="keep the temporary data dir (serial log, daemon log)")  # fmt: skip
    args = parser.parse_args()
    counts = [int(n) for n in args.viewers.split(",") if n.strip()]

    benchlab.exit_on_sigterm()
    lab = ConsoleLab(keep=args.keep_data)
    try:
        note(f"starting a daemon on {lab.data_dir} and a 1-VM lab")
        status = lab.start()
        lab.start_bare(status["accel"])
        note("logging in on the lab VM and on the bare QEMU")
        with connect(VM, settings=lab.settings, timeout=60, user="bench-login") as session:
            prepare_echo(session)
        bare_session = ConsoleSession(SocketTransport(lab.connect_bare()), vm="bare", timeout=60)
        try:
            prepare_echo(bare_session)
        finally:
            bare_session.close()
        lab_conn = lab.client.open_console(VM, mode="interactive", replay=0, user="bench-rtt")
        extensions = lab_conn.response.headers.get("Sec-WebSocket-Extensions", "none")
        bare_sock = lab.connect_bare()
        try:
            note(f"keystroke round trips: {args.samples} on each side")
            rtt, lost = measure_round_trips(
                {"lab": WsEcho(lab_conn), "bare": SockEcho(bare_sock)}, args.samples
            )
            note(f"flood on the bare QEMU for {args.seconds} s (baseline)")
            bare_rate = bare_flood(SockEcho(bare_sock), args.seconds)
            lab_conn.send(b"\x03")  # SIGINT to cat; back at the shell prompt
            time.sleep(0.5)
            lab_conn.send(b"stty sane\r")
            time.sleep(0.5)
        finally:
            lab_conn.close()
            bare_sock.close()
        lab.stop_bare()  # its guest would take CPU from the fan-out
        if args.nice_viewers:
            os.nice(args.nice_viewers)  # only this process: the viewers and the bench itself
            note(f"fan-out viewers run at nice {args.nice_viewers}")
        rounds = asyncio.run(run_fanout(lab, status["pid"], counts, args.seconds, args.repeats))
    except BaseException:
        lab.note_daemon_failure()
        raise
    finally:
        note("cleaning up")
        lab.close()
    report(status, args, rtt, lost, extensions, rounds, bare_rate,
           lab.settings.console_queue_limit)  # fmt: skip
    return TARGETS.exit_status(args.check, "console")


def report(
    status: dict[str, Any], args: argparse.Namespace, rtt: dict[str, list[float]],
    lost: dict[str, int], extensions: str, rounds: list[RoundResult], bare_rate: float,
    queue_limit: int,
) -> None:  # fmt: skip
    print(f"accelerator: {status['accel']}; VM {VM}: {VCPUS} vCPU, {MEMORY_MIB} MiB, tiny image;"
          f" console queue limit {queue_limit / 2**20:g} MiB")  # fmt: skip
    print(f"console websocket extensions: {extensions}")
    print()
    print(f"Keystroke round trip (1 byte, echoed by the guest tty; {args.samples} samples each,"
          " interleaved), ms:")  # fmt: skip
    print(f"  {'':22} {'p50':>7} {'p90':>7} {'p99':>7} {'max':>7}  lost")
    stats = {}
    for name, label in (("lab", "lab (websocket)"), ("bare", "bare QEMU (chardev)")):
        values = [pct(rtt[name], p) for p in (50, 90, 99)] + [max(rtt[name])]
        stats[name] = values
        print(f"  {label:22} " + " ".join(f"{v:7.2f}" for v in values) + f"  {lost[name]}")
    overhead = [a - b for a, b in zip(stats["lab"], stats["bare"], strict=True)]
    print(f"  {'overhead':22} " + " ".join(f"{v:+7.2f}" for v in overhead))
    verdict = TARGETS.verdict("keystroke p99 overhead", overhead[2] < 2.0)
    print(f"  target p99 overhead < 2 ms: {verdict} ({overhead[2]:+.2f} ms;"
          f" p99 ratio lab/bare {stats['lab'][2] / stats['bare'][2]:.2f})")  # fmt: skip
    print()
    print(f"Fan-out (guest runs `yes` on ttyS0 for {args.seconds} s; viewers mode=view, replay=0,"
          " plus the typing session):")  # fmt: skip
    print(f"  {'#':>2} {'viewers':>7} {'guest KiB/s':>11} {'window KiB':>10}"
          f" {'viewer KiB/s min/med':>21} {'every byte':>10} {'dropped':>7}"
          "  daemon RSS MiB before/peak/end")  # fmt: skip
    for i, r in enumerate(rounds, 1):
        if r.viewer_rates:
            rates = (f"{min(r.viewer_rates) / 1024:9.1f} / "
                     f"{statistics.median(r.viewer_rates) / 1024:9.1f}")  # fmt: skip
        else:
            rates = "-"
        every = f"{r.complete}/{r.viewers}" if r.viewers else "-"
        mib = [x / 1024 for x in (r.rss_before_kib, r.rss_peak_kib, r.rss_end_kib)]
        print(f"  {i:2d} {r.viewers:7d} {r.guest_rate / 1024:11.1f} {r.window_bytes / 1024:10.1f}"
              f" {rates:>21} {every:>10} {r.dropped:7d}"
              f"  {mib[0]:.1f} / {mib[1]:.1f} / {mib[2]:.1f}")  # fmt: skip
    for i, r in enumerate(rounds, 1):
        at = f"    round {i} ({r.viewers} viewers):"
        for line in r.incomplete[:5]:
            print(f"{at} {line}")
        if len(r.incomplete) > 5:
            print(f"{at} ... and {len(r.incomplete) - 5} more")
        if r.writer_note:
            print(f"{at} typing session: {r.writer_note}")
        if r.rotated:
            print(f"{at} virtlogd rotated the serial log in the window (log -> log.0); the"
                  f" boot-log API read it across the rotation, offsets {r.api_start} ->"
                  f" {r.api_end}")  # fmt: skip
    print(f"  {'':2} {'bare':>7} {bare_rate / 1024:11.1f}   (the same flood on the bare QEMU, its"
          " chardev socket read by the bench)")  # fmt: skip
    by_count: dict[int, list[float]] = {}
    for r in rounds:
        by_count.setdefault(r.viewers, []).append(r.guest_rate)
    mean = {n: statistics.mean(rates) for n, rates in by_count.items()}
    if len(rounds) > len(by_count):
        print("  guest KiB/s, mean over the rounds: "
              + ", ".join(f"{n} viewers {mean[n] / 1024:.1f}" for n in sorted(mean)))  # fmt: skip
    if 0 in mean and len(mean) > 1:
        top = max(mean)
        ratio = mean[top] / mean[0]
        verdict = TARGETS.verdict("throughput with viewers", ratio >= 0.90)
        print(f"  ratio guest throughput {top} viewers / 0 viewers: {ratio:.2f}"
              f" (target >= 0.90: {verdict})")  # fmt: skip
    if 0 in mean:
        ratio = mean[0] / bare_rate
        verdict = TARGETS.verdict("throughput against bare QEMU", ratio >= 0.80)
        print(f"  ratio guest throughput lab 0 viewers / bare QEMU: {ratio:.2f}"
              f" (target >= 0.80: {verdict})")  # fmt: skip
    all_ok = all(r.complete == r.viewers for r in rounds)
    dropped = sum(r.dropped for r in rounds)
    verdict = TARGETS.verdict("every byte to every viewer", all_ok and not dropped)
    print(f"  every viewer received every byte: {'yes' if all_ok else 'NO'};"
          f" viewers dropped as too slow: {dropped} (target: every byte, none dropped: {verdict})")
    peak = max((r.rss_peak_kib for r in rounds), default=0)
    print(f"  daemon peak RSS: {peak / 1024:.1f} MiB")


if __name__ == "__main__":
    raise SystemExit(main())
