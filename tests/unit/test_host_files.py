"""HostFiles against a stand-in libvirt pool: what a real libvirtd answers only in a race."""

from __future__ import annotations

from typing import Any

import libvirt
import pytest

from lab.domain.errors import HypervisorError
from lab.hypervisor import host_files
from lab.hypervisor.host_files import HostFiles


class _Error(libvirt.libvirtError):
    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self._code, self._message = code, message

    def get_error_code(self) -> int:
        return self._code

    def get_error_message(self) -> str:
        return self._message


#: What libvirtd says to a rescan while a volume is being made in the pool (another guest's
#: image on its way to the same host).
BUSY = _Error(libvirt.VIR_ERR_INTERNAL_ERROR, "pool 'scl-x' has asynchronous jobs running.")


class _Pool:
    def __init__(self, busy_refreshes: int, refusal: Exception = BUSY) -> None:
        self.busy_refreshes = busy_refreshes
        self.refusal = refusal
        self.refreshes = 0

    def isActive(self) -> bool:
        return True

    def refresh(self, _flags: int) -> None:
        self.refreshes += 1
        if self.refreshes <= self.busy_refreshes:
            raise self.refusal

    def storageVolLookupByName(self, name: str) -> Any:
        raise _Error(libvirt.VIR_ERR_NO_STORAGE_VOL, f"no volume {name}")

    def listVolumes(self) -> list[str]:
        return ["vm1--serial.log", "image-abc-tiny.qcow2"]


class _Conn:
    def __init__(self, pool: _Pool) -> None:
        self.pool = pool

    def storagePoolLookupByName(self, _name: str) -> _Pool:
        return self.pool


def files_on(pool: _Pool) -> HostFiles:
    conn = _Conn(pool)
    return HostFiles(lambda: conn, "h1", "/srv/lab")


def test_a_lookup_waits_while_the_pool_is_busy_with_an_upload() -> None:
    pool = _Pool(busy_refreshes=3)
    assert files_on(pool).size("vm1--serial.log") is None
    assert pool.refreshes == 4


def test_listing_waits_while_the_pool_is_busy() -> None:
    pool = _Pool(busy_refreshes=2)
    assert files_on(pool).names("vm1--") == ["vm1--serial.log"]


def test_a_pool_busy_for_too_long_and_other_refusals_say_which_host(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(host_files, "_BUSY_WAIT", 0.2)
    with pytest.raises(HypervisorError, match=r"host 'h1': rescanning the data dir failed: .*"
                       r"asynchronous jobs running"):  # fmt: skip
        files_on(_Pool(busy_refreshes=10**6)).size("vm1--serial.log")
    other = _Pool(busy_refreshes=1, refusal=_Error(libvirt.VIR_ERR_INTERNAL_ERROR, "disk gone"))
    with pytest.raises(HypervisorError, match="host 'h1': rescanning the data dir failed: disk"):
        files_on(other).size("vm1--serial.log")
    assert other.refreshes == 1  # no waiting for what is not a busy pool
