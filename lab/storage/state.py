"""Small JSON documents of lab state that libvirt does not hold (storage accounts, the
subscription's serial-console switch, serial ports, scale-set models, scenario attempts).

Writes are atomic and durable (`write_atomic`: a temporary file, fsync, rename, fsync of the
directory), so a crash leaves the old document or the new one, never half of one; the version
before the last write stays beside it as `<name>.prev`. A document that is nevertheless cut
short or altered (a disk fault, a hand edit) is refused with `CorruptState`, naming the file,
what is wrong and how to recover: the lab never silently starts over with empty state, which
would forget accounts, ports and scale sets without a word.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pydantic import TypeAdapter, ValidationError

from lab.domain.errors import CorruptState
from lab.storage.blobs import write_atomic

log = logging.getLogger(__name__)


class StateFile:
    """One JSON object on disk, read once and rewritten whole on every change.

    Services declare the top-level keys they keep (`section`) with the shape each must have;
    a document whose sections do not have it is reported as corrupt when first read, before
    any service acts on half-valid data.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._data: dict[str, Any] | None = None
        self._sections: dict[str, tuple[Callable[[Any], object], str]] = {}

    @property
    def previous(self) -> Path:
        """The version before the last write (kept for recovery by hand)."""
        return self.path.with_name(f"{self.path.name}.prev")

    def section(self, key: str, shape: Any, what: str) -> None:
        """Declare top-level `key`: a value of type `shape` (checked with pydantic) holding
        `what` (for the recovery message: what is lost when the file is moved away)."""
        adapter: TypeAdapter[Any] = TypeAdapter(shape)
        self._sections[key] = (adapter.validate_python, what)

    def check(self) -> None:
        """Read the document now (the daemon does at start), raising `CorruptState` if bad."""
        with self._lock:
            self._load()

    def read(self) -> dict[str, Any]:
        with self._lock:
            copy: dict[str, Any] = json.loads(json.dumps(self._load()))  # callers may mutate it
            return copy

    def update(self, key: str, value: Any) -> None:
        """Set (or, with None, remove) one top-level key and persist."""
        with self._lock:
            data = self._load()
            self.path.parent.mkdir(parents=True, exist_ok=True)
            new = {k: v for k, v in data.items() if k != key}
            if value is not None:
                new[key] = value
            # 0600: scale sets keep their admin password here, for the instances to come.
            write_atomic(self.path, json.dumps(new, indent=1, sort_keys=True).encode(), 0o600,
                         keep_previous=True)  # fmt: skip
            # Only once it is on disk: a failed write (a full disk) leaves memory as the file.
            self._data = new

    def _load(self) -> dict[str, Any]:
        if self._data is None:
            self._data = self._parse()
        return self._data

    def _parse(self) -> dict[str, Any]:
        try:
            raw = self.path.read_bytes()
        except FileNotFoundError:
            return {}
        except OSError as exc:
            raise self._corrupt(f"cannot be read ({exc.strerror or exc})") from exc
        if not raw.strip():
            raise self._corrupt(f"is empty ({len(raw)} bytes): it was cut short")
        try:
            loaded = json.loads(raw.decode())  # the lab writes UTF-8 (ASCII, in fact)
        except UnicodeDecodeError as exc:
            raise self._corrupt(f"is not UTF-8 text (byte {exc.start})") from exc
        except json.JSONDecodeError as exc:
            # The lab's documents end with their closing brace; an error at the very end (or an
            # open string) says the file stops where it should not.
            body = raw.rstrip()
            ended = exc.pos >= len(body) - 1 or not body.endswith(b"}")
            cut = exc.msg != "Extra data" and (ended or exc.msg.startswith("Unterminated"))
            why = (
                "it ends in the middle of the JSON document: it was cut short"
                if cut
                else "it is not valid JSON"
            )
            raise self._corrupt(
                f"is damaged: {why} ({exc.msg} at line {exc.lineno}, column {exc.colno}; "
                f"{len(raw)} bytes)"
            ) from exc
        if not isinstance(loaded, dict):
            raise self._corrupt(
                f"holds a JSON {type(loaded).__name__} where the lab writes an object"
            )
        for key, (validate, _what) in self._sections.items():
            if key not in loaded:
                continue
            try:
                validate(loaded[key])
            except ValidationError as exc:
                first = exc.errors(include_url=False)[0]
                where = ".".join(str(p) for p in (key, *first["loc"]))
                raise self._corrupt(
                    f"is not what the lab wrote: {where}: {first['msg']}"
                    + (f" (and {exc.error_count() - 1} more)" if exc.error_count() > 1 else "")
                ) from exc
        return loaded

    def _corrupt(self, problem: str) -> CorruptState:
        kept = sorted({what for _validate, what in self._sections.values()})
        lost = ", ".join(kept) if kept else "what it holds"
        recover = "Fix the file by hand"
        if self.previous.is_file():
            when = datetime.fromtimestamp(self.previous.stat().st_mtime, UTC)
            recover = (f"Restore the version before the last write ({self.previous}, "
                       f"written {when:%Y-%m-%d %H:%M:%S} UTC), fix the file by hand")  # fmt: skip
        return CorruptState(
            f"The lab state file {self.path} {problem}. The lab has left it as it is. "
            f"{recover}, or move it away to start over without {lost} (the VMs themselves are "
            "kept by libvirt).",
            target=str(self.path),
        )


def load_cache(path: Path, what: str) -> dict[str, Any] | None:
    """A JSON object the lab can compute again (`what` it holds), or None when there is none.

    A damaged one is not silently dropped: it is moved to `<name>.corrupt` (for a look later),
    a warning names both files and says what happens next, and the caller computes it again.
    """
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as exc:
        log.warning("cannot read %s (%s): %s is computed again", path, exc, what)
        return None
    try:
        loaded = json.loads(raw.decode())  # the lab writes UTF-8 (ASCII, in fact)
        if not isinstance(loaded, dict):
            raise ValueError(f"a JSON {type(loaded).__name__}, not an object")
    except ValueError as exc:
        kept = path.with_name(f"{path.name}.corrupt")
        try:
            os.replace(path, kept)
        except OSError:
            kept = path
        log.warning("%s is damaged (%s, %d bytes); kept as %s, and %s is computed again",
                    path, exc, len(raw), kept, what)  # fmt: skip
        return None
    return loaded
