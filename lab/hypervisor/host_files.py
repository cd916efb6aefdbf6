"""A remote host's lab files, moved and read through its libvirt connection only.

The lab's files on a host (image files, each VM's disk overlay and config, the serial logs its
virtlogd writes) live in one directory, the host's data dir, which the lab makes a libvirt
`dir` storage pool. Files travel as volume uploads and are read as volume downloads by byte
offset (`virStorageVolUpload`/`Download`), so the lab needs nothing on a host but libvirtd and
virtlogd, and nothing travels outside the libvirt connection: over `qemu+ssh://` that is the
same ssh, over `qemu+tls://` the same TLS session.

The pool is flat: file names carry what a local data dir says with directories (a domain's
files are `<domain>--<file>`, an image's `image-<content hash>-<file>`).
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any
from xml.sax.saxutils import escape

import libvirt

from lab.domain.errors import HypervisorError, HypervisorUnavailable

log = logging.getLogger(__name__)

#: Upload chunk (a libvirt stream message carries at most 256 KiB).
_CHUNK = 256 * 1024

#: How long a rescan waits for uploads into the pool to end.
_BUSY_WAIT = 600.0

Progress = Callable[[int, int], None]


class HostFiles:
    def __init__(self, connection: Callable[[], Any], host: str, data_dir: str) -> None:
        self._connection = connection
        self.host = host
        self.data_dir = data_dir.rstrip("/")
        self.pool_name = "scl-" + hashlib.sha256(self.data_dir.encode()).hexdigest()[:12]
        self._lock = threading.Lock()
        #: The pool and volume handles of the current connection: a pull of a log is then an
        #: info call and a download, not five lookups besides (they go when the connection
        #: does, or when a call on them fails).
        self._conn: Any = None
        self._pool_handle: Any = None
        self._vols: dict[str, Any] = {}

    def path(self, name: str) -> str:
        """Where `name` is on the host (what the domain XML names)."""
        return f"{self.data_dir}/{name}"

    # -- the pool ---------------------------------------------------------------------------
    def _pool(self) -> Any:
        conn = self._connection()
        with self._lock:
            if conn is not self._conn:
                self._conn, self._pool_handle, self._vols = conn, None, {}
            if self._pool_handle is not None:
                return self._pool_handle
            self._pool_handle = self._open_pool(conn)
            return self._pool_handle

    def forget(self) -> None:
        """Drop the handles (a call on them failed: the pool or a file may be gone)."""
        with self._lock:
            self._pool_handle, self._vols = None, {}

    def _open_pool(self, conn: Any) -> Any:
        try:
            pool = conn.storagePoolLookupByName(self.pool_name)
            if not pool.isActive():
                pool.create()
            return pool
        except libvirt.libvirtError as exc:
            if exc.get_error_code() != libvirt.VIR_ERR_NO_STORAGE_POOL:
                raise self._error("opening the lab's storage pool", exc) from exc
        xml = (f"<pool type='dir'><name>{escape(self.pool_name)}</name>"
               f"<target><path>{escape(self.data_dir)}</path></target></pool>")  # fmt: skip
        try:
            # Transient: it is made again on the next call after libvirtd restarts.
            return conn.storagePoolCreateXML(xml, libvirt.VIR_STORAGE_POOL_CREATE_WITH_BUILD)
        except libvirt.libvirtError as exc:
            raise self._error(f"making the data dir {self.data_dir} a storage pool",
                              exc) from exc  # fmt: skip

    def _volume(self, name: str, *, refresh: bool = True) -> Any | None:
        pool = self._pool()
        cached = self._vols.get(name)
        if cached is not None:
            return cached
        for attempt in (0, 1):
            try:
                vol = pool.storageVolLookupByName(name)
                self._vols[name] = vol
                return vol
            except libvirt.libvirtError as exc:
                if exc.get_error_code() != libvirt.VIR_ERR_NO_STORAGE_VOL:
                    raise self._error(f"looking up {name}", exc) from exc
            if attempt == 0 and refresh:
                # A file someone else made (virtlogd's log) appears once the pool is rescanned.
                self._refresh(pool, "rescanning the data dir")
        return None

    def _refresh(self, pool: Any, what: str) -> None:
        """Rescan the pool. libvirt refuses while any upload into the pool runs ("has
        asynchronous jobs running": another guest's image going to the same host), so wait
        for that, as long as uploads may take."""
        deadline = time.monotonic() + _BUSY_WAIT
        while True:
            try:
                pool.refresh(0)
                return
            except libvirt.libvirtError as exc:
                busy = "asynchronous jobs running" in (exc.get_error_message() or "")
                if not busy or time.monotonic() > deadline:
                    raise self._error(what, exc) from exc
            time.sleep(0.05)

    # -- files ------------------------------------------------------------------------------
    def size(self, name: str) -> int | None:
        """The file's size now, or None if there is no such file."""
        vol = self._volume(name)
        if vol is None:
            return None
        try:
            # The dir backend stats the file on every call: this is its size now. PHYSICAL:
            # the file's own size (capacity would be a qcow2 image's virtual size).
            return int(vol.infoFlags(libvirt.VIR_STORAGE_VOL_GET_PHYSICAL)[2])
        except libvirt.libvirtError as exc:
            self.forget()
            if exc.get_error_code() == libvirt.VIR_ERR_NO_STORAGE_VOL:
                return None
            raise self._error(f"reading the size of {name}", exc) from exc

    def upload(self, local: Path, name: str, *, progress: Progress | None = None,
               if_missing: bool = False) -> str:  # fmt: skip
        """Copy `local` to the host as `name` (replacing it, unless `if_missing` and a file of
        the same size is there: content-named files never change). Returns the host's path."""
        total = local.stat().st_size
        if if_missing and self.size(name) == total:
            return self.path(name)
        pool = self._pool()
        vol = self._volume(name)
        self.forget()  # the name's handle is replaced
        try:
            if vol is not None:
                vol.delete(0)
            vol = pool.createXML(
                f"<volume><name>{escape(name)}</name><capacity>{total}</capacity>"
                "<target><format type='raw'/><permissions><mode>0600</mode></permissions>"
                "</target></volume>", 0)  # fmt: skip
            stream = self._connection().newStream(0)
            vol.upload(stream, 0, total, 0)
            sent = 0
            with local.open("rb") as f:
                while chunk := f.read(_CHUNK):
                    _send(stream, chunk)
                    sent += len(chunk)
                    if progress is not None:
                        progress(sent, total)
            stream.finish()
        except libvirt.libvirtError as exc:
            raise self._error(f"copying {local} to {self.path(name)}", exc) from exc
        return self.path(name)

    def read(self, name: str, offset: int, length: int) -> bytes:
        """Up to `length` bytes of the file from `offset` (fewer at its end)."""
        if length <= 0:
            return b""
        vol = self._volume(name, refresh=False) or self._volume(name)
        if vol is None:
            return b""
        chunks: list[bytes] = []
        try:
            stream = self._connection().newStream(0)
            vol.download(stream, offset, length, 0)
            while True:
                data = stream.recv(_CHUNK)
                if data in (b"", None) or isinstance(data, int):
                    break
                chunks.append(data)
            stream.finish()
        except libvirt.libvirtError as exc:
            self.forget()
            raise self._error(f"reading {self.path(name)} at {offset}", exc) from exc
        return b"".join(chunks)

    def delete(self, name: str) -> None:
        vol = self._volume(name)
        self.forget()
        if vol is None:
            return
        try:
            vol.delete(0)
        except libvirt.libvirtError as exc:
            if exc.get_error_code() != libvirt.VIR_ERR_NO_STORAGE_VOL:
                raise self._error(f"deleting {self.path(name)}", exc) from exc

    def names(self, prefix: str) -> list[str]:
        pool = self._pool()
        self._refresh(pool, "listing the data dir")
        try:
            return sorted(n for n in pool.listVolumes() if n.startswith(prefix))
        except libvirt.libvirtError as exc:
            raise self._error("listing the data dir", exc) from exc

    def _error(self, what: str, exc: libvirt.libvirtError) -> HypervisorError:
        message = f"host '{self.host}': {what} failed: {exc.get_error_message()}"
        if exc.get_error_code() in (libvirt.VIR_ERR_SYSTEM_ERROR, libvirt.VIR_ERR_RPC):
            return HypervisorUnavailable(message)
        return HypervisorError(message)


def _send(stream: Any, data: bytes) -> None:
    view = memoryview(data)
    while view:
        n = stream.send(bytes(view))
        if n < 0:  # -2: would block (a blocking stream does not say that)
            continue
        view = view[n:]
