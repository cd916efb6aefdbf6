"""`lab console VM`: a raw terminal on a VM's serial console through the daemon.

`Ctrl+]` opens the menu the Azure CLI's serial console has, with its texts and confirmations:
`n` NMI, `s` SysRq then a key (Linux only), `r` hard reset, `q` quit, `Ctrl+]` sends a literal
0x1d. Output is written as raw bytes (never as `b'...'`), and a notice from the broker
(takeover, dropped viewer, idle timeout) is printed on its own line before the command exits.
"""

from __future__ import annotations

import json
import os
import select
import sys
import termios
import threading
import tty
from collections.abc import Callable
from typing import BinaryIO

from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection

ESCAPE = 0x1D  # Ctrl+]
MENU_LINUX = (
    "| Press n for NMI | s for SysRq | r to Reset VM |\r\n"
    "| q to quit Console | CTRL + ] to forward input |"
)
MENU_WINDOWS = (
    "| Press n for NMI | r to Reset VM |\r\n| q to quit Console | CTRL + ] to forward input |"
)
CONFIRM_NMI = (
    "Warning: A Non-Maskable Interrupt (NMI) is used in debugging\r\n"
    "scenarios and is designed to crash your target Virtual Machine.\r\n"
    "Are you sure you want to send an NMI? (Y/n): "
)
CONFIRM_RESET = (
    "Warning: This results in a hard restart, like powering the computer\r\n"
    "down, then back up again. This can result in data loss in the virtual\r\n"
    "machine. You should only perform this operation if a graceful restart\r\n"
    "is not effective.\r\n"
    "Are you sure you want to Hard Reset the VM? (Y/n): "
)
ASK_SYSRQ = "Which SysRq command would you like to send? Press h for help: "

#: Runs an admin command ("nmi", "reset", "sysrq" with a key) and returns a line to show.
AdminCommand = Callable[[str, str | None], str]


def run_terminal(
    conn: ClientConnection, *, read_only: bool, admin: AdminCommand, is_windows: bool = False
) -> str:
    """Bridge stdin/stdout and the console until quit or closed; return why it ended."""
    stdout = sys.stdout.buffer
    ended: list[str] = []
    reader = threading.Thread(target=_pump_output, args=(conn, stdout, ended), daemon=True)
    reader.start()
    fd = sys.stdin.fileno()
    saved = termios.tcgetattr(fd) if os.isatty(fd) else None
    if saved is not None:
        # TCSANOW, not setraw's default TCSAFLUSH: keys typed while connecting are kept.
        tty.setraw(fd, termios.TCSANOW)
    try:
        _pump_input(conn, _KeyReader(fd, ended), read_only, admin, is_windows)
    finally:
        if saved is not None:
            termios.tcsetattr(fd, termios.TCSADRAIN, saved)
    reader.join(timeout=1)
    return ended[0] if ended else "quit"


def _pump_output(conn: ClientConnection, stdout: BinaryIO, ended: list[str]) -> None:
    try:
        for message in conn:
            if isinstance(message, bytes):
                stdout.write(message)
                stdout.flush()
                continue
            control = json.loads(message)
            if control.get("type") == "closed":
                ended.append(control.get("reason", "closed"))
                _say(f"\r\n[lab] {ended[-1]}\r\n")
            elif control.get("type") == "error":
                _say(f"\r\n[lab] {control.get('message')}\r\n")
    except ConnectionClosed:
        pass
    if not ended:
        ended.append("the console connection closed")


class _KeyReader:
    def __init__(self, fd: int, ended: list[str]) -> None:
        self.fd = fd
        self.ended = ended

    def read(self) -> bytes | None:
        """Keys typed so far (b"" if none yet), or None when stdin closed or the session ended."""
        while not self.ended:
            ready, _, _ = select.select([self.fd], [], [], 0.2)
            if ready:
                data = os.read(self.fd, 1024)
                return data or None
        return None

    def one(self) -> bytes | None:
        data = self.read()
        return data[:1] if data else None


def _pump_input(
    conn: ClientConnection, keys: _KeyReader, read_only: bool, admin: AdminCommand,
    is_windows: bool,
) -> None:  # fmt: skip
    while (data := keys.read()) is not None:
        while data:
            head, sep, data = data.partition(bytes([ESCAPE]))
            if head and not read_only and not _send(conn, head):
                return
            if not sep:
                break
            if _menu(conn, keys, read_only, admin, is_windows) == "quit":
                return


def _menu(
    conn: ClientConnection, keys: _KeyReader, read_only: bool, admin: AdminCommand,
    is_windows: bool,
) -> str:  # fmt: skip
    _say("\r\n" + (MENU_WINDOWS if is_windows else MENU_LINUX) + "\r\n")
    choice = keys.one()
    if choice in (b"q", b"Q", None):
        return "quit"
    if choice == bytes([ESCAPE]):
        if not read_only:
            _send(conn, choice)
    elif choice == b"n":
        _confirm_and_run(keys, CONFIRM_NMI, lambda: admin("nmi", None))
    elif choice == b"r":
        _confirm_and_run(keys, CONFIRM_RESET, lambda: admin("reset", None))
    elif choice == b"s" and not is_windows:
        _say("\r\n" + ASK_SYSRQ)
        key = keys.one()
        if key:
            _say("\r\n" + admin("sysrq", key.decode(errors="replace")) + "\r\n")
    return "menu"


def _confirm_and_run(keys: _KeyReader, question: str, action: Callable[[], str]) -> None:
    _say("\r\n" + question)
    if keys.one() == b"Y":
        _say("\r\n" + action() + "\r\n")
    else:
        _say("\r\n")


def _send(conn: ClientConnection, data: bytes) -> bool:
    try:
        conn.send(data)
    except ConnectionClosed:
        return False
    return True


def _say(text: str) -> None:
    sys.stdout.buffer.write(text.encode())
    sys.stdout.buffer.flush()
