"""Reference solution: log in on the serial console, unmask and start sshd."""

from lab.client.checks import as_root
from lab.client.session import ConsoleSession
from lab.domain.scenario import VmControls

USER, PASSWORD = "azureuser", "Passw0rd!"


def solve(session: ConsoleSession, vm: VmControls) -> None:
    session.login(USER, PASSWORD, timeout=240)
    session.run(as_root("systemctl unmask ssh.service && systemctl enable --now ssh.service",
                        USER, PASSWORD), timeout=180)  # fmt: skip
    session.sendline("exit")
