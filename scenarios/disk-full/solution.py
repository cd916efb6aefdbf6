"""Reference solution: find the big file, delete it, clear failed units."""

from collections.abc import Callable

from lab.console.session import ConsoleSession


def solve(session: ConsoleSession, reset: Callable[[], None]) -> None:
    session.login("azureuser", "Passw0rd!", timeout=240)
    session.run("sudo rm -f /var/tmp/.cache-blob && sudo systemctl reset-failed")
    session.sendline("exit")
