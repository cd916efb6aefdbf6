"""`lab image build|ls|rm`: guest images, built offline from Debian packages and cached."""

from __future__ import annotations

import json
import signal
import time
from datetime import UTC, datetime
from types import FrameType

import click

from lab.cli import output
from lab.cli.common import handle_errors
from lab.settings import get_settings
from lab.storage.images import ImageCache


def _cache() -> ImageCache:
    s = get_settings()
    return ImageCache(s.image_cache_dir, s.images_dir)


def _exit_on_signal(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(128 + signum)


@click.group()
def image() -> None:
    """Guest images."""


@image.command("build")
@click.argument("name", default="tiny")
@click.option("--force", is_flag=True, help="Rebuild even if a matching build is cached.")
@handle_errors
def build(name: str, force: bool) -> None:
    """Build an image (a no-op when the cached build matches its recipe and packages)."""
    # SIGTERM (timeout(1), a test harness) unwinds like Ctrl+C: the build's commands are
    # stopped and its scratch directory removed, with nothing left mounted in it.
    signal.signal(signal.SIGTERM, _exit_on_signal)
    started, started_at = time.monotonic(), datetime.now(UTC).replace(microsecond=0)
    with output.progress_bar(f"image {name}") as update:
        m = _cache().build(name, progress=update, force=force)
    took = time.monotonic() - started
    if m.built_at and datetime.fromisoformat(m.built_at) >= started_at:
        how = f"built in {m.build_seconds:.1f} s"
    else:
        how = f"cached: built in {m.build_seconds:.1f} s at {m.built_at}, checked in {took:.2f} s"
    output.out.print(
        f"{m.name}: {m.size_bytes / 1e6:.1f} MB, content hash {m.content_hash[:12]}, {how}; "
        f"kernel {m.kernel_version}, {m.boot} boot"
    )


@image.command("ls")
@click.option("--json", "as_json", is_flag=True)
@handle_errors
def ls(as_json: bool) -> None:
    """List built images and the recipes that can be built."""
    cache = _cache()
    built = cache.list()
    if as_json:
        output.print_json([json.loads(m.to_json()) for m in built])
        return
    from rich.table import Table

    table = Table(show_edge=False, pad_edge=False)
    for col in ("NAME", "HASH", "SIZE", "BUILT", "KERNEL", "BOOT"):
        table.add_column(col)
    for m in built:
        table.add_row(m.name, m.content_hash[:12], f"{m.size_bytes / 1e6:.1f} MB", m.built_at,
                      m.kernel_version, m.boot)  # fmt: skip
    output.out.print(table)
    missing = sorted(set(cache.names()) - {m.name for m in built})
    if missing:
        output.out.print(f"not built yet: {', '.join(missing)} (`lab image build NAME`)")


@image.command("rm")
@click.argument("name")
@handle_errors
def rm(name: str) -> None:
    """Remove a built image."""
    _cache().remove(name)
    output.err.print(f"removed image {name}")
