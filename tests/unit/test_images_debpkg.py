"""Debian package helpers: control-record parsing, meta-package resolution, resolution cache."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from lab.domain.errors import ImageError
from lab.storage.images import debpkg

SHOW = """\
Package: linux-image-cloud-amd64
Source: linux-signed-amd64 (6.1.192+2)
Version: 6.1.192-2
Architecture: amd64
Depends: linux-image-6.1.0-56-cloud-amd64 (= 6.1.192-2)
Description: Linux for x86-64 cloud (meta-package)
 This package depends on the latest Linux kernel
 and modules for use on cloud platforms.

Package: busybox-static
Version: 1:1.35.0-4+deb12u1+b1
Depends: libc6 (>= 2.34) | libc6.1, foo:any
Description: Standalone rescue shell with tons of builtin utilities

"""


def test_parse_records_joins_continuation_lines() -> None:
    records = debpkg._parse_records(SHOW)
    assert [r["Package"] for r in records] == ["linux-image-cloud-amd64", "busybox-static"]
    assert records[0]["Description"].endswith("\nand modules for use on cloud platforms.")
    assert records[1]["Version"] == "1:1.35.0-4+deb12u1+b1"


def test_dependencies_take_exact_versions_and_first_alternatives() -> None:
    kernel, busybox = debpkg._parse_records(SHOW)
    assert debpkg.dependencies(kernel) == [("linux-image-6.1.0-56-cloud-amd64", "6.1.192-2")]
    assert debpkg.dependencies(busybox) == [("libc6", None), ("foo", None)]


def test_resolve_meta_follows_the_pinned_dependency() -> None:
    kernel = debpkg._parse_records(SHOW)[0]
    pkg = debpkg.resolve_meta("linux-image-cloud-amd64", "linux-image-", kernel)
    assert pkg == debpkg.DebPackage("linux-image-6.1.0-56-cloud-amd64", "6.1.192-2")
    assert pkg.spec == "linux-image-6.1.0-56-cloud-amd64=6.1.192-2"


def test_resolve_meta_asks_apt_for_an_unpinned_dependency(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    asked: list[list[str]] = []

    def show(names: list[str]) -> dict[str, dict[str, str]]:
        asked.append(names)
        return {names[0]: {"Package": names[0], "Version": "6.1.99-1"}}

    monkeypatch.setattr(debpkg, "show_candidates", show)
    record = {"Package": "meta", "Version": "1", "Depends": "kmod, linux-image-6.1.0-9-cloud-amd64"}
    pkg = debpkg.resolve_meta("meta", "linux-image-", record)
    assert pkg == debpkg.DebPackage("linux-image-6.1.0-9-cloud-amd64", "6.1.99-1")
    assert asked == [["linux-image-6.1.0-9-cloud-amd64"]]


def test_resolve_meta_without_a_match_is_an_image_error() -> None:
    with pytest.raises(ImageError, match="does not depend on any linux-image-"):
        debpkg.resolve_meta("meta", "linux-image-", {"Package": "meta", "Depends": "kmod"})


def test_resolution_cache_round_trip_and_invalidation(tmp_path: Path) -> None:
    cache = debpkg.ResolutionCache(tmp_path / "sub" / "resolved.json")
    assert cache.load("tiny:abc", "fp1") is None
    cache.store("tiny:abc", "fp1", {"busybox-static": "1:1.35"})
    cache.store("other:def", "fp1", {"x": "1"})
    assert cache.load("tiny:abc", "fp1") == {"busybox-static": "1:1.35"}
    assert cache.load("tiny:abc", "fp2") is None, "apt state changed: resolve again"
    assert cache.load("tiny:zzz", "fp1") is None, "recipe changed: resolve again"
    cache.store("tiny:new", "fp1", {"busybox-static": "1:1.36"})
    assert cache.load("tiny:abc", "fp1") is None, "only the newest recipe of an image is kept"
    assert cache.load("other:def", "fp1") == {"x": "1"}
    (tmp_path / "sub" / "resolved.json").write_text("[garbage")
    assert cache.load("tiny:abc", "fp1") is None


def test_apt_state_fingerprint_follows_file_changes(tmp_path: Path) -> None:
    lists = tmp_path / "lists"
    lists.mkdir()
    (lists / "deb.debian.org_debian_dists_bookworm_main_binary-amd64_Packages").write_text("a")
    (lists / "lock").write_text("")
    status = tmp_path / "status"
    status.write_text("s")
    paths = (lists, status, tmp_path / "missing")
    first = debpkg.apt_state_fingerprint(paths)
    assert debpkg.apt_state_fingerprint(paths) == first
    (lists / "lock").write_text("locked by apt")
    assert debpkg.apt_state_fingerprint(paths) == first, "apt's lock file does not count"
    os.utime(status, ns=(1, 1))
    assert debpkg.apt_state_fingerprint(paths) != first


def test_extract_failure_drops_the_cached_deb(tmp_path: Path) -> None:
    deb = tmp_path / "broken_1.0_amd64.deb"
    deb.write_bytes(b"not a deb")
    with pytest.raises(ImageError, match="dpkg-deb"):
        debpkg.extract(deb, tmp_path / "out")
    assert not deb.exists()
    assert not (tmp_path / "out").exists()
