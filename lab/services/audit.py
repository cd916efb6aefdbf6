"""The console audit log: who connected to which VM's console, when, and what they did.

One JSON object a line in `<data dir>/audit.log`, appended and flushed per event (Azure records
console access in the VM's boot-diagnostics logs; ours is one file for the whole lab).
"""

from __future__ import annotations

import json
import threading
from datetime import UTC, datetime
from pathlib import Path
from typing import Any


class AuditLog:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()

    def record(self, event: str, *, vm: str, user: str, **detail: Any) -> None:
        entry = {"time": datetime.now(UTC).isoformat(timespec="milliseconds"), "event": event,
                 "vm": vm, "user": user, **detail}  # fmt: skip
        line = json.dumps(entry, sort_keys=True) + "\n"
        with self._lock, self.path.open("a") as f:
            f.write(line)

    def entries(self) -> list[dict[str, Any]]:
        if not self.path.exists():
            return []
        return [json.loads(line) for line in self.path.read_text().splitlines() if line.strip()]
