"""Per-VM configuration for the ``tiny`` image, as an initramfs overlay.

Every VM boots the same cached kernel and initrd; what differs (host name, admin user) rides
in a small second cpio archive appended to a copy of the base initrd. The Linux kernel unpacks
concatenated initramfs archives one after the other into the same root, so later files
overlay earlier ones (buffer-format.rst: "multiple cpio archives ... may be concatenated").
The guest's ``/init`` reads ``/etc/lab/hostname`` and ``/etc/lab/admin`` and deletes the latter
once the user exists.

The admin password is stored in plain text in that archive (the guest hashes it with SHA-512
at boot), so the per-VM initrd is written with mode 0600 and never world-readable, not even
for a moment.
"""

from __future__ import annotations

import io
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Final

from lab.domain.errors import InvalidInput
from lab.storage.images.cpio import CpioWriter

_USERNAME: Final = re.compile(r"[a-z_][a-z0-9_-]{0,31}")
# What a Linux host name may hold here: the lab's VM names (letters, digits, '.', '_', '-'),
# at most HOST_NAME_MAX (64) bytes, not starting with '-' or '.'.
_HOSTNAME: Final = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]{0,63}")


def validate_guest_config(hostname: str, admin_username: str, admin_password: str) -> None:
    """Raise `InvalidInput` unless the values can be written into the guest safely."""
    if not _HOSTNAME.fullmatch(hostname):
        raise InvalidInput(
            f"The host name {hostname!r} is invalid: use 1-64 letters, digits, '.', '_' or '-', "
            "not starting with '.' or '-'.",
            target="computerName",
        )
    if not _USERNAME.fullmatch(admin_username):
        raise InvalidInput(
            f"The admin user name {admin_username!r} is invalid: a Linux user name is 1-32 "
            "characters, starting with a lower-case letter or '_', followed by lower-case "
            "letters, digits, '_' or '-'.",
            target="adminUsername",
        )
    if not admin_password:
        raise InvalidInput("The admin password must not be empty.", target="adminPassword")
    # The guest reads the password as line 2 of a file: a line break would cut it short or
    # smuggle in more lines; a NUL cannot pass through the shell at all. (Never echo it.)
    if any(ch in admin_password for ch in "\n\r\0"):
        raise InvalidInput(
            "The admin password must not contain line breaks or NUL characters.",
            target="adminPassword",
        )


def guest_config_archive(*, hostname: str, admin_username: str, admin_password: str) -> bytes:
    """The uncompressed newc archive holding /etc/lab/hostname and /etc/lab/admin."""
    validate_guest_config(hostname, admin_username, admin_password)
    buf = io.BytesIO()
    with CpioWriter(buf) as cpio:
        # Directory entries first: the kernel creates no missing parents. Their modes match
        # the base image's, because unpacking a directory entry re-applies its mode.
        cpio.add_dir("etc", 0o755)
        cpio.add_dir("etc/lab", 0o755)
        cpio.add_file("etc/lab/hostname", f"{hostname}\n".encode(), 0o644)
        cpio.add_file("etc/lab/admin", f"{admin_username}\n{admin_password}\n".encode(), 0o600)
    return buf.getvalue()


def write_guest_config_initrd(
    base_initrd: Path,
    out: Path,
    *,
    hostname: str,
    admin_username: str,
    admin_password: str,
) -> None:
    """Write `out`: the base initrd followed by this VM's config archive, mode 0600.

    Raises `InvalidInput` for a host name, user name or password that cannot be used. The
    file appears atomically (written beside `out`, then renamed).
    """
    archive = guest_config_archive(
        hostname=hostname, admin_username=admin_username, admin_password=admin_password
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    # mkstemp creates the file 0600 whatever the umask, so the password is never exposed.
    fd, tmp_name = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent)
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as f, base_initrd.open("rb") as base:
            shutil.copyfileobj(base, f, 1 << 20)
            # The kernel looks for the next archive only at a 4-byte aligned offset (it skips
            # zero bytes); the tiny builder pads already, this keeps any other base working.
            f.write(b"\0" * (-f.tell() % 4))
            f.write(archive)
            f.flush()
            os.fchmod(f.fileno(), 0o600)
        tmp.replace(out)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
