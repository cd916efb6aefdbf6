"""The image cache: built guest images, keyed by the hash of everything that went into them.

Layout of the cache directory::

    <cache_dir>/
        tiny -> tiny-0123456789ab        the current build of each image (a relative symlink)
        tiny-0123456789ab/               one build: manifest.json, vmlinuz, initrd.img, disk.qcow2
        debian-0123456789ab/             a disk-boot build: manifest.json, disk.qcow2 (GRUB inside)
        debs/                            downloaded .deb files, reused across builds
        resolved.json                    package versions resolved per apt state (see debpkg)
        .lock-tiny                       held while tiny is being built or removed
        .build-tiny.XXXX/                a build in progress (never visible as an image)

The content hash covers the recipe files (``images/<name>/``), the exact Debian package
versions used and the builder's version, so an unchanged image is found again without
building, and any change makes a new directory. A build is made in a temporary directory and
renamed into place, so an interrupted build leaves no half image behind. Old builds are kept
when a new one replaces the pointer: VM disks may be qcow2 overlays on them.
"""

from __future__ import annotations

import builtins
import contextlib
import fcntl
import hashlib
import json
import logging
import os
import re
import shutil
import tempfile
import time
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

from lab.domain.errors import CorruptState, ImageError, NotFound
from lab.storage.images import debpkg
from lab.storage.images.builder import (
    BOOT_METHODS,
    BootMethod,
    BuildContext,
    ImageBuilder,
    ProgressFn,
    no_progress,
)
from lab.storage.images.commands import release_mounts
from lab.storage.images.registry import BUILDERS

log = logging.getLogger(__name__)

MANIFEST_FILE: Final = "manifest.json"
DEBS_DIR: Final = "debs"
RESOLVED_FILE: Final = "resolved.json"
#: Bump when the hashing scheme itself changes.
HASH_SCHEME: Final = 1
_NAME: Final = re.compile(r"[a-z0-9][a-z0-9_-]*")
#: Names of the cache's own entries, which no image may take.
_RESERVED: Final = frozenset({DEBS_DIR})


@dataclass(frozen=True)
class ImageManifest:
    """A built image, as stored in its directory's ``manifest.json``."""

    name: str
    content_hash: str
    #: File names inside the image directory (`ImageCache.path`); `kernel` and `initrd` are
    #: empty for a disk-boot image.
    kernel: str
    initrd: str
    disk: str
    kernel_version: str
    #: The default kernel command line (the lab may append to it).
    cmdline: str
    os_type: str = "Linux"
    size_bytes: int = 0
    build_seconds: float = 0.0
    #: ISO 8601, UTC.
    built_at: str = ""
    #: (package, exact version) of every Debian package the image was made from.
    packages: tuple[tuple[str, str], ...] = ()
    #: Hash of the recipe files and builder version alone (without package versions).
    recipe_hash: str = ""
    #: "kernel" (direct kernel boot with a per-VM initrd) or "disk" (the disk's boot loader,
    #: with a per-VM config disk). Manifests written before this field existed are "kernel".
    boot: BootMethod = "kernel"

    @property
    def files(self) -> tuple[str, ...]:
        """The image's files, by name inside its directory (a disk-boot image has no kernel)."""
        return tuple(f for f in (self.kernel, self.initrd, self.disk) if f)

    def to_json(self) -> str:
        data = asdict(self)
        data["packages"] = dict(self.packages)
        return json.dumps(data, indent=2) + "\n"

    @classmethod
    def from_json(cls, text: str) -> ImageManifest:
        data: dict[str, Any] = json.loads(text)
        if not isinstance(data, dict):
            raise ValueError("manifest is not a JSON object")
        known = set(cls.__dataclass_fields__)
        kwargs = {k: v for k, v in data.items() if k in known}
        kwargs["packages"] = tuple(sorted(dict(data.get("packages") or {}).items()))
        if kwargs.setdefault("boot", "kernel") not in BOOT_METHODS:
            raise ValueError(f"unknown boot method {kwargs['boot']!r}")
        return cls(**kwargs)


