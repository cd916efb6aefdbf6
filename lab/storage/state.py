"""Small JSON documents of lab state that libvirt does not hold (storage accounts, the
subscription's serial-console switch, serial ports, scale-set models, scenario attempts).

Writes are atomic and durable (`write_atomic`: a temporary file, fsync, rename, fsync of the
directory), so a crash leaves the old document or the new one, never half of one; the version
before the last write stays beside it as `<name>.prev`. A document that is nevertheless cut
short or altered (a disk fault, a hand edit) is refused with `CorruptState`, naming the file,
what is wrong and how to recover: the lab never silently starts over with empty state, which
would forget accounts, ports and scale sets without a word.

A section may bring a migration (`StateFile.section`'s `migrate`): a document an older lab
wrote is brought to today's shape when it is read, and written back at once, together with its
`.prev` (so what the migration removes, such as a plain-text password, stays on no disk).
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
        self._migrations: dict[str, Callable[[Any], Any]] = {}

    @property
    def previous(self) -> Path:
        """The version before the last write (kept for recovery by hand)."""
        return self.path.with_name(f"{self.path.name}.prev")

    def section(
        self, key: str, shape: Any, what: str, *, migrate: Callable[[Any], Any] | None = None
    ) -> None:
        """Declare top-level `key`: a value of type `shape` (checked with pydantic) holding
        `what` (for the recovery message: what is lost when the file is moved away).

        `migrate` takes the section as read (any JSON) and returns it in today's shape (itself
        when there is nothing to do); it runs before the check."""
        adapter: TypeAdapter[Any] = TypeAdapter(shape)
        self._sections[key] = (adapter.validate_python, what)
        if migrate is not None:
            self._migrations[key] = migrate

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
            # 0600: scale sets keep their admin password's hash here, for the instances to come.
            write_atomic(self.path, _dumps(new), 0o600, keep_previous=True)
            # Only once it is on disk: a failed write (a full disk) leaves memory as the file.
            self._data = new

    def _load(self) -> dict[str, Any]:
        if self._data is None:
            data, migrated = self._parse()
            self._data = data
            if migrated:
                self._write_migrated(data)
        return self._data

    def _migrate(self, document: dict[str, Any]) -> list[str]:
        """Run the sections' migrations on `document` in place; the keys they changed."""
        changed = []
        for key, migrate in self._migrations.items():
            if key in document:
                new = migrate(document[key])
                if new != document[key]:
                    document[key] = new
                    changed.append(key)
        return changed

    def _write_migrated(self, data: dict[str, Any]) -> None:
        """Write a migrated document back, and migrate its `.prev` too. Best effort: a failed
        write (a full disk) leaves the migrated document in memory, and the next write puts it
        on disk."""
        try:
            # Not kept as `.prev`: the old version is migrated in its own place, below.
            write_atomic(self.path, _dumps(data), 0o600)
        except OSError as exc:
            log.warning("Could not write the migrated lab state to %s (%s); the next change "
                        "writes it.", self.path, exc.strerror or exc)  # fmt: skip
            return
        log.info("Migrated the lab state file %s to the current format.", self.path)
        try:
            previous = json.loads(self.previous.read_bytes().decode())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError):
            return  # none, or damaged: left as it is, for recovery by hand
        if not isinstance(previous, dict):
            return
        try:
            if self._migrate(previous):
                write_atomic(self.previous, _dumps(previous), 0o600)
        except Exception as exc:  # a damaged .prev must not stop the lab
            log.warning("Could not migrate %s (%s); it is left as it is.", self.previous, exc)

    def _parse(self) -> tuple[dict[str, Any], list[str]]:
        """The document, checked, and the sections a migration changed in it."""
        try:
            raw = self.path.read_bytes()
        except FileNotFoundError:
            return {}, []
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
        migrated = self._migrate(loaded)
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
        return loaded, migrated

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


def _dumps(document: dict[str, Any]) -> bytes:
    return json.dumps(document, indent=1, sort_keys=True).encode()


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
