"""Reference solution: log in on the serial console, unmask and start sshd."""

from collections.abc import Callable

from lab.console.session import ConsoleSession


def solve(session: ConsoleSession, reset: Callable[[], None]) -> None:
    session.login("azureuser", "Passw0rd!", timeout=240)
    session.run("sudo systemctl unmask ssh.service && sudo systemctl enable --now ssh.service")
    session.sendline("exit")