def recipe_hash(recipe_dir: Path, builder_version: int) -> str:
    """sha256 over every recipe file (path, executable bit, content) and the builder version."""
    digest = hashlib.sha256(f"scheme {HASH_SCHEME}\nbuilder {builder_version}\n".encode())
    for path in sorted(recipe_dir.rglob("*")):
        rel = path.relative_to(recipe_dir)
        if any(p.startswith(".") or p == "__pycache__" for p in rel.parts):
            continue
        if path.name.endswith("~"):
            continue
        if path.is_symlink():
            digest.update(f"link {rel.as_posix()} {os.readlink(path)}\n".encode())
        elif path.is_file():
            mode = "x" if path.stat().st_mode & 0o111 else "-"
            content = hashlib.sha256(path.read_bytes()).hexdigest()
            digest.update(f"file {rel.as_posix()} {mode} {content}\n".encode())
    return digest.hexdigest()


def content_hash(recipe: str, pins: Mapping[str, str]) -> str:
    """The image's identity: the recipe hash plus the exact external inputs."""
    digest = hashlib.sha256(f"recipe {recipe}\n".encode())
    for name, version in sorted(pins.items()):
        digest.update(f"pin {name} {version}\n".encode())
    return digest.hexdigest()


def fsync_tree(root: Path) -> None:
    """Flush a finished build to disk before it is published by rename."""
    for path in [*root.rglob("*"), root]:
        if path.is_symlink():
            continue
        flags = os.O_RDONLY | (os.O_DIRECTORY if path.is_dir() else 0)
        fd = os.open(path, flags)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


