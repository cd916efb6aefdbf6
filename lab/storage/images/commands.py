"""Running the host tools an image build needs (apt-get, dpkg-deb, mmdebstrap, mkfs.ext4, ...).

Every failure becomes an `ImageError` that names the command and carries its stderr, so
`lab image build` can say exactly which step broke and why.
"""

from __future__ import annotations

import collections
import contextlib
import os
import re
import shlex
import shutil
import signal
import subprocess
import threading
from collections.abc import Callable, Mapping, Sequence
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


def run_streaming(
    argv: Sequence[str | Path],
    on_line: Callable[[str], None],
    *,
    env: Mapping[str, str] | None = None,
    timeout: float = 1800,
    keep_lines: int = 60,
) -> None:
    """Run a long command, handing each line of its output (stdout and stderr merged) to
    `on_line` as it comes, for a progress display. A failure raises `ImageError` with the last
    `keep_lines` lines, where the cause of a failing build is.

    The command gets SIGTERM if this process dies (``setpriv --pdeathsig``), so a killed
    ``lab image build`` does not leave mmdebstrap running on with its chroot mounted.
    """
    args = [str(a) for a in argv]
    shown = shlex.join(args)
    if shutil.which(args[0]) is None:
        raise ImageError(f"Cannot run `{shown}`: {args[0]} is not installed.")
    setpriv = shutil.which("setpriv")
    if setpriv is not None:
        args = [setpriv, "--pdeathsig", "TERM", "--", *args]
    full_env = dict(os.environ)
    full_env["LC_ALL"] = "C"
    if env:
        full_env.update(env)
    tail: collections.deque[str] = collections.deque(maxlen=keep_lines)
    try:
        proc = subprocess.Popen(
            args, env=full_env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
    except FileNotFoundError as exc:
        raise ImageError(f"Cannot run `{shown}`: {args[0]} is not installed.") from exc
    timed_out = threading.Event()

    def stop() -> None:
        # Its own session: the whole tree goes (mmdebstrap runs apt, dpkg, maintainer scripts).
        # SIGTERM first: mmdebstrap then unmounts what it mounted in its chroot.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)

    def expire() -> None:
        timed_out.set()
        stop()

    timer = threading.Timer(timeout, expire)
    timer.start()
    try:
        assert proc.stdout is not None
        for raw in proc.stdout:
            line = raw.decode(errors="replace").rstrip()
            tail.append(line)
            on_line(line)
        returncode = proc.wait()
    except BaseException:
        stop()
        proc.wait()
        raise
    finally:
        timer.cancel()
    if timed_out.is_set():
        raise ImageError(f"`{shown}` did not finish within {timeout:.0f} s.")
    if returncode != 0:
        last = _tail("\n".join(tail)) or "(no output)"
        raise ImageError(f"`{shown}` failed with exit status {returncode}:\n{last}")


def _mount_points(mountinfo: str) -> list[str]:
    """The mount points listed in /proc/self/mountinfo text (its octal escapes undone)."""
    points = []
    for line in mountinfo.splitlines():
        fields = line.split()
        if len(fields) > 4:
            points.append(re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), fields[4]))
    return points


def mounts_below(root: Path, mountinfo: str | None = None) -> list[str]:
    """The outermost mount points strictly below `root` (a mount inside another is left out:
    detaching the outer one takes it along)."""
    if mountinfo is None:
        try:
            mountinfo = Path("/proc/self/mountinfo").read_text()
        except OSError:
            return []
    base = os.path.realpath(root).rstrip("/") + "/"
    inside = sorted({p for p in _mount_points(mountinfo) if p.startswith(base)}, key=len)
    outermost: list[str] = []
    for point in inside:
        if not any(point.startswith(outer.rstrip("/") + "/") for outer in outermost):
            outermost.append(point)
    return outermost


def release_mounts(root: Path) -> list[str]:
    """Detach whatever is mounted below `root` before it is deleted; the points released.

    A build killed half-way (mmdebstrap in root mode) can leave /proc, an rbind of the host's
    /sys and /dev/pts mounted in its chroot; deleting the build directory would then reach into
    them. Each outermost mount is detached lazily, as mmdebstrap's own cleanup does: detaching
    the outer mount takes its submounts along without touching the host's mounts.
    """
    released = mounts_below(root)
    for point in released:
        subprocess.run(["umount", "--lazy", "--no-mtab", point], capture_output=True, check=False)
    return released
