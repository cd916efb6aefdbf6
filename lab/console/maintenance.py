"""Getting a root shell at systemd's "Give root password for maintenance" prompt (emergency and
rescue mode, sulogin), as a trainee does on the serial console.

sulogin answers a wrong or empty password with "Login incorrect" and, after a pause, the
prompt again; Enter pressed earlier (by a check looking for a login prompt, say) may still be
in its input. So the password is typed only once a prompt is on the screen, and again if that
prompt was an old one.
"""

from __future__ import annotations

from lab.console.session import ConsoleSession

PROMPT = r"Give root password for maintenance"
SHELL = r"# "
REFUSED = r"Login incorrect"


def maintenance_shell(session: ConsoleSession, password: str, *, timeout: float = 240,
                      tries: int = 3) -> None:  # fmt: skip
    """Wait for the maintenance prompt, type root's password, and wait for the root shell."""
    session.sendline()  # the prompt again, whatever the console showed before this session
    session.expect(PROMPT, timeout=timeout)
    for _ in range(tries):
        session.sendline(password)
        if session.expect([SHELL, REFUSED], timeout=120) == 0:
            return
        session.expect(PROMPT, timeout=60)
    raise PermissionError(f"root's password was refused {tries} times at the maintenance prompt")
