"""Getting a root shell at systemd's "Give root password for maintenance" prompt (emergency and
rescue mode, sulogin), as a trainee does on the serial console.

sulogin prints its prompt, then turns the echo off and flushes what was typed so far: a password
typed the moment the prompt's first words show is echoed to the console and thrown away. So the
password is typed only once the whole prompt is on the screen and a moment has passed; if it
still vanishes (no shell, no refusal), an empty line brings the prompt back for another try. A
wrong or empty password gets "Login incorrect" and, after a pause, the prompt again.
"""

from __future__ import annotations

import time

from pexpect import TIMEOUT

from lab.client.session import ConsoleSession

PROMPT = r"Give root password for maintenance\s*\(or press Control-D to continue\): ?"
SHELL = r"# "
REFUSED = r"Login incorrect"
#: How long after its prompt sulogin may take to turn the echo off.
ECHO_OFF_S = 0.5


def maintenance_shell(session: ConsoleSession, password: str, *, timeout: float = 240,
                      tries: int = 3, answer_timeout: float = 60) -> None:  # fmt: skip
    """Wait for the maintenance prompt, type root's password, and wait for the root shell."""
    session.sendline()  # the prompt again, whatever the console showed before this session
    session.expect(PROMPT, timeout=timeout)
    for _ in range(tries):
        time.sleep(ECHO_OFF_S)
        session.sendline(password)
        answer = session.expect([SHELL, REFUSED, TIMEOUT], timeout=answer_timeout)
        if answer == 0:
            return
        if answer == 2:
            session.sendline()  # the password was thrown away: an empty one brings the prompt
        session.expect(PROMPT, timeout=60)
    raise PermissionError(f"root's password was refused {tries} times at the maintenance prompt")
