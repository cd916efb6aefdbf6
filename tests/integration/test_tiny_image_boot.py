"""Boot the real `tiny` image under bare QEMU (TCG) and use it as the lab will.

The image is built once per session into a shared cache (``/tmp/lab-test-image-cache`` unless
``LAB_TEST_IMAGE_CACHE`` says otherwise), so reruns only pay for the boots. Each boot gets its
own per-VM initrd (host name ``t1``, user ``azureuser``) and a qcow2 overlay on the image disk.
"""

from __future__ import annotations

import io
import os
import re
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pexpect
import pytest

from lab.storage.images import (
    ImageCache,
    ImageManifest,
    hash_password,
    write_guest_config_initrd,
)

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
CACHE_DIR = Path(os.environ.get("LAB_TEST_IMAGE_CACHE", "/tmp/lab-test-image-cache"))
QEMU = "qemu-system-x86_64"
USER, PASSWORD, HOST = "azureuser", "Passw0rd!", "t1"
PROMPT = rf"{USER}@{HOST}:[^\r\n]*\$ "
#: Generous: the lab's CI machines run several TCG guests at once.
BOOT_TIMEOUT = 120


@dataclass(frozen=True)
class Image:
    directory: Path
    manifest: ImageManifest

    def file(self, name: str) -> Path:
        return self.directory / name


@pytest.fixture(scope="session")
def tiny_image() -> Image:
    missing = [
        t for t in (QEMU, "qemu-img", "apt-get", "dpkg-deb", "mkfs.ext4") if not shutil.which(t)
    ]
    if missing:
        pytest.skip(f"needs {', '.join(missing)}")
    cache = ImageCache(CACHE_DIR, REPO / "images")
    manifest = cache.build("tiny")
    return Image(cache.path(manifest), manifest)


@pytest.fixture
def vm_dir() -> Iterator[Path]:
    # Short path on purpose: the QEMU monitor is a unix socket (108-byte path limit).
    path = Path(tempfile.mkdtemp(prefix="lab-tiny-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


def make_vm(image: Image, vm_dir: Path, *, disk: str = "overlay") -> tuple[Path, Path | None]:
    """The per-VM initrd and disk: an overlay on the image disk, a blank one, or none."""
    initrd = vm_dir / "initrd.img"
    write_guest_config_initrd(
        image.file(image.manifest.initrd),
        initrd,
        hostname=HOST,
        admin_username=USER,
        admin_password_hash=hash_password(PASSWORD),  # what the lab passes: never the password
    )
    if disk == "none":
        return initrd, None
    path = vm_dir / "disk.qcow2"
    if disk == "overlay":
        backing = ["-b", str(image.file(image.manifest.disk)), "-F", "qcow2"]
        subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", *backing, str(path)], check=True)
    else:
        subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(path), "64M"], check=True)
    return initrd, path


class Guest:
    """One QEMU process: serial console on a pty (pexpect), monitor on a unix socket."""

    def __init__(
        self, image: Image, vm_dir: Path, initrd: Path, disk: Path | None, append: str
    ) -> None:
        self.monitor_path = vm_dir / "monitor.sock"
        self.monitor_path.unlink(missing_ok=True)
        args = [
            "-accel", "tcg", "-m", "256", "-nographic", "-no-reboot", "-nic", "none",
            "-kernel", str(image.file(image.manifest.kernel)),
            "-initrd", str(initrd),
            "-append", f"{image.manifest.cmdline} {append}".strip(),
            "-monitor", f"unix:{self.monitor_path},server,nowait",
        ]  # fmt: skip
        if disk is not None:
            args += ["-drive", f"file={disk},if=virtio"]
        self.log = io.StringIO()
        self.started = time.monotonic()
        self.proc = pexpect.spawn(
            QEMU, args, encoding="utf-8", codec_errors="replace", timeout=BOOT_TIMEOUT
        )
        self.proc.logfile_read = self.log

    def expect(self, pattern: str, timeout: float = 30) -> str:
        try:
            self.proc.expect(pattern, timeout=timeout)
        except (pexpect.TIMEOUT, pexpect.EOF) as exc:
            tail = self.log.getvalue()[-3000:]
            raise AssertionError(f"did not see {pattern!r}; console tail:\n{tail}") from exc
        return str(self.proc.before)

    def wait_for_login(self) -> float:
        """Wait for the login prompt; the seconds it took from starting QEMU."""
        self.expect(rf"{HOST} login: ", timeout=BOOT_TIMEOUT)
        return time.monotonic() - self.started

    def login(self) -> None:
        self.proc.sendline(USER)
        self.expect("Password: ")
        self.proc.sendline(PASSWORD)
        self.expect(PROMPT)

    def run(self, command: str, timeout: float = 30) -> str:
        """Run a shell command; its output (everything up to a unique end marker)."""
        self.proc.sendline(f"{command}; echo END-$((6 * 7))")
        # The marker's echo of the typed line reads "END-$((6 * 7))"; only the output is 42.
        out = self.expect(r"END-42\r*\n", timeout=timeout)
        self.expect(PROMPT)
        # The guest's tty and the host pty each turn "\n" into "\r\n": lines end "\r\r\n".
        return out.replace("\r", "")

    def monitor(self, command: str) -> None:
        deadline = time.monotonic() + 10
        while True:
            try:
                sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                sock.connect(str(self.monitor_path))
                break
            except OSError:
                sock.close()
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
        with sock:
            sock.settimeout(10)
            greeting = b""
            while b"(qemu)" not in greeting:
                greeting += sock.recv(4096)
            sock.sendall(command.encode() + b"\n")
            time.sleep(0.2)

    def wait_exit(self, timeout: float) -> int:
        """Wait for QEMU to exit (the guest powered off); its exit status."""
        try:
            self.proc.expect(pexpect.EOF, timeout=timeout)
        except pexpect.TIMEOUT as exc:
            tail = self.log.getvalue()[-3000:]
            raise AssertionError(f"QEMU still running after {timeout} s:\n{tail}") from exc
        self.proc.close()
        return int(self.proc.exitstatus or 0)

    def kill(self) -> None:
        if self.proc.isalive():
            self.proc.terminate(force=True)


