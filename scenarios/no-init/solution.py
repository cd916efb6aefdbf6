"""Reference solution: boot with init= from GRUB, put /sbin/init back, reboot."""

from collections.abc import Callable

from lab.console.checks import as_root
from lab.console.grub import boot_with_kernel_args, wait_for_reboot
from lab.console.session import ConsoleSession

USER, PASSWORD = "azureuser", "Passw0rd!"


def solve(session: ConsoleSession, reset: Callable[[], None]) -> None:
    reset()
    boot_with_kernel_args(session, "init=/lib/systemd/systemd")
    session.login(USER, PASSWORD, timeout=240)
    session.run(as_root("ln -s /lib/systemd/systemd /sbin/init", USER, PASSWORD))
    session.sendline(as_root("reboot", USER, PASSWORD))
    wait_for_reboot(session)
