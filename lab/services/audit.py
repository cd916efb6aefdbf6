"""The audit log: who signed in, who connected to which VM's console, when, and what they did
there and in their scenarios (start, hint, check, reset, an instructor watching).

One JSON object a line in `<data dir>/audit.log`, appended and flushed per event (Azure records
console access in the VM's boot-diagnostics logs; ours is one file for the whole lab).
"""

from __future__ import annotations

import json
import logging
import os
import threading
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


class AuditLog:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()

    def record(self, event: str, *, user: str, vm: str | None = None, **detail: Any) -> None:
        """One event; `vm` is null for those about no VM (a sign-in), so every entry has the
        same keys for its readers."""
        entry = {"time": datetime.now(UTC).isoformat(timespec="milliseconds"), "event": event,
                 "vm": vm, "user": user, **detail}  # fmt: skip
        line = json.dumps(entry, sort_keys=True) + "\n"
        try:
            with self._lock, self.path.open("ab+") as f:
                # After an append cut short (no newline at the end), start on a line of our own.
                end = f.seek(0, os.SEEK_END)
                if end:
                    f.seek(end - 1)
                    if f.read(1) != b"\n":
                        line = "\n" + line
                f.write(line.encode())
        except OSError as exc:
            # A full disk must not stop a console from opening or an NMI from being sent: the
            # entry is logged instead (and a cut-short line is skipped when read back).
            log.warning("cannot write the audit log %s (%s): %s", self.path, exc.strerror,
                        line.strip())  # fmt: skip

    def entries(self, user: str | None = None) -> list[dict[str, Any]]:
        """Every entry (or a user's), oldest first. Entries stand alone, so a damaged line (an
        append cut short when the lab died, a bad edit) does not hide the others: it is left
        out, and a warning names the file and line."""
        try:
            text = self.path.read_bytes().decode(errors="replace")
        except FileNotFoundError:
            return []
        entries = []
        for number, line in enumerate(text.split("\n"), 1):
            if not line.strip():
                continue
            try:
                entry = json.loads(line)
                if not isinstance(entry, dict):
                    raise ValueError(f"a JSON {type(entry).__name__}, not an object")
            except ValueError as exc:
                log.warning("%s:%d: damaged audit entry left out (%s): %.80r",
                            self.path, number, exc, line)  # fmt: skip
                continue
            if user is None or str(entry.get("user", "")).lower() == user.lower():
                entries.append(entry)
        return entries
