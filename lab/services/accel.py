"""KVM or TCG, decided once per host: the probe's verdict (`lab.hypervisor.accel.probe_kvm`)
is cached in a small file like the lab's state, written and read the same way.

The file is the host's, not a data dir's (`Settings.host_cache_dir`, beside the Azure CLI's
cached virtualenv): every new data dir (a test's, a bench's, a second lab) would otherwise pay
the probe again, 20 s on a host whose KVM hangs guests. The verdict holds while the host
kernel, the CPU, the QEMU binary and the guest kernel's version are the ones it was made with
(`host_key`). When one of them changes and the last verdict was that the probe guest never
finished, the new probe waits `RECHECK_TIMEOUT_S`: a working KVM boots the probe in about 1 s,
so a long wait only repeats the known hang.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
from pathlib import Path

from lab.hypervisor import accel
from lab.storage.blobs import write_atomic
from lab.storage.state import load_cache

#: The probe's timeout when the host's last verdict was a hang (see the module's doc).
RECHECK_TIMEOUT_S = 5.0
#: A verdict that came from the probe's timeout (`probe_kvm`'s own words).
_HUNG = "did not finish"


def host_key(kernel_version: str, qemu: str = "qemu-system-x86_64") -> str:
    """What the verdict depends on: host kernel, CPU model, QEMU binary, guest kernel."""
    return "|".join((platform.release(), _cpu_model(), _binary_id(qemu), kernel_version))


def choose_accel(setting: str, kernel: Path, initrd: Path, kernel_version: str,
                 cache_file: Path) -> tuple[str, str]:  # fmt: skip
    """Return (domain type, why): "kvm" or "qemu". `setting` is auto|kvm|qemu."""
    if setting in ("kvm", "qemu"):
        return setting, f"forced by LAB_ACCEL={setting}"
    key = host_key(kernel_version)
    cached = load_cache(cache_file, "the KVM probe's verdict") or {}
    if cached.get("key") == key and {"accel", "why"} <= cached.keys():
        return str(cached["accel"]), str(cached["why"]) + " (cached for this host)"
    known_hang = cached.get("accel") == "qemu" and _HUNG in str(cached.get("why", ""))
    timeout = RECHECK_TIMEOUT_S if known_hang else accel.PROBE_TIMEOUT_S
    works, why = accel.probe_kvm(kernel, initrd, timeout=timeout)
    chosen = "kvm" if works else "qemu"
    cache_file.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(cache_file, json.dumps({"key": key, "accel": chosen, "why": why}).encode())
    return chosen, why


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.machine()


def _binary_id(name: str) -> str:
    """The QEMU binary by path, size and modification time: a package upgrade changes it."""
    path = shutil.which(name)
    if path is None:
        return f"{name}: missing"
    st = os.stat(path)
    return f"{path}:{st.st_size}:{int(st.st_mtime)}"
