"""Per-VM configuration for the ``tiny`` image, as an initramfs overlay.

Every VM boots the same cached kernel and initrd; what differs (host name, admin user) rides
in a small second cpio archive appended to a copy of the base initrd. The Linux kernel unpacks
concatenated initramfs archives one after the other into the same root, so later files
overlay earlier ones (buffer-format.rst: "multiple cpio archives ... may be concatenated").
The guest's ``/init`` reads ``/etc/lab/hostname`` and ``/etc/lab/admin`` (the user name, then
the SHA-512 crypt hash of the password, which it puts into ``/etc/shadow``) and deletes the
latter once the user exists.

The password's plain text is in no file: `hash_password` makes the hash (for this archive and
for the debian image's config disk, `lab.storage.images.configdisk`) when a VM or a scale set
is created. A hash still invites offline guessing, so the per-VM initrd is written with mode
0600 and never world-readable, not even for a moment.
"""

from __future__ import annotations

import io
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Final

from lab.domain.errors import ImageError, InvalidInput
from lab.domain.passwords import is_password_hash
from lab.storage.images.commands import run
from lab.storage.images.cpio import CpioWriter

_USERNAME: Final = re.compile(r"[a-z_][a-z0-9_-]{0,31}")
# What a Linux host name may hold here: the lab's VM names (letters, digits, '.', '_', '-'),
# at most HOST_NAME_MAX (64) bytes, not starting with '-' or '.'.
_HOSTNAME: Final = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]{0,63}")


def hash_password(password: str) -> str:
    """The SHA-512 crypt hash of `password` with a random salt, as /etc/shadow holds it.

    Raises `InvalidInput` (never quoting the password) for one that cannot be hashed: empty,
    or holding a line break or NUL (the API and lab files refuse control characters already).
    """
    if not password:
        raise InvalidInput("The admin password must not be empty.", target="adminPassword")
    # `openssl passwd -stdin` reads one line; a NUL cannot pass at all.
    if any(ch in password for ch in "\n\r\0"):
        raise InvalidInput(
            "The admin password must not contain line breaks or NUL characters.",
            target="adminPassword",
        )
    # stdin, not argv: no other process can read the password in /proc/<pid>/cmdline.
    out = run(["openssl", "passwd", "-6", "-stdin"], input=password.encode() + b"\n").stdout
    hashed = out.decode().strip()
    if not is_password_hash(hashed):
        raise ImageError("`openssl passwd -6` did not print a SHA-512 crypt hash.")
    return hashed


def validate_guest_config(hostname: str, admin_username: str, admin_password_hash: str) -> None:
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
    # The guest copies it into /etc/shadow as it is: a line break or ':' would add fields or
    # lines there; a plain-text password would be taken as a hash no password matches.
    if not is_password_hash(admin_password_hash):
        raise ValueError("admin_password_hash must be one SHA-512 crypt hash ($6$...)")


def guest_config_archive(
    *, hostname: str, admin_username: str, admin_password_hash: str
) -> bytes:
    """The uncompressed newc archive holding /etc/lab/hostname and /etc/lab/admin."""
    validate_guest_config(hostname, admin_username, admin_password_hash)
    buf = io.BytesIO()
    with CpioWriter(buf) as cpio:
        # Directory entries first: the kernel creates no missing parents. Their modes match
        # the base image's, because unpacking a directory entry re-applies its mode.
        cpio.add_dir("etc", 0o755)
        cpio.add_dir("etc/lab", 0o755)
        cpio.add_file("etc/lab/hostname", f"{hostname}\n".encode(), 0o644)
        admin = f"{admin_username}\n{admin_password_hash}\n"
        cpio.add_file("etc/lab/admin", admin.encode(), 0o600)
    return buf.getvalue()


def write_guest_config_initrd(
    base_initrd: Path,
    out: Path,
    *,
    hostname: str,
    admin_username: str,
    admin_password_hash: str,
) -> None:
    """Write `out`: the base initrd followed by this VM's config archive, mode 0600.

    Raises `InvalidInput` for a host name or user name that cannot be used (and `ValueError`
    for a password hash that is not one). The file appears atomically (written beside `out`,
    then renamed).
    """
    archive = guest_config_archive(
        hostname=hostname, admin_username=admin_username, admin_password_hash=admin_password_hash
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    # mkstemp creates the file 0600 whatever the umask, so the hash is never exposed.
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
