"""`lab console VM`: a raw terminal on a VM's serial console through the daemon.

`Ctrl+]` opens the menu the Azure CLI has: `q` quits, `Ctrl+]` sends a literal 0x1d. Output is
written as raw bytes (never as `b'...'`), and a notice from the broker (takeover, dropped
viewer) is printed on its own line before the command exits.
"""

from __future__ import annotations

import json
import os
import select
import sys
import termios
import threading
import tty
from typing import BinaryIO

from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection

ESCAPE = 0x1D  # Ctrl+]
MENU = b"\r\n[lab] Ctrl+] menu: q quit, Ctrl+] send Ctrl+], any other key back to the console\r\n"


def run_terminal(conn: ClientConnection, *, read_only: bool) -> str:
    """Bridge stdin/stdout and the console until quit or closed; return why it ended."""
    stdout = sys.stdout.buffer
    ended: list[str] = []
    reader = threading.Thread(target=_pump_output, args=(conn, stdout, ended), daemon=True)
    reader.start()
    fd = sys.stdin.fileno()
    is_tty = os.isatty(fd)
    saved = termios.tcgetattr(fd) if is_tty else None
    if is_tty:
        tty.setraw(fd)
    try:
        _pump_input(conn, fd, read_only, ended)
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
            if control.get("type") in ("closed", "error"):
                ended.append(control.get("reason") or control.get("message", "closed"))
                stdout.write(f"\r\n[lab] {ended[-1]}\r\n".encode())
                stdout.flush()
    except ConnectionClosed:
        pass
    if not ended:
        ended.append("the console connection closed")


def _pump_input(conn: ClientConnection, fd: int, read_only: bool, ended: list[str]) -> None:
    in_menu = False
    while not ended:
        ready, _, _ = select.select([fd], [], [], 0.2)
        if not ready:
            continue
        data = os.read(fd, 1024)
        if not data:
            return  # stdin closed
        for byte in data:
            if in_menu:
                in_menu = False
                if byte in (ord("q"), ord("Q")):
                    return
                if byte == ESCAPE and not read_only:
                    conn.send(bytes([ESCAPE]))
                continue
            if byte == ESCAPE:
                in_menu = True
                sys.stdout.buffer.write(MENU)
                sys.stdout.buffer.flush()
            elif not read_only:
                try:
                    conn.send(bytes([byte]))
                except ConnectionClosed:
                    return
