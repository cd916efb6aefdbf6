"""Running the host tools an image build needs (apt-get, dpkg-deb, mkfs.ext4, qemu-img, zstd).

Every failure becomes an `ImageError` that names the command and carries its stderr, so
`lab image build` can say exactly which step broke and why.
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path

from lab.domain.errors import ImageError

#: How much of a failing command's stderr an error message carries (the tail is what matters).
STDERR_TAIL = 4000


def _tail(text: str) -> str:
    text = text.strip()
    return text if len(text) <= STDERR_TAIL else "..." + text[-STDERR_TAIL:]


def require_tool(name: str) -> str:
    """The path of a host tool, or an `ImageError` saying which Debian package provides it."""
    path = shutil.which(name)
    if path is None:
        raise ImageError(f"The image build needs '{name}', which is not installed on this host.")
    return path


def run(
    argv: Sequence[str | Path],
    *,
    cwd: Path | None = None,
    env: Mapping[str, str] | None = None,
    input: bytes | None = None,
    timeout: float | None = 900,
) -> subprocess.CompletedProcess[bytes]:
    """Run a command to completion; raise `ImageError` with its stderr if it fails."""
    args = [str(a) for a in argv]
    shown = shlex.join(args)
    full_env = dict(os.environ)
    # Tool output is parsed (apt-cache) and quoted in errors: keep it in English, untranslated.
    full_env["LC_ALL"] = "C"
    if env:
        full_env.update(env)
    try:
        proc = subprocess.run(
            args,
            cwd=cwd,
            env=full_env,
            input=input,
            stdin=None if input is not None else subprocess.DEVNULL,
            capture_output=True,
            timeout=timeout,
            check=False,
        )
    except FileNotFoundError as exc:
        raise ImageError(f"Cannot run `{shown}`: {args[0]} is not installed.") from exc
    except subprocess.TimeoutExpired as exc:
        raise ImageError(f"`{shown}` did not finish within {timeout:.0f} s.") from exc
    if proc.returncode != 0:
        stderr = _tail(proc.stderr.decode(errors="replace")) or "(no output on stderr)"
        raise ImageError(f"`{shown}` failed with exit status {proc.returncode}:\n{stderr}")
    return proc
