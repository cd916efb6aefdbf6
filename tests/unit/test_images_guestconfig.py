"""The per-VM config initrd: base initrd + an appended cpio with /etc/lab/{hostname,admin}
(the admin user and the SHA-512 crypt hash of the password, never the password)."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
from pathlib import Path

import pytest

from lab.domain.errors import InvalidInput
from lab.storage.images import write_guest_config_initrd
from lab.storage.images.guestconfig import guest_config_archive
from tests.unit.fakelab import PASSWORD_HASH

GOOD = {"hostname": "t1", "admin_username": "azureuser", "admin_password_hash": PASSWORD_HASH}


def _write(tmp_path: Path, base: bytes = b"BASE" * 10, **overrides: str) -> Path:
    base_path = tmp_path / "base.img"
    base_path.write_bytes(base)
    out = tmp_path / "vm" / "initrd.img"
    write_guest_config_initrd(base_path, out, **{**GOOD, **overrides})
    return out


def test_output_is_base_then_config_archive(tmp_path: Path) -> None:
    out = _write(tmp_path)
    data = out.read_bytes()
    assert data.startswith(b"BASE" * 10)
    assert data[40:] == guest_config_archive(**GOOD)
    assert data[40:46] == b"070701"


def test_output_is_private_whatever_the_umask(tmp_path: Path) -> None:
    old = os.umask(0)
    try:
        out = _write(tmp_path)
    finally:
        os.umask(old)
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    assert [p.name for p in out.parent.iterdir()] == ["initrd.img"], "no temp file left"


def test_unaligned_base_is_zero_padded(tmp_path: Path) -> None:
    out = _write(tmp_path, base=b"12345")
    data = out.read_bytes()
    assert data[:8] == b"12345\0\0\0"
    assert data[8:14] == b"070701"


def test_replaces_an_existing_file(tmp_path: Path) -> None:
    _write(tmp_path)
    out = _write(tmp_path, hostname="t2")
    assert b"t2\n" in out.read_bytes()


@pytest.mark.skipif(shutil.which("cpio") is None, reason="needs the cpio tool")
def test_system_cpio_reads_the_config(tmp_path: Path) -> None:
    archive = guest_config_archive(
        hostname="vm-01", admin_username="_svc-1", admin_password_hash=PASSWORD_HASH
    )
    dest = tmp_path / "x"
    dest.mkdir()
    subprocess.run(
        ["cpio", "-i", "-d", "-m", "--quiet", "--no-absolute-filenames"],
        input=archive,
        cwd=dest,
        check=True,
        capture_output=True,
    )
    assert (dest / "etc/lab/hostname").read_text() == "vm-01\n"
    assert (dest / "etc/lab/admin").read_text() == f"_svc-1\n{PASSWORD_HASH}\n"
    assert stat.S_IMODE((dest / "etc/lab/admin").stat().st_mode) == 0o600
    assert stat.S_IMODE((dest / "etc/lab/hostname").stat().st_mode) == 0o644


@pytest.mark.parametrize(
    "username",
    ["", "Azureuser", "1user", "-user", "user name", "user.name", "a" * 33, "user\n", "üser"],
)
def test_rejects_invalid_user_names(tmp_path: Path, username: str) -> None:
    with pytest.raises(InvalidInput) as err:
        _write(tmp_path, admin_username=username)
    assert err.value.target == "adminUsername"
    assert not (tmp_path / "vm" / "initrd.img").exists()


@pytest.mark.parametrize("username", ["a", "_", "azureuser", "user-1_x", "a" * 32])
def test_accepts_valid_user_names(tmp_path: Path, username: str) -> None:
    assert _write(tmp_path, admin_username=username).exists()


@pytest.mark.parametrize(
    "value",
    ["", "Passw0rd!", "pass\nword", "$1$md5$abc", PASSWORD_HASH + "\nroot:x", "x:" + PASSWORD_HASH],
)
def test_takes_only_a_password_hash_without_echoing_what_it_got(tmp_path: Path, value: str) -> None:
    """Only the hash reaches the guest; a plain-text password given by mistake is refused,
    and not quoted."""
    with pytest.raises(ValueError, match="SHA-512") as err:
        _write(tmp_path, admin_password_hash=value)
    assert not value or value not in str(err.value)
    assert not (tmp_path / "vm").exists() or not any((tmp_path / "vm").iterdir())


@pytest.mark.parametrize("hostname", ["", "-vm", ".vm", "vm one", "vm/1", "a" * 65, "vm\n"])
def test_rejects_invalid_host_names(tmp_path: Path, hostname: str) -> None:
    with pytest.raises(InvalidInput) as err:
        _write(tmp_path, hostname=hostname)
    assert err.value.target == "computerName"


def test_missing_base_leaves_nothing_behind(tmp_path: Path) -> None:
    out = tmp_path / "initrd.img"
    with pytest.raises(FileNotFoundError):
        write_guest_config_initrd(tmp_path / "nope.img", out, **GOOD)
    assert list(tmp_path.iterdir()) == []
