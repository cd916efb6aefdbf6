"""The pure-Python newc writer, checked against the real `cpio` tool and the format's layout."""

from __future__ import annotations

import io
import os
import shutil
import stat
import subprocess
import tempfile
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lab.storage.images.cpio import HEADER_SIZE, MAGIC, CpioWriter

needs_cpio = pytest.mark.skipif(shutil.which("cpio") is None, reason="needs the cpio tool")


def _archive(build: Callable[[CpioWriter], object]) -> bytes:
    buf = io.BytesIO()
    with CpioWriter(buf, mtime=1_700_000_000) as w:
        build(w)
    return buf.getvalue()


def _parse(data: bytes) -> list[tuple[int, dict[str, int], str, bytes]]:
    """(offset, header fields, name, file data) of every entry, checking alignment as it goes."""
    names = (
        "ino",
        "mode",
        "uid",
        "gid",
        "nlink",
        "mtime",
        "filesize",
        "devmajor",
        "devminor",
        "rdevmajor",
        "rdevminor",
        "namesize",
        "check",
    )
    entries = []
    pos = 0
    while True:
        assert pos % 4 == 0, f"header at unaligned offset {pos}"
        assert data[pos : pos + 6] == MAGIC
        fields = {n: int(data[pos + 6 + 8 * i : pos + 14 + 8 * i], 16) for i, n in enumerate(names)}
        name_end = pos + HEADER_SIZE + fields["namesize"]
        assert data[name_end - 1] == 0, "name must be NUL-terminated"
        name = data[pos + HEADER_SIZE : name_end - 1].decode()
        data_start = name_end + (-name_end % 4)
        assert data[name_end:data_start] == b"\0" * (data_start - name_end), "name padding"
        body = data[data_start : data_start + fields["filesize"]]
        entries.append((pos, fields, name, body))
        end = data_start + fields["filesize"]
        pos = end + (-end % 4)
        assert data[end:pos] == b"\0" * (pos - end), "data padding"
        if name == "TRAILER!!!":
            break
    assert pos == len(data), "nothing may follow the trailer's padding"
    return entries


def _sample(w: CpioWriter) -> None:
    w.add_dir("etc")
    w.add_dir("etc/lab", 0o700)
    w.add_file("etc/lab/hostname", b"t1\n")
    w.add_file("etc/lab/admin", b"azureuser\nPassw0rd!\n", 0o600)
    w.add_file("etc/empty", b"")
    w.add_file("/bin-script", b"#!/bin/sh\necho hi\n", 0o755)
    w.add_symlink("sh", "/bin/busybox")
    w.add_char_device("console", 5, 1, 0o600)


def test_layout_headers_padding_and_trailer() -> None:
    entries = _parse(_archive(_sample))
    names = [name for _, _, name, _ in entries]
    assert names == [
        "etc",
        "etc/lab",
        "etc/lab/hostname",
        "etc/lab/admin",
        "etc/empty",
        "bin-script",
        "sh",
        "console",
        "TRAILER!!!",
    ]
    by_name = {name: (fields, body) for _, fields, name, body in entries}
    assert stat.S_ISDIR(by_name["etc/lab"][0]["mode"])
    assert stat.S_IMODE(by_name["etc/lab"][0]["mode"]) == 0o700
    assert by_name["etc/lab/admin"][1] == b"azureuser\nPassw0rd!\n"
    assert stat.S_IMODE(by_name["etc/lab/admin"][0]["mode"]) == 0o600
    assert by_name["sh"][1] == b"/bin/busybox"
    assert stat.S_ISLNK(by_name["sh"][0]["mode"])
    console = by_name["console"][0]
    assert stat.S_ISCHR(console["mode"])
    assert (console["rdevmajor"], console["rdevminor"]) == (5, 1)
    assert by_name["etc/lab/hostname"][0]["mtime"] == 1_700_000_000
    inodes = [fields["ino"] for _, fields, name, _ in entries if name != "TRAILER!!!"]
    assert len(set(inodes)) == len(inodes), "distinct inodes, so nothing looks hard-linked"


@pytest.mark.parametrize("size", range(9))
def test_data_padding_for_every_remainder(size: int) -> None:
    content = bytes(range(1, size + 1))
    entries = _parse(_archive(lambda w: w.add_file("f" * (size + 1), content)))
    assert entries[0][3] == content


