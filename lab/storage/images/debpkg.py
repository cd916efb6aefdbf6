"""Debian packages as image ingredients: resolve exact versions, download, unpack.

Everything goes through the host's ordinary apt client (``apt-cache``, ``apt-get download``,
``dpkg-deb``); nothing is installed on the host. Downloaded ``.deb`` files are kept in a cache
directory and checked against the SHA-256 apt reports before reuse.

Resolving versions costs about a second per ``apt-cache`` call (Debian's container images turn
apt's binary cache off), too slow for the "is the image up to date?" check every test run
makes. `ResolutionCache` remembers resolved versions together with a fingerprint of apt's state
(package lists, sources, preferences, dpkg status): while that fingerprint is unchanged the
answer cannot change, so it is reused without running apt at all.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from lab.domain.errors import ImageError
from lab.storage.blobs import write_atomic
from lab.storage.images.commands import run
from lab.storage.state import load_cache

#: Files whose changes can change which package version apt picks.
APT_STATE_PATHS: tuple[Path, ...] = (
    Path("/var/lib/apt/lists"),
    Path("/etc/apt"),
    Path("/var/lib/dpkg/status"),
)


@dataclass(frozen=True)
class DebPackage:
    """One exact package version, as ``apt-get download NAME=VERSION`` wants it."""

    name: str
    version: str

    @property
    def spec(self) -> str:
        return f"{self.name}={self.version}"


def apt_state_fingerprint(paths: tuple[Path, ...] = APT_STATE_PATHS) -> str:
    """A hash of the names, sizes and mtimes of apt's state files (stat only: fast)."""
    digest = hashlib.sha256()
    for root in paths:
        if root.is_file():
            files = [root]
        elif root.is_dir():
            files = sorted(p for p in root.rglob("*") if p.is_file() and p.name != "lock")
        else:
            files = []
        for path in files:
            try:
                st = path.stat()
            except OSError:
                continue
            digest.update(f"{path}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return digest.hexdigest()


def _parse_records(text: str) -> list[dict[str, str]]:
    """Parse deb822 stanzas (``apt-cache show`` output) into dicts; continuation lines join."""
    records: list[dict[str, str]] = []
    current: dict[str, str] = {}
    key = ""
    for line in text.splitlines():
        if not line.strip():
            if current:
                records.append(current)
            current, key = {}, ""
        elif line[0] in " \t" and key:
            current[key] += "\n" + line.strip()
        elif ":" in line:
            key, _, value = line.partition(":")
            current[key] = value.strip()
    if current:
        records.append(current)
    return records


def show_candidates(names: list[str]) -> dict[str, dict[str, str]]:
    """The candidate version's control record of each package (one ``apt-cache`` call)."""
    proc = run(["apt-cache", "show", "--no-all-versions", *names])
    records = {r["Package"]: r for r in _parse_records(proc.stdout.decode()) if "Package" in r}
    missing = [n for n in names if n not in records]
    if missing:
        raise ImageError(
            f"apt knows no installable version of {', '.join(missing)}; "
            "run `apt-get update` and check /etc/apt/sources.list."
        )
    return records


_DEP = re.compile(r"^\s*([a-z0-9][a-z0-9+.-]+)(?::\w+)?\s*(?:\(\s*([<>=]+)\s*([^)\s]+)\s*\))?")


def dependencies(record: dict[str, str]) -> list[tuple[str, str | None]]:
    """(name, exact version or None) of each Depends entry, first alternative only."""
    result: list[tuple[str, str | None]] = []
    for clause in record.get("Depends", "").split(","):
        match = _DEP.match(clause.split("|")[0])
        if match:
            name, op, version = match.groups()
            result.append((name, version if op == "=" else None))
    return result


def resolve_meta(meta: str, prefix: str, record: dict[str, str]) -> DebPackage:
    """The versioned package a meta package points at (e.g. linux-image-6.1.0-NN-cloud-amd64).

    `record` is the meta package's candidate record; the dependency taken is the first whose
    name starts with `prefix`. Debian's kernel meta packages pin it with ``(= VERSION)``; when
    one does not, the dependency's own candidate version is asked for.
    """
    for name, version in dependencies(record):
        if name.startswith(prefix) and name != meta:
            if version is None:
                version = show_candidates([name])[name]["Version"]
            return DebPackage(name, version)
    raise ImageError(
        f"The package {meta} {record.get('Version', '?')} does not depend on any {prefix}* "
        f"package (Depends: {record.get('Depends', '')!r})."
    )


class ResolutionCache:
    """Resolved package versions, reused while apt's state fingerprint stays the same."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def load(self, key: str, fingerprint: str) -> dict[str, str] | None:
        data = load_cache(self.path, "the resolved package versions")  # damaged: set aside
        entry = data.get(key) if data is not None else None
        if not isinstance(entry, dict) or entry.get("fingerprint") != fingerprint:
            return None
        pins = entry.get("pins")
        if not isinstance(pins, dict) or not all(isinstance(v, str) for v in pins.values()):
            return None
        return {str(k): v for k, v in pins.items()}

    def store(self, key: str, fingerprint: str, pins: dict[str, str]) -> None:
        """Remember `pins` for `key` (``<image>:<recipe hash>``), replacing older recipes'."""
        data = load_cache(self.path, "the resolved package versions") or {}
        # One entry per image: the answer for an older recipe of it is of no further use.
        image = key.partition(":")[0]
        data = {k: v for k, v in data.items() if k.partition(":")[0] != image}
        data[key] = {"fingerprint": fingerprint, "pins": pins}
        self.path.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(self.path, (json.dumps(data, indent=2, sort_keys=True) + "\n").encode())


@dataclass(frozen=True)
class _Uri:
    filename: str
    size: int
    sha256: str


def _print_uri(pkg: DebPackage) -> _Uri:
    proc = run(["apt-get", "download", "--print-uris", pkg.spec])
    # 'URL' FILENAME SIZE SHA256:HEX
    for line in proc.stdout.decode().splitlines():
        parts = line.split()
        if len(parts) == 4 and parts[3].lower().startswith("sha256:"):
            return _Uri(parts[1], int(parts[2]), parts[3].split(":", 1)[1].lower())
    raise ImageError(f"apt-get gave no download URI for {pkg.spec}; run `apt-get update`.")


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def download(pkg: DebPackage, debs_dir: Path) -> Path:
    """The ``.deb`` of `pkg` in `debs_dir`, downloaded unless a verified copy is there."""
    uri = _print_uri(pkg)
    target = debs_dir / uri.filename
    if target.is_file() and target.stat().st_size == uri.size and _sha256(target) == uri.sha256:
        return target
    debs_dir.mkdir(parents=True, exist_ok=True)
    # Download next to the cache, then rename: an interrupted download never looks complete.
    with tempfile.TemporaryDirectory(prefix=".download-", dir=debs_dir) as tmp:
        run(["apt-get", "download", pkg.spec], cwd=Path(tmp))
        fetched = Path(tmp) / uri.filename
        if not fetched.is_file():
            raise ImageError(f"`apt-get download {pkg.spec}` did not produce {uri.filename}.")
        if _sha256(fetched) != uri.sha256:
            raise ImageError(f"The downloaded {uri.filename} does not match apt's SHA-256.")
        fetched.chmod(0o644)
        fetched.replace(target)
    return target


def extract(deb: Path, dest: Path) -> None:
    """Unpack a ``.deb``'s files (not its scripts) under `dest`, as ``dpkg-deb -x`` does."""
    dest.mkdir(parents=True, exist_ok=True)
    try:
        run(["dpkg-deb", "-x", deb, dest])
    except ImageError:
        # A damaged cached .deb must not poison every later build: drop it so the next
        # build downloads it again.
        deb.unlink(missing_ok=True)
        shutil.rmtree(dest, ignore_errors=True)
        raise
