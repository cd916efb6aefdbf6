"""A serial log as virtlogd keeps it, read as one byte stream with stable offsets.

virtlogd caps each log: when `x.log` reaches `max_size` (2 MiB by default) it renames
`x.log.N-1` → `x.log.N` … `x.log` → `x.log.0`, keeps `max_backups` (3) old files and starts a
new `x.log`. Offsets must not restart at each rotation, or a reader polling by offset would skip
or re-read bytes. So the files are read oldest first as one stream, and each file's global start
is remembered by inode (a rename keeps the inode) in a small index beside the log. Bytes that
virtlogd has deleted are gone: a read before the oldest kept byte starts at that byte, and says so
through `BlobRange.start`.
"""

from __future__ import annotations

import contextlib
import json
import re
from dataclasses import dataclass
from pathlib import Path

from lab.domain.errors import InvalidRange
from lab.storage.blobs import MAX_READ, BlobRange, write_atomic
from lab.storage.state import load_cache

#: virtlogd's rotated files are `.0` (newest) up to `.N`; more than it ever keeps by default.
MAX_BACKUPS = 16
#: virtlogd's configuration (`make setup` writes the lab's settings into it).
VIRTLOGD_CONF = Path("/etc/libvirt/virtlogd.conf")
#: virtlogd's own defaults, which are also the lab's: 2 MiB per file, 3 older files kept.
DEFAULT_MAX_SIZE = 2 * 1024 * 1024
DEFAULT_MAX_BACKUPS = 3


@dataclass(frozen=True)
class LogCap:
    """How much of a VM's serial log virtlogd keeps: the current file up to `max_size`, and
    `max_backups` older ones (0 `max_size`: no cap)."""

    max_size: int = DEFAULT_MAX_SIZE
    max_backups: int = DEFAULT_MAX_BACKUPS

    @property
    def total(self) -> int | None:
        """Bytes on disk per VM at most (None: unbounded)."""
        return self.max_size * (self.max_backups + 1) if self.max_size > 0 else None


def virtlogd_cap(conf: Path = VIRTLOGD_CONF) -> LogCap:
    """The cap virtlogd applies to every log it writes (its settings are global, not per VM)."""
    values = {"max_size": DEFAULT_MAX_SIZE, "max_backups": DEFAULT_MAX_BACKUPS}
    try:
        text = conf.read_text()
    except OSError:
        return LogCap()
    for line in text.splitlines():
        m = re.fullmatch(r"\s*(max_size|max_backups)\s*=\s*(\d+)\s*(#.*)?", line)
        if m:
            values[m.group(1)] = int(m.group(2))
    return LogCap(values["max_size"], values["max_backups"])


@dataclass(frozen=True)
class Segment:
    path: Path
    ino: int
    start: int
    size: int

    @property
    def end(self) -> int:
        return self.start + self.size


class RotatingLog:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.index_path = path.with_name(f".{path.name}.offsets.json")

    def segments(self) -> list[Segment]:
        """The kept files, oldest first, with their global offsets (and the index updated)."""
        files = [self.path.with_name(f"{self.path.name}.{n}") for n in range(MAX_BACKUPS, -1, -1)]
        files.append(self.path)
        stats = []
        for f in files:
            try:
                st = f.stat()
            except FileNotFoundError:
                continue
            stats.append((f, st.st_ino, st.st_size))
        index = self._load_index()
        starts = index.get("starts")
        known: dict[str, int] = starts if isinstance(starts, dict) else {}
        # The kept files are contiguous (each starts where the older one ended), so only the
        # chain's first offset is needed. Every remembered file implies one; a file whose inode
        # was reused after virtlogd deleted an older file implies an older (smaller) one, so the
        # largest is right. With nothing remembered, the chain continues where it last ended.
        implied = []
        prefix = 0
        for _f, ino, size in stats:
            if str(ino) in known:
                implied.append(known[str(ino)] - prefix)
            prefix += size
        last_end = index.get("end", 0)
        pos = max(implied) if implied else (last_end if isinstance(last_end, int) else 0)
        segments: list[Segment] = []
        for f, ino, size in stats:
            segments.append(Segment(f, ino, pos, size))
            pos += size
        self._save_index(segments, index)
        return segments

    def size(self) -> int:
        """The global offset just past the last byte written."""
        segs = self.segments()
        return segs[-1].end if segs else 0

    def tail(self) -> tuple[int, int]:
        """(global end, global start of the current file)."""
        segs = self.segments()
        if not segs or segs[-1].path != self.path:
            end = segs[-1].end if segs else 0
            return end, end
        return segs[-1].end, segs[-1].start

    def read(self, start: int = 0, length: int | None = None) -> BlobRange:
        """Bytes from global offset `start` (negative: from the end), like `BlobStore.read`."""
        segs = self.segments()
        first = segs[0].start if segs else 0
        end = segs[-1].end if segs else 0
        if start < 0:
            start = max(first, end + start)
        if start > end:
            raise InvalidRange(
                f"start offset {start} is past the end of the log ({end} bytes)", target="start"
            )
        start = max(start, first)
        want = min(MAX_READ, end - start if length is None else max(0, min(length, end - start)))
        chunks: list[bytes] = []
        pos = start
        for seg in segs:
            if pos >= start + want:
                break
            if seg.end <= pos:
                continue
            with seg.path.open("rb") as f:
                f.seek(pos - seg.start)
                data = f.read(min(seg.end, start + want) - pos)
            chunks.append(data)
            pos += len(data)
        data = b"".join(chunks)
        return BlobRange(data=data, start=start, next=start + len(data), size=end)

    def _load_index(self) -> dict[str, object]:
        # A damaged index is kept aside with a warning; offsets then continue from the files.
        return load_cache(self.index_path, "the log's offset index") or {}

    def _save_index(self, segments: list[Segment], old: dict[str, object]) -> None:
        if not segments:
            return
        index = {"starts": {str(s.ino): s.start for s in segments}, "end": segments[-1].end}
        # Rewrite only when a file's start changes (a rotation): the end moves on every write,
        # and is only needed as a fallback when every remembered file is gone.
        if old.get("starts") == index["starts"]:
            return
        # A read-only data dir still reads; offsets are recomputed next time.
        with contextlib.suppress(OSError):
            write_atomic(self.index_path, json.dumps(index).encode())
