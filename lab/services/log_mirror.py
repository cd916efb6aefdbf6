"""Serial logs of guests on remote hosts, copied to the front by byte offset.

A remote guest's serial log is written by its host's virtlogd, as a local guest's is: nothing is
lost while the front is down or the link is cut. The front keeps a copy at the path a local
guest's log has (the blob store), appending what the host's file holds past the copy's end, read
over the host's libvirt connection (`HostFiles.read`). The copy's size is where the front
stopped, so after a crash of the front or a broken link the copy goes on from there: no gap,
no duplicate. Everything that reads a log (the console broker, boot diagnostics, boot slots)
reads the copy and need not know where the guest runs.

A pull is woken by output on the guest's console stream (drained every 5 ms for 2 s after a
keystroke, `LibvirtConsole.FAST_DRAIN_S`): a keystroke's echo waits for that drain and one read
of the host's file, not for the poll. A slow poll (`POLL_S`) catches up what arrived without
the stream (the front was down, the stream not yet attached).

virtlogd rotates a log at its `max_size` (the current file becomes `.0`). The copy remembers at
which of its offsets the host's current file starts (`.<log>.mirror.json`); a current file
shorter than the copy says the host rotated: the rest of `.0` is copied, then the new file.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import threading
from pathlib import Path

from lab.domain.errors import HypervisorUnavailable, LabError
from lab.hypervisor.host_files import HostFiles
from lab.storage.blobs import write_atomic

log = logging.getLogger(__name__)

#: The slow poll, for output the console stream did not announce.
POLL_S = 0.5
#: Bytes read per call (a libvirt stream message is at most 256 KiB).
READ_BYTES = 1024 * 1024


class LogMirror:
    def __init__(self, files: HostFiles, remote: str, local: Path) -> None:
        self.files = files
        self.remote = remote
        self.local = local
        self._meta = local.with_name(f".{local.name}.mirror.json")
        #: One pull at a time (the loop's and a `pull_now`), or both would append the same bytes.
        self._lock = threading.Lock()

    def _local_size(self) -> int:
        try:
            return self.local.stat().st_size
        except FileNotFoundError:
            return 0

    def _remote_start(self) -> int:
        try:
            return int(json.loads(self._meta.read_text())["remoteStart"])
        except (OSError, ValueError, KeyError, TypeError):
            return 0

    def _set_remote_start(self, offset: int) -> None:
        write_atomic(self._meta, json.dumps({"remoteStart": offset}).encode())

    def start_here(self) -> None:
        """The host's log is new (the VM moved there): its first byte follows the copy's last."""
        self._set_remote_start(self._local_size())

    def pull(self) -> int:
        """Copy what the host's log holds past the copy's end, as far as the host's file
        reached when asked (one size call, then reads: a flood does not keep one pull going);
        returns the bytes copied."""
        with self._lock:
            return self._pull_locked()

    def _pull_locked(self) -> int:
        copied = 0
        for _ in range(2):  # a second look only after a rotation
            have = self._local_size()
            start = self._remote_start()
            size = self.files.size(self.remote)
            if size is None:
                return copied
            if start + size < have:
                # Rotated: the rest of the old file is `.0` now; then the new file from 0.
                rest = self._read_all(f"{self.remote}.0", have - start)
                copied += self._append(rest)
                self._set_remote_start(self._local_size())
                log.info("the serial log %s rotated on host '%s'", self.remote, self.files.host)
                continue
            while have < start + size:
                data = self.files.read(self.remote, have - start,
                                       min(READ_BYTES, start + size - have))  # fmt: skip
                if not data:
                    break
                copied += self._append(data)
                have += len(data)
            break
        return copied

    def _read_all(self, name: str, offset: int) -> bytes:
        chunks = []
        while chunk := self.files.read(name, offset, READ_BYTES):
            chunks.append(chunk)
            offset += len(chunk)
        return b"".join(chunks)

    def _append(self, data: bytes) -> int:
        if not data:
            return 0
        self.local.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.local, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
        finally:
            os.close(fd)
        return len(data)


class LogMirrors:
    """One mirror per guest on a remote host, pulled by one task."""

    def __init__(self) -> None:
        self._mirrors: dict[str, LogMirror] = {}
        self._wake = asyncio.Event()
        #: Domains whose console showed output since the last round ("*": all), pulled next.
        self._woken: set[str] = set()
        self._problems: dict[str, str] = {}

    def track(self, domain: str, mirror: LogMirror) -> None:
        current = self._mirrors.get(domain)
        if current is None or (current.local, current.remote) != (mirror.local, mirror.remote):
            self._mirrors[domain] = mirror
        self.wake()

    def untrack(self, domain: str) -> None:
        self._mirrors.pop(domain, None)

    def tracked(self, domain: str) -> bool:
        return domain in self._mirrors

    def wake(self, domain: str | None = None) -> None:
        """Pull `domain`'s log soon (its console showed output); None: every log."""
        self._woken.add(domain or "*")
        self._wake.set()

    async def pull_now(self, domain: str) -> None:
        """Copy a guest's log up to now (before something reads it)."""
        mirror = self._mirrors.get(domain)
        if mirror is not None:
            await asyncio.to_thread(self._pull, domain, mirror)

    async def run(self) -> None:
        while True:
            try:
                await asyncio.wait_for(self._wake.wait(), POLL_S)
                woken, self._woken = self._woken, set()
            except TimeoutError:
                woken = {"*"}
            self._wake.clear()
            # Side by side: one guest's flood must not hold up another's echo.
            due = [(d, m) for d, m in list(self._mirrors.items()) if "*" in woken or d in woken]
            results = await asyncio.gather(
                *(asyncio.to_thread(self._pull, d, m) for d, m in due), return_exceptions=True
            )
            for (domain, _m), result in zip(due, results, strict=True):
                if isinstance(result, BaseException):  # the copies outlive any one bad pull
                    log.error("copying the serial log of %s failed: %r", domain, result)

    def _pull(self, domain: str, mirror: LogMirror) -> None:
        try:
            mirror.pull()
        except (HypervisorUnavailable, LabError, OSError) as exc:
            message = getattr(exc, "message", None) or str(exc)
            if self._problems.get(domain) != message:
                log.warning("cannot copy the serial log of %s from host '%s' (%s); trying "
                            "again", domain, mirror.files.host, message)  # fmt: skip
            self._problems[domain] = message
        else:
            if self._problems.pop(domain, None) is not None:
                log.info("copying the serial log of %s from host '%s' again", domain,
                         mirror.files.host)  # fmt: skip
