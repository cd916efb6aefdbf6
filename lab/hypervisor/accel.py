"""Decide between KVM and TCG by trying, not by the existence of /dev/kvm.

On some hosts /dev/kvm opens and even runs firmware, but a Linux guest hangs right after the
kernel decompresses. So the probe boots the tiny image's real kernel under KVM with
`lab.probe=1` (its init prints `LAB-PROBE-OK` and powers off) and uses KVM only if that
marker arrives in time. The services cache the verdict (`lab.services.accel`).
"""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path

PROBE_MARKER = b"LAB-PROBE-OK"
PROBE_TIMEOUT_S = 20.0


def probe_kvm(kernel: Path, initrd: Path, *, qemu: str = "qemu-system-x86_64",
              timeout: float = PROBE_TIMEOUT_S) -> tuple[bool, str]:  # fmt: skip
    """Boot `kernel`+`initrd` under KVM for at most `timeout` seconds; return (works, what was
    seen)."""
    if not os.path.exists("/dev/kvm"):
        return False, "/dev/kvm does not exist"
    # `timeout -s KILL` bounds the probe even if this process is killed while it runs: a guest
    # hung under KVM would otherwise spin on a core forever as an orphan. It must be the first
    # limit to expire: killing `timeout` itself would orphan its QEMU (seen: a core at 100%).
    cmd = [
        "timeout", "-s", "KILL", f"{timeout:g}",
        qemu, "-accel", "kvm", "-m", "128", "-display", "none", "-nodefaults", "-no-reboot",
        "-serial", "stdio", "-kernel", str(kernel), "-initrd", str(initrd),
        "-append", "console=ttyS0 lab.probe=1 panic=-1",
    ]  # fmt: skip
    # Its own session, so a backstop can kill `timeout` and QEMU together.
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            start_new_session=True)  # fmt: skip
    try:
        stdout, stderr = proc.communicate(timeout=timeout + 10)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        stdout, stderr = proc.communicate()
    if PROBE_MARKER in stdout:
        return True, "a Linux guest booted under KVM"
    if proc.returncode in (-signal.SIGKILL, 128 + signal.SIGKILL):
        seen = stdout[-200:].decode(errors="replace")
        return False, f"the probe guest did not finish in {timeout:g} s ({seen!r})"
    return False, (stderr or stdout)[-300:].decode(errors="replace").strip()