@pytest.fixture
def guests() -> Iterator[list[Guest]]:
    started: list[Guest] = []
    yield started
    for guest in started:
        guest.kill()


def boot(
    guests: list[Guest],
    image: Image,
    vm_dir: Path,
    initrd: Path,
    disk: Path | None,
    append: str = "",
) -> Guest:
    guest = Guest(image, vm_dir, initrd, disk, append)
    guests.append(guest)
    return guest


def test_boot_login_data_disk_and_power_button(
    tiny_image: Image, vm_dir: Path, guests: list[Guest], record_property: object
) -> None:
    initrd, disk = make_vm(tiny_image, vm_dir)
    guest = boot(guests, tiny_image, vm_dir, initrd, disk, append="lab.seq=50")
    boot_seconds = guest.wait_for_login()
    print(f"\ntiny image: power-on to '{HOST} login:' took {boot_seconds:.2f} s under TCG")
    record_property("boot_to_login_seconds", round(boot_seconds, 2))  # type: ignore[operator]

    console = guest.log.getvalue()
    # Every number from 1, in order: the console log holds everything from power-on.
    assert [int(n) for n in re.findall(r"SEQ (\d+)", console)] == list(range(1, 51))
    assert console.index("SEQ 50") < console.index("lab: init done") < console.index("login:")
    assert "lab: mounted /dev/vda on /data" in console

    guest.login()
    out = guest.run("hostname; cat /proc/sys/kernel/sysrq; echo hi > /data/x && cat /data/x")
    lines = [line.strip() for line in out.splitlines()]
    assert lines[-3:] == [HOST, "1", "hi"], out
    out = guest.run("id -u; pwd; ls -ld / /etc/shadow; grep -c . /etc/lab/admin 2>&1")
    assert "1000" in out.split()
    assert f"/data/home/{USER}" in out
    assert "drwxr-xr-x" in out, "the root directory is not world-writable"
    assert "No such file" in out, "the config file (user, password hash) is gone"

    pressed = time.monotonic()
    guest.monitor("system_powerdown")
    guest.expect("lab: power button pressed, powering off", timeout=15)
    assert guest.wait_exit(timeout=15) == 0
    print(f"tiny image: power button to QEMU exit took {time.monotonic() - pressed:.2f} s")

    # Power on again: the data disk kept the file and the home directory.
    guest = boot(guests, tiny_image, vm_dir, initrd, disk)
    guest.wait_for_login()
    assert "SEQ" not in guest.log.getvalue()
    guest.login()
    out = guest.run("cat /data/x; stat -c '%u %a' ~")
    assert out.splitlines()[-2:] == ["hi", "1000 750"], out
    guest.monitor("system_powerdown")
    assert guest.wait_exit(timeout=15) == 0


def test_kvm_probe_prints_ok_and_powers_off(
    tiny_image: Image, vm_dir: Path, guests: list[Guest]
) -> None:
    initrd, disk = make_vm(tiny_image, vm_dir, disk="none")
    guest = boot(guests, tiny_image, vm_dir, initrd, disk, append="lab.probe=1")
    guest.expect("LAB-PROBE-OK", timeout=BOOT_TIMEOUT)
    assert guest.wait_exit(timeout=30) == 0
    assert "login:" not in guest.log.getvalue()


def test_blank_disk_and_no_disk_still_reach_a_login(
    tiny_image: Image, vm_dir: Path, guests: list[Guest]
) -> None:
    initrd, disk = make_vm(tiny_image, vm_dir, disk="blank")
    guest = boot(guests, tiny_image, vm_dir, initrd, disk)
    guest.wait_for_login()
    assert "/dev/vda has no usable ext4 file system" in guest.log.getvalue()
    guest.login()
    assert f"/home/{USER}" in guest.run("pwd")
    guest.monitor("system_powerdown")
    assert guest.wait_exit(timeout=15) == 0

    initrd, disk = make_vm(tiny_image, vm_dir, disk="none")
    guest = boot(guests, tiny_image, vm_dir, initrd, disk)
    guest.wait_for_login()
    assert "/dev/vda" not in guest.log.getvalue()
    guest.login()
    assert guest.run("hostname").splitlines()[-1] == HOST
    guest.monitor("system_powerdown")
    assert guest.wait_exit(timeout=15) == 0


def test_getty_respawns_after_logout(tiny_image: Image, vm_dir: Path, guests: list[Guest]) -> None:
    initrd, disk = make_vm(tiny_image, vm_dir)
    guest = boot(guests, tiny_image, vm_dir, initrd, disk)
    guest.wait_for_login()
    guest.proc.sendline(USER)
    guest.expect("Password: ")
    guest.proc.sendline("wrong password")
    guest.expect("Login incorrect")
    guest.expect(rf"{HOST} login: ", timeout=30)
    guest.login()
    guest.proc.sendline("exit")
    guest.expect(rf"{HOST} login: ", timeout=30)
    guest.login()
    guest.monitor("system_powerdown")
    assert guest.wait_exit(timeout=15) == 0
