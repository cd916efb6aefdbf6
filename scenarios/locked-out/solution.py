"""Reference solution: Azure's "Reset password" through the guest agent, then a login on the
serial console with the new password."""

from lab.client.session import ConsoleSession
from lab.domain.scenario import VmControls

USER, PASSWORD = "azureuser", "N3w-Passw0rd!"


def solve(session: ConsoleSession, vm: VmControls) -> None:
    vm.reset_password(USER, PASSWORD)
    session.login(USER, PASSWORD, timeout=240)
    session.run_ok("id -un")
    session.sendline("exit")
