"""`ConsoleSession`: a pexpect-compatible console for scripts and CI.

A subclass of pexpect's `SpawnBase`, so `expect`, `expect_exact`, `before`, `after`, `match`,
timeouts and `logfile` behave as in pexpect. It reads from a transport (the daemon's console
websocket) on a thread and adds the helpers that avoid the classic serial-console flakes:

- `wait_for_login()` nudges the console with Enter until a `login:` prompt shows, instead of
  hoping the prompt is printed after the script started reading;
- `login()` waits for each prompt before typing (typing ahead of `Password:` is lost);
- `run(cmd)` brackets the output with unique markers printed by the guest, so neither the
  echo of the command line nor a prompt is mistaken for output, and returns the exit status;
- `char_delay` paces typing for guests that drop characters at full speed.
"""

from __future__ import annotations

import json
import queue
import re
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any, Protocol

from pexpect import EOF, TIMEOUT
from pexpect.spawnbase import SpawnBase

#: Terminal control sequences a shell may print after its prompt (busybox ash asks for the
#: cursor position with ESC[6n), so a prompt is still "at the end" when they follow it.
_TRAILING_CONTROLS = r"(?:\x1b\[[0-9;?]*[A-Za-z])*$"
#: A shell prompt of an ordinary user or root at the end of the output.
PROMPT = r"[$#] " + _TRAILING_CONTROLS
LOGIN_PROMPT = r"login: " + _TRAILING_CONTROLS
#: Text of GRUB's menu on a serial terminal (its help line under the entries). Keys typed into
#: it are GRUB's: Enter boots the highlighted entry, Ctrl+C opens GRUB's command line.
GRUB_MENU = r"Use the \^ and v keys to select which entry is highlighted"
#: Seconds between the password prompt and the password (see `login`).
PASSWORD_ECHO_GUARD_S = 0.5


class ConsoleTransport(Protocol):
    """Bytes out, and an iterator of messages in (bytes = console output, str = control)."""

    def send(self, data: bytes) -> None: ...

    def __iter__(self) -> Iterator[bytes | str]: ...

    def close(self) -> None: ...


