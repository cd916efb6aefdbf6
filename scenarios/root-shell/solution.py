"""Reference solution: sudo runs usermod directly, no root shell needed."""

from collections.abc import Callable

from lab.console.session import ConsoleSession


def solve(session: ConsoleSession, reset: Callable[[], None]) -> None:
    session.login("azureuser", "Passw0rd!", timeout=240)
    session.run("sudo usermod --shell /bin/bash root")
    session.sendline("exit")