@needs_cpio
def test_system_cpio_lists_the_archive(tmp_path: Path) -> None:
    archive = tmp_path / "a.cpio"
    archive.write_bytes(_archive(_sample))
    out = subprocess.run(
        ["cpio", "-t", "-v", "--quiet", "-F", str(archive)],
        capture_output=True,
        text=True,
        check=True,
    )
    lines = out.stdout.splitlines()
    assert [line.split()[-1] if "->" not in line else line.split()[-3] for line in lines] == [
        "etc",
        "etc/lab",
        "etc/lab/hostname",
        "etc/lab/admin",
        "etc/empty",
        "bin-script",
        "sh",
        "console",
    ]
    assert lines[3].startswith("-rw-------")
    assert lines[5].startswith("-rwxr-xr-x")
    assert lines[6].startswith("lrwxrwxrwx") and lines[6].endswith("sh -> /bin/busybox")
    assert lines[7].startswith("crw-------")


@needs_cpio
def test_system_cpio_extracts_the_archive(tmp_path: Path) -> None:
    archive = tmp_path / "a.cpio"
    archive.write_bytes(_archive(_sample))
    dest = tmp_path / "x"
    dest.mkdir()
    args = ["cpio", "-i", "-d", "-m", "--quiet", "--no-absolute-filenames", "-F", str(archive)]
    if os.geteuid() != 0:
        # Only root may make device nodes: leave the console out.
        args += ["--nonmatching", "console"]
    subprocess.run(args, cwd=dest, check=True, capture_output=True)
    assert (dest / "etc/lab/hostname").read_bytes() == b"t1\n"
    assert (dest / "etc/lab/admin").read_bytes() == b"azureuser\nPassw0rd!\n"
    assert stat.S_IMODE((dest / "etc/lab/admin").stat().st_mode) == 0o600
    assert stat.S_IMODE((dest / "bin-script").stat().st_mode) == 0o755
    assert (dest / "etc/empty").read_bytes() == b""
    assert os.readlink(dest / "sh") == "/bin/busybox"
    assert (dest / "etc/lab/hostname").stat().st_mtime == 1_700_000_000
    if os.geteuid() == 0:
        st_console = (dest / "console").stat()
        assert stat.S_ISCHR(st_console.st_mode)
        assert (os.major(st_console.st_rdev), os.minor(st_console.st_rdev)) == (5, 1)


_name_part = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789_-.", min_size=1, max_size=12)


@needs_cpio
@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(files=st.dictionaries(_name_part, st.binary(max_size=300), min_size=1, max_size=6))
def test_round_trip_through_system_cpio(tmp_path: Path, files: dict[str, bytes]) -> None:
    files = {n: d for n, d in files.items() if n not in (".", "..")}
    if not files:
        return
    # One fresh directory per example: hypothesis reuses the function-scoped tmp_path.
    work = Path(tempfile.mkdtemp(dir=tmp_path))

    def build(w: CpioWriter) -> None:
        w.add_dir("d")
        for name, content in files.items():
            w.add_file(f"d/{name}", content)

    data = _archive(build)
    assert len(data) % 4 == 0
    proc = subprocess.run(
        ["cpio", "-i", "-d", "--quiet", "--no-absolute-filenames"],
        input=data,
        cwd=work,
        capture_output=True,
        check=True,
    )
    assert proc.returncode == 0
    for name, content in files.items():
        assert (work / "d" / name).read_bytes() == content


@pytest.mark.parametrize("bad", ["", "/", "a/../b", "./a", "a//b", "TRAILER!!!"])
def test_rejects_bad_member_names(bad: str) -> None:
    with pytest.raises(ValueError):
        CpioWriter(io.BytesIO()).add_file(bad, b"")


def test_rejects_duplicates_and_writes_after_close() -> None:
    w = CpioWriter(io.BytesIO())
    w.add_dir("etc")
    with pytest.raises(ValueError, match="duplicate"):
        w.add_dir("/etc/")
    w.close()
    with pytest.raises(ValueError, match="closed"):
        w.add_file("x", b"")


def test_no_trailer_when_the_body_raises() -> None:
    buf = io.BytesIO()
    with pytest.raises(RuntimeError), CpioWriter(buf) as w:
        w.add_file("x", b"1")
        raise RuntimeError
    assert b"TRAILER!!!" not in buf.getvalue()
