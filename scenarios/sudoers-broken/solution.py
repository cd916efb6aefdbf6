"""Reference solution: become root with su, repair the sudoers file."""

from collections.abc import Callable

from lab.console.session import ConsoleSession


def solve(session: ConsoleSession, reset: Callable[[], None]) -> None:
    session.login("azureuser", "Passw0rd!", timeout=240)
    session.sendline("su -")
    session.expect(r"[Pp]assword: ?", timeout=30)
    session.sendline("Passw0rd!")
    session.expect(r"# ", timeout=30)
    session.run("sed -i 's/NOPASSWD ALL/NOPASSWD: ALL/' /etc/sudoers.d/90-deploy")
    session.sendline("exit")
    session.expect(r"\$ ", timeout=30)
    session.sendline("exit")
