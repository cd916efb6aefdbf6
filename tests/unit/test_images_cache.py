"""ImageCache with a fake builder: hashing, reuse, atomic publication, errors, removal."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from lab.domain.errors import ImageError, NotFound
from lab.storage.images import ImageCache, ImageManifest, debpkg
from lab.storage.images import cache as cache_mod
from lab.storage.images.builder import BuildContext, BuildOutput


class FakeBuilder:
    """Writes three small files; counts calls; can be told to fail."""

    version = 1

    def __init__(self) -> None:
        self.resolves = 0
        self.builds = 0
        self.pins = {"pkg-a": "1.0"}
        self.fail_resolve = False
        self.fail_build = False

    def resolve(self, recipe_dir: Path) -> dict[str, str]:
        self.resolves += 1
        if self.fail_resolve:
            raise ImageError("`apt-cache show` failed: no network")
        return dict(self.pins)

    def build(self, ctx: BuildContext) -> BuildOutput:
        self.builds += 1
        ctx.progress("Making files", 0.5)
        (ctx.out_dir / "vmlinuz").write_bytes(b"kernel")
        (ctx.out_dir / "initrd.img").write_bytes(b"initrd")
        (ctx.work_dir / "scratch").write_bytes(b"x" * 100)
        if self.fail_build:
            raise ImageError("`mkfs.ext4 disk.raw` failed with exit status 1:\nno space")
        (ctx.out_dir / "disk.qcow2").write_bytes((ctx.recipe_dir / "init").read_bytes())
        return BuildOutput(
            kernel="vmlinuz",
            initrd="initrd.img",
            disk="disk.qcow2",
            kernel_version="6.1.0-test",
            cmdline="console=ttyS0",
        )


@pytest.fixture(autouse=True)
def _fixed_apt_state(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(debpkg, "apt_state_fingerprint", lambda: "apt-state-1")


@pytest.fixture
def builder() -> FakeBuilder:
    return FakeBuilder()


@pytest.fixture
def recipes(tmp_path: Path) -> Path:
    root = tmp_path / "images"
    (root / "tiny").mkdir(parents=True)
    (root / "tiny" / "init").write_text("#!/bin/sh\necho v1\n")
    (root / "unregistered").mkdir()
    return root


@pytest.fixture
def cache(tmp_path: Path, recipes: Path, builder: FakeBuilder) -> ImageCache:
    return ImageCache(tmp_path / "cache", recipes, builders={"tiny": builder, "debian": builder})


def test_names_are_registered_recipes_with_a_directory(cache: ImageCache) -> None:
    assert cache.names() == ["tiny"]


def test_build_publishes_image_and_manifest(cache: ImageCache, builder: FakeBuilder) -> None:
    steps: list[tuple[str, float]] = []
    manifest = cache.build("tiny", progress=lambda s, f: steps.append((s, f)))
    directory = cache.path(manifest)
    assert directory == cache.cache_dir / f"tiny-{manifest.content_hash[:12]}"
    assert sorted(p.name for p in directory.iterdir()) == [
        "disk.qcow2",
        "initrd.img",
        "manifest.json",
        "vmlinuz",
    ]
    assert (cache.cache_dir / "tiny").resolve() == directory.resolve()
    assert manifest.name == "tiny"
    assert manifest.kernel_version == "6.1.0-test"
    assert manifest.os_type == "Linux"
    assert manifest.packages == (("pkg-a", "1.0"),)
    assert manifest.size_bytes == len(b"kernel") + len(b"initrd") + len("#!/bin/sh\necho v1\n")
    assert manifest.built_at.endswith("+00:00")
    assert ImageManifest.from_json((directory / "manifest.json").read_text()) == manifest
    assert json.loads((directory / "manifest.json").read_text())["packages"] == {"pkg-a": "1.0"}
    assert [f for _, f in steps] == sorted(f for _, f in steps), "fractions only grow"
    assert steps[-1][1] == 1.0
    assert all(0.0 <= f <= 1.0 for _, f in steps)
    assert not list(cache.cache_dir.glob(".build-*")), "scratch space is gone"
    assert cache.list() == [manifest]
    assert cache.get("tiny") == manifest


def test_unchanged_recipe_is_not_rebuilt_and_is_fast(
    cache: ImageCache, builder: FakeBuilder
) -> None:
    first = cache.build("tiny")
    started = time.monotonic()
    again = cache.build("tiny")
    assert time.monotonic() - started < 0.5
    assert again == first
    assert builder.builds == 1
    assert builder.resolves == 1, "package versions come from the resolution cache"


def test_apt_state_change_resolves_again(
    cache: ImageCache, builder: FakeBuilder, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = cache.build("tiny")
    monkeypatch.setattr(debpkg, "apt_state_fingerprint", lambda: "apt-state-2")
    assert cache.build("tiny") == first
    assert builder.resolves == 2
    builder.pins = {"pkg-a": "1.1"}
    monkeypatch.setattr(debpkg, "apt_state_fingerprint", lambda: "apt-state-3")
    newer = cache.build("tiny")
    assert newer.content_hash != first.content_hash
    assert newer.packages == (("pkg-a", "1.1"),)


def test_recipe_change_makes_a_new_build_and_keeps_the_old(
    cache: ImageCache, recipes: Path, builder: FakeBuilder
) -> None:
    first = cache.build("tiny")
    (recipes / "tiny" / "init").write_text("#!/bin/sh\necho v2\n")
    second = cache.build("tiny")
    assert second.content_hash != first.content_hash
    assert cache.get("tiny") == second
    assert cache.path(first).is_dir(), "old builds stay: VM disks may be overlays on them"
    assert builder.builds == 2


def test_executable_bit_is_part_of_the_hash(recipes: Path) -> None:
    before = cache_mod.recipe_hash(recipes / "tiny", 1)
    (recipes / "tiny" / "init").chmod(0o755)
    assert cache_mod.recipe_hash(recipes / "tiny", 1) != before
    assert cache_mod.recipe_hash(recipes / "tiny", 2) != cache_mod.recipe_hash(recipes / "tiny", 1)


def test_force_rebuilds_the_same_hash(cache: ImageCache, builder: FakeBuilder) -> None:
    first = cache.build("tiny")
    again = cache.build("tiny", force=True)
    assert builder.builds == 2
    assert again.content_hash == first.content_hash
    assert cache.path(again).is_dir()
    assert len(list(cache.cache_dir.glob("tiny-*"))) == 1


def test_failed_build_leaves_no_image(cache: ImageCache, builder: FakeBuilder) -> None:
    builder.fail_build = True
    with pytest.raises(ImageError, match=r"mkfs\.ext4(.|\n)*no space"):
        cache.build("tiny")
    assert not list(cache.cache_dir.glob("tiny*"))
    assert not list(cache.cache_dir.glob(".build-*"))
    with pytest.raises(NotFound):
        cache.get("tiny")


def test_leftover_scratch_of_a_killed_build_is_cleaned(cache: ImageCache) -> None:
    leftover = cache.cache_dir / ".build-tiny.abc123" / "image"
    leftover.mkdir(parents=True)
    (leftover / "vmlinuz").write_bytes(b"half")
    cache.build("tiny")
    assert not (cache.cache_dir / ".build-tiny.abc123").exists()


def test_missing_output_file_is_an_error(cache: ImageCache, builder: FakeBuilder) -> None:
    def build(ctx: BuildContext) -> BuildOutput:
        (ctx.out_dir / "vmlinuz").write_bytes(b"k")
        return BuildOutput("vmlinuz", "initrd.img", "disk.qcow2", "6.1", "")

    builder.build = build  # type: ignore[method-assign]
    with pytest.raises(ImageError, match=r"initrd\.img, disk\.qcow2"):
        cache.build("tiny")


def test_offline_resolution_falls_back_to_the_current_build(
    cache: ImageCache, builder: FakeBuilder, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = cache.build("tiny")
    monkeypatch.setattr(debpkg, "apt_state_fingerprint", lambda: "apt-state-2")
    builder.fail_resolve = True
    assert cache.build("tiny") == first
    with pytest.raises(ImageError, match="no network"):
        cache.build("tiny", force=True)


def test_offline_without_any_build_is_an_error(cache: ImageCache, builder: FakeBuilder) -> None:
    builder.fail_resolve = True
    with pytest.raises(ImageError, match="no network"):
        cache.build("tiny")


def test_get_unbuilt_says_what_to_run(cache: ImageCache) -> None:
    with pytest.raises(NotFound) as err:
        cache.get("tiny")
    assert "No image is built yet" in err.value.message
    assert "`lab image build tiny`" in err.value.message


def test_get_unknown_lists_built_images_and_recipes(cache: ImageCache) -> None:
    cache.build("tiny")
    with pytest.raises(NotFound) as err:
        cache.get("ubuntu")
    assert "Built images: tiny." in err.value.message
    assert "recipes: tiny" in err.value.message
    assert "`lab image build NAME`" in err.value.message


@pytest.mark.parametrize("name", ["../tiny", "tiny/..", "", "debs", "Tiny", "unregistered"])
def test_build_refuses_unknown_or_odd_names(cache: ImageCache, name: str) -> None:
    with pytest.raises(NotFound):
        cache.build(name)


def test_remove_deletes_every_build(cache: ImageCache, recipes: Path) -> None:
    first = cache.build("tiny")
    (recipes / "tiny" / "init").write_text("changed\n")
    second = cache.build("tiny")
    cache.remove("tiny")
    assert not cache.path(first).exists()
    assert not cache.path(second).exists()
    assert not (cache.cache_dir / "tiny").is_symlink()
    assert cache.list() == []
    with pytest.raises(NotFound):
        cache.remove("tiny")


def test_remove_unknown_is_not_found(cache: ImageCache) -> None:
    with pytest.raises(NotFound):
        cache.remove("tiny")
    with pytest.raises(NotFound):
        cache.remove("../etc")


def test_corrupt_manifest_counts_as_not_built(cache: ImageCache, builder: FakeBuilder) -> None:
    manifest = cache.build("tiny")
    (cache.path(manifest) / "manifest.json").write_text("{not json")
    assert cache.list() == []
    rebuilt = cache.build("tiny")
    assert rebuilt.content_hash == manifest.content_hash
    assert builder.builds == 2


def test_list_on_a_missing_cache_dir(tmp_path: Path, recipes: Path) -> None:
    assert ImageCache(tmp_path / "nothing", recipes).list() == []


def test_default_registry_has_tiny(tmp_path: Path) -> None:
    repo_images = Path(__file__).resolve().parents[2] / "images"
    assert "tiny" in ImageCache(tmp_path, repo_images).names()


def test_default_registry_has_debian(tmp_path: Path) -> None:
    repo_images = Path(__file__).resolve().parents[2] / "images"
    assert "debian" in ImageCache(tmp_path, repo_images).names()


# --- disk-boot images (debian) -------------------------------------------------------------


@pytest.fixture
def disk_boot(builder: FakeBuilder, recipes: Path) -> FakeBuilder:
    """The fake builder, making a disk-boot image (a disk, no kernel or initrd) as debian."""
    (recipes / "debian").mkdir()
    (recipes / "debian" / "recipe.toml").write_text('suite = "bookworm"\n')

    def build(ctx: BuildContext) -> BuildOutput:
        builder.builds += 1
        (ctx.out_dir / "disk.qcow2").write_bytes(b"disk with GRUB")
        (ctx.out_dir / "packages.txt").write_bytes(b"sudo 1.9\n")
        return BuildOutput("", "", "disk.qcow2", "6.1.0-test", "console=ttyS0", boot="disk")

    builder.build = build  # type: ignore[method-assign]
    return builder


def test_disk_boot_image_is_built_found_again_and_round_trips(
    cache: ImageCache, disk_boot: FakeBuilder
) -> None:
    manifest = cache.build("debian")
    assert (manifest.boot, manifest.kernel, manifest.initrd) == ("disk", "", "")
    assert manifest.files == ("disk.qcow2",)
    assert manifest.size_bytes == len(b"disk with GRUB") + len(b"sudo 1.9\n")
    stored = (cache.path(manifest) / "manifest.json").read_text()
    assert json.loads(stored)["boot"] == "disk"
    assert ImageManifest.from_json(stored) == manifest
    assert cache.build("debian") == manifest
    assert disk_boot.builds == 1, "the second build is a cache hit"
    assert cache.get("debian") == manifest


def test_manifest_without_a_boot_field_is_a_kernel_boot() -> None:
    """Manifests written before disk boot existed keep working unchanged."""
    old = {
        "name": "tiny", "content_hash": "ab" * 32, "kernel": "vmlinuz",
        "initrd": "initrd.img", "disk": "disk.qcow2", "kernel_version": "6.1",
        "cmdline": "console=ttyS0", "packages": {"busybox-static": "1:1.35"},
    }  # fmt: skip
    manifest = ImageManifest.from_json(json.dumps(old))
    assert manifest.boot == "kernel"
    assert manifest.files == ("vmlinuz", "initrd.img", "disk.qcow2")
    again = json.loads(manifest.to_json())
    assert {k: again[k] for k in old} == old, "what an older lab reads is unchanged"


def test_manifest_with_an_unknown_boot_is_unreadable(cache: ImageCache) -> None:
    manifest = cache.build("tiny")
    path = cache.path(manifest) / "manifest.json"
    data = json.loads(path.read_text())
    with pytest.raises(ValueError, match="boot method"):
        ImageManifest.from_json(json.dumps({**data, "boot": "pxe"}))
    path.write_text(json.dumps({**data, "boot": "pxe"}))
    assert cache.list() == [], "an unreadable manifest counts as not built"


def test_disk_boot_build_without_a_disk_is_an_error(
    cache: ImageCache, disk_boot: FakeBuilder
) -> None:
    def build(ctx: BuildContext) -> BuildOutput:
        return BuildOutput("", "", "", "6.1", "", boot="disk")

    disk_boot.build = build  # type: ignore[method-assign]
    with pytest.raises(ImageError, match="named no disk for a disk boot"):
        cache.build("debian")
    assert not list(cache.cache_dir.glob("debian*"))


def test_kernel_boot_build_without_a_kernel_is_an_error(
    cache: ImageCache, builder: FakeBuilder
) -> None:
    def build(ctx: BuildContext) -> BuildOutput:
        (ctx.out_dir / "disk.qcow2").write_bytes(b"d")
        return BuildOutput("", "", "disk.qcow2", "6.1", "")

    builder.build = build  # type: ignore[method-assign]
    with pytest.raises(ImageError, match="named no kernel or initrd for a kernel boot"):
        cache.build("tiny")
