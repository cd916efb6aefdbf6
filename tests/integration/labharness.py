"""A real lab for integration tests: a daemon subprocess with its own data dir, the CLI as a
user runs it, and helpers that read real serial output."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from lab.client.http import LabClient
from lab.domain.vm import DOMAIN_PREFIX, lab_id_for
from lab.settings import Settings

REPO = Path(__file__).resolve().parents[2]


#: One line of the kernel's on the console: its timestamp, the message, the end of the line.
KERNEL_LINE = re.compile(rb"\[ *\d+\.\d+\] [^\r\n]*\r*\n")


def seq_numbers(output: bytes) -> list[int]:
    """The numbers of the tiny image's `SEQ n` lines (`lab.seq=N`), in the order printed. The
    kernel prints at its default log level (`bootMessages: normal`) while init counts, and its
    console writes a whole line at once, even into the middle of one of init's: its lines are
    taken out first, and init's come together again."""
    return [int(n) for n in re.findall(rb"^SEQ (\d+)\r?$", KERNEL_LINE.sub(b"", output), re.M)]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


LAB_BIN = str(Path(sys.executable).with_name("lab"))


@dataclass
class LabHarness:
    data_dir: Path
    image_cache: Path
    daemon: subprocess.Popen[bytes] | None = None
    api_port: int = field(default_factory=lambda: free_port())
    lab_files: list[Path] = field(default_factory=list)
    #: Short by default, so the idle-timeout test is quick; but no shorter: a loaded 2-core
    #: host can make a TCG guest take several seconds to answer a command.
    idle_minutes: float = 0.5

    @property
    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        env["LAB_DATA_DIR"] = str(self.data_dir)
        env["LAB_IMAGE_CACHE"] = str(self.image_cache)
        env["LAB_SHUTDOWN_TIMEOUT"] = "30"
        env["LAB_API_PORT"] = str(self.api_port)
        # Small enough that a stalled viewer is dropped after a few hundred KiB of output.
        env["LAB_CONSOLE_QUEUE_LIMIT"] = str(256 * 1024)
        env["LAB_IDLE_TIMEOUT_MINUTES"] = str(self.idle_minutes)
        # The "agent is down" test waits this out; a lab's default is 30 s.
        env["LAB_AGENT_WAIT_S"] = "5"
        env["COLUMNS"] = "200"
        return env

    @property
    def ca(self) -> Path:
        """The lab CA's certificate, for HTTPS clients of the Azure-compatible API."""
        return self.data_dir / "tls" / "ca.pem"

    @property
    def settings(self) -> Settings:
        return Settings(
            data_dir=self.data_dir, image_cache=self.image_cache, api_port=self.api_port
        )

    @property
    def client(self) -> LabClient:
        return LabClient(self.settings)

    # -- daemon ---------------------------------------------------------------------------------
    def start_daemon(self, timeout: float = 120.0) -> None:
        log = (self.data_dir / "daemon-test.log").open("ab")
        self.daemon = subprocess.Popen(
            [sys.executable, "-m", "lab.cli", "serve"],
            env=self.env, stdout=log, stderr=log, stdin=subprocess.DEVNULL,
        )  # fmt: skip
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.client.alive():
                return
            if self.daemon.poll() is not None:
                raise RuntimeError(f"daemon exited: {self.daemon_log()[-3000:]}")
            time.sleep(0.1)
        raise RuntimeError(f"daemon did not answer: {self.daemon_log()[-3000:]}")

    def kill_daemon(self, sig: int = signal.SIGKILL) -> None:
        if self.daemon is not None and self.daemon.poll() is None:
            self.daemon.send_signal(sig)
            try:
                self.daemon.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.daemon.kill()  # it did not stop: no test may leave a daemon behind
                self.daemon.wait(timeout=30)
                raise
            finally:
                self.daemon = None
        self.daemon = None

    def daemon_log(self) -> str:
        path = self.data_dir / "daemon-test.log"
        return path.read_text(errors="replace") if path.exists() else ""

    # -- CLI ------------------------------------------------------------------------------------
    def cli(
        self, *args: str, check: bool = True, timeout: float = 300
    ) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [LAB_BIN, *args], env=self.env, capture_output=True, text=True, timeout=timeout,
            stdin=subprocess.DEVNULL,
        )  # fmt: skip
        if check and result.returncode != 0:
            raise AssertionError(
                f"lab {' '.join(args)} exited {result.returncode}\n{result.stdout}\n{result.stderr}"
            )
        return result

    def write_lab(self, name: str, text: str) -> Path:
        path = self.data_dir / name
        path.write_text(text)
        self.lab_files.append(path)
        return path

    # -- serial output --------------------------------------------------------------------------
    def boot_log(self, vm: str, start: int = 0) -> bytes:
        data = b""
        offset = start
        while True:
            r = self.client.request("GET", f"/v1/vms/{vm}/boot-log", params={"start": offset})
            data += r.content
            offset = int(r.headers["X-Lab-Next"])
            if offset >= int(r.headers["X-Lab-Size"]):
                return data

    def log_size(self, vm: str) -> int:
        r = self.client.request("GET", f"/v1/vms/{vm}/boot-log", params={"start": -1})
        return int(r.headers["X-Lab-Size"])

    def wait_for_log(
        self, vm: str, pattern: bytes | str, *, start: int = 0, timeout: float = 90, count: int = 1
    ) -> bytes:
        """Wait until the boot log after `start` matches `pattern` (a regex) `count` times."""
        rx = re.compile(pattern.encode() if isinstance(pattern, str) else pattern)
        deadline = time.monotonic() + timeout
        while True:
            data = self.boot_log(vm, start)
            if len(rx.findall(data)) >= count:
                return data
            if time.monotonic() > deadline:
                tail = data[-600:].decode(errors="replace")
                raise AssertionError(f"{vm}: {pattern!r} x{count} not seen in {timeout} s: {tail}")
            time.sleep(0.25)

    def vm(self, name: str) -> dict[str, object]:
        result: dict[str, object] = self.client.json("GET", f"/v1/vms/{name}")
        return result

    # -- cleanup --------------------------------------------------------------------------------
    def cleanup(self) -> None:
        """Delete every domain of this lab, whatever state the tests left it in."""
        try:
            self.kill_daemon(signal.SIGTERM)
        finally:
            self._delete_domains()

    def _delete_domains(self) -> None:
        uri = self.settings.libvirt_uri
        prefix = f"{DOMAIN_PREFIX}{lab_id_for(self.data_dir)}+"
        for name in virsh(uri, "list", "--all", "--name").split():
            if name.startswith(prefix):
                virsh(uri, "destroy", name)
                virsh(uri, "undefine", name)


