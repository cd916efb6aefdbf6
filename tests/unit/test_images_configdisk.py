"""The per-VM config disk of disk-boot images: an ext4 image labelled LABCFG holding the host
name and the admin user with a SHA-512 crypt hash of the password (never the password)."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import warnings
from pathlib import Path

import pytest

from lab.domain.errors import InvalidInput
from lab.storage.images import hash_password, write_guest_config_disk
from lab.storage.images.configdisk import (
    CONFIG_DISK_BYTES,
    CONFIG_LABEL,
    config_disk_files,
    grub_env_block,
)
from tests.unit.fakelab import PASSWORD_HASH

GOOD = {"hostname": "vm-01", "admin_username": "azureuser", "admin_password_hash": PASSWORD_HASH}
HASH = "$6$saltsalt$" + "x" * 86

needs_openssl = pytest.mark.skipif(shutil.which("openssl") is None, reason="needs openssl")
needs_e2fs = pytest.mark.skipif(
    not all(shutil.which(t) for t in ("openssl", "mkfs.ext4", "debugfs", "dumpe2fs")),
    reason="needs openssl and e2fsprogs",
)


def openssl_hash(password: str, salt: str) -> str:
    return subprocess.run(
        ["openssl", "passwd", "-6", "-salt", salt, "-stdin"],
        input=password + "\n", capture_output=True, text=True, check=True,
    ).stdout.strip()  # fmt: skip


def crypt_hash(password: str, setting: str) -> str | None:
    """The stdlib's crypt(3) (Python < 3.13), an implementation independent of openssl."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        try:
            import crypt
        except ImportError:
            return None
    result: str = crypt.crypt(password, setting)
    return result


def debugfs(image: Path, request: str) -> str:
    return subprocess.run(
        ["debugfs", "-R", request, str(image)], capture_output=True, text=True, check=True
    ).stdout


def test_files_hold_the_host_name_and_the_user_with_the_hash() -> None:
    files = config_disk_files(hostname="vm1", admin_username="azureuser", password_hash=HASH)
    assert files == {
        "hostname": (b"vm1\n", 0o644),
        "admin": (f"azureuser\n{HASH}\n".encode(), 0o600),
        "grubenv": (grub_env_block({"lab_boot_args": ""}), 0o644),
    }


def test_the_grub_environment_block_has_grubs_layout() -> None:
    """What `grub-editenv FILE set` writes and GRUB's `load_env` reads (grub-core/lib/envblk.c):
    the header line, `name=value` lines, '#' to exactly 1024 bytes. The boot test reads it back
    through a real GRUB."""
    block = grub_env_block({"lab_boot_args": "earlyprintk=ttyS0,115200"})
    text = b"# GRUB Environment Block\nlab_boot_args=earlyprintk=ttyS0,115200\n"
    assert block == text + b"#" * (1024 - len(text))
    with pytest.raises(ValueError, match="one plain line"):
        grub_env_block({"x": "a\nb"})


@pytest.mark.parametrize("bad", ["Passw0rd!", "$1$md5$abc", HASH + "\nroot:x", HASH + ":"])
def test_files_take_only_one_sha512_hash(bad: str) -> None:
    with pytest.raises(ValueError, match="SHA-512"):
        config_disk_files(hostname="vm1", admin_username="azureuser", password_hash=bad)


@needs_openssl
@pytest.mark.parametrize("password", ["Passw0rd!", " sp ace\\ $x'\"` ", "ünïcödé-Pässwörd1"])
def test_hash_password_verifies_and_is_salted(password: str) -> None:
    hashed = hash_password(password)
    assert hashed.startswith("$6$") and password not in hashed
    salt = hashed.split("$")[2]
    assert openssl_hash(password, salt) == hashed
    independent = crypt_hash(password, hashed)
    if independent is not None:
        assert independent == hashed
    assert hash_password(password) != hashed, "a new random salt every time"


@pytest.mark.parametrize("password", ["", "two\nlines", "cr\rhere", "nul\0here", "trailing\n"])
def test_hash_password_refuses_what_it_cannot_hash_without_echoing_it(password: str) -> None:
    with pytest.raises(InvalidInput) as err:
        hash_password(password)
    assert err.value.target == "adminPassword"
    if password:
        assert password not in err.value.message


@needs_e2fs
def test_config_disk_is_a_private_ext4_image_labelled_labcfg(tmp_path: Path) -> None:
    out = tmp_path / "vm" / "config.img"
    old = os.umask(0)
    try:
        write_guest_config_disk(out, **GOOD)
    finally:
        os.umask(old)
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    assert out.stat().st_size == CONFIG_DISK_BYTES
    assert [p.name for p in out.parent.iterdir()] == ["config.img"], "no temp file left"
    data = out.read_bytes()
    assert b"Passw0rd!" not in data
    assert data[1024 + 0x38 : 1024 + 0x3A] == b"\x53\xef", "ext4 superblock magic"
    header = subprocess.run(
        ["dumpe2fs", "-h", str(out)], capture_output=True, text=True, check=True
    ).stdout
    assert f"Filesystem volume name:   {CONFIG_LABEL}" in header
    assert "has_journal" not in header

    assert debugfs(out, "cat /hostname") == "vm-01\n"
    user, hashed = debugfs(out, "cat /admin").splitlines()
    assert user == "azureuser"
    assert openssl_hash("Passw0rd!", hashed.split("$")[2]) == hashed
    listing = debugfs(out, "ls -l /")
    modes = {line.split()[-1]: line.split()[1] for line in listing.splitlines() if line.strip()}
    assert modes["admin"] == "100600" and modes["hostname"] == "100644"


@needs_e2fs
def test_rewriting_replaces_the_disk(tmp_path: Path) -> None:
    out = tmp_path / "config.img"
    write_guest_config_disk(out, **GOOD)
    write_guest_config_disk(out, **{**GOOD, "hostname": "vm-02"})
    assert debugfs(out, "cat /hostname") == "vm-02\n"


@pytest.mark.parametrize(
    ("field", "value", "target"),
    [
        ("hostname", "-bad", "computerName"),
        ("admin_username", "Root", "adminUsername"),
    ],
)
def test_invalid_settings_are_refused_and_leave_nothing(
    tmp_path: Path, field: str, value: str, target: str
) -> None:
    out = tmp_path / "vm" / "config.img"
    with pytest.raises(InvalidInput) as err:
        write_guest_config_disk(out, **{**GOOD, field: value})
    assert err.value.target == target
    assert not out.parent.exists() or not any(out.parent.iterdir())


@pytest.mark.parametrize("bad", ["Passw0rd!", "", PASSWORD_HASH + "\n", PASSWORD_HASH + ":"])
def test_the_disk_takes_only_a_hash_and_leaves_nothing(tmp_path: Path, bad: str) -> None:
    out = tmp_path / "vm" / "config.img"
    with pytest.raises(ValueError, match="SHA-512") as err:
        write_guest_config_disk(out, **{**GOOD, "admin_password_hash": bad})
    assert not bad or bad not in str(err.value)
    assert not out.parent.exists() or not any(out.parent.iterdir())
