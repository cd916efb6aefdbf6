"""Boot diagnostics: the serial log read by byte offset, and VGA screenshots as blobs."""

from __future__ import annotations

import asyncio
import io

from PIL import Image

from lab.domain.errors import StateError
from lab.domain.power import PowerState
from lab.domain.vm import VmView
from lab.services.context import LabContext
from lab.storage.blobs import BlobRange
from lab.storage.serial_log import RotatingLog


class BootDiagnosticsService:
    def __init__(self, ctx: LabContext) -> None:
        self.ctx = ctx

    def serial_log(self, view: VmView, start: int = 0, length: int | None = None) -> BlobRange:
        # Read across virtlogd's rotated files with stable offsets; a VM that never booted has
        # an empty log, not a missing one.
        return RotatingLog(self.ctx.serial_log_path(view.identity, view.model)).read(start, length)

    async def screenshot(self, view: VmView) -> Image.Image:
        """Capture the VGA screen, store it as the `.screenshot.bmp` blob, return the image."""
        if view.power_state is not PowerState.RUNNING:
            raise StateError("screenshot", view.power_state.value, ("running",),
                             target=view.identity.name)  # fmt: skip
        raw = await asyncio.to_thread(self.ctx.hypervisor.screenshot, view.identity.domain_name)
        image = Image.open(io.BytesIO(raw))
        image.load()
        bmp = io.BytesIO()
        image.convert("RGB").save(bmp, format="BMP")
        b = self.ctx.boot_blobs(view.identity, view.model)
        self.ctx.blobs.write_atomic(b.account, b.container, b.screenshot, bmp.getvalue())
        return image
