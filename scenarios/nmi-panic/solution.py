"""Reference solution: set both sysctls in the vendor's file and load them."""

from lab.client.checks import as_root
from lab.client.session import ConsoleSession
from lab.domain.scenario import VmControls

USER, PASSWORD = "azureuser", "Passw0rd!"
CONF = "kernel.unknown_nmi_panic = 1\\nkernel.panic = 10\\n"


def solve(session: ConsoleSession, vm: VmControls) -> None:
    session.login(USER, PASSWORD, timeout=240)
    session.run(as_root(f"printf '{CONF}' > /etc/sysctl.d/90-nmi.conf && sysctl --system",
                        USER, PASSWORD))  # fmt: skip
    session.sendline("exit")
