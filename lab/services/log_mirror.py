"""Serial logs of guests on remote hosts, copied to the front by byte offset.

A remote guest's serial log is written by its host's virtlogd, as a local guest's is: nothing is
lost while the front is down or the link is cut. The front keeps a copy at the path a local
guest's log has (the blob store), appending what the host's file holds past the copy's end, read
over the host's libvirt connection (`HostFiles.read`). The copy's size is where the front
stopped, so after a crash of the front or a broken link the copy goes on from there (its last
`AHEAD_MAX` bytes checked again against the host's): no gap, no duplicate. Everything that
reads a log (the console broker, boot diagnostics, boot slots) reads the copy and need not know
where the guest runs.

The console stream carries the same bytes as the host's file, sooner: once the front knows
where the stream's bytes go (`align`: at power-on, the guest paused, the copy complete, the
stream open), each of them is appended to the copy as it arrives (`offer`, on the stream's drain
thread; drained every millisecond for 2 s after a keystroke, `LibvirtConsole.FAST_DRAIN_S`), so
a keystroke's echo reaches viewers without waiting for a read of the host's file. The copy may
run ahead of the host's file by at most `AHEAD_MAX`; every pull compares what the stream put
there with the host's bytes (`_reconcile`). Were they ever to differ, the copy takes the host's
from there and the stream stops feeding it until the next power-on. A stream that ends or is
opened again (libvirtd restarted on the host, the front restarted) no longer feeds the copy:
then an echo waits for a pull. Pulls are woken by output on the stream; a slow poll (`POLL_S`)
catches up what arrived without the stream.

virtlogd rotates a log at its `max_size` (the current file becomes `.0`). The copy remembers at
which of its offsets the host's current file starts (`.<log>.mirror.json`); a current file
shorter than what the copy has checked says the host rotated: the rest of `.0` is copied, then
the new file.
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
#: How far the copy may run ahead of what it is known to hold (bytes from the console stream,
#: not yet compared with the host's file).
AHEAD_MAX = 256 * 1024


class LogMirror:
    def __init__(self, files: HostFiles, remote: str, local: Path) -> None:
        self.files = files
        self.remote = remote
        self.local = local
        self._meta = local.with_name(f".{local.name}.mirror.json")
        #: One pull at a time (the loop's and a `pull_now`), or both would append the same bytes.
        self._lock = threading.Lock()
        #: The copy's file: a pull's reconciling and the stream's appends (held for file work
        #: only, never across a call to the host).
        self._file_lock = threading.Lock()
        #: Up to where the copy is known to hold the host's bytes. Past it, bytes from the
        #: console stream (at most `AHEAD_MAX`), which the next pull compares with the host's.
        #: After a restart of the front the last `AHEAD_MAX` bytes are compared again.
        size = self._local_size()
        self._verified = max(min(self._remote_start(), size), size - AHEAD_MAX)
        #: The copy's offset of the current console stream's first byte, once known (`align`),
        #: and the stream's bytes since.
        self._stream_at: int | None = None
        self._stream_bytes = 0

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
        with self._lock, self._file_lock:
            self._verified = self._local_size()
            self._set_remote_start(self._verified)

    # -- the console stream's bytes, ahead of the host's file --------------------------------
    def align(self) -> None:
        """The guest is paused with its console stream open: copy the host's file to its end;
        the stream's next byte is the copy's next byte."""
        with self._lock:
            self._pull_locked()
            with self._file_lock:
                if self._local_size() > self._verified:
                    # Stream bytes of an earlier run that the host's file never got.
                    os.truncate(self.local, self._verified)
                self._stream_at, self._stream_bytes = self._verified, 0

    def unalign(self) -> None:
        """The console stream ended or a new one opened: its bytes no longer say where they go."""
        with self._file_lock:
            self._stream_at = None

    def offer(self, data: bytes) -> None:
        """Bytes from the guest's console stream (on its drain thread): the host's virtlogd
        writes the same bytes to its file; appended to the copy now, so viewers (who follow the
        copy) see a keystroke's echo without waiting for a read of the host's file. Only bytes
        that continue the copy are appended; the next pull checks them."""
        with self._file_lock:
            if self._stream_at is None:
                return
            at = self._stream_at + self._stream_bytes
            self._stream_bytes += len(data)
            have = self._local_size()
            if at > have or at + len(data) <= have or have - self._verified > AHEAD_MAX:
                return  # a gap the pull fills, bytes the pull copied first, or too far ahead
            self._append(data[have - at :])

    # -- pulls --------------------------------------------------------------------------------
    def pull(self) -> int:
        """Copy what the host's log holds past what the copy is known to hold, as far as the
        host's file reached when asked (one size call, then reads: a flood does not keep one
        pull going); returns the bytes that were new to the copy."""
        with self._lock:
            return self._pull_locked()

    def _pull_locked(self) -> int:
        copied = 0
        for _ in range(2):  # a second look only after a rotation
            start = self._remote_start()
            size = self.files.size(self.remote)
            if size is None:
                return copied
            if start + size < self._verified:
                # Rotated: the rest of the old file is `.0` now; then the new file from 0.
                rest = self._read_all(f"{self.remote}.0", self._verified - start)
                copied += self._reconcile(self._verified, rest)
                self._set_remote_start(self._verified)
                log.info("the serial log %s rotated on host '%s'", self.remote, self.files.host)
                continue
            at = self._verified
            while at < start + size:
                data = self.files.read(self.remote, at - start,
                                       min(READ_BYTES, start + size - at))  # fmt: skip
                if not data:
                    break
                copied += self._reconcile(at, data)
                at += len(data)
            break
        return copied

    def _reconcile(self, at: int, data: bytes) -> int:
        """The host's `data` at copy offset `at` (the verified end): what the stream put there
        must be the same; the rest is appended. Returns the bytes new to the copy."""
        with self._file_lock:
            have = self._local_size()
            ahead = max(0, min(have, at + len(data)) - at)
            if ahead:
                mine = self._read_local(at, ahead)
                if mine != data[:ahead]:
                    same = next((i for i, (a, b) in enumerate(zip(mine, data, strict=False))
                                 if a != b), len(mine))  # fmt: skip
                    log.warning("the console stream of %s gave bytes its host's log does not "
                                "have at %d; the copy takes the host's from there", self.remote,
                                at + same)  # fmt: skip
                    os.truncate(self.local, at + same)
                    self._stream_at = None
                    ahead = same
            self._append(data[ahead:])
            self._verified = at + len(data)
            return len(data) - ahead

    def _read_local(self, at: int, length: int) -> bytes:
        with self.local.open("rb") as f:
            f.seek(at)
            return f.read(length)

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

    async def align(self, domain: str) -> None:
        """The guest is paused, its console stream just opened: from now on the stream's bytes
        go to the copy at once (`LogMirror.offer`). If the host cannot be read now, they wait
        for the pulls, as before."""
        mirror = self._mirrors.get(domain)
        if mirror is None:
            return
        try:
            await asyncio.to_thread(mirror.align)
        except (HypervisorUnavailable, LabError, OSError) as exc:
            log.warning("the console stream of %s does not feed its log copy: %s", domain, exc)

    def tap(self, domain: str) -> StreamTap:
        """What the console broker of a remote guest tells about its stream."""
        return StreamTap(self, domain)

    def mirror(self, domain: str) -> LogMirror | None:
        return self._mirrors.get(domain)

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


class StreamTap:
    """A remote guest's console stream, as its broker sees it, told to that guest's log copy."""

    def __init__(self, mirrors: LogMirrors, domain: str) -> None:
        self._mirrors = mirrors
        self._domain = domain

    def data(self, data: bytes) -> None:
        """Bytes from the stream (on its drain thread)."""
        mirror = self._mirrors.mirror(self._domain)
        if mirror is not None:
            mirror.offer(data)

    def output(self) -> None:
        """The stream showed output (on the event loop): check the copy against the host's."""
        self._mirrors.wake(self._domain)

    def reset(self) -> None:
        """The stream ended, or another opened."""
        mirror = self._mirrors.mirror(self._domain)
        if mirror is not None:
            mirror.unalign()
