"""The local blob store: `<root>/<account>/<container>/<blob>`, read by byte offset.

Boot-diagnostics logs are written by virtlogd straight into their blob's file, so the store
never copies console bytes: a read is a file read at an offset. Names are checked before they
touch the file system (`check_blob_name`): `..`, `%2e%2e` in any case or encoding, absolute
paths, separators, backslashes and NUL are refused. Writes are atomic (`write_atomic`).
"""

from __future__ import annotations

import os
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path

from lab.domain.errors import (
    BlobNotFound,
    InvalidInput,
    InvalidRange,
    InvalidResourceName,
)
from lab.domain.names import validate_blob_name

_ACCOUNT = re.compile(r"^[a-z0-9]{3,24}$")
_CONTAINER = re.compile(r"^[a-z0-9](?:[a-z0-9]|-(?=[a-z0-9])){2,62}$")
#: Largest single read; callers page with `start`/`next`.
MAX_READ = 4 * 1024 * 1024


@dataclass(frozen=True)
class BlobRange:
    data: bytes
    start: int
    #: Offset to pass as `start` for the bytes after these.
    next: int
    #: Size of the blob when it was read.
    size: int


def check_blob_name(blob: str) -> None:
    """Azure's blob name rules and traversal spellings (`validate_blob_name`), and what a flat
    directory of files needs besides: no '/' (no virtual directories in a boot-diagnostics
    container) and no leading '.' (the store's own temporary files)."""
    validate_blob_name(blob, target="blob")
    if "/" in blob or blob.startswith("."):
        raise InvalidResourceName(
            f"The blob name {blob!r} is not allowed here: boot-diagnostics containers hold no "
            "'/' (virtual directories) and no names starting with '.'.",
            target="blob",
        )


class BlobStore:
    def __init__(self, root: Path) -> None:
        self.root = root

    def path(self, account: str, container: str, blob: str) -> Path:
        if not _ACCOUNT.fullmatch(account):
            raise InvalidInput(f"invalid storage account name {account!r}", target="account")
        if not _CONTAINER.fullmatch(container):
            raise InvalidResourceName(f"invalid container name {container!r}", target="container")
        check_blob_name(blob)
        return self.root / account / container / blob

    def ensure_container(self, account: str, container: str) -> Path:
        directory = self.path(account, container, "x").parent
        directory.mkdir(parents=True, exist_ok=True)
        return directory

    def size(self, account: str, container: str, blob: str) -> int:
        try:
            return self.path(account, container, blob).stat().st_size
        except FileNotFoundError:
            raise BlobNotFound(
                f"The specified blob does not exist: {account}/{container}/{blob}"
            ) from None

    def read(
        self, account: str, container: str, blob: str, start: int = 0, length: int | None = None
    ) -> BlobRange:
        """Bytes from `start` (negative: that many from the end) up to `length` or the end."""
        path = self.path(account, container, blob)
        try:
            with path.open("rb") as f:
                size = os.fstat(f.fileno()).st_size
                if start < 0:
                    start = max(0, size + start)
                if start > size:
                    raise InvalidRange(
                        f"start offset {start} is past the end of the blob ({size} bytes)",
                        target="start",
                    )
                want = min(MAX_READ, size - start if length is None else max(0, length))
                f.seek(start)
                data = f.read(want)
        except FileNotFoundError:
            raise BlobNotFound(
                f"The specified blob does not exist: {account}/{container}/{blob}"
            ) from None
        return BlobRange(data=data, start=start, next=start + len(data), size=size)

    def write_atomic(self, account: str, container: str, blob: str, data: bytes) -> None:
        path = self.path(account, container, blob)
        path.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(path, data)


def write_atomic(
    path: Path, data: bytes, mode: int = 0o644, *, keep_previous: bool = False
) -> None:
    """Write a temporary file in the same directory, fsync it, rename it over `path`, fsync the
    directory: a reader (or the lab after a crash or power loss) sees the old file or the new
    one, never half of one. With `keep_previous`, the old version stays as `<name>.prev` (a hard
    link: no copy), for recovery by hand."""
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    tmp = Path(tmp_name)
    link = tmp.with_name(f"{tmp.name}.prev")
    try:
        with os.fdopen(fd, "wb") as f:
            os.fchmod(f.fileno(), mode)  # mkstemp made it 0600; the umask does not apply
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        if keep_previous and path.exists():
            os.link(path, link)
            os.replace(link, path.with_name(f"{path.name}.prev"))
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        link.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def fsync_dir(directory: Path) -> None:
    """Make a rename in `directory` durable (the new entry survives a power loss)."""
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
