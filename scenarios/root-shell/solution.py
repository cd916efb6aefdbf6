"""Reference solution: sudo runs usermod directly, no root shell needed."""

from collections.abc import Callable

from lab.console.checks import as_root
from lab.console.session import ConsoleSession

USER, PASSWORD = "azureuser", "Passw0rd!"


def solve(session: ConsoleSession, reset: Callable[[], None]) -> None:
    session.login(USER, PASSWORD, timeout=240)
    session.run(as_root("usermod --shell /bin/bash root", USER, PASSWORD))
    session.sendline("exit")
