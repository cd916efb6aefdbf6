"""Reference solution: sudo runs usermod directly, no root shell needed."""

from lab.client.checks import as_root
from lab.client.session import ConsoleSession
from lab.domain.scenario import VmControls

USER, PASSWORD = "azureuser", "Passw0rd!"


def solve(session: ConsoleSession, vm: VmControls) -> None:
    session.login(USER, PASSWORD, timeout=240)
    session.run(as_root("usermod --shell /bin/bash root", USER, PASSWORD))
    session.sendline("exit")
