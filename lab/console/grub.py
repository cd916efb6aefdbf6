"""Driving GRUB's menu over the serial console, as a trainee does: catch the menu during its
countdown, edit the default entry, add kernel parameters to its `linux` line, boot it.

Debian's entries start with a `setparams` line and end with the `initrd` line followed by a
blank one, so the `linux` line is found from the bottom, not counted from the top.
"""

from __future__ import annotations

import time

from lab.console.session import ConsoleSession

#: Text of GRUB's menu on a serial terminal (its help line under the entries).
MENU = r"Use the \^ and v keys to select which entry is highlighted"
#: The editor's help line.
EDITOR = r"Press Ctrl-x to start"
CTRL_N, CTRL_P, CTRL_E, CTRL_X = "\x0e", "\x10", "\x05", "\x18"
#: From the last line of a Debian entry up to its `linux` line.
LINES_UP_TO_LINUX = 2


def boot_with_kernel_args(session: ConsoleSession, args: str, *, timeout: float = 240) -> None:
    """Wait for GRUB's menu, then boot the highlighted entry with `args` added."""
    session.expect(MENU, timeout=timeout)
    session.send("e")  # stops the countdown and opens the editor on the highlighted entry
    session.expect(EDITOR, timeout=30)
    for key in [CTRL_N] * 40 + [CTRL_P] * LINES_UP_TO_LINUX + [CTRL_E]:
        session.send(key)
        time.sleep(0.05)  # GRUB reads the serial port a key at a time
    for ch in f" {args}":
        session.send(ch)
        time.sleep(0.02)
    time.sleep(0.3)
    session.send(CTRL_X)


def wait_for_reboot(session: ConsoleSession, *, timeout: float = 240) -> None:
    """Wait until a reboot the guest was just told to do reaches GRUB's menu, so what follows
    (a login, a check) talks to the new boot, not to the system going down."""
    session.expect(MENU, timeout=timeout)
