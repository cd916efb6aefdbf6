"""Per-VM configuration for disk-boot images (``debian``), as a small read-only disk.

A disk-boot image starts from its own GRUB and kernel, so the tiny image's trick (a config
archive appended to the initrd) is not available. Instead the lab gives each VM a second virtio
disk, in the spirit of cloud-init's NoCloud data source but the lab's own: an ext4 file system
labelled ``LABCFG`` (made with ``mkfs.ext4 -d``, no mounts) holding

``hostname``
    the VM's host name;
``admin``
    the admin user's name, then the SHA-512 crypt hash (``$6$...``) of the admin password.
``grubenv``
    a GRUB environment block with ``lab_boot_args``, the kernel arguments of the VM's
    `bootMessages` (`lab.domain.boot_messages`): the image's ``/etc/grub.d/01_lab`` loads it
    and its default entries end with ``$lab_boot_args``.

The password arrives hashed (`lab.storage.images.guestconfig.hash_password`, when the VM or
its scale set is created), so its plain text never lands on any disk. Inside the guest,
``lab-guest-config.service`` mounts the disk by label, sets the host name, creates the admin
user and gives it and root that password (``images/debian/rootfs/usr/local/sbin/
lab-guest-config``).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Final

from lab.domain.passwords import is_password_hash
from lab.storage.images.commands import run
from lab.storage.images.guestconfig import validate_guest_config

CONFIG_LABEL: Final = "LABCFG"
#: The file in a VM's directory.
CONFIG_DISK_FILE: Final = "config.img"
#: Big enough for the two files and ext4's own metadata, small enough to write in milliseconds.
CONFIG_DISK_BYTES: Final = 1024 * 1024


#: GRUB's environment block: this header, `name=value` lines, '#' up to 1024 bytes
#: (grub-core/lib/envblk.c).
_ENVBLK_HEADER: Final = b"# GRUB Environment Block\n"
_ENVBLK_BYTES: Final = 1024


def grub_env_block(values: dict[str, str]) -> bytes:
    """A GRUB environment block holding `values` (plain values: no newline or backslash)."""
    body = b"".join(f"{k}={v}\n".encode() for k, v in values.items())
    if any(c in v for v in values.values() for c in "\n\\"):
        raise ValueError("GRUB environment values here are one plain line")
    block = _ENVBLK_HEADER + body
    if len(block) > _ENVBLK_BYTES:
        raise ValueError("the GRUB environment block holds at most 1024 bytes")
    return block.ljust(_ENVBLK_BYTES, b"#")


def config_disk_files(
    *, hostname: str, admin_username: str, password_hash: str, boot_args: str = ""
) -> dict[str, tuple[bytes, int]]:
    """File name -> (content, mode) of the config disk's files."""
    if not is_password_hash(password_hash):
        raise ValueError("password_hash must be one SHA-512 crypt hash ($6$...)")
    return {
        "hostname": (f"{hostname}\n".encode(), 0o644),
        "admin": (f"{admin_username}\n{password_hash}\n".encode(), 0o600),
        "grubenv": (grub_env_block({"lab_boot_args": boot_args}), 0o644),
    }


def write_guest_config_disk(
    out: Path, *, hostname: str, admin_username: str, admin_password_hash: str,
    boot_args: str = "",
) -> None:  # fmt: skip
    """Write `out`: a raw ext4 image labelled ``LABCFG`` with the VM's config, mode 0600.

    Raises `InvalidInput` for a host name or user name that cannot be used (and `ValueError`
    for a password hash that is not one). The file appears atomically (made beside `out`, then
    renamed), so a VM never sees half of one.
    """
    validate_guest_config(hostname, admin_username, admin_password_hash)
    files = config_disk_files(
        hostname=hostname, admin_username=admin_username, password_hash=admin_password_hash,
        boot_args=boot_args,
    )  # fmt: skip
    out.parent.mkdir(parents=True, exist_ok=True)
    # mkdtemp and mkstemp create 0700 and 0600 whatever the umask.
    source = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    fd, tmp_name = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent)
    tmp = Path(tmp_name)
    try:
        for name, (content, mode) in files.items():
            path = source / name
            path.write_bytes(content)
            path.chmod(mode)
        os.ftruncate(fd, CONFIG_DISK_BYTES)
        os.close(fd)
        fd = -1
        run(
            # No journal: the guest only ever mounts it read-only.
            ["mkfs.ext4", "-q", "-F", "-L", CONFIG_LABEL, "-O", "^has_journal", "-m", "0",
             "-E", "root_owner=0:0", "-d", source, tmp],
        )  # fmt: skip
        tmp.chmod(0o600)
        tmp.replace(out)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    finally:
        if fd >= 0:
            os.close(fd)
        shutil.rmtree(source, ignore_errors=True)
