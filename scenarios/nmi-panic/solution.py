"""Reference solution: set both sysctls in the vendor's file and load them."""

from collections.abc import Callable

from lab.console.session import ConsoleSession


def solve(session: ConsoleSession, reset: Callable[[], None]) -> None:
    session.login("azureuser", "Passw0rd!", timeout=240)
    session.run(
        "printf 'kernel.unknown_nmi_panic = 1\\nkernel.panic = 10\\n' "
        "| sudo tee /etc/sysctl.d/90-nmi.conf >/dev/null && sudo sysctl --system"
    )
    session.sendline("exit")