class ImageCache:
    """Built images under `cache_dir`, made from the recipes under `recipes_dir`."""

    def __init__(
        self,
        cache_dir: Path,
        recipes_dir: Path,
        *,
        builders: Mapping[str, ImageBuilder] | None = None,
    ) -> None:
        self.cache_dir = Path(cache_dir)
        self.recipes_dir = Path(recipes_dir)
        self._builders = BUILDERS if builders is None else builders
        self._resolved = debpkg.ResolutionCache(self.cache_dir / RESOLVED_FILE)

    # --- queries ---------------------------------------------------------------------------

    def names(self) -> builtins.list[str]:
        """The recipes that can be built: registered builders with a recipe directory."""
        return sorted(n for n in self._builders if (self.recipes_dir / n).is_dir())

    def list(self) -> builtins.list[ImageManifest]:
        """The current build of every built image, by name."""
        if not self.cache_dir.is_dir():
            return []
        result = []
        for entry in sorted(self.cache_dir.iterdir()):
            if entry.is_symlink() and _NAME.fullmatch(entry.name):
                try:
                    manifest = self._current(entry.name)
                except CorruptState as exc:
                    log.warning("%s", exc.message)  # `get` of that image says so too
                    continue
                if manifest is not None:
                    result.append(manifest)
        return result

    def get(self, name: str) -> ImageManifest:
        """The current build of image `name`; `NotFound` says what exists and what to run."""
        manifest = self._current(name) if _NAME.fullmatch(name) else None
        if manifest is not None:
            return manifest
        built = [m.name for m in self.list()]
        known = self.names()
        message = f"The image '{name}' is not built."
        message += f" Built images: {', '.join(built)}." if built else " No image is built yet."
        if name in known:
            message += f" Build it with `lab image build {name}`."
        else:
            message += (
                f" There is no recipe '{name}' either; recipes: {', '.join(known) or 'none'}"
                f" (build one with `lab image build NAME`)."
            )
        raise NotFound(message, target=name)

    def path(self, manifest: ImageManifest) -> Path:
        """The directory holding the image's files."""
        return self.cache_dir / f"{manifest.name}-{manifest.content_hash[:12]}"

    # --- build and remove ------------------------------------------------------------------

    def build(
        self,
        name: str,
        *,
        progress: ProgressFn | None = None,
        force: bool = False,
    ) -> ImageManifest:
        """Build image `name` unless a build of the same content exists; return its manifest.

        The up-to-date check only hashes the recipe files and reads cached package versions
        (apt is asked again only after apt's own state changed), so it takes milliseconds.
        Raises `NotFound` for an unknown recipe and `ImageError` when a build step fails.
        """
        report = progress or no_progress
        builder = self._builder(name)
        recipe_dir = self.recipes_dir / name
        rhash = recipe_hash(recipe_dir, builder.version)
        try:
            pins = self._resolve(name, builder, recipe_dir, rhash, report)
        except ImageError:
            # Offline or apt broken: an existing build of this very recipe still serves.
            try:
                current = self._current(name)
            except CorruptState:
                current = None
            if current is not None and current.recipe_hash == rhash and not force:
                report(f"Cannot check package versions; using image {name} as built", 1.0)
                return current
            raise
        chash = content_hash(rhash, pins)

        if not force:
            existing = self._lookup(name, chash)
            if existing is not None:
                self._point(name, chash)
                report(f"Image {name} is up to date ({chash[:12]})", 1.0)
                return existing

        self.cache_dir.mkdir(parents=True, exist_ok=True)
        with self._lock(name):
            # Another process may have finished the same build while we waited for the lock.
            existing = None if force else self._lookup(name, chash)
            if existing is None:
                existing = self._build_locked(name, builder, recipe_dir, rhash, pins, chash, report)
            self._point(name, chash)
        report(f"Image {name} ready ({chash[:12]})", 1.0)
        return existing

    def remove(self, name: str) -> None:
        """Delete every build of image `name` and its pointer; `NotFound` if none exists."""
        if not _NAME.fullmatch(name) or not self.cache_dir.is_dir():
            self.get(name)  # raises NotFound with the usual message
        with self._lock(name):
            builds = self._builds(name)
            pointer = self.cache_dir / name
            if not builds and not pointer.is_symlink():
                self.get(name)
            # The pointer goes first: no reader can be sent to a half-deleted directory.
            if pointer.is_symlink():
                pointer.unlink()
            for build_dir in builds:
                trash = Path(tempfile.mkdtemp(prefix=f".rm-{name}.", dir=self.cache_dir))
                build_dir.rename(trash / "image")
                shutil.rmtree(trash, ignore_errors=True)

    # --- internals -------------------------------------------------------------------------

    def _builder(self, name: str) -> ImageBuilder:
        usable = _NAME.fullmatch(name) and name not in _RESERVED
        builder = self._builders.get(name) if usable else None
        if builder is None or not (self.recipes_dir / name).is_dir():
            raise NotFound(
                f"There is no image recipe '{name}'. Recipes: {', '.join(self.names()) or 'none'}.",
                target=name,
            )
        return builder

    def _read_manifest(self, directory: Path, name: str) -> ImageManifest | None:
        """The build's manifest; None when there is none; `CorruptState` when it is damaged
        (an image is never taken for "not built" because its manifest cannot be read)."""
        path = directory / MANIFEST_FILE
        try:
            text = path.read_text()
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exc:
            problem: Exception = exc
        else:
            try:
                return ImageManifest.from_json(text)
            except (ValueError, TypeError) as exc:
                problem = exc
        raise CorruptState(
            f"The image manifest {path} is damaged ({problem}). `lab image build {name} --force` "
            "builds the image again.",
            target=str(path),
        )

    def _current(self, name: str) -> ImageManifest | None:
        pointer = self.cache_dir / name
        if not pointer.is_symlink():
            return None
        manifest = self._read_manifest(pointer, name)
        if manifest is None or manifest.name != name:
            return None
        return manifest

    def _lookup(self, name: str, chash: str) -> ImageManifest | None:
        directory = self.cache_dir / f"{name}-{chash[:12]}"
        try:
            manifest = self._read_manifest(directory, name)
        except CorruptState as exc:
            log.warning("%s Building it again.", exc.message)
            return None
        if manifest is None or manifest.name != name or manifest.content_hash != chash:
            return None
        if not all((directory / f).is_file() for f in manifest.files):
            return None
        return manifest

    def _builds(self, name: str) -> builtins.list[Path]:
        pattern = re.compile(re.escape(name) + r"-[0-9a-f]{12}")
        return [
            d
            for d in sorted(self.cache_dir.iterdir())
            if pattern.fullmatch(d.name) and d.is_dir() and not d.is_symlink()
        ]

    def _point(self, name: str, chash: str) -> None:
        """Make ``<cache>/<name>`` point at the build `chash`, atomically."""
        pointer = self.cache_dir / name
        target = f"{name}-{chash[:12]}"
        if pointer.is_symlink() and os.readlink(pointer) == target:
            return
        tmp = self.cache_dir / f".{name}.link.{os.getpid()}"
        tmp.unlink(missing_ok=True)
        tmp.symlink_to(target)
        tmp.replace(pointer)

    @contextlib.contextmanager
    def _lock(self, name: str) -> Iterator[None]:
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        with open(self.cache_dir / f".lock-{name}", "a") as f:
            fcntl.flock(f, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(f, fcntl.LOCK_UN)

    def _resolve(
        self,
        name: str,
        builder: ImageBuilder,
        recipe_dir: Path,
        rhash: str,
        report: ProgressFn,
    ) -> dict[str, str]:
        key = f"{name}:{rhash}"
        fingerprint = debpkg.apt_state_fingerprint()
        pins = self._resolved.load(key, fingerprint)
        if pins is None:
            report("Resolving Debian package versions", 0.0)
            pins = builder.resolve(recipe_dir)
            # A read-only cache still builds; it just resolves again next time.
            with contextlib.suppress(OSError):
                self._resolved.store(key, fingerprint, pins)
        return pins

    def _build_locked(
        self,
        name: str,
        builder: ImageBuilder,
        recipe_dir: Path,
        rhash: str,
        pins: dict[str, str],
        chash: str,
        report: ProgressFn,
    ) -> ImageManifest:
        # We hold the lock: any build directory of this name is left over from a killed build
        # (whose chroot may still have /proc or /sys mounted: released before deleting).
        for stale in self.cache_dir.glob(f".build-{name}.*"):
            release_mounts(stale)
            shutil.rmtree(stale, ignore_errors=True)
        for stale in self.cache_dir.glob(f".rm-{name}.*"):
            shutil.rmtree(stale, ignore_errors=True)

        started = time.monotonic()
        scratch = Path(tempfile.mkdtemp(prefix=f".build-{name}.", dir=self.cache_dir))
        try:
            out_dir = scratch / "image"
            work_dir = scratch / "work"
            out_dir.mkdir()
            work_dir.mkdir()
            ctx = BuildContext(
                name=name,
                recipe_dir=recipe_dir,
                pins=dict(pins),
                content_hash=chash,
                work_dir=work_dir,
                out_dir=out_dir,
                debs_dir=self.cache_dir / DEBS_DIR,
                progress=report,
            )
            try:
                output = builder.build(ctx)
            except OSError as exc:
                # Disk full, permissions...: say which build failed, as for a failing command.
                raise ImageError(f"Building image {name} failed: {exc}") from exc
            release_mounts(work_dir)
            shutil.rmtree(work_dir, ignore_errors=True)
            report("Writing the manifest", 0.97)
            manifest = ImageManifest(
                name=name,
                content_hash=chash,
                kernel=output.kernel,
                initrd=output.initrd,
                disk=output.disk,
                kernel_version=output.kernel_version,
                cmdline=output.cmdline,
                os_type=output.os_type,
                size_bytes=sum(p.stat().st_size for p in out_dir.iterdir() if p.is_file()),
                build_seconds=round(time.monotonic() - started, 2),
                built_at=datetime.now(UTC).isoformat(timespec="seconds"),
                packages=tuple(sorted(pins.items())),
                recipe_hash=rhash,
                boot=output.boot,
            )
            needed = ("disk",) if output.boot == "disk" else ("kernel", "initrd")
            unnamed = [kind for kind in needed if not getattr(output, kind)]
            if unnamed:
                raise ImageError(
                    f"The {name} builder named no {' or '.join(unnamed)} for a {output.boot} boot."
                )
            missing = [f for f in manifest.files if not (out_dir / f).is_file()]
            if missing:
                raise ImageError(f"The {name} builder did not produce {', '.join(missing)}.")
            (out_dir / MANIFEST_FILE).write_text(manifest.to_json())
            for path in out_dir.iterdir():
                path.chmod(0o644)
            out_dir.chmod(0o755)
            fsync_tree(out_dir)

            final = self.cache_dir / f"{name}-{chash[:12]}"
            if final.exists():
                # force=True over an existing build: the old files go with the scratch dir.
                final.rename(scratch / "old")
            out_dir.rename(final)
            return manifest
        finally:
            release_mounts(scratch)
            shutil.rmtree(scratch, ignore_errors=True)
