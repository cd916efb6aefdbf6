"""A remote guest's log copy (`LogMirror`): the host's file read by offset, and the console
stream's bytes appended ahead of it and checked against it."""

from __future__ import annotations

from pathlib import Path
from typing import cast

from lab.hypervisor.host_files import HostFiles
from lab.services.log_mirror import AHEAD_MAX, LogMirror

LOG = "vm--serial.log"


class FakeFiles:
    """A host's data dir, as `HostFiles` shows it."""

    host = "h1"

    def __init__(self) -> None:
        self.files: dict[str, bytearray] = {LOG: bytearray()}
        self.reads = 0

    def size(self, name: str) -> int | None:
        data = self.files.get(name)
        return None if data is None else len(data)

    def read(self, name: str, offset: int, length: int) -> bytes:
        self.reads += 1
        return bytes(self.files.get(name, b"")[offset : offset + length])

    def write(self, data: bytes) -> None:
        """The host's virtlogd writes the guest's bytes."""
        self.files[LOG] += data

    def rotate(self) -> None:
        self.files[f"{LOG}.0"] = self.files[LOG]
        self.files[LOG] = bytearray()


def mirror(tmp_path: Path, files: FakeFiles) -> LogMirror:
    return LogMirror(cast(HostFiles, files), LOG, tmp_path / "blob" / "vm.log")


def copy(m: LogMirror) -> bytes:
    return m.local.read_bytes() if m.local.exists() else b""


def test_stream_bytes_reach_the_copy_at_once_and_the_pull_does_not_double_them(
    tmp_path: Path,
) -> None:
    host = FakeFiles()
    host.write(b"BIOS\r\n")
    m = mirror(tmp_path, host)
    m.align()
    assert copy(m) == b"BIOS\r\n"
    m.offer(b"login: ")  # the stream is ahead of the host's file
    assert copy(m) == b"BIOS\r\nlogin: "
    assert m.pull() == 0  # the host's file has not got it yet: no rotation, nothing new
    host.write(b"login: ")
    assert m.pull() == 0  # the same bytes: checked, not appended again
    assert copy(m) == bytes(host.files[LOG])
    host.write(b"more")  # the stream missed nothing here, it is just later
    m.offer(b"more")
    m.pull()
    assert copy(m) == b"BIOS\r\nlogin: more"


def test_without_an_aligned_stream_only_the_host_file_counts(tmp_path: Path) -> None:
    host = FakeFiles()
    m = mirror(tmp_path, host)
    m.offer(b"not placed")  # the front adopted the guest: where would these go?
    assert copy(m) == b""
    host.write(b"abc")
    m.align()
    m.unalign()  # the stream ended (libvirtd restarted on the host)
    m.offer(b"def")
    assert copy(m) == b"abc"


def test_a_gap_is_left_to_the_pull_and_the_stream_resumes_after_it(tmp_path: Path) -> None:
    host = FakeFiles()
    m = mirror(tmp_path, host)
    m.align()
    m.offer(b"0123")
    # Bytes past the allowed lead are not appended; the stream's count still moves on.
    big = b"x" * (AHEAD_MAX + 1)
    m.offer(big)
    m.offer(b"tail")
    assert copy(m) == b"0123" + big  # "tail" would leave a hole: left to the pull
    host.write(b"0123" + big + b"tail" + b"next")
    m.pull()
    assert copy(m) == b"0123" + big + b"tailnext"
    m.offer(b"next!")  # overlaps what the pull copied: only the new byte
    assert copy(m) == b"0123" + big + b"tailnext!"


def test_stream_bytes_the_host_does_not_have_are_replaced_by_the_hosts(tmp_path: Path) -> None:
    host = FakeFiles()
    m = mirror(tmp_path, host)
    m.align()
    m.offer(b"hello wrong")
    host.write(b"hello world, the host's")
    m.pull()
    assert copy(m) == b"hello world, the host's"
    m.offer(b"more")  # no longer trusted until the next power-on aligns it
    assert copy(m) == b"hello world, the host's"


def test_a_restarted_front_checks_what_the_stream_left_unchecked(tmp_path: Path) -> None:
    host = FakeFiles()
    m = mirror(tmp_path, host)
    m.align()
    m.offer(b"abcXYZ")  # then the front is killed before any pull
    host.write(b"abcdef")
    again = mirror(tmp_path, host)
    again.pull()
    assert copy(again) == b"abcdef"


def test_a_rotation_on_the_host_with_the_stream_ahead(tmp_path: Path) -> None:
    host = FakeFiles()
    m = mirror(tmp_path, host)
    m.align()
    one = b"1" * 10_000  # virtlogd rotates at max_size (2 MiB): long after what a pull lags
    host.write(one)
    m.offer(one)
    m.pull()
    m.offer(b"two ")  # ahead of the host's file
    host.write(b"two ")
    host.rotate()  # virtlogd: the current file becomes .0
    host.write(b"three")
    m.pull()
    assert copy(m) == one + b"two three"
    m.offer(b"three four")
    host.write(b" four")
    m.pull()
    assert copy(m) == one + b"two three four"


def test_aligning_drops_stream_bytes_the_host_never_got(tmp_path: Path) -> None:
    host = FakeFiles()
    m = mirror(tmp_path, host)
    m.align()
    host.write(b"shutdown")
    m.offer(b"shutdown and more")  # the old QEMU's last bytes: virtlogd never wrote them
    m.align()  # the next power-on
    assert copy(m) == b"shutdown"
    m.offer(b", again")
    assert copy(m) == b"shutdown, again"


def test_a_pull_reads_only_past_what_is_checked(tmp_path: Path) -> None:
    host = FakeFiles()
    host.write(b"x" * 1000)
    m = mirror(tmp_path, host)
    m.pull()
    reads = host.reads
    assert m.pull() == 0 and host.reads == reads  # nothing new: no read at all
