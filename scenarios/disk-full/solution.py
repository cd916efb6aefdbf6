"""Reference solution: find the big file, delete it, clear failed units."""

from lab.client.checks import as_root
from lab.client.session import ConsoleSession
from lab.domain.scenario import VmControls

USER, PASSWORD = "azureuser", "Passw0rd!"


def solve(session: ConsoleSession, vm: VmControls) -> None:
    session.login(USER, PASSWORD, timeout=240)
    session.run(as_root("rm -f /var/tmp/.cache-blob && systemctl reset-failed", USER, PASSWORD))
    session.sendline("exit")