class ConsoleClosed(EOF):  # type: ignore[misc]
    """The console session ended; `reason` says why (takeover, VM stopped, idle timeout)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class CommandFailed(RuntimeError):
    """A command run with `ConsoleSession.run_ok` exited with a non-zero status."""


class ConsoleSession(SpawnBase):  # type: ignore[misc]
    #: What a terminal sends for Enter; the guest's tty maps it to a newline.
    enter = "\r"

    def __init__(
        self,
        transport: ConsoleTransport,
        *,
        vm: str = "",
        mode: str = "interactive",
        timeout: float = 30,
        maxread: int = 65536,
        logfile: Any = None,
        encoding: str | None = "utf-8",
        codec_errors: str = "replace",
        char_delay: float = 0.0,
    ) -> None:
        super().__init__(
            timeout=timeout, maxread=maxread, logfile=logfile, encoding=encoding,
            codec_errors=codec_errors,
        )  # fmt: skip
        self.vm = vm
        self.mode = mode
        self.char_delay = char_delay
        self.closed_reason: str | None = None
        self.notices: list[dict[str, Any]] = []
        self._transport = transport
        self._queue: queue.Queue[bytes | None] = queue.Queue()
        self._pending: Any = self.string_type()
        self._eof = False
        self.closed = False
        self._reader = threading.Thread(target=self._read_loop, name=f"console-{vm}", daemon=True)
        self._reader.start()

    # -- pexpect hooks ------------------------------------------------------------------------
    def read_nonblocking(self, size: int = 1, timeout: float | None = -1) -> Any:
        if timeout == -1:
            timeout = self.timeout
        if not self._pending and not self._eof:
            # Block for the first chunk (no busy loop), then take whatever else is queued.
            try:
                self._take(self._queue.get(timeout=timeout))
            except queue.Empty:
                raise TIMEOUT("Timeout exceeded.") from None
            while not self._eof:
                try:
                    self._take(self._queue.get_nowait())
                except queue.Empty:
                    break
        if not self._pending and self._eof:
            self.flag_eof = True
            raise ConsoleClosed(self.closed_reason or "the console session ended")
        data, self._pending = self._pending[:size], self._pending[size:]
        self._log(data, "read")
        return data

    def _take(self, chunk: bytes | None) -> None:
        if chunk is None:
            self._eof = True
        else:
            self._pending += self._decoder.decode(chunk, final=False)

    def send(self, s: str | bytes) -> int:
        data = s.encode(self.encoding or "utf-8") if isinstance(s, str) else s
        # A logfile gets what `expect` reads: text when the session decodes (a str logfile).
        self._log(data.decode(self.encoding, errors="replace") if self.encoding else data, "send")
        if self.char_delay > 0:
            for i in range(len(data)):
                self._transport.send(data[i : i + 1])
                time.sleep(self.char_delay)
        else:
            self._transport.send(data)
        return len(data)

    def sendline(self, s: str | bytes = "") -> int:
        if isinstance(s, bytes):
            return self.send(s + self.enter.encode())
        return self.send(s + self.enter)

    def sendcontrol(self, char: str) -> int:
        """Send Ctrl+`char` (e.g. "c" for an interrupt), like pexpect's spawn."""
        code = ord(char.lower()) - ord("a") + 1 if char.isalpha() else {"[": 27, "]": 29}[char]
        return self.send(bytes([code]))

    def sendintr(self) -> int:
        return self.sendcontrol("c")

    def write(self, s: str | bytes) -> None:
        self.send(s)

    def isalive(self) -> bool:
        return not self._eof

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self._transport.close()

    def __enter__(self) -> ConsoleSession:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- reading ------------------------------------------------------------------------------
    def _read_loop(self) -> None:
        try:
            for message in self._transport:
                if isinstance(message, bytes):
                    self._queue.put(message)
                    continue
                control = json.loads(message)
                self.notices.append(control)
                if control.get("type") in ("closed", "error") and "reason" in control:
                    self.closed_reason = control["reason"]
                elif control.get("type") == "error" and self.closed_reason is None:
                    self.closed_reason = control.get("message")
        except Exception as exc:
            self.closed_reason = self.closed_reason or f"the console connection failed: {exc}"
        finally:
            self._queue.put(None)

    # -- helpers ------------------------------------------------------------------------------
    def wait_for_login(self, timeout: float = 120, nudge: float = 2.0) -> None:
        """Press Enter every `nudge` seconds until a `login:` prompt is on the screen.

        A shell left logged in by an earlier session (sessions survive takeover, as in Azure)
        is logged out first, so the login that follows is a fresh one; a program left holding
        the console (no prompt after a nudge) gets Ctrl+C. GRUB's menu gets Enter only: Ctrl+C
        there opens GRUB's command line, and the boot never comes.
        """
        deadline = time.monotonic() + timeout
        silent = False
        while True:
            if silent:
                self.sendcontrol("c")
            self.sendline()
            left = deadline - time.monotonic()
            if left <= 0:
                raise TIMEOUT(f"no login prompt on {self.vm or 'the console'} in {timeout:g} s")
            try:
                index = self.expect([LOGIN_PROMPT, PROMPT, GRUB_MENU], timeout=min(nudge, left))
            except TIMEOUT:
                silent = True
                continue
            if index == 0:
                return
            if index == 1:
                self.sendline("exit")
            silent = False  # a shell logged out, or GRUB booting what the Enter chose

    def login(self, user: str, password: str, timeout: float = 120) -> None:
        """Log in at the serial getty, waiting for each prompt before typing."""
        self.wait_for_login(timeout)
        self.sendline(user)
        self.expect(r"[Pp]assword: ?$", timeout=30)
        # busybox's login prints the prompt first and turns the echo off after it: a password
        # typed the moment the prompt shows is echoed into the serial log (the tiny image, 2 of
        # 2 tries at once; 0 of 2 after 0.3 s). A person types later; so does this.
        time.sleep(PASSWORD_ECHO_GUARD_S)
        self.sendline(password)
        index = self.expect([PROMPT, r"[Ll]ogin incorrect"], timeout=30)
        if index == 1:
            raise PermissionError(f"login as {user!r} on {self.vm or 'the console'} was refused")

    def run_ok(self, command: str, timeout: float = 60) -> str:
        """`run`, for a step that must succeed: its output, or CommandFailed saying what the
        command printed and its exit status."""
        output, status = self.run(command, timeout)
        if status != 0:
            raise CommandFailed(f"`{command}` failed on {self.vm or 'the console'} with exit "
                                f"status {status}: {output.strip()[-500:]}")  # fmt: skip
        return output

    def run(self, command: str, timeout: float = 60) -> tuple[str, int]:
        """Run `command` in the logged-in shell; return (output, exit status)."""
        tag = uuid.uuid4().hex[:12]
        # The markers are printed by printf with the tag split off, so the echoed command line
        # (which shows `__LAB_B_ tag`) never matches the printed marker (`__LAB_B_tag`).
        command = command.strip().rstrip(";")
        # `cmd &; next` is a syntax error: a command sent to the background is already ended.
        end = " " if command.endswith("&") else "; "
        line = (
            f"printf '%s%s\\n' __LAB_B_ {tag}; {command}{end}printf '%s%s %d\\n' __LAB_E_ {tag} $?"
        )
        self.sendline(line)
        self.expect_exact(f"__LAB_B_{tag}", timeout=timeout)
        self.expect(rf"__LAB_E_{tag} (\d+)", timeout=timeout)
        output = self.before
        status = int(self.match.group(1))
        output = re.sub(r"^\r?\n", "", output).replace("\r\n", "\n")
        return output, status
