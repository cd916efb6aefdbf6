"""Where the lab keeps its secrets (the token and storage signing keys, the CA's and the
server's private keys): files mode 0600 in a directory mode 0700, owned by the lab's user.

A directory or file an older lab made with looser modes is tightened when it is next used.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

SECRET_FILE_MODE = 0o600
SECRET_DIR_MODE = 0o700


def private_dir(path: Path) -> None:
    """Create `path` (and its parents) if missing; leave it readable by its owner only."""
    path.mkdir(parents=True, exist_ok=True, mode=SECRET_DIR_MODE)
    if stat.S_IMODE(path.stat().st_mode) != SECRET_DIR_MODE:
        os.chmod(path, SECRET_DIR_MODE)


def private_file(path: Path) -> None:
    """Leave an existing secret file readable and writable by its owner only."""
    if stat.S_IMODE(path.stat().st_mode) != SECRET_FILE_MODE:
        os.chmod(path, SECRET_FILE_MODE)