def virsh(uri: str, *args: str) -> str:
    """`virsh -c URI ARGS...`'s output; a failure (no such domain, already off) is no error."""
    return subprocess.run(["virsh", "-c", uri, *args], capture_output=True, text=True,
                          check=False).stdout  # fmt: skip


def sweep_orphaned_domains(uri: str) -> list[str]:
    """Undefine the lab's shut-off domains whose disks are gone: a test run that was killed
    left them, and pytest has since removed its temporary data dir. A domain that runs, or
    whose disk still exists (a user's lab, another run's), is left alone. Returns the names."""
    swept = []
    for name in virsh(uri, "list", "--all", "--name").split():
        if not name.startswith(DOMAIN_PREFIX) or virsh(uri, "domstate", name).strip() != "shut off":
            continue
        disks = [line.split()[-1] for line in virsh(uri, "domblklist", name).splitlines()[2:]
                 if line.strip() and line.split()[-1].startswith("/")]  # fmt: skip
        if disks and not any(Path(d).exists() for d in disks):
            virsh(uri, "undefine", name)
            swept.append(name)
    return swept


def tiny_vm_yaml(
    name: str, memory_mib: int = 256, boot_diagnostics: str = "{enabled: true}",
    boot_messages: str = "normal",
) -> str:  # fmt: skip
    """One tiny-image VM of a lab file's `virtualMachines` list (1 vCPU, the tests' login)."""
    return (
        f"      - name: {name}\n"
        "        image: tiny\n"
        f"        size: {{vcpus: 1, memoryMiB: {memory_mib}}}\n"
        "        adminUsername: azureuser\n"
        '        adminPassword: "Passw0rd!"\n'
        f"        bootDiagnostics: {boot_diagnostics}\n"
        f"        bootMessages: {boot_messages}\n"
    )


def report_figures(config: pytest.Config, title: str, lines: list[str]) -> None:
    """Figures on the terminal, past pytest's output capture, so CI logs keep them (a print
    in a test shows only for a failure, and a fixture's teardown runs under capture)."""
    reporter = config.pluginmanager.get_plugin("terminalreporter")
    capture = config.pluginmanager.get_plugin("capturemanager")
    if reporter is None or capture is None:
        print("\n".join(lines))
        return
    with capture.global_and_fixture_disabled():
        reporter.write_line("")
        reporter.write_sep("-", title)
        for line in lines:
            reporter.write_line(line)


class WsConsole:
    """A minimal expect over the daemon's console websocket (the tests' own, independent of the
    `lab.client` API so they can check it)."""

    def __init__(self, conn: object) -> None:
        from websockets.sync.client import ClientConnection

        assert isinstance(conn, ClientConnection)
        self.conn = conn
        self.buffer = b""
        self.controls: list[str] = []

    def send(self, data: bytes) -> None:
        self.conn.send(data)

    def expect(self, pattern: bytes, timeout: float = 60) -> re.Match[bytes]:
        rx = re.compile(pattern)
        deadline = time.monotonic() + timeout
        while True:
            match = rx.search(self.buffer)
            if match:
                self.buffer = self.buffer[match.end() :]
                return match
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"{pattern!r} not seen; last output: {self.buffer[-400:]!r}")
            try:
                message = self.conn.recv(timeout=min(remaining, 1.0))
            except TimeoutError:
                continue
            if isinstance(message, bytes):
                self.buffer += message
            else:
                self.controls.append(message)

    def login(self, user: str = "azureuser", password: str = "Passw0rd!") -> None:
        self.send(b"\r")
        self.expect(rb"login: ")
        self.send(user.encode() + b"\r")
        self.expect(rb"Password: ")
        self.send(password.encode() + b"\r")
        self.expect(rb"\$ ")

    def run(self, command: str, timeout: float = 30) -> str:
        marker = f"__END_{time.monotonic_ns()}__"
        self.send(f"{command}; echo {marker[:6]}''{marker[6:]}$?\r".encode())
        match = self.expect(re.escape(marker.encode()) + rb"(\d+)", timeout)
        return match.group(1).decode()
