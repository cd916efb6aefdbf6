"""A pure-Python writer of "newc" cpio archives, the format the Linux kernel unpacks as initramfs.

Writing the archive ourselves (instead of running ``cpio -o`` over a staged directory) lets the
image builder put device nodes (``/dev/console``) and root-owned files into the initramfs
without being root and without touching the host file system, and makes the output depend only
on what was added: every entry gets the owner, mode and mtime the caller asks for.

Format (see the kernel's Documentation/driver-api/early-userspace/buffer-format.rst): each
entry is a 110-byte ASCII header (magic ``070701`` then 13 eight-digit hex fields), the path
name with a terminating NUL, padding to a multiple of 4 bytes, then the file data, padded to a
multiple of 4 again. The archive ends with an entry named ``TRAILER!!!``.
"""

from __future__ import annotations

import stat
from typing import BinaryIO, Final

MAGIC: Final = b"070701"
TRAILER: Final = "TRAILER!!!"
HEADER_SIZE: Final = 110


def _pad(length: int) -> bytes:
    """Zero bytes that bring `length` up to the next multiple of 4."""
    return b"\0" * (-length % 4)


def _clean_name(path: str) -> str:
    # Archive members are relative ("etc/passwd"): the kernel accepts both forms, but GNU cpio
    # warns about (and strips) a leading "/", and relative names cannot escape the extract dir.
    name = path.strip("/")
    if not name or name == TRAILER:
        raise ValueError(f"invalid cpio member name {path!r}")
    if any(part in ("", ".", "..") for part in name.split("/")):
        raise ValueError(f"cpio member name {path!r} must be a plain relative path")
    if "\0" in name:
        raise ValueError("cpio member names cannot contain NUL")
    return name


class CpioWriter:
    """Streams a newc archive into a binary file object.

    Entries are written as they are added; `close` writes the trailer. Inode numbers are
    allocated in order so no two entries look like hard links of each other.
    """

    def __init__(self, out: BinaryIO, *, mtime: int = 0, uid: int = 0, gid: int = 0) -> None:
        self._out = out
        self._mtime = mtime
        self._uid = uid
        self._gid = gid
        self._next_ino = 1
        self._names: set[str] = set()
        self._closed = False
        self.bytes_written = 0

    def _write(self, data: bytes) -> None:
        self._out.write(data)
        self.bytes_written += len(data)

    def _entry(
        self,
        name: str,
        mode: int,
        data: bytes = b"",
        *,
        nlink: int = 1,
        rdev: tuple[int, int] = (0, 0),
        uid: int | None = None,
        gid: int | None = None,
        ino: int | None = None,
    ) -> None:
        if self._closed:
            raise ValueError("cpio archive already closed")
        encoded = name.encode() + b"\0"
        if ino is None:
            ino = self._next_ino
            self._next_ino += 1
        fields = (
            ino,
            mode,
            self._uid if uid is None else uid,
            self._gid if gid is None else gid,
            nlink,
            self._mtime,
            len(data),
            0,  # devmajor / devminor: the device holding the file; meaningless here
            0,
            rdev[0],
            rdev[1],
            len(encoded),
            0,  # check: only used by the "070702" CRC variant
        )
        header = MAGIC + b"".join(b"%08X" % value for value in fields)
        assert len(header) == HEADER_SIZE
        self._write(header + encoded + _pad(HEADER_SIZE + len(encoded)))
        if data:
            self._write(data + _pad(len(data)))

    def _claim(self, path: str) -> str:
        name = _clean_name(path)
        if name in self._names:
            raise ValueError(f"duplicate cpio member {name!r}")
        self._names.add(name)
        return name

    def add_dir(
        self, path: str, mode: int = 0o755, *, uid: int | None = None, gid: int | None = None
    ) -> None:
        """A directory. Parents must be added before their children (the kernel needs that)."""
        self._entry(self._claim(path), stat.S_IFDIR | (mode & 0o7777), nlink=2, uid=uid, gid=gid)

    def add_file(
        self,
        path: str,
        data: bytes,
        mode: int = 0o644,
        *,
        uid: int | None = None,
        gid: int | None = None,
    ) -> None:
        """A regular file with the given content."""
        self._entry(self._claim(path), stat.S_IFREG | (mode & 0o7777), data, uid=uid, gid=gid)

    def add_symlink(self, path: str, target: str) -> None:
        """A symbolic link; the target is stored as the entry's data, without a NUL."""
        if not target or "\0" in target:
            raise ValueError(f"invalid symlink target {target!r}")
        self._entry(self._claim(path), stat.S_IFLNK | 0o777, target.encode())

    def add_char_device(self, path: str, major: int, minor: int, mode: int = 0o600) -> None:
        """A character device node (e.g. /dev/console, needed before devtmpfs is mounted)."""
        self._entry(self._claim(path), stat.S_IFCHR | (mode & 0o7777), rdev=(major, minor))

    def close(self) -> None:
        """Write the trailer entry. The file object stays open; the caller owns it."""
        if self._closed:
            return
        self._entry(TRAILER, 0, ino=0)
        self._closed = True

    def __enter__(self) -> CpioWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        if exc[0] is None:
            self.close()
