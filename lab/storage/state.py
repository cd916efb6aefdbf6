"""Small JSON documents of lab state that libvirt does not hold (storage accounts, the
subscription's serial-console switch, serial ports), written atomically so a crash leaves the
old document or the new one, never half of one."""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

from lab.domain.errors import LabError
from lab.storage.blobs import write_atomic


class StateFile:
    """One JSON object on disk, read once and rewritten whole on every change."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._data: dict[str, Any] | None = None

    def read(self) -> dict[str, Any]:
        with self._lock:
            copy: dict[str, Any] = json.loads(json.dumps(self._load()))  # callers may mutate it
            return copy

    def update(self, key: str, value: Any) -> None:
        """Set (or, with None, remove) one top-level key and persist."""
        with self._lock:
            data = self._load()
            if value is None:
                data.pop(key, None)
            else:
                data[key] = value
            self.path.parent.mkdir(parents=True, exist_ok=True)
            # 0600: scale sets keep their admin password here, for the instances to come.
            write_atomic(self.path, json.dumps(data, indent=1, sort_keys=True).encode(), 0o600)

    def _load(self) -> dict[str, Any]:
        if self._data is None:
            try:
                loaded = json.loads(self.path.read_text())
            except FileNotFoundError:
                loaded = {}
            except (OSError, ValueError) as exc:
                raise LabError(
                    f"lab state file {self.path} is unreadable ({exc}); move it away to start "
                    "over (the VMs themselves are kept by libvirt)",
                    code="CorruptState",
                ) from exc
            if not isinstance(loaded, dict):
                raise LabError(f"lab state file {self.path} is not a JSON object",
                               code="CorruptState")  # fmt: skip
            self._data = loaded
        return self._data
