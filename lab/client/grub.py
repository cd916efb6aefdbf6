"""Driving GRUB's menu over the serial console, as a trainee does: catch the menu during its
countdown, edit the default entry, add kernel parameters to its `linux` line, boot it.

The `linux` line is found on the editor's screen as GRUB draws it (a row per screen line, a
long line continued on the next row after a `\\`), then reached with Ctrl-N from the top.
"""

from __future__ import annotations

import re
import time

from lab.client.session import GRUB_MENU, ConsoleSession

#: Text of GRUB's menu on a serial terminal (its help line under the entries).
MENU = GRUB_MENU
#: The editor's help text, drawn before the entry's lines.
EDITOR = r"Ctrl-x or F10 to boot"
#: GRUB shows the cursor again when it has drawn the entry.
DRAWN = r"\x1b\[\?25h"
_ROW = re.compile(r"\x1b\[(\d+);3H([^\x1b]*)")
CTRL_N, CTRL_E, CTRL_X = "\x0e", "\x05", "\x18"


def linux_line_index(screen: str) -> int:
    """Which logical line of the entry GRUB's editor drew is the `linux` line (0: the first)."""
    rows: dict[int, str] = {}
    for m in _ROW.finditer(screen):
        rows.setdefault(int(m.group(1)), m.group(2))
    logical, continued = 0, False
    for row in sorted(rows):
        text = rows[row].rstrip("\r\n ")
        if not continued:
            if text.strip().startswith("linux"):
                return logical
            logical += 1
        continued = text.endswith("\\")
    raise ValueError("no `linux` line on GRUB's editor screen")


def boot_with_kernel_args(session: ConsoleSession, args: str, *, timeout: float = 240) -> None:
    """Wait for GRUB's menu, then boot the highlighted entry with `args` added."""
    session.expect(MENU, timeout=timeout)
    session.send("e")  # stops the countdown and opens the editor on the highlighted entry
    session.expect(EDITOR, timeout=30)
    session.expect(DRAWN, timeout=30)
    down = linux_line_index(str(session.before))
    for key in [CTRL_N] * down + [CTRL_E]:  # the cursor starts on the first line
        session.send(key)
        time.sleep(0.1)  # GRUB reads the serial port a key at a time
    for ch in f" {args}":
        session.send(ch)
        time.sleep(0.02)
    time.sleep(0.3)
    session.send(CTRL_X)


def wait_for_reboot(session: ConsoleSession, *, timeout: float = 240) -> None:
    """Wait until a reboot the guest was just told to do reaches GRUB's menu, so what follows
    (a login, a check) talks to the new boot, not to the system going down."""
    session.expect(MENU, timeout=timeout)
