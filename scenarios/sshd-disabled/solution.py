"""Reference solution: log in on the serial console, unmask and start sshd."""

from collections.abc import Callable

from lab.console.checks import as_root
from lab.console.session import ConsoleSession

USER, PASSWORD = "azureuser", "Passw0rd!"


def solve(session: ConsoleSession, reset: Callable[[], None]) -> None:
    session.login(USER, PASSWORD, timeout=240)
    session.run(as_root("systemctl unmask ssh.service && systemctl enable --now ssh.service",
                        USER, PASSWORD), timeout=180)  # fmt: skip
    session.sendline("exit")
