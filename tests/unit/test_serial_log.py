"""`RotatingLog`: offsets stay stable while virtlogd rotates and deletes the log's files."""

from __future__ import annotations

from pathlib import Path

import pytest

from lab.domain.errors import InvalidInput
from lab.storage.serial_log import LogCap, RotatingLog, virtlogd_cap


def rotate(path: Path, backups: int = 3) -> None:
    """What virtlogd does at max_size: shift .N-1 -> .N (dropping the oldest), log -> .0."""
    oldest = path.with_name(f"{path.name}.{backups - 1}")
    oldest.unlink(missing_ok=True)
    for n in range(backups - 2, -1, -1):
        src = path.with_name(f"{path.name}.{n}")
        if src.exists():
            src.rename(path.with_name(f"{path.name}.{n + 1}"))
    path.rename(path.with_name(f"{path.name}.0"))
    path.touch()


def append(path: Path, data: bytes) -> None:
    with path.open("ab") as f:
        f.write(data)


def test_offsets_are_global_across_rotations(tmp_path: Path) -> None:
    path = tmp_path / "vm.serialconsole.log"
    log = RotatingLog(path)
    written = b""
    for i in range(3):
        chunk = bytes([65 + i]) * 100
        append(path, chunk)
        written += chunk
        assert log.size() == len(written)  # an observer sees every file once at least
        rotate(path)
    append(path, b"tail")
    written += b"tail"
    assert log.size() == len(written) == 304
    for start in (0, 1, 99, 100, 150, 299, 300, 304):
        assert log.read(start).data == written[start:]
    r = log.read(50, 120)
    assert (r.start, r.next, r.size, r.data) == (50, 170, 304, written[50:170])
    assert log.read(-4).data == b"tail"


def test_deleted_oldest_bytes_start_the_read_at_the_oldest_kept_byte(tmp_path: Path) -> None:
    path = tmp_path / "x.log"
    log = RotatingLog(path)
    for i in range(5):  # with 3 backups, the first two files get deleted
        append(path, bytes([97 + i]) * 10)
        log.size()
        rotate(path)
    append(path, b"now")
    r = RotatingLog(path).read(0)  # a new instance: the index on disk keeps the offsets
    assert r.start == 20
    assert r.data == b"c" * 10 + b"d" * 10 + b"e" * 10 + b"now"
    assert r.size == 53


def test_read_past_the_end_is_refused_and_a_missing_log_is_empty(tmp_path: Path) -> None:
    path = tmp_path / "y.log"
    empty = RotatingLog(path).read(0)
    assert (empty.data, empty.size) == (b"", 0)
    append(path, b"abc")
    with pytest.raises(InvalidInput) as err:
        RotatingLog(path).read(4)
    assert err.value.code == "InvalidRange"


def test_tail_gives_the_current_files_global_start(tmp_path: Path) -> None:
    path = tmp_path / "z.log"
    log = RotatingLog(path)
    append(path, b"x" * 7)
    assert log.tail() == (7, 0)
    rotate(path)
    append(path, b"yy")
    assert log.tail() == (9, 7)


def test_virtlogd_cap_reads_the_settings_and_falls_back_to_virtlogd_defaults(
    tmp_path: Path,
) -> None:
    conf = tmp_path / "virtlogd.conf"
    assert virtlogd_cap(conf) == LogCap(2 * 1024 * 1024, 3)  # no file: virtlogd's defaults
    conf.write_text("#max_size = 1\n# max_backups = 9\nlog_level = 3\n")
    assert virtlogd_cap(conf) == LogCap(2 * 1024 * 1024, 3)  # comments are not settings
    assert LogCap().total == 8 * 1024 * 1024
    conf.write_text("max_size = 1048576\n  max_backups=5  # lab\n")
    cap = virtlogd_cap(conf)
    assert cap == LogCap(1048576, 5) and cap.total == 6 * 1048576
    conf.write_text("max_size = 0\n")
    assert virtlogd_cap(conf).total is None  # rollover disabled: no cap
