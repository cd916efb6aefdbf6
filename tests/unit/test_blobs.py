"""The blob store: reads by offset, name checks before any file-system access, atomic writes."""

from __future__ import annotations

import os
from pathlib import Path
from urllib.parse import unquote

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lab.domain.errors import InvalidInput, NotFound
from lab.storage import blobs as blobs_module
from lab.storage.blobs import BlobStore, write_atomic

ACCOUNT, CONTAINER, BLOB = "diagacct", "bootdiagnostics-vm1-0000", "vm1.0000.serialconsole.log"
DATA = bytes(range(256)) * 5 + b"tail\r\n"


@pytest.fixture
def store(tmp_path: Path) -> BlobStore:
    s = BlobStore(tmp_path / "blobs")
    s.ensure_container(ACCOUNT, CONTAINER)
    (s.root / ACCOUNT / CONTAINER / BLOB).write_bytes(DATA)
    return s


@pytest.mark.parametrize("start", [0, 1, 255, 256, len(DATA) // 2, len(DATA) - 1, len(DATA)])
def test_read_from_offset_returns_exactly_the_rest(store: BlobStore, start: int) -> None:
    r = store.read(ACCOUNT, CONTAINER, BLOB, start)
    assert r.data == DATA[start:]
    assert (r.start, r.next, r.size) == (start, len(DATA), len(DATA))


@pytest.mark.parametrize("start", [-1, -10, -len(DATA), -len(DATA) - 50])
def test_negative_start_counts_from_the_end(store: BlobStore, start: int) -> None:
    r = store.read(ACCOUNT, CONTAINER, BLOB, start)
    assert r.data == DATA[start:]
    assert r.start == max(0, len(DATA) + start)
    assert r.next == len(DATA)


@pytest.mark.parametrize(("start", "length"), [(0, 0), (0, 7), (10, 100), (len(DATA) - 3, 100)])
def test_length_limits_the_read(store: BlobStore, start: int, length: int) -> None:
    r = store.read(ACCOUNT, CONTAINER, BLOB, start, length)
    assert r.data == DATA[start : start + length]
    assert r.next == start + len(r.data)


def test_paging_with_next_reads_every_byte_once(store: BlobStore) -> None:
    out, offset = b"", 0
    while offset < len(DATA):
        r = store.read(ACCOUNT, CONTAINER, BLOB, offset, 100)
        assert r.start == offset
        out += r.data
        offset = r.next
    assert out == DATA


def test_reads_are_capped(store: BlobStore, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(blobs_module, "MAX_READ", 16)
    r = store.read(ACCOUNT, CONTAINER, BLOB, 3)
    assert r.data == DATA[3:19]
    assert r.next == 19


def test_start_past_the_end_is_invalid_range(store: BlobStore) -> None:
    with pytest.raises(InvalidInput) as exc:
        store.read(ACCOUNT, CONTAINER, BLOB, len(DATA) + 1)
    assert exc.value.code == "InvalidRange"
    assert exc.value.status == 400
    assert "past the end" in exc.value.message


def test_missing_blob_is_blob_not_found(store: BlobStore) -> None:
    for call in (
        lambda: store.read(ACCOUNT, CONTAINER, "nope.log"),
        lambda: store.size(ACCOUNT, CONTAINER, "nope.log"),
        lambda: store.read(ACCOUNT, "othercontainer", BLOB),
    ):
        with pytest.raises(NotFound) as exc:
            call()
        assert exc.value.code == "BlobNotFound"
        assert exc.value.status == 404


def test_size(store: BlobStore) -> None:
    assert store.size(ACCOUNT, CONTAINER, BLOB) == len(DATA)


BAD_BLOBS = [
    "",
    ".",
    "..",
    "a/b",
    "../x",
    "/etc/passwd",
    "a\\b",
    "x\x00y",
    unquote("%2e%2e"),
    unquote("%2e%2e%2fetc%2fpasswd"),
    ".hidden",
    ".vm1.log.tmp-1",
    "x" * 1025,
]


class _Tripwire:
    """A root whose every file-system use fails the test."""

    def __truediv__(self, _other: object) -> Path:
        raise AssertionError("the file system was touched before the name was checked")


@pytest.mark.parametrize("blob", BAD_BLOBS)
def test_bad_blob_names_are_refused_before_the_file_system(blob: str) -> None:
    store = BlobStore(_Tripwire())  # type: ignore[arg-type]
    for call in (
        lambda: store.path(ACCOUNT, CONTAINER, blob),
        lambda: store.read(ACCOUNT, CONTAINER, blob),
        lambda: store.size(ACCOUNT, CONTAINER, blob),
        lambda: store.write_atomic(ACCOUNT, CONTAINER, blob, b"x"),
    ):
        with pytest.raises(InvalidInput) as exc:
            call()
        assert exc.value.code == "InvalidResourceName"
        assert exc.value.target == "blob"


@pytest.mark.parametrize(
    "account", ["", "ab", "UPPER", "has-dash", "..", "a/b", "x" * 25, "acct\x00", "%2e%2e"]
)
def test_bad_account_names_are_refused(account: str) -> None:
    store = BlobStore(_Tripwire())  # type: ignore[arg-type]
    with pytest.raises(InvalidInput) as exc:
        store.read(account, CONTAINER, BLOB)
    assert exc.value.target == "account"


@pytest.mark.parametrize(
    "container",
    ["", "ab", "-abc", "abc-", "a--b", "Upper", "..", "a/b", "a.b", "x" * 64, "abc\x00"],
)
def test_bad_container_names_are_refused(container: str) -> None:
    store = BlobStore(_Tripwire())  # type: ignore[arg-type]
    with pytest.raises(InvalidInput) as exc:
        store.read(ACCOUNT, container, BLOB)
    assert exc.value.code == "InvalidResourceName"
    assert exc.value.target == "container"


def test_good_names_map_under_the_root(tmp_path: Path) -> None:
    store = BlobStore(tmp_path)
    for account, container, blob in [
        ("abc", "abc", "a"),
        ("x" * 24, "a-b-c", "vm1.id.screenshot.bmp"),
        ("diag1", "c" * 63, "name with spaces..log"),
    ]:
        path = store.path(account, container, blob)
        assert path == tmp_path / account / container / blob
        assert path.resolve().is_relative_to(tmp_path.resolve())


def test_write_atomic_replaces_content_and_leaves_no_temp_file(store: BlobStore) -> None:
    store.write_atomic(ACCOUNT, CONTAINER, "shot.bmp", b"first version, longer")
    store.write_atomic(ACCOUNT, CONTAINER, "shot.bmp", b"second")
    directory = store.root / ACCOUNT / CONTAINER
    assert (directory / "shot.bmp").read_bytes() == b"second"
    assert sorted(os.listdir(directory)) == sorted([BLOB, "shot.bmp"])
    assert store.read(ACCOUNT, CONTAINER, "shot.bmp").data == b"second"


def test_write_atomic_creates_the_container(tmp_path: Path) -> None:
    store = BlobStore(tmp_path)
    store.write_atomic(ACCOUNT, "newcontainer", "b", b"data")
    assert (tmp_path / ACCOUNT / "newcontainer" / "b").read_bytes() == b"data"


def test_write_atomic_failure_keeps_the_old_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_path / "f"
    write_atomic(target, b"old")

    def broken_replace(src: object, dst: object) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", broken_replace)
    with pytest.raises(OSError, match="disk full"):
        write_atomic(target, b"new")
    assert target.read_bytes() == b"old"
    assert os.listdir(tmp_path) == ["f"]


def test_write_atomic_mode(tmp_path: Path) -> None:
    target = tmp_path / "f"
    old = os.umask(0)
    try:
        write_atomic(target, b"x", mode=0o600)
    finally:
        os.umask(old)
    assert target.stat().st_mode & 0o777 == 0o600


@pytest.fixture(scope="module")
def shared_store(tmp_path_factory: pytest.TempPathFactory) -> BlobStore:
    store = BlobStore(tmp_path_factory.mktemp("blobs"))
    store.write_atomic(ACCOUNT, CONTAINER, BLOB, DATA)
    return store


@settings(max_examples=300, deadline=None)
@given(start=st.integers(-2 * len(DATA), 2 * len(DATA)), length=st.none() | st.integers(-5, 2000))
def test_any_read_is_a_slice_or_invalid_range(
    shared_store: BlobStore, start: int, length: int | None
) -> None:
    if start > len(DATA):
        with pytest.raises(InvalidInput):
            shared_store.read(ACCOUNT, CONTAINER, BLOB, start, length)
        return
    r = shared_store.read(ACCOUNT, CONTAINER, BLOB, start, length)
    begin = max(0, len(DATA) + start) if start < 0 else start
    end = len(DATA) if length is None else min(len(DATA), begin + max(0, length))
    assert (r.start, r.data, r.next, r.size) == (begin, DATA[begin:end], end, len(DATA))
